//! `probe block CASE`: broken hypercalls (ABI.md section 4) that the monitor
//! must stop with a diagnosis (status 139): a bad argument block, an unknown
//! number, a load from the hypercall page, a store of the wrong width or
//! offset. The guest prints `about to CASE` first; if the monitor lets it
//! run on, it prints `probe: survived CASE` and exits 3.

use core::arch::asm;

use guest_kernel::{boot_info, hypercall, println};
use hypercall_abi::{Hypercall, HYPERCALL_PAGE, PAGE_SIZE};

use crate::{boot_info_addr, rodata_addr, text_addr};

/// CLOCK writes its whole block, so it needs a writable one.
const CLOCK: u64 = Hypercall::Clock.nr();

pub fn run(case: &str) -> i32 {
    let info = boot_info();
    let mem = info.mem_size;
    // A valid, 8-byte-aligned, writable block big enough for any hypercall.
    let mut good = [0u64; 8];
    let good = &mut good as *mut [u64; 8] as u64;
    let text = text_addr();
    let (nr, block) = match case {
        "unaligned" => (CLOCK, good + 4),
        "text" => (CLOCK, text),
        "rodata" => (CLOCK, rodata_addr()),
        "bootinfo" => (CLOCK, boot_info_addr()),
        "cmdline" => (CLOCK, info.cmdline),
        "page0" => (CLOCK, 0x100),
        "outside-ram" => (CLOCK, mem + PAGE_SIZE),
        "straddle-ram-end" => (CLOCK, mem - 8),
        "guard" => (CLOCK, info.heap_end),
        "hypercall-page" => (CLOCK, HYPERCALL_PAGE),
        "nr0" => (0, good),
        "nr9" => (9, good),
        "nr63" => (63, good),
        "nr64" => (64, good),
        "nr511" => (511, good),
        "load" | "store32" | "store8" | "store-misaligned" | "store-next-page" | "store-no-ram" => {
            println!("about to {case}");
            odd_access(case, good);
            println!("probe: survived {case}");
            return 3;
        }
        other => {
            println!("probe: unknown block case {other:?}");
            return 2;
        }
    };
    println!("about to {case} nr={nr} block={block:#x}");
    // SAFETY: deliberately broken: the block or the number breaks ABI.md
    // section 4, so the monitor must stop the instance here. If it does
    // not, it still never writes outside the guest's writable RAM.
    unsafe { hypercall::raw(nr, block) };
    println!("probe: survived {case}");
    3
}

/// Accesses to the hypercall page (and beyond) that are not hypercalls.
fn odd_access(case: &str, block: u64) {
    let page = HYPERCALL_PAGE;
    // SAFETY (all arms): deliberately broken accesses to addresses with no
    // RAM behind them; the monitor must stop the instance, so nothing the
    // compiler relies on is changed.
    unsafe {
        match case {
            "load" => {
                let _v: u64;
                asm!("mov {v}, qword ptr [{p}]", p = in(reg) page + 8, v = out(reg) _v, options(nostack));
            }
            "store32" => {
                asm!("mov dword ptr [{p}], {v:e}", p = in(reg) page + 8 * CLOCK, v = in(reg) block, options(nostack));
            }
            "store8" => {
                asm!("mov byte ptr [{p}], {v:l}", p = in(reg) page + 8 * CLOCK, v = in(reg) block, options(nostack));
            }
            "store-misaligned" => {
                asm!("mov qword ptr [{p}], {v}", p = in(reg) page + 8 * CLOCK + 4, v = in(reg) block, options(nostack));
            }
            "store-next-page" => {
                asm!("mov qword ptr [{p}], {v}", p = in(reg) page + PAGE_SIZE, v = in(reg) block, options(nostack));
            }
            _ => {
                // 2 GiB: below the 3 GiB RAM limit, far above this guest's RAM.
                asm!("mov qword ptr [{p}], {v}", p = in(reg) 0x8000_0000u64, v = in(reg) block, options(nostack));
            }
        }
    }
}
