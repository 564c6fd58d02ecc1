//! Where a fleet instance's console goes: whole lines prefixed `[ID] ` on
//! the worker's stdout (shared by all its instances, so a line is written
//! whole under stdout's lock and never interleaved with another), or a
//! file of its own, byte for byte.

use crate::hypercall::ConsoleSink;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};

/// A partial line longer than this is written out as a line of its own,
/// so a guest that never writes a newline cannot grow the monitor's
/// memory without bound.
const MAX_PARTIAL: usize = 16 << 10;

/// `[ID] line` on stdout for every line the instance writes.
pub struct PrefixedLines {
    prefix: Vec<u8>,
    /// The unfinished last line.
    partial: Vec<u8>,
}

impl PrefixedLines {
    /// The console of instance `id`.
    pub fn new(id: u64) -> PrefixedLines {
        PrefixedLines {
            prefix: format!("[{id}] ").into_bytes(),
            partial: Vec::new(),
        }
    }

    /// The lines `bytes` completes, each prefixed, as one buffer.
    fn lines(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while let Some(at) = rest.iter().position(|&b| b == b'\n') {
            out.extend_from_slice(&self.prefix);
            out.append(&mut self.partial);
            out.extend_from_slice(&rest[..=at]);
            rest = &rest[at + 1..];
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > MAX_PARTIAL {
            self.end_partial(&mut out);
        }
        out
    }

    fn end_partial(&mut self, out: &mut Vec<u8>) {
        if !self.partial.is_empty() {
            out.extend_from_slice(&self.prefix);
            out.append(&mut self.partial);
            out.push(b'\n');
        }
    }
}

fn write_stdout(bytes: &[u8]) -> io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let mut out = io::stdout().lock();
    out.write_all(bytes).and_then(|()| out.flush())
}

impl ConsoleSink for PrefixedLines {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let lines = self.lines(bytes);
        write_stdout(&lines)
    }

    fn io_fds(&self) -> Option<Vec<RawFd>> {
        Some(vec![libc::STDOUT_FILENO])
    }
}

impl Drop for PrefixedLines {
    /// The partial last line, with a newline, when the instance ends.
    fn drop(&mut self) {
        let mut out = Vec::new();
        self.end_partial(&mut out);
        let _ = write_stdout(&out);
    }
}

/// The instance's console in a file of its own (`--console-dir`).
pub struct LogFile(pub File);

impl ConsoleSink for LogFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }

    fn io_fds(&self) -> Option<Vec<RawFd>> {
        Some(vec![self.0.as_raw_fd()])
    }
}

#[cfg(test)]
mod tests {
    use super::PrefixedLines;

    #[test]
    fn whole_lines_get_the_prefix_and_partial_lines_wait() {
        let mut sink = PrefixedLines::new(42);
        assert_eq!(sink.lines(b"hel"), b"");
        assert_eq!(sink.lines(b"lo\nwor"), b"[42] hello\n");
        assert_eq!(sink.lines(b"ld\n\nx\n"), b"[42] world\n[42] \n[42] x\n");
        sink.partial.clear();
    }

    #[test]
    fn a_line_that_never_ends_is_cut() {
        let mut sink = PrefixedLines::new(1);
        let long = vec![b'a'; super::MAX_PARTIAL + 1];
        let out = sink.lines(&long);
        assert_eq!(out.len(), 4 + long.len() + 1);
        assert!(sink.partial.is_empty());
    }
}
