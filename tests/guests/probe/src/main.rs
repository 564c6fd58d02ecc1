//! `probe`: the integration tests' guest. Its first argument chooses what
//! it does, so the whole suite boots one image:
//!
//! | command | what it does |
//! |---|---|
//! | (none) | reports the empty command line |
//! | `args W...` | reports its arguments and command line |
//! | `exit N` | EXIT hypercall with code `N` (a u64) |
//! | `return N` | returns `N` from `main` |
//! | `print-exit` | prints without a newline, then exits 3 |
//! | `bootinfo` | reports every `BootInfo` field |
//! | `clock` | checks CLOCK, the TSC clock and POLL |
//! | `random` | reports host entropy, the seed and the PRNG |
//! | `panic`, `panic-bytes`, `panic-empty`, `panic-long`, `panic-unreadable`, `panic-straddle` | PANIC |
//! | `oom` | allocates more than the heap |
//! | `poll-forever` | POLL with no deadline, again and again |
//! | `console-bytes`, `console-big` | all 256 byte values; 256 KiB of output |
//! | `buf CASE` | a hypercall with a bad buffer ([`buffers`]); goes on |
//! | `block CASE` | a broken hypercall ([`blocks`]); must be stopped |
//! | `fault CASE` | a CPU exception ([`faults`]); must be stopped |
//! | `net CASE [ARG]` | the network hypercalls with a device ([`net`]) |
//! | `id-lines`, `id-fault`, `id-exit`, `id-serve` | by instance id, for fleets ([`fleet`]) |
//! | `snapshot-identity` | reports its identity, sleeps in POLL until restored, reports again ([`snapshot`]) |
//! | `edge CASE` | more CPU exceptions, odd hypercall-page accesses and bad buffers ([`edges`]) |
//! | `badblock NR WHERE` | hypercall `NR` with a broken argument block ([`edges`]); must be stopped |
//! | `poll-deadline N` | one POLL with deadline `N` or `now+N` ([`edges`]) |
//! | `count` | prints `count=N` every millisecond of its own busy-waiting, forever (never sleeps: the daemon's pause test) |
//!
//! Reports are `key=value` lines on the console. Each command is a few
//! hypercalls: every VM exit costs tens of microseconds.
#![cfg_attr(target_os = "none", no_std)]
#![no_main]
// Built for the host, `entry!` only explains how to build the image, so the
// guest code below is never called there.
#![cfg_attr(not(target_os = "none"), allow(dead_code, unused_imports))]

extern crate alloc;

mod blocks;
mod buffers;
mod edges;
mod faults;
mod fleet;
mod net;
mod snapshot;

use core::hint::black_box;

use guest_kernel::{boot_info, hypercall, print, println, time, Args};

guest_kernel::entry!(main);

/// Read-only data for the tests that aim at it (`.rodata`), aligned so
/// that it can pose as an argument block.
pub static RODATA: Aligned = Aligned([0x42; 64]);

/// 64 bytes, 64-byte aligned.
#[repr(C, align(64))]
pub struct Aligned(pub [u8; 64]);

/// The address of [`RODATA`], hidden from the optimiser.
pub fn rodata_addr() -> u64 {
    black_box(&RODATA).0.as_ptr() as u64
}

/// An 8-byte-aligned address in the text segment.
pub fn text_addr() -> u64 {
    black_box(faults::probe_null_deref as *const () as u64) & !7
}

/// The address of the `BootInfo` the monitor passed.
pub fn boot_info_addr() -> u64 {
    boot_info() as *const _ as u64
}

fn main(args: Args) -> i32 {
    let mut words = args.iter();
    let command = words.next().unwrap_or("");
    let rest = words.clone();
    let first = words.next().unwrap_or("");
    match command {
        "" => {
            let info = boot_info();
            println!("cmdline_addr={:#x}", info.cmdline);
            println!("cmdline_len={}", info.cmdline_len);
            println!("argc={}", args.len());
            0
        }
        "args" => {
            println!("argc={}", rest.clone().count());
            for word in rest {
                println!("arg={word}");
            }
            println!("cmdline_len={}", boot_info().cmdline_len);
            println!("cmdline={}", args.as_str());
            0
        }
        "exit" => hypercall::exit(number(first)),
        "return" => number(first) as i32,
        "print-exit" => {
            print!("partial line");
            guest_kernel::exit(3)
        }
        "bootinfo" => bootinfo(),
        "clock" => clock(),
        "random" => random(),
        "panic" => {
            print!("unfinished");
            let n = black_box(42);
            panic!("probe panic {n}")
        }
        "panic-bytes" => hypercall::panic_msg(b"bad\xff\x01\x1b[31m\nend \xc3\xa9 ok"),
        "panic-empty" => hypercall::panic_msg(b""),
        "panic-long" => hypercall::panic_msg(&[b'a'; 5000]),
        "panic-unreadable" => buffers::panic_raw(0x10, 16),
        "panic-straddle" => buffers::panic_raw(boot_info().mem_size - 4, 100),
        "oom" => {
            // More than the whole heap: the allocator fails, and the kernel
            // turns that into a panic.
            let huge = alloc::vec::Vec::<u8>::with_capacity(black_box(64 << 20));
            black_box(huge.as_ptr());
            println!("probe: allocated 64 MiB from a 16 MiB guest");
            3
        }
        "poll-forever" => loop {
            hypercall::poll(u64::MAX);
        },
        "count" => {
            // Busy-waits on the TSC clock (no VM exit) between lines, so
            // the only exits are the prints: progress is visible on the
            // console, and a paused vCPU makes none.
            for n in 0u64.. {
                let next = guest_kernel::time::monotonic_ns() + 1_000_000;
                while guest_kernel::time::monotonic_ns() < next {
                    core::hint::spin_loop();
                }
                println!("count={n}");
            }
            0
        }
        "console-bytes" => {
            let all: [u8; 256] = core::array::from_fn(|i| i as u8);
            buffers::write_all(&all);
            0
        }
        "console-big" => {
            let big: alloc::vec::Vec<u8> =
                (0..256 << 10).map(|i: u32| (i * 7 % 251) as u8).collect();
            let calls = buffers::write_all(&big);
            black_box(calls);
            0
        }
        "buf" => buffers::run(first),
        "block" => blocks::run(first),
        "fault" => faults::run(first),
        "net" => net::run(first, words.next().unwrap_or("")),
        "id-lines" | "id-fault" | "id-exit" | "id-serve" => {
            fleet::run(command, first, words.next().unwrap_or(""))
        }
        "snapshot-identity" => snapshot::identity(),
        "edge" => edges::run(first),
        "badblock" => edges::bad_block(first, words.next().unwrap_or("")),
        "poll-deadline" => edges::poll_deadline(first),
        other => {
            println!("probe: unknown command {other:?}");
            2
        }
    }
}

/// A decimal argument; 0 if it is not one.
fn number(word: &str) -> u64 {
    word.parse().unwrap_or(0)
}

fn bootinfo() -> i32 {
    let info = boot_info();
    println!("bootinfo_addr={:#x}", boot_info_addr());
    println!("magic={:#x}", info.magic);
    println!("abi_version={}", info.abi_version);
    println!("size={}", info.size);
    println!("mem_size={:#x}", info.mem_size);
    println!("heap_start={:#x}", info.heap_start);
    println!("heap_end={:#x}", info.heap_end);
    println!("stack_top={:#x}", info.stack_top);
    println!("stack_size={:#x}", info.stack_size);
    println!("tsc_hz={}", info.tsc_hz);
    println!("tsc_at_boot={}", info.tsc_at_boot);
    println!("wall_ns_at_boot={}", info.wall_ns_at_boot);
    println!("cmdline={:#x}", info.cmdline);
    println!("cmdline_len={}", info.cmdline_len);
    println!("net_present={}", info.net.present);
    println!("instance_id={}", info.instance_id);
    println!("generation={}", info.generation);
    println!("hypercalls={:#x}", info.hypercalls);
    let local = black_box(0u64);
    println!("stack_local={:#x}", &local as *const u64 as u64);
    let boxed = black_box(alloc::boxed::Box::new(7u64));
    println!("heap_box={:#x}", &*boxed as *const u64 as u64);
    println!("main={:#x}", main as fn(Args) -> i32 as usize);
    println!("rodata={:#x}", rodata_addr());
    0
}

fn clock() -> i32 {
    let first = hypercall::clock();
    println!("wall_ns={}", first.wall_ns);
    println!("mono_ns={}", first.monotonic_ns);
    // CLOCK never goes backwards.
    let mut prev = first.monotonic_ns;
    let mut decreases = 0;
    for _ in 0..50 {
        let now = hypercall::clock().monotonic_ns;
        decreases += u32::from(now < prev);
        prev = now;
    }
    println!("mono_decreases={decreases}");
    // The guest's TSC clock and the monitor's CLOCK are the same clock.
    let before = hypercall::clock().monotonic_ns;
    let tsc = time::monotonic_ns();
    let after = hypercall::clock().monotonic_ns;
    let skew = if tsc < before {
        before - tsc
    } else {
        tsc.saturating_sub(after)
    };
    println!("tsc_clock_skew_ns={skew}");
    let wall_skew = time::wall_ns().abs_diff(hypercall::clock().wall_ns);
    println!("tsc_wall_skew_ns={wall_skew}");
    // POLL with no device waits for its deadline (it may return early with
    // nothing ready; then the guest polls again).
    let start = hypercall::clock().monotonic_ns;
    let deadline = start + 50_000_000;
    let first_poll = hypercall::poll(deadline);
    let first_return = hypercall::clock().monotonic_ns;
    let mut polls = 1;
    let mut now = first_return;
    while now < deadline && polls < 1000 {
        hypercall::poll(deadline);
        polls += 1;
        now = hypercall::clock().monotonic_ns;
    }
    println!("poll_ret={}", first_poll.ret);
    println!("poll_ready={}", first_poll.ready);
    println!("poll_first_return_ns={}", first_return - start);
    println!("poll_calls={polls}");
    println!("poll_waited_ns={}", now - start);
    // A deadline already past returns at once.
    let start = hypercall::clock().monotonic_ns;
    let past = hypercall::poll(0);
    println!("poll_past_ret={} poll_past_ready={}", past.ret, past.ready);
    println!("poll_past_ns={}", hypercall::clock().monotonic_ns - start);
    0
}

fn random() -> i32 {
    let mut host = [0u8; 32];
    let ret = hypercall::random(&mut host);
    println!("random_ret={ret}");
    println!("host={}", Hex(&host));
    println!("seed={}", Hex(&boot_info().seed));
    println!("prng={:#018x}", guest_kernel::random::u64());
    0
}

/// Bytes as lowercase hex.
pub struct Hex<'a>(pub &'a [u8]);

impl core::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}
