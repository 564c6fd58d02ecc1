//! Arbitrary guest RAM and up to four hypercalls (number and argument
//! block address each) through `hypercall::dispatch`, with or without a
//! user-mode network device, on a `GuestRam` made without KVM. Asserts no
//! panic, and that the monitor wrote nothing the guest could not have
//! written itself (every changed byte is in a read-write region).
//!
//! With flags bit 1, POLL really sleeps: the wall-time limit runs out
//! 200 µs after the calls start rather than before, so POLL's waiting loop
//! (the timer on the device's or the idle poller, the idle hook, a
//! deadline in the future or "never") runs, bounded. Every POLL that
//! returns to the guest must have written `ret` 0 and `ready` 0, or 1 when
//! a network device has a frame waiting.
//!
//! Input: `flags` (bit 0: network device; bit 1: POLL sleeps), `count` (1 + low 2 bits), then
//! per call `nr` (u8) and `block` (u64 LE), then bytes copied to guest RAM
//! from the heap's start (0x4000). A 0 in the last bytes is fine: RAM past
//! the input reads as zero.

#![no_main]

mod common;

use common::user_net;
use host_monitor::guest_memory::GuestRam;
use host_monitor::hypercall::{dispatch, Console, ConsoleSink, Flow, Services, Timeout};
use host_monitor::layout::{Layout, Perm, Region, RegionKind};
use libfuzzer_sys::fuzz_target;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MEM_SIZE: u64 = 64 << 10;
const HEAP: u64 = 0x4000;
/// How long POLL may sleep in all with flags bit 1.
const SLEEP_AT_MOST: Duration = Duration::from_micros(200);
/// POLL's number.
const POLL: u64 = 5;

/// Page 0 unmapped, BootInfo, two pages of image (read and execute), heap,
/// a guard page, the stack: the shape of a real layout, small.
fn layout() -> Layout {
    let region = |start, end, perm, kind| Region {
        start,
        end,
        perm,
        kind,
    };
    let rx = Perm {
        write: false,
        exec: true,
    };
    Layout {
        mem_size: MEM_SIZE,
        heap_start: HEAP,
        heap_end: 0x8000,
        stack_top: MEM_SIZE,
        stack_size: 0x7000,
        cmdline: 0,
        regions: vec![
            region(0x1000, 0x2000, Perm::RO, RegionKind::BootInfo),
            region(0x2000, 0x4000, rx, RegionKind::Image),
            region(HEAP, 0x8000, Perm::RW, RegionKind::Heap),
            region(0x9000, MEM_SIZE, Perm::RW, RegionKind::Stack),
        ],
    }
}

struct Discard;

impl ConsoleSink for Discard {
    fn write(&mut self, _: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let [flags, count, rest @ ..] = data else {
        return;
    };
    let count = 1 + usize::from(count & 3);
    if rest.len() < count * 9 {
        return;
    }
    let (calls, contents) = rest.split_at(count * 9);

    let layout = layout();
    let ram = GuestRam::new(layout.clone()).expect("64 KiB of RAM");
    // Everything below the heap holds a recognisable pattern; the input
    // fills the heap and on (the guard page too, which the guest cannot see).
    ram.setup_write(0x1000, &[0xa5; 0x3000], "pattern")
        .expect("in RAM");
    let contents = &contents[..contents.len().min((MEM_SIZE - HEAP) as usize)];
    ram.setup_write(HEAP, contents, "input").expect("in RAM");
    let before = ram.peek(0, MEM_SIZE as usize).expect("all of RAM");

    let mut services = Services::new(ram, Console::new(Box::new(Discard)));
    // Without bit 1 already run out, so POLL returns at once; with it, POLL
    // sleeps (on a timer) for what is left of SLEEP_AT_MOST.
    let sleeps = flags & 2 != 0;
    let limit = if sleeps {
        SLEEP_AT_MOST
    } else {
        Duration::ZERO
    };
    services.timeout = Some(Timeout {
        at: Instant::now() + limit,
        limit,
    });
    let idled = Arc::new(AtomicUsize::new(0));
    if sleeps {
        let idled = idled.clone();
        services.on_idle = Some(Box::new(move || {
            idled.fetch_add(1, Ordering::Relaxed);
        }));
    }
    let networked = flags & 1 != 0;
    if networked {
        services.net = Some(user_net());
    }
    let mut polls = 0;
    for call in calls.chunks_exact(9) {
        let nr = u64::from(call[0]);
        let block = u64::from_le_bytes(call[1..9].try_into().expect("8 bytes"));
        match dispatch(&mut services, nr, block) {
            Ok(Flow::Resume) if nr == POLL => {
                polls += 1;
                check_poll_answer(&services.ram, block, networked);
            }
            Ok(Flow::Resume) => {}
            Ok(Flow::Stop(_)) | Err(_) => {
                polls += usize::from(nr == POLL);
                break;
            }
        }
    }
    // The idle hook runs once at most, and only from a POLL.
    let idled = idled.load(Ordering::Relaxed);
    assert!(
        idled <= 1 && (idled == 0 || polls > 0),
        "idle hook ran {idled} times"
    );

    // Page by page with slice compares: a byte loop here would be traced
    // compare by compare and slow every run down.
    let after = services.ram.peek(0, MEM_SIZE as usize).expect("all of RAM");
    for page in (0..MEM_SIZE).step_by(4096) {
        let range = page as usize..(page + 4096) as usize;
        if !layout.allows(page, 4096, Perm::RW) && before[range.clone()] != after[range.clone()] {
            let at = range.start
                + (0..4096)
                    .find(|&i| before[range.start + i] != after[range.start + i])
                    .unwrap_or(0);
            panic!(
                "the monitor wrote {:#04x} over {:#04x} at {at:#x}, which the guest cannot write",
                after[at], before[at]
            );
        }
    }
});

/// A POLL that returned to the guest answered `ret` 0 and `ready` 0, or 1
/// (a frame waits) with a network device; ABI.md section 4.
fn check_poll_answer(ram: &GuestRam, block: u64, networked: bool) {
    let answer = ram
        .peek(block + 8, 16)
        .expect("an accepted block is in RAM");
    let ready = u64::from_le_bytes(answer[..8].try_into().expect("8 bytes"));
    let ret = i64::from_le_bytes(answer[8..].try_into().expect("8 bytes"));
    assert_eq!(ret, 0, "POLL ret");
    assert!(
        ready == 0 || (ready == 1 && networked),
        "POLL ready {ready:#x}"
    );
}
