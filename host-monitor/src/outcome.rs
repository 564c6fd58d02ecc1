//! How an instance ended, and the exit status of ABI.md section 5.

use std::time::Duration;

/// How an instance ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The guest called EXIT; the status is its code.
    Exited(u8),
    /// The guest called PANIC with this (escaped) message.
    Panicked(String),
    /// The instance ran past its `--timeout`.
    TimedOut(Duration),
    /// A CPU exception, a broken hypercall or an unexpected VM exit.
    Fault(String),
    /// The monitor got this stop signal (SIGTERM, SIGINT); `flint` then
    /// dies by it.
    Signalled(i32),
}

/// Status when the monitor could not start the instance.
pub const STATUS_START_FAILED: i32 = 125;
/// Status of a guest panic.
pub const STATUS_PANIC: i32 = 101;
/// Status of a timeout.
pub const STATUS_TIMEOUT: i32 = 124;
/// Status of a guest fault.
pub const STATUS_FAULT: i32 = 139;

impl Outcome {
    /// The exit status of `flint run`.
    pub fn status(&self) -> i32 {
        match self {
            Outcome::Exited(code) => i32::from(*code),
            Outcome::Panicked(_) => STATUS_PANIC,
            Outcome::TimedOut(_) => STATUS_TIMEOUT,
            Outcome::Fault(_) => STATUS_FAULT,
            // What a shell reports for a process killed by the signal.
            Outcome::Signalled(signo) => 128 + signo,
        }
    }

    /// The one stderr line for a status the monitor decided; `None` when the
    /// guest chose its own status or a signal ended the instance.
    pub fn verdict(&self) -> Option<String> {
        match self {
            Outcome::Exited(_) | Outcome::Signalled(_) => None,
            Outcome::Panicked(msg) if msg.is_empty() => Some("guest panicked (no message)".into()),
            Outcome::Panicked(msg) => Some(format!("guest panicked: {msg}")),
            Outcome::TimedOut(after) => Some(format!(
                "flint: instance timed out after {} s (--timeout)",
                after.as_secs_f64()
            )),
            Outcome::Fault(what) => Some(format!("guest fault: {what}")),
        }
    }
}
