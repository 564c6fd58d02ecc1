//! `probe fault CASE`: CPU exceptions the monitor must report (status 139,
//! `guest fault: ...` naming the address and the function), and a runaway
//! loop for `--timeout`. The guest prints `target=ADDR` (the address the
//! fault line must name) before it faults.
//!
//! The faulting functions are `#[no_mangle]` and never inlined, so the
//! monitor's symbol for RIP is their plain name whatever it demangles.

use alloc::vec;
use core::arch::asm;
use core::hint::black_box;

use guest_kernel::{boot_info, println};

use crate::{boot_info_addr, rodata_addr};

/// Loads from address 0, which is never mapped.
#[no_mangle]
#[inline(never)]
pub extern "C" fn probe_null_deref() -> u64 {
    let value: u64;
    // SAFETY: deliberately faults: page 0 is never mapped (ABI.md section
    // 2), so the monitor stops the instance at this load.
    unsafe {
        asm!("mov {v}, qword ptr [{a}]", a = in(reg) 0u64, v = out(reg) value, options(nostack, readonly))
    };
    value
}

/// Stores one byte at `target`, which is read-only.
#[no_mangle]
#[inline(never)]
pub extern "C" fn probe_write(target: u64) {
    // SAFETY: deliberately faults: `target` is in a page without write
    // permission, so the store never happens.
    unsafe { asm!("mov byte ptr [{t}], 0xcc", t = in(reg) target, options(nostack)) };
}

/// Calls `target`, which is not executable.
#[no_mangle]
#[inline(never)]
pub extern "C" fn probe_call(target: u64) {
    // SAFETY: deliberately faults: `target` is in a page mapped
    // no-execute, so the fetch faults before any of it runs.
    unsafe { asm!("call {t}", t = in(reg) target, clobber_abi("C")) };
}

/// Recurses until the stack runs into the guard page below it.
#[no_mangle]
#[inline(never)]
pub extern "C" fn probe_recurse(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    // A 512-byte frame the optimiser must keep: each call steps down by
    // less than a page, so the first store below the stack hits the guard.
    let mut frame = [depth as u8; 512];
    black_box(&mut frame);
    probe_recurse(depth + 1) + u64::from(frame[7])
}

/// Reads one byte at `target`, which is not mapped.
#[no_mangle]
#[inline(never)]
pub extern "C" fn probe_read(target: u64) -> u8 {
    let value: u8;
    // SAFETY: deliberately faults: `target` is not mapped.
    unsafe {
        asm!("mov {v}, byte ptr [{t}]", t = in(reg) target, v = out(reg_byte) value, options(nostack, readonly))
    };
    value
}

/// Spins forever without a VM exit.
#[no_mangle]
#[inline(never)]
pub extern "C" fn probe_spin() -> ! {
    loop {
        core::hint::spin_loop();
    }
}

/// Runs one instruction that CPL 3 may not, or that always traps.
#[no_mangle]
#[inline(never)]
pub extern "C" fn probe_instruction(which: u64) {
    // SAFETY: deliberately faults: `hlt` needs CPL 0 (#GP), `syscall` jumps
    // to LSTAR = 0 or raises #UD, `ud2` is #UD and `int3` is #BP; with no
    // IDT each stops the instance.
    unsafe {
        match which {
            0 => asm!("hlt", options(nostack)),
            1 => asm!("syscall", out("rcx") _, out("r11") _, options(nostack)),
            2 => asm!("ud2", options(nostack)),
            _ => asm!("int3", options(nostack)),
        }
    }
}

pub fn run(case: &str) -> i32 {
    let info = boot_info();
    match case {
        "null" => {
            println!("target=0x0");
            black_box(probe_null_deref());
        }
        "write-text" => {
            let target = probe_null_deref as *const () as u64;
            println!("target={target:#x}");
            probe_write(target);
        }
        "write-rodata" => {
            let target = rodata_addr();
            println!("target={target:#x}");
            probe_write(target);
        }
        "write-bootinfo" => {
            let target = boot_info_addr();
            println!("target={target:#x}");
            probe_write(target);
        }
        "exec-stack" => {
            let code = black_box([0xc3u8; 16]); // `ret`
            let target = code.as_ptr() as u64;
            println!("target={target:#x}");
            probe_call(target);
        }
        "exec-heap" => {
            let code = black_box(vec![0xc3u8; 16]); // `ret`
            let target = code.as_ptr() as u64;
            println!("target={target:#x}");
            probe_call(target);
        }
        "exec-rodata" => {
            let target = rodata_addr();
            println!("target={target:#x}");
            probe_call(target);
        }
        "stack-overflow" => {
            println!("guard={:#x}", info.heap_end);
            black_box(probe_recurse(0));
        }
        "read-guard" => {
            println!("target={:#x}", info.heap_end);
            black_box(probe_read(info.heap_end));
        }
        "loop" => {
            println!("spinning");
            probe_spin();
        }
        "hlt" => probe_instruction(0),
        "syscall" => probe_instruction(1),
        "ud2" => probe_instruction(2),
        "int3" => probe_instruction(3),
        other => {
            println!("probe: unknown fault case {other:?}");
            return 2;
        }
    }
    println!("probe: survived {case}");
    3
}
