//! `probe buf CASE`: hypercalls whose buffer breaks its rule (ABI.md
//! section 4). The monitor answers EFAULT (or ENODEV, EINVAL first where the
//! ABI orders them so) and the guest goes on: it prints `CASE ret=N`, then
//! `probe: still running`, and exits 0.
//!
//! The blocks are built here with [`hypercall::raw`] because the typed
//! wrappers take Rust slices, and these buffers are deliberately not valid
//! slices.

use alloc::vec;
use core::ptr;

use guest_kernel::{boot_info, hypercall, println};
use hypercall_abi::{
    ConsoleWriteBlock, Hypercall, NetReadBlock, NetWriteBlock, PanicBlock, RandomBlock,
    HYPERCALL_PAGE, PAGE_SIZE,
};

use crate::{boot_info_addr, rodata_addr, text_addr};

/// What `ret` holds before the call: any answer the monitor writes differs.
const UNTOUCHED: i64 = 0x5a5a;

/// Makes hypercall `call` with `block` and returns the block as the monitor
/// left it.
fn call<T: Copy>(call: Hypercall, mut block: T) -> T {
    // SAFETY: the block is on our stack (8-byte aligned, writable) and has
    // the layout `call` expects. Its buffer may be bad: that is the test,
    // and ABI.md promises EFAULT for it, never a write to it.
    unsafe { hypercall::raw(call.nr(), &mut block as *mut T as u64) };
    // SAFETY: `block` is a live local; the volatile read makes sure we see
    // what the monitor wrote behind the compiler's back.
    unsafe { ptr::read_volatile(&block) }
}

fn console(buf: u64, len: u64) -> i64 {
    call(
        Hypercall::ConsoleWrite,
        ConsoleWriteBlock {
            buf,
            len,
            ret: UNTOUCHED,
        },
    )
    .ret
}

fn random(buf: u64, len: u64) -> i64 {
    call(
        Hypercall::Random,
        RandomBlock {
            buf,
            len,
            ret: UNTOUCHED,
        },
    )
    .ret
}

/// NET_WRITE with a raw buffer address (the `net` cases use it too).
pub(crate) fn net_write(buf: u64, len: u64) -> i64 {
    call(
        Hypercall::NetWrite,
        NetWriteBlock {
            buf,
            len,
            ret: UNTOUCHED,
        },
    )
    .ret
}

/// NET_READ with a raw buffer address: `(ret, len)`.
pub(crate) fn net_read(buf: u64, cap: u64) -> (i64, u64) {
    let block = call(
        Hypercall::NetRead,
        NetReadBlock {
            buf,
            cap,
            len: 77,
            ret: UNTOUCHED,
        },
    );
    (block.ret, block.len)
}

/// Writes all of `bytes` with CONSOLE_WRITE, again after short writes,
/// bypassing the kernel's line buffer; returns how many calls it took.
pub fn write_all(mut bytes: &[u8]) -> usize {
    let mut calls = 0;
    while !bytes.is_empty() {
        calls += 1;
        let taken = hypercall::console_write(bytes);
        if taken <= 0 {
            println!();
            println!("probe: CONSOLE_WRITE returned {taken}");
            guest_kernel::exit(3);
        }
        bytes = &bytes[(taken as usize).min(bytes.len())..];
    }
    calls
}

/// A PANIC whose message is wherever the test says.
pub fn panic_raw(msg: u64, len: u64) -> ! {
    call(Hypercall::Panic, PanicBlock { msg, len });
    println!("probe: PANIC returned");
    guest_kernel::exit(3)
}

/// Reads `len` bytes at `addr` (which the guest can read).
fn snapshot(addr: u64, len: usize) -> [u8; 64] {
    let mut copy = [0u8; 64];
    for (i, byte) in copy.iter_mut().enumerate().take(len.min(64)) {
        // SAFETY: the callers pass readable guest memory (text, rodata,
        // BootInfo, the command line, the stack): mapped with read access.
        *byte = unsafe { ptr::read_volatile((addr + i as u64) as *const u8) };
    }
    copy
}

/// RANDOM into `[addr, addr + len)`, of which the first `readable` bytes are
/// ours to read back: reports `ret` and whether they are unchanged.
fn random_unchanged(case: &str, addr: u64, len: u64, readable: usize) {
    let before = snapshot(addr, readable);
    let ret = random(addr, len);
    let after = snapshot(addr, readable);
    let unchanged = if before == after { "yes" } else { "no" };
    println!("{case} ret={ret} unchanged={unchanged}");
}

pub fn run(case: &str) -> i32 {
    let info = boot_info();
    let mem = info.mem_size;
    let guard = info.heap_end;
    let text = text_addr();
    match case {
        "console-page0" => report(case, console(0x10, 4)),
        "console-past-ram" => report(case, console(mem - 2, 4)),
        "console-beyond-ram" => report(case, console(mem + PAGE_SIZE, 4)),
        "console-overflow" => report(case, console(u64::MAX - 7, 16)),
        "console-huge-len" => report(case, console(info.heap_start, u64::MAX)),
        "console-guard" => report(case, console(guard, 8)),
        "console-guard-straddle" => report(case, console(guard - 4, 8)),
        "console-hypercall-page" => report(case, console(HYPERCALL_PAGE, 8)),
        "console-len0" => report(case, console(0x10, 0)),
        "console-monitor-pages" => {
            // Below 1 MiB only the BootInfo and command-line pages are the
            // guest's to read: every other page is the monitor's.
            let own = [boot_info_addr() / PAGE_SIZE, info.cmdline / PAGE_SIZE];
            let (mut checked, mut readable) = (0, 0);
            for page in (0..256).filter(|p| !own.contains(p)) {
                checked += 1;
                if console(page * PAGE_SIZE, 1) != hypercall_abi::errno::EFAULT {
                    readable += 1;
                    println!();
                    println!("readable_page={:#x}", page * PAGE_SIZE);
                }
            }
            println!("{case} checked={checked} not_efault={readable}");
        }
        "console-edges" => {
            // Buffers that touch the edge of a readable range but stay in
            // it: the monitor must take them (no off-by-one).
            let edges = [
                ("ram-end", mem - 4),
                ("heap-end", guard - 4),
                ("stack-bottom", guard + PAGE_SIZE),
                ("bootinfo", boot_info_addr()),
                ("cmdline", info.cmdline),
                ("text", text_addr()),
                ("rodata", rodata_addr()),
            ];
            let rets = edges.map(|(_, addr)| console(addr, 4));
            println!();
            for ((name, addr), ret) in edges.iter().zip(rets) {
                println!("{case} {name} addr={addr:#x} ret={ret}");
            }
        }
        "random-edges" => {
            // The last bytes of the heap are the guest's to write.
            let ret = random(guard - 16, 16);
            println!("{case} heap-end ret={ret}");
        }
        "random-text" => random_unchanged(case, text, 16, 16),
        "random-rodata" => random_unchanged(case, rodata_addr(), 16, 16),
        "random-bootinfo" => random_unchanged(case, boot_info_addr(), 16, 16),
        "random-bootinfo-seed" => {
            random_unchanged(case, boot_info_addr() + 120, 32, 32);
        }
        "random-cmdline" => random_unchanged(case, info.cmdline, info.cmdline_len, 64),
        "random-straddle-ram-end" => random_unchanged(case, mem - 8, 16, 8),
        "random-straddle-guard" => {
            // Starts in the heap (writable), runs on into the guard page:
            // the monitor must refuse it whole, not fill the heap part.
            random_unchanged(case, guard - 8, 16, 8)
        }
        "random-guard" => report(case, random(guard, 16)),
        "random-too-long" => {
            let buf = vec![0u8; 4097];
            let ret = random(buf.as_ptr() as u64, 4097);
            let unchanged = if buf.iter().all(|&b| b == 0) {
                "yes"
            } else {
                "no"
            };
            println!("{case} ret={ret} unchanged={unchanged}");
        }
        "random-ok" => {
            let buf = vec![0u8; 4096];
            let ret = random(buf.as_ptr() as u64, 4096);
            let zeros = buf.iter().filter(|&&b| b == 0).count();
            println!("{case} ret={ret} zero_bytes={zeros}");
        }
        "random-len0" => report(case, random(0x10, 0)),
        "net-write-nodev" => {
            let frame = [0xffu8; 64];
            report(case, net_write(frame.as_ptr() as u64, 64))
        }
        "net-write-nodev-badbuf" => report(case, net_write(0x10, 64)),
        "net-read-nodev" => {
            let buf = vec![0u8; 1514];
            report(case, net_read(buf.as_ptr() as u64, 1514).0)
        }
        "net-read-nodev-badbuf" => report(case, net_read(0x10, 1514).0),
        other => {
            println!("probe: unknown buf case {other:?}");
            return 2;
        }
    }
    // The monitor let the guest go on after the bad buffer.
    println!("probe: still running");
    0
}

fn report(case: &str, ret: i64) {
    println!("{case} ret={ret}");
}
