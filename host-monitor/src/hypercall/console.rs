//! The console device: CONSOLE_WRITE to a [`ConsoleSink`], by default the
//! monitor's stdout, byte for byte.

use super::{Flow, Services};
use crate::guest_memory::BadBlock;
use crate::limits::{ConsoleLimit, ConsoleLimiter, LimitCounts};
use hypercall_abi::{errno, ConsoleWriteBlock};
use std::io::Write;
use std::mem::offset_of;

/// The most one CONSOLE_WRITE takes; the guest writes the rest again. It
/// bounds the monitor's copy whatever length the guest asks for.
const MAX_WRITE: u64 = 64 << 10;

/// Where an instance's console bytes end up: the monitor's stdout, or for
/// a fleet a prefixed line stream or a per-instance file.
pub trait ConsoleSink: Send {
    /// Takes all of `bytes`, or fails if the reader is gone.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()>;

    /// The fds `write` writes to (`Some(vec![])` for a sink in memory), so
    /// that a seccomp-confined vCPU thread may write those and no others;
    /// `None` (the default): not known, and the thread's writes are not
    /// pinned to fds.
    fn io_fds(&self) -> Option<Vec<std::os::fd::RawFd>> {
        None
    }
}

/// `flint run`'s console: stdout, byte for byte, flushed at every write.
struct Stdout(std::io::Stdout);

impl ConsoleSink for Stdout {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut out = self.0.lock();
        out.write_all(bytes).and_then(|()| out.flush())
    }

    fn io_fds(&self) -> Option<Vec<std::os::fd::RawFd>> {
        Some(vec![libc::STDOUT_FILENO])
    }
}

/// Where an instance's console output goes.
pub struct Console {
    sink: Box<dyn ConsoleSink>,
    /// Bytes the guest wrote that could not be delivered (stdout closed).
    pub dropped: u64,
    /// `--console-limit`, if given.
    limiter: Option<ConsoleLimiter>,
    /// What the limit dropped.
    limited: LimitCounts,
}

impl Console {
    /// The console on the monitor's stdout.
    pub fn stdout() -> Console {
        Console::new(Box::new(Stdout(std::io::stdout())))
    }

    /// The console on `sink`.
    pub fn new(sink: Box<dyn ConsoleSink>) -> Console {
        Console {
            sink,
            dropped: 0,
            limiter: None,
            limited: LimitCounts::default(),
        }
    }

    /// This console, holding the guest to `limit` from now on.
    pub fn limited(mut self, limit: Option<ConsoleLimit>) -> Console {
        self.limiter = limit.map(ConsoleLimiter::new);
        self
    }

    /// The fds the console writes to, if known (see
    /// [`ConsoleSink::io_fds`]).
    pub fn io_fds(&self) -> Option<Vec<std::os::fd::RawFd>> {
        self.sink.io_fds()
    }

    /// Bytes `--console-limit` dropped (in the `console_*` fields).
    pub fn limit_counts(&self) -> LimitCounts {
        self.limited
    }

    fn write(&mut self, bytes: &[u8]) {
        // Bytes over the limit count as taken: a guest told "0 bytes"
        // would only write them again.
        let bytes = match self.limiter.as_mut() {
            Some(limiter) => {
                let now = std::time::Instant::now();
                let allowed = limiter.allow(bytes.len() as u64, now, &mut self.limited);
                &bytes[..allowed as usize]
            }
            None => bytes,
        };
        if bytes.is_empty() {
            return;
        }
        if self.sink.write(bytes).is_err() {
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
