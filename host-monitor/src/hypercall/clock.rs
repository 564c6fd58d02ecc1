//! Time: CLOCK, and POLL's wait for a device or a deadline.

use super::{Flow, Services};
use crate::guest_memory::BadBlock;
use crate::outcome::Outcome;
use hypercall_abi::{ClockBlock, PollBlock};
use std::mem::offset_of;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The instance clock: zero when the guest's first instruction is about to
/// run (ABI.md section 3).
#[derive(Clone, Copy, Debug)]
pub struct InstanceClock {
    zero: Instant,
}

impl InstanceClock {
    /// Starts the clock now.
    pub fn start() -> InstanceClock {
        InstanceClock {
            zero: Instant::now(),
        }
    }

    /// Nanoseconds since the clock started.
    pub fn now_ns(&self) -> u64 {
        self.zero.elapsed().as_nanos() as u64
    }

    /// The host instant at `ns` on this clock; `None` if that is beyond any
    /// instant the host can represent (a deadline of "never").
    pub fn instant_at(&self, ns: u64) -> Option<Instant> {
        self.zero.checked_add(Duration::from_nanos(ns))
    }
}

/// The host's wall clock in ns since the UNIX epoch.
pub fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// CLOCK: `{ monotonic_ns, wall_ns }`.
pub(super) fn clock(s: &mut Services, gpa: u64) -> Result<Flow, BadBlock> {
    s.ram.block::<ClockBlock>(gpa)?;
    s.ram
        .set_field(gpa, offset_of!(ClockBlock, monotonic_ns), s.clock.now_ns());
    s.ram
        .set_field(gpa, offset_of!(ClockBlock, wall_ns), wall_ns());
    Ok(Flow::Resume)
}

/// POLL: `{ deadline_ns, ready, ret }`. With no device attached nothing can
/// become ready, so the vCPU thread sleeps until the deadline (or the
/// instance's timeout), costing no CPU.
pub(super) fn poll(s: &mut Services, gpa: u64) -> Result<Flow, BadBlock> {
    let block: PollBlock = s.ram.block(gpa)?;
    let wake = s.clock.instant_at(block.deadline_ns);
    let timeout = s.timeout.filter(|t| wake.is_none_or(|wake| t.at < wake));
    match timeout.map(|t| t.at).or(wake) {
        Some(until) => std::thread::sleep(until.saturating_duration_since(Instant::now())),
        // Waits for a device that does not exist, with no timeout: forever,
        // as the guest asked, until the monitor is stopped.
        None => loop {
            std::thread::park();
        },
    }
    if let Some(timeout) = timeout {
        return Ok(Flow::Stop(Outcome::TimedOut(timeout.limit)));
    }
    s.ram.set_field(gpa, offset_of!(PollBlock, ready), 0u64);
    s.ram.set_field(gpa, offset_of!(PollBlock, ret), 0i64);
    Ok(Flow::Resume)
}
