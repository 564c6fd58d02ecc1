//! The network device's hypercalls. No backend exists yet, so a guest is
//! told there is no device (`BootInfo.net.present` is 0 too).

use super::{Flow, Services};
use crate::guest_memory::BadBlock;
use hypercall_abi::{errno, NetReadBlock, NetWriteBlock};
use std::mem::offset_of;

/// NET_WRITE: `{ buf, len, ret }`.
pub(super) fn write(s: &mut Services, gpa: u64) -> Result<Flow, BadBlock> {
    s.ram.block::<NetWriteBlock>(gpa)?;
    s.ram
        .set_field(gpa, offset_of!(NetWriteBlock, ret), errno::ENODEV);
    Ok(Flow::Resume)
}

/// NET_READ: `{ buf, cap, len, ret }`.
pub(super) fn read(s: &mut Services, gpa: u64) -> Result<Flow, BadBlock> {
    s.ram.block::<NetReadBlock>(gpa)?;
    s.ram
        .set_field(gpa, offset_of!(NetReadBlock, ret), errno::ENODEV);
    Ok(Flow::Resume)
}
