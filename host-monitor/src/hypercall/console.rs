//! The console device: CONSOLE_WRITE to the monitor's stdout, byte for byte.

use super::{Flow, Services};
use crate::guest_memory::BadBlock;
use hypercall_abi::{errno, ConsoleWriteBlock};
use std::io::Write;
use std::mem::offset_of;

/// The most one CONSOLE_WRITE takes; the guest writes the rest again. It
/// bounds the monitor's copy whatever length the guest asks for.
const MAX_WRITE: u64 = 64 << 10;

/// Where an instance's console output goes.
pub struct Console {
    out: std::io::Stdout,
    /// Bytes the guest wrote that could not be delivered (stdout closed).
    pub dropped: u64,
}

impl Console {
    /// The console on the monitor's stdout.
    pub fn stdout() -> Console {
        Console {
            out: std::io::stdout(),
            dropped: 0,
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut out = self.out.lock();
        if out.write_all(bytes).and_then(|()| out.flush()).is_err() {
            // The reader is gone; like a serial line with no one listening,
            // the guest goes on and the loss is counted.
            self.dropped += bytes.len() as u64;
        }
    }
}

/// CONSOLE_WRITE: `{ buf, len, ret }`.
pub(super) fn write(s: &mut Services, gpa: u64) -> Result<Flow, BadBlock> {
    let block: ConsoleWriteBlock = s.ram.block(gpa)?;
    let ret = match s.ram.read_buf(block.buf, block.len, MAX_WRITE) {
        Ok(bytes) => {
            s.console.write(&bytes);
            bytes.len() as i64
        }
        Err(_) => errno::EFAULT,
    };
    s.ram
        .set_field(gpa, offset_of!(ConsoleWriteBlock, ret), ret);
    Ok(Flow::Resume)
}
