//! An instance's console under the daemon: the last bytes it wrote, kept
//! in memory for `flint logs ID` (a bounded ring: the oldest bytes go
//! first), with counts for the metrics.

use crate::hypercall::ConsoleSink;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// What the guest wrote, shared between its vCPU thread and the API.
#[derive(Debug)]
pub struct ConsoleLog {
    inner: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    bytes: VecDeque<u8>,
    capacity: usize,
    /// Every byte the guest wrote, kept or not.
    written: u64,
    /// CONSOLE_WRITE calls that delivered at least one byte.
    writes: u64,
}

impl ConsoleLog {
    /// An empty log keeping the last `capacity` bytes.
    pub fn new(capacity: usize) -> Arc<ConsoleLog> {
        Arc::new(ConsoleLog {
            inner: Mutex::new(Ring {
                bytes: VecDeque::new(),
                capacity,
                written: 0,
                writes: 0,
            }),
        })
    }

    /// The bytes kept, oldest first.
    pub fn contents(&self) -> Vec<u8> {
        let ring = self.lock();
        let (a, b) = ring.bytes.as_slices();
        [a, b].concat()
    }

    /// Bytes written in all, and how many of them fell out of the ring.
    pub fn counts(&self) -> ConsoleCounts {
        let ring = self.lock();
        ConsoleCounts {
            bytes: ring.written,
            writes: ring.writes,
            discarded: ring.written - ring.bytes.len() as u64,
        }
    }

    /// A sink for the instance's [`crate::hypercall::Console`].
    pub fn sink(self: &Arc<Self>) -> Box<dyn ConsoleSink> {
        Box::new(Sink(self.clone()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Console totals of one instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsoleCounts {
    /// Bytes the guest wrote.
    pub bytes: u64,
    /// Writes (CONSOLE_WRITE calls with bytes): the console's "packets".
    pub writes: u64,
    /// Bytes no longer in the ring (older than its capacity).
    pub discarded: u64,
}

struct Sink(Arc<ConsoleLog>);

impl ConsoleSink for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut ring = self.0.lock();
        ring.written += bytes.len() as u64;
        ring.writes += 1;
        let capacity = ring.capacity;
        // Only the tail of a write larger than the ring can stay.
        let keep = &bytes[bytes.len().saturating_sub(capacity)..];
        let overflow = (ring.bytes.len() + keep.len()).saturating_sub(capacity);
        ring.bytes.drain(..overflow);
        ring.bytes.extend(keep);
        Ok(())
    }

    /// No fds: the vCPU thread's seccomp filter may pin its reads and
    /// writes to the instance's own.
    fn io_fds(&self) -> Option<Vec<std::os::fd::RawFd>> {
        Some(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_bytes() {
        let log = ConsoleLog::new(8);
        let mut sink = log.sink();
        sink.write(b"hello ").unwrap();
        sink.write(b"world").unwrap();
        assert_eq!(log.contents(), b"lo world");
        sink.write(b"0123456789").unwrap();
        assert_eq!(log.contents(), b"23456789");
        let counts = log.counts();
        assert_eq!((counts.bytes, counts.writes, counts.discarded), (21, 3, 13));
    }
}
