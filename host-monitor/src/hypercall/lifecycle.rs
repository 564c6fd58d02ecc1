//! EXIT and PANIC: the two ways a guest ends itself.

use super::{Flow, Services};
use crate::guest_memory::BadBlock;
use crate::outcome::Outcome;
use hypercall_abi::{ExitBlock, PanicBlock, PANIC_MSG_MAX};
use std::fmt::Write;

/// EXIT: `{ code }`; status `code & 0xff`.
pub(super) fn exit(s: &mut Services, gpa: u64) -> Result<Flow, BadBlock> {
    let block: ExitBlock = s.ram.block(gpa)?;
    Ok(Flow::Stop(Outcome::Exited((block.code & 0xff) as u8)))
}

/// PANIC: `{ msg, len }`; status 101 with the message on one line.
pub(super) fn panic(s: &mut Services, gpa: u64) -> Result<Flow, BadBlock> {
    let block: PanicBlock = s.ram.block(gpa)?;
    let len = block.len.min(PANIC_MSG_MAX);
    let message = match s.ram.read_buf(block.msg, len, len) {
        Ok(bytes) => escape(&bytes),
        Err(_) => "<unreadable>".to_owned(),
    };
    Ok(Flow::Stop(Outcome::Panicked(message)))
}

/// The message as one printable line: invalid UTF-8 and control characters
/// become `\xNN`, so a guest cannot forge further stderr lines or escape
/// sequences.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() && (c as u32) < 0x100 {
                let _ = write!(out, "\\x{:02x}", c as u32);
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escape_keeps_text_and_escapes_controls_and_bad_utf8() {
        assert_eq!(escape(b"plain text"), "plain text");
        assert_eq!(escape("naïve ✓".as_bytes()), "naïve ✓");
        assert_eq!(escape(b"a\nb\x1b[31m"), "a\\x0ab\\x1b[31m");
        assert_eq!(escape(b"\xff\xfe ok"), "\\xff\\xfe ok");
        assert_eq!(escape(b"del\x7f"), "del\\x7f");
    }
}
