//! Time (ABI.md section 3).
//!
//! The instance clock counts nanoseconds since the instance's first
//! instruction. The guest reads it from the TSC, without an exit, as
//! `(rdtsc - tsc_at_boot) * 10^9 / tsc_hz`; the wall clock is
//! `wall_ns_at_boot` plus that. [`clock`] asks the monitor instead, and
//! [`poll`] waits on the same clock.

use crate::{boot_info, hypercall};

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

/// The instance clock: nanoseconds since the instance's first instruction.
pub fn monotonic_ns() -> u64 {
    let info = boot_info();
    ticks_to_ns(rdtsc().saturating_sub(info.tsc_at_boot), info.tsc_hz)
}

/// The wall clock: nanoseconds since the UNIX epoch.
pub fn wall_ns() -> u64 {
    boot_info().wall_ns_at_boot.saturating_add(monotonic_ns())
}

/// The monitor's view of both clocks (CLOCK hypercall; costs an exit):
/// `(monotonic_ns, wall_ns)`.
pub fn clock() -> (u64, u64) {
    let block = hypercall::clock();
    (block.monotonic_ns, block.wall_ns)
}

/// Waits until an attached device is ready or the instance clock reaches
/// `deadline_ns` (`u64::MAX`: no deadline), and returns the ready set
/// ([`hypercall_abi::POLL_READY_NET`]). May return early with an empty set.
pub fn poll(deadline_ns: u64) -> u64 {
    hypercall::poll(deadline_ns).ready
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
    use super::ticks_to_ns;

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
}
