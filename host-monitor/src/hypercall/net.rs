//! The network device's hypercalls, with ABI.md section 4's checks in its
//! order: ENODEV, EFAULT, EINVAL, EMSGSIZE, EAGAIN. What happens to a frame
//! past these checks is the device's business (`crate::net`).

use super::{Flow, Services};
use crate::guest_memory::BadBlock;
use crate::net::Received;
use hypercall_abi::{errno, NetReadBlock, NetWriteBlock, ETH_HEADER_LEN};
use std::mem::offset_of;

/// NET_WRITE: `{ buf, len, ret }`.
pub(super) fn write(s: &mut Services, gpa: u64) -> Result<Flow, BadBlock> {
    let block: NetWriteBlock = s.ram.block(gpa)?;
    let ret = match s.net.as_mut() {
        None => errno::ENODEV,
        Some(_) if s.ram.check_readable(block.buf, block.len).is_err() => errno::EFAULT,
        Some(_) if block.len < ETH_HEADER_LEN => errno::EINVAL,
        Some(net) if block.len > net.max_frame() => errno::EMSGSIZE,
        Some(net) => match s.ram.read_buf(block.buf, block.len, block.len) {
            Ok(frame) => {
                // Like a NIC, the guest is told "sent" even if the backend
                // drops the frame; the device counts why.
                net.send(&frame);
                block.len as i64
            }
            Err(_) => errno::EFAULT,
        },
    };
    s.ram.set_field(gpa, offset_of!(NetWriteBlock, ret), ret);
    Ok(Flow::Resume)
}

/// NET_READ: `{ buf, cap, len, ret }`.
pub(super) fn read(s: &mut Services, gpa: u64) -> Result<Flow, BadBlock> {
    let block: NetReadBlock = s.ram.block(gpa)?;
    let ram = &s.ram;
    let (len, ret) = match s.net.as_mut() {
        None => (None, errno::ENODEV),
        Some(_) if ram.check_writable(block.buf, block.cap).is_err() => (None, errno::EFAULT),
        Some(net) => {
            match net.receive(block.cap, |frame| ram.write_buf(block.buf, frame).is_ok()) {
                Received::Delivered(len) => (Some(len), 0),
                // The frame is dropped (and counted); `len` tells the guest
                // how big its buffer must be.
                Received::TooBig(len) => (Some(len), errno::EMSGSIZE),
                Received::Nothing => (None, errno::EAGAIN),
                Received::Fault => (None, errno::EFAULT),
            }
        }
    };
    if let Some(len) = len {
        s.ram
            .set_field(gpa, offset_of!(NetReadBlock, len), len as u64);
    }
    s.ram.set_field(gpa, offset_of!(NetReadBlock, ret), ret);
    Ok(Flow::Resume)
}
