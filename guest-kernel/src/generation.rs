//! Snapshot restores, as the guest sees them (ABI.md section 3).
//!
//! A snapshot is taken while the guest sleeps in POLL, so a restored
//! instance wakes up as a POLL return into a `BootInfo` the monitor has
//! rewritten: a bumped `generation`, a fresh `seed`, `instance_id`, clock
//! base and network identity. Every POLL return therefore compares
//! `generation` with the last one seen (one memory read), and on a change
//! the kernel re-reads the clock base at once (keeping the instance clock
//! non-decreasing); the entropy generator and the network stack compare
//! [`current`] with the generation they were set up at and catch up on
//! their next use.

use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::BootInfo;

use crate::{boot_info, time};

/// The `BootInfo.generation` the kernel has caught up with.
static SEEN: AtomicU64 = AtomicU64::new(0);

/// The generation the kernel has caught up with: 0 at first boot, one
/// more after each snapshot restore.
pub fn current() -> u64 {
    SEEN.load(Ordering::Relaxed)
}

/// Called at entry: the generation the instance booted with.
pub(crate) fn init(info: &BootInfo) {
    SEEN.store(info.generation, Ordering::Relaxed);
}

/// Called after every POLL hypercall; `before_ns` is the instance clock
/// just before it. Cheap when nothing changed: one read of `BootInfo`.
pub(crate) fn after_poll(before_ns: u64) {
    let info = boot_info();
    // SAFETY: `info` is the live, aligned BootInfo (entry.rs). Volatile:
    // the monitor rewrites it while the guest sleeps in POLL, behind the
    // compiler's back.
    let generation = unsafe { core::ptr::read_volatile(&info.generation) };
    if generation == current() {
        return;
    }
    let fresh = fresh_boot_info();
    time::rebase(&fresh, before_ns);
    SEEN.store(generation, Ordering::Relaxed);
}

/// A copy of `BootInfo` as the monitor left it, read past any value the
/// compiler may have kept.
pub(crate) fn fresh_boot_info() -> BootInfo {
    // SAFETY: as in `after_poll`; `BootInfo` is plain `Copy` data.
    unsafe { core::ptr::read_volatile(boot_info()) }
}
