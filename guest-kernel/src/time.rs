//! Time (ABI.md section 3).
//!
//! The instance clock counts nanoseconds since the instance's first
//! instruction. The guest reads it from the TSC, without an exit, as
//! `(rdtsc - tsc_at_boot) * 10^9 / tsc_hz`; the wall clock is
//! `wall_ns_at_boot` plus that. [`clock`] asks the monitor instead, and
//! [`poll`] waits on the same clock.

use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::BootInfo;

use crate::hypercall;

/// Nanoseconds in a second.
const NS_PER_SEC: u128 = 1_000_000_000;

/// Reads the time-stamp counter.
fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the counter; the monitor leaves CR4.TSD
    // clear, so it is allowed at CPL 3 (ABI.md section 2).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Converts TSC ticks to nanoseconds at `tsc_hz`, in 128-bit arithmetic so
/// that nothing overflows for centuries.
fn ticks_to_ns(ticks: u64, tsc_hz: u64) -> u64 {
    let ns = u128::from(ticks) * NS_PER_SEC / u128::from(tsc_hz.max(1));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// Where the clocks come from: `BootInfo`'s clock base, read at entry and
/// again after each snapshot restore, plus how far the guest's instance
/// clock runs ahead of the monitor's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ClockBase {
    tsc_at_boot: u64,
    tsc_hz: u64,
    wall_ns_at_boot: u64,
    /// Added to the monitor's instance clock. 0 unless a restore moved the
    /// monitor's clock behind a value the guest had already seen: the
    /// guest's clock never goes backward (ABI.md section 3).
    offset_ns: u64,
}

impl ClockBase {
    /// The monitor's instance clock at TSC value `tsc`.
    fn monitor_ns(&self, tsc: u64) -> u64 {
        ticks_to_ns(tsc.saturating_sub(self.tsc_at_boot), self.tsc_hz)
    }

    /// The guest's instance clock at TSC value `tsc`.
    fn monotonic_ns(&self, tsc: u64) -> u64 {
        self.monitor_ns(tsc).saturating_add(self.offset_ns)
    }

    /// The wall clock at TSC value `tsc` (it may step either way, as the
    /// host's does).
    fn wall_ns(&self, tsc: u64) -> u64 {
        self.wall_ns_at_boot.saturating_add(self.monitor_ns(tsc))
    }

    /// The base after a restore wrote a new clock base into `BootInfo`:
    /// `before_ns` is the guest's instance clock just before the POLL the
    /// restore woke from, `tsc` the TSC now. The clock goes on from the
    /// monitor's new value if that is not behind `before_ns`, else from
    /// `before_ns`.
    fn rebased(
        tsc_at_boot: u64,
        tsc_hz: u64,
        wall_ns_at_boot: u64,
        tsc: u64,
        before_ns: u64,
    ) -> Self {
        let mut base = ClockBase {
            tsc_at_boot,
            tsc_hz,
            wall_ns_at_boot,
            offset_ns: 0,
        };
        base.offset_ns = before_ns.saturating_sub(base.monitor_ns(tsc));
        base
    }

    /// A guest deadline on the monitor's instance clock, for POLL.
    fn monitor_deadline(&self, deadline_ns: u64) -> u64 {
        if deadline_ns == u64::MAX {
            return u64::MAX;
        }
        deadline_ns.saturating_sub(self.offset_ns)
    }
}

/// The clock base, one atomic per field: read on every clock read (no
/// lock), written only at entry and after a restore, on the one vCPU.
struct SharedBase([AtomicU64; 4]);

static BASE: SharedBase = SharedBase([const { AtomicU64::new(0) }; 4]);

impl SharedBase {
    fn get(&self) -> ClockBase {
        let [a, b, c, d] = &self.0;
        ClockBase {
            tsc_at_boot: a.load(Ordering::Relaxed),
            tsc_hz: b.load(Ordering::Relaxed),
            wall_ns_at_boot: c.load(Ordering::Relaxed),
            offset_ns: d.load(Ordering::Relaxed),
        }
    }

    fn set(&self, base: ClockBase) {
        let [a, b, c, d] = &self.0;
        a.store(base.tsc_at_boot, Ordering::Relaxed);
        b.store(base.tsc_hz, Ordering::Relaxed);
        c.store(base.wall_ns_at_boot, Ordering::Relaxed);
        d.store(base.offset_ns, Ordering::Relaxed);
    }
}

/// Called at entry: the clock base the instance booted with.
pub(crate) fn init(info: &BootInfo) {
    BASE.set(ClockBase {
        tsc_at_boot: info.tsc_at_boot,
        tsc_hz: info.tsc_hz,
        wall_ns_at_boot: info.wall_ns_at_boot,
        offset_ns: 0,
    });
}

/// Called when a restore is noticed (`generation.rs`): takes the new clock
/// base from `info`, keeping the instance clock at or past `before_ns`.
pub(crate) fn rebase(info: &BootInfo, before_ns: u64) {
    BASE.set(ClockBase::rebased(
        info.tsc_at_boot,
        info.tsc_hz,
        info.wall_ns_at_boot,
        rdtsc(),
        before_ns,
    ));
}

/// The instance clock: nanoseconds since the instance's first instruction.
/// Never goes backward, also across a snapshot restore.
pub fn monotonic_ns() -> u64 {
    BASE.get().monotonic_ns(rdtsc())
}

/// The wall clock: nanoseconds since the UNIX epoch.
pub fn wall_ns() -> u64 {
    BASE.get().wall_ns(rdtsc())
}

/// The monitor's view of both clocks (CLOCK hypercall; costs an exit):
/// `(monotonic_ns, wall_ns)`, the first on the same clock as
/// [`monotonic_ns`].
pub fn clock() -> (u64, u64) {
    let block = hypercall::clock();
    let offset = BASE.get().offset_ns;
    (block.monotonic_ns.saturating_add(offset), block.wall_ns)
}

/// Waits until an attached device is ready or the instance clock reaches
/// `deadline_ns` (`u64::MAX`: no deadline), and returns the ready set
/// ([`hypercall_abi::POLL_READY_NET`]). May return early with an empty set
/// (also when the instance was just restored from a snapshot).
pub fn poll(deadline_ns: u64) -> u64 {
    hypercall::poll(BASE.get().monitor_deadline(deadline_ns)).ready
}

/// Sleeps for at least `ns` nanoseconds of instance time.
pub fn sleep_ns(ns: u64) {
    let deadline = monotonic_ns().saturating_add(ns);
    while monotonic_ns() < deadline {
        poll(deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::{ticks_to_ns, ClockBase};

    const HZ: u64 = 1_000_000_000; // one tick per ns keeps the numbers readable

    #[test]
    fn ticks_convert_at_the_tsc_rate() {
        assert_eq!(ticks_to_ns(3_000_000_000, 3_000_000_000), 1_000_000_000);
        assert_eq!(ticks_to_ns(3, 3_000_000_000), 1);
        assert_eq!(ticks_to_ns(u64::MAX, 1_000_000_000), u64::MAX);
    }

    #[test]
    fn large_tick_counts_do_not_overflow() {
        // A year at 4 GHz overflows u64 once multiplied by 10^9.
        let year = 4_000_000_000 * 365 * 24 * 3600;
        assert_eq!(
            ticks_to_ns(year, 4_000_000_000),
            365 * 24 * 3600 * 1_000_000_000
        );
    }

    #[test]
    fn restore_with_a_clock_that_went_on_follows_the_monitor() {
        // Snapshot at 5 s; restored with the monitor's clock at 7 s.
        let base = ClockBase::rebased(1_000, HZ, 42, 1_000 + 7 * HZ, 5 * HZ);
        assert_eq!(base.offset_ns, 0);
        assert_eq!(base.monotonic_ns(1_000 + 7 * HZ), 7 * HZ);
        assert_eq!(base.monitor_deadline(8 * HZ), 8 * HZ);
        assert_eq!(base.wall_ns(1_000 + 7 * HZ), 42 + 7 * HZ);
    }

    #[test]
    fn restore_with_a_fresh_clock_never_goes_backward() {
        // Snapshot at 5 s; the restored instance's clock starts again at 0
        // (a new VM's TSC), 2 ms ago.
        let tsc_at_boot = 3_000;
        let now = tsc_at_boot + 2_000_000;
        let base = ClockBase::rebased(tsc_at_boot, HZ, 99, now, 5 * HZ);
        assert_eq!(base.monotonic_ns(now), 5 * HZ);
        assert_eq!(base.monotonic_ns(now + 10), 5 * HZ + 10);
        // POLL deadlines go to the monitor on its own clock.
        assert_eq!(base.monitor_deadline(5 * HZ + 1_000), 2_001_000);
        assert_eq!(base.monitor_deadline(1), 0);
        assert_eq!(base.monitor_deadline(u64::MAX), u64::MAX);
        // The wall clock is the host's new one.
        assert_eq!(base.wall_ns(now), 99 + 2_000_000);
    }

    #[test]
    fn a_tsc_behind_tsc_at_boot_reads_as_the_clock_base() {
        let base = ClockBase::rebased(u64::MAX - 5, HZ, 0, 7, 1_234);
        assert_eq!(base.monotonic_ns(7), 1_234);
        assert_eq!(base.monotonic_ns(0), 1_234);
    }

    #[test]
    fn a_zero_tsc_rate_does_not_divide_by_zero() {
        let base = ClockBase::rebased(0, 0, 0, 10, 3);
        assert!(base.monotonic_ns(11) >= 3);
    }
}
