//! The console: `flint run`'s stdout, byte for byte.
//!
//! Every hypercall is a VM exit, and an exit costs tens of microseconds on
//! the hosts Flint runs on, so output is line-buffered: [`print!`] collects
//! bytes, and each complete line (or a full buffer) goes out as one
//! CONSOLE_WRITE. The buffer is flushed at [`crate::exit`] and on panic.
//!
//! [`print!`]: crate::print

use core::fmt;

use spin::Mutex;

use crate::hypercall;

/// Bytes held back until a newline; a longer line goes out in pieces.
pub const BUFFER_SIZE: usize = 1024;

static CONSOLE: Mutex<LineBuffer> = Mutex::new(LineBuffer::new());

/// A line buffer in front of a byte sink.
struct LineBuffer {
    buf: [u8; BUFFER_SIZE],
    len: usize,
}

impl LineBuffer {
    const fn new() -> LineBuffer {
        LineBuffer {
            buf: [0; BUFFER_SIZE],
            len: 0,
        }
    }

    /// Buffers `bytes`, handing every run that ends in a newline, and every
    /// full buffer, to `sink`.
    fn write(&mut self, mut bytes: &[u8], sink: &mut impl FnMut(&[u8])) {
        while !bytes.is_empty() {
            let take = bytes.len().min(BUFFER_SIZE - self.len);
            let (chunk, rest) = bytes.split_at(take);
            // Everything up to the chunk's last newline goes out together.
            let end = chunk
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(take, |nl| nl + 1);
            self.buf[self.len..self.len + end].copy_from_slice(&chunk[..end]);
            self.len += end;
            if end < take || chunk[end - 1] == b'\n' || self.len == BUFFER_SIZE {
                self.flush(sink);
            }
            let kept = &chunk[end..];
            self.buf[self.len..self.len + kept.len()].copy_from_slice(kept);
            self.len += kept.len();
            bytes = rest;
        }
    }

    /// Hands whatever is buffered to `sink`.
    fn flush(&mut self, sink: &mut impl FnMut(&[u8])) {
        if self.len > 0 {
            sink(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

/// Writes all of `bytes` with CONSOLE_WRITE, again after a short write.
/// Output the monitor refuses (an error) is dropped: there is nowhere else
/// to report it.
fn write_all(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let taken = hypercall::console_write(bytes);
        if taken <= 0 {
            return;
        }
        bytes = &bytes[(taken as usize).min(bytes.len())..];
    }
}

/// Writes `bytes` to the console, buffered by line.
pub fn write_bytes(bytes: &[u8]) {
    CONSOLE.lock().write(bytes, &mut |out| write_all(out));
}

/// Writes `s` to the console, buffered by line.
pub fn write_str(s: &str) {
    write_bytes(s.as_bytes());
}

/// Sends everything buffered to the monitor now.
pub fn flush() {
    CONSOLE.lock().flush(&mut |out| write_all(out));
}

/// Flushes unless the console is locked, as it is when a panic happens
/// while printing: then the buffered bytes are lost rather than deadlock.
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
pub(crate) fn try_flush() {
    if let Some(mut console) = CONSOLE.try_lock() {
        console.flush(&mut |out| write_all(out));
    }
}

/// `fmt::Write` for the locked console.
struct Writer<'a>(&'a mut LineBuffer);

impl fmt::Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.write(s.as_bytes(), &mut |out| write_all(out));
        Ok(())
    }
}

/// Implementation of [`print!`](crate::print); not part of the API.
#[doc(hidden)]
pub fn _print(args: fmt::Arguments, newline: bool) {
    use fmt::Write;
    let mut console = CONSOLE.lock();
    let mut writer = Writer(&mut console);
    let _ = writer.write_fmt(args);
    if newline {
        let _ = writer.write_str("\n");
    }
}

/// Prints to the console (`flint run`'s stdout), like `std::print!`.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::console::_print(::core::format_args!($($arg)*), false)
    };
}

/// Prints a line to the console (`flint run`'s stdout), like
/// `std::println!`. The line goes out as one hypercall.
#[macro_export]
macro_rules! println {
    () => {
        $crate::console::write_str("\n")
    };
    ($($arg:tt)*) => {
        $crate::console::_print(::core::format_args!($($arg)*), true)
    };
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::{LineBuffer, BUFFER_SIZE};

    fn run(writes: &[&[u8]]) -> (Vec<Vec<u8>>, LineBuffer) {
        let mut out = Vec::new();
        let mut buffer = LineBuffer::new();
        for w in writes {
            buffer.write(w, &mut |bytes: &[u8]| out.push(bytes.to_vec()));
        }
        (out, buffer)
    }

    #[test]
    fn one_line_in_pieces_is_one_write() {
        let (out, buffer) = run(&[b"Hello, ", b"world", b"!\n"]);
        assert_eq!(out, [b"Hello, world!\n".to_vec()]);
        assert_eq!(buffer.len, 0);
    }

    #[test]
    fn text_after_the_last_newline_waits() {
        let (out, buffer) = run(&[b"a\nb\nc"]);
        assert_eq!(out, [b"a\nb\n".to_vec()]);
        assert_eq!(&buffer.buf[..buffer.len], b"c");
    }

    #[test]
    fn long_line_goes_out_in_full_buffers() {
        let line = [b'x'; BUFFER_SIZE * 2 + 10];
        let (out, buffer) = run(&[&line]);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|w| w.len() == BUFFER_SIZE));
        assert_eq!(buffer.len, 10);
    }

    #[test]
    fn flush_sends_the_partial_line() {
        let (_, mut buffer) = run(&[b"no newline"]);
        let mut out = Vec::new();
        buffer.flush(&mut |bytes: &[u8]| out.push(bytes.to_vec()));
        assert_eq!(out, [b"no newline".to_vec()]);
    }
}
