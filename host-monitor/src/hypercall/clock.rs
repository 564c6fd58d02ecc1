//! Time: the instance clock and CLOCK.

use super::{Flow, Services};
use crate::guest_memory::BadBlock;
use hypercall_abi::ClockBlock;
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

    /// This clock set back by `ns`: it reads `ns` now (a restored instance
    /// carries on from its snapshot's clock).
    pub fn back_dated(self, ns: u64) -> InstanceClock {
        let zero = self.zero.checked_sub(Duration::from_nanos(ns));
        InstanceClock {
            zero: zero.unwrap_or(self.zero),
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
