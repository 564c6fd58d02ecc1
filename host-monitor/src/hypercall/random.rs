//! RANDOM: host entropy from the OS.

use super::{Flow, Services};
use crate::guest_memory::BadBlock;
use hypercall_abi::{errno, RandomBlock, RANDOM_MAX};
use std::mem::offset_of;

/// RANDOM: `{ buf, len, ret }`.
pub(super) fn fill(s: &mut Services, gpa: u64) -> Result<Flow, BadBlock> {
    let block: RandomBlock = s.ram.block(gpa)?;
    let ret = if s.ram.check_writable(block.buf, block.len).is_err() {
        errno::EFAULT
    } else if block.len > RANDOM_MAX {
        errno::EINVAL
    } else {
        let mut bytes = vec![0; block.len as usize];
        match getrandom::fill(&mut bytes) {
            Ok(()) if s.ram.write_buf(block.buf, &bytes).is_ok() => block.len as i64,
            Ok(()) => errno::EFAULT,
            // The OS could not give entropy; never hand the guest zeros as if
            // they were random.
            Err(_) => errno::EINVAL,
        }
    };
    s.ram.set_field(gpa, offset_of!(RandomBlock, ret), ret);
    Ok(Flow::Resume)
}
