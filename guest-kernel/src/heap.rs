//! The heap: `buddy_system_allocator` over `[heap_start, heap_end)`.
//!
//! The first touch of a guest page costs the host microseconds, so the heap
//! is handed to the allocator lazily: it starts empty and, each time an
//! allocation does not fit, the allocator's rescue hook adds the next chunk
//! of the heap range (64 KiB, then doubling). An app that never allocates
//! touches no heap page at all.
//!
//! A buddy allocator hands out power-of-two blocks aligned to their size,
//! so one allocation can be at most the largest such block inside the heap
//! range: with the default 16 MiB of guest RAM, 4 MiB. Apps that need
//! bigger single buffers ask for more `--mem`.

use core::alloc::Layout;
use core::sync::atomic::{AtomicUsize, Ordering};

use buddy_system_allocator::{Heap, LockedHeapWithRescue};
use hypercall_abi::{BootInfo, HEAP_MIN};

/// Free lists for blocks of up to 2^31 bytes (guest RAM is at most 3 GiB).
const ORDER: usize = 32;

// On the host the std allocator serves; this one stays unused there.
#[cfg_attr(target_os = "none", global_allocator)]
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
static ALLOCATOR: LockedHeapWithRescue<ORDER> = LockedHeapWithRescue::new(grow);

/// The part of the heap range not yet given to the allocator.
static NEXT: AtomicUsize = AtomicUsize::new(0);
static END: AtomicUsize = AtomicUsize::new(0);
/// The size of the next chunk.
static CHUNK: AtomicUsize = AtomicUsize::new(HEAP_MIN as usize);

/// Records the heap range from `BootInfo`; touches no heap page.
pub(crate) fn init(info: &BootInfo) {
    NEXT.store(info.heap_start as usize, Ordering::Relaxed);
    END.store(info.heap_end as usize, Ordering::Relaxed);
}

/// Bytes of the heap range not yet handed to the allocator.
pub fn untouched() -> usize {
    END.load(Ordering::Relaxed)
        .saturating_sub(NEXT.load(Ordering::Relaxed))
}

/// The allocator's rescue hook: adds the next chunk of the heap range, big
/// enough to hold an aligned block for `layout`. Called with the heap
/// locked, so no two calls race.
fn grow(heap: &mut Heap<ORDER>, layout: &Layout) {
    let (next, end) = (NEXT.load(Ordering::Relaxed), END.load(Ordering::Relaxed));
    // A range twice the block size always holds one aligned block.
    let block = layout
        .size()
        .max(layout.align())
        .checked_next_power_of_two();
    let Some(need) = block.and_then(|b| b.checked_mul(2)) else {
        return;
    };
    let chunk = CHUNK.load(Ordering::Relaxed).max(need);
    let stop = next.saturating_add(chunk).min(end);
    if stop <= next {
        return;
    }
    // SAFETY: [next, stop) lies in [heap_start, heap_end), RAM the monitor
    // maps read-write for this guest's heap and nothing else uses; NEXT
    // only moves forward, so no byte is added to the heap twice.
    unsafe { heap.add_to_heap(next, stop) };
    NEXT.store(stop, Ordering::Relaxed);
    CHUNK.store(chunk.saturating_mul(2), Ordering::Relaxed);
}
