//! The panic handler: formats `message at file:line:col` into a fixed
//! buffer (the heap may be what failed), flushes the console, and stops the
//! instance with PANIC (status 101, the message on the monitor's stderr).

use core::fmt::{self, Write};
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::{console, hypercall};

/// The longest panic message sent; the rest is cut.
const MESSAGE_MAX: usize = 1024;

static PANICKING: AtomicBool = AtomicBool::new(false);

/// A `fmt::Write` into a fixed buffer that drops what does not fit.
struct Truncating {
    buf: [u8; MESSAGE_MAX],
    len: usize,
}

impl Write for Truncating {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(MESSAGE_MAX - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    if PANICKING.swap(true, Ordering::Relaxed) {
        // Panicked while reporting a panic: report that, without formatting.
        hypercall::panic_msg(b"panicked while panicking");
    }
    let mut msg = Truncating {
        buf: [0; MESSAGE_MAX],
        len: 0,
    };
    let _ = write!(msg, "{}", info.message());
    if let Some(at) = info.location() {
        let _ = write!(msg, " at {}:{}:{}", at.file(), at.line(), at.column());
    }
    console::try_flush();
    hypercall::panic_msg(&msg.buf[..msg.len])
}
