//! Error paths of ABI.md that the older modes leave out, for
//! `tests/abi_errors.rs`:
//!
//! - `edge CASE`: a CPU exception or privileged instruction of a kind
//!   [`crate::faults`] does not make, an access the hypercall page or the
//!   monitor's pages must refuse, or a bad buffer the monitor must answer
//!   with an errno. The guest prints `about to CASE` first. Fault cases
//!   must be stopped (if not, it prints `probe: survived CASE`, exits 3);
//!   errno cases print `CASE ret=N` and `probe: still running`, exit 0.
//! - `badblock NR WHERE`: hypercall `NR` (1 to 8) with its argument block
//!   in a place that breaks the block rule (`rodata`, `unaligned`,
//!   `straddle-guard`); the monitor must stop the instance (139).
//! - `poll-deadline N`: one POLL with deadline `N` (decimal, or `now+N`):
//!   prints `poll ret=R ready=B`, `probe: still running`, exits 0.

use alloc::vec;
use core::arch::asm;
use core::hint::black_box;
use core::ptr;

use guest_kernel::{boot_info, hypercall, println};
use hypercall_abi::{
    ConsoleWriteBlock, Hypercall, NetReadBlock, NetWriteBlock, PanicBlock, RandomBlock,
    HYPERCALL_PAGE, PAGE_SIZE,
};

use crate::{boot_info_addr, rodata_addr, text_addr};

/// What `ret` holds before the call: any answer the monitor writes differs.
const UNTOUCHED: i64 = 0x5a5a;

/// Hypercall `call` with `block` (on our stack); the block as the monitor
/// left it.
fn call<T: Copy>(call: Hypercall, mut block: T) -> T {
    // SAFETY: the block is on our stack (8-byte aligned, writable) with the
    // layout `call` expects; only its buffer may be bad, which ABI.md
    // answers with an errno, never with a write to it.
    unsafe { hypercall::raw(call.nr(), &mut block as *mut T as u64) };
    // SAFETY: `block` is a live local; the volatile read sees what the
    // monitor wrote behind the compiler's back.
    unsafe { ptr::read_volatile(&block) }
}

fn random(buf: u64, len: u64) -> i64 {
    let block = RandomBlock {
        buf,
        len,
        ret: UNTOUCHED,
    };
    call(Hypercall::Random, block).ret
}

fn console(buf: u64, len: u64) -> i64 {
    let block = ConsoleWriteBlock {
        buf,
        len,
        ret: UNTOUCHED,
    };
    call(Hypercall::ConsoleWrite, block).ret
}

fn net_write(buf: u64, len: u64) -> i64 {
    let block = NetWriteBlock {
        buf,
        len,
        ret: UNTOUCHED,
    };
    call(Hypercall::NetWrite, block).ret
}

fn net_read(buf: u64, cap: u64) -> i64 {
    let block = NetReadBlock {
        buf,
        cap,
        len: 77,
        ret: UNTOUCHED,
    };
    call(Hypercall::NetRead, block).ret
}

fn panic_raw(msg: u64, len: u64) -> ! {
    call(Hypercall::Panic, PanicBlock { msg, len });
    println!("probe: PANIC returned");
    guest_kernel::exit(3)
}

/// A page below 1 MiB that is neither BootInfo's nor the command line's:
/// the monitor's (GDT or page tables), never mapped for the guest.
fn monitor_page() -> u64 {
    let info = boot_info();
    let own = [boot_info_addr() / PAGE_SIZE, info.cmdline / PAGE_SIZE];
    (1..256).find(|p| !own.contains(p)).unwrap_or(1) * PAGE_SIZE
}

pub fn run(case: &str) -> i32 {
    let info = boot_info();
    let mem = info.mem_size;
    let heap = info.heap_start;
    println!("about to {case}");
    let errno_case = |ret: i64| {
        println!("{case} ret={ret}");
        println!("probe: still running");
        0
    };
    match case {
        // Bad buffers: an errno, and the guest goes on.
        "random-page0" => return errno_case(random(0x10, 16)),
        "random-beyond-ram" => return errno_case(random(mem + PAGE_SIZE, 16)),
        "random-overflow" => return errno_case(random(u64::MAX - 7, 16)),
        "random-huge-len" => return errno_case(random(heap, u64::MAX)),
        "random-hypercall-page" => return errno_case(random(HYPERCALL_PAGE, 8)),
        "random-monitor-page" => return errno_case(random(monitor_page(), 16)),
        // EFAULT is checked before EINVAL.
        "random-too-long-badbuf" => return errno_case(random(0x10, 5000)),
        "console-overflow-small" => return errno_case(console(u64::MAX - 1, 4)),
        "console-stack-top" => {
            // The last 8 bytes of RAM are the stack's top: readable.
            return errno_case(console(mem - 8, 8));
        }
        "net-write-overflow" => return errno_case(net_write(u64::MAX - 7, 64)),
        // EFAULT before EINVAL and before EMSGSIZE.
        "net-write-badbuf-short" => return errno_case(net_write(0x10, 10)),
        "net-write-badbuf-long" => return errno_case(net_write(0x10, 9000)),
        "net-write-huge-len" => return errno_case(net_write(heap, u64::MAX)),
        "net-write-from-text" => {
            // Text is readable: a frame may come from it (ABI.md section 4).
            return errno_case(net_write(text_addr(), 64));
        }
        // The shortest and the longest frame NET_WRITE takes (a header
        // only; MTU + 14): both sent, whatever the gateway makes of them.
        "net-write-14" | "net-write-max" => {
            let len = match case {
                "net-write-14" => 14,
                _ => u64::from(info.net.mtu) + 14,
            };
            let frame = vec![0u8; len as usize];
            return errno_case(net_write(frame.as_ptr() as u64, len));
        }
        "net-read-text" => return errno_case(net_read(text_addr(), 1514)),
        "net-read-rodata" => return errno_case(net_read(rodata_addr(), 64)),
        "net-read-bootinfo" => return errno_case(net_read(boot_info_addr(), 64)),
        "net-read-overflow" => return errno_case(net_read(u64::MAX - 7, 1514)),
        "net-read-huge-cap" => return errno_case(net_read(heap, u64::MAX)),
        // A length-0 buffer is never checked; nothing waits: EAGAIN.
        "net-read-cap0" => return errno_case(net_read(0x10, 0)),
        // PANIC: status 101 whatever the message pointer.
        "panic-overflow" => panic_raw(u64::MAX - 7, 16),
        "panic-guard" => panic_raw(info.heap_end, 16),
        "panic-monitor-page" => panic_raw(monitor_page(), 16),
        "panic-huge-len" => {
            // Only the first 4096 bytes are read, so u64::MAX is fine.
            let msg = vec![b'm'; 4096];
            panic_raw(black_box(msg.as_ptr() as u64), u64::MAX)
        }
        _ => {}
    }
    // SAFETY (all arms): each deliberately breaks ABI.md section 2 or 4 and
    // must stop the instance; if the monitor let it go on, the asm changes
    // nothing the compiler relies on beyond its declared clobbers.
    unsafe {
        match case {
            "div0" => {
                asm!("xor ecx, ecx", "div rcx", inout("rax") 1u64 => _, inout("rdx") 0u64 => _, out("rcx") _, options(nostack));
            }
            "int80" => asm!("int 0x80", options(nostack)),
            "int1" => asm!(".byte 0xf1", options(nostack)),
            "into" => asm!(".byte 0xce", options(nostack)),
            "sysenter" => asm!("sysenter", options(nostack)),
            "cli" => asm!("cli", options(nostack)),
            "sti" => asm!("sti", options(nostack)),
            "port-in" => asm!("in al, 0x80", out("al") _, options(nostack)),
            "port-out" => asm!("out 0x80, al", in("al") 0u8, options(nostack)),
            "port-in-dx" => {
                asm!("in eax, dx", in("dx") 0xcf8u16, out("eax") _, options(nostack))
            }
            "raise-iopl" => {
                // POPF at CPL 3 cannot raise IOPL: port I/O still faults.
                asm!("pushfq", "or qword ptr [rsp], 0x3000", "popfq", "out 0x80, al", in("al") 0u8);
            }
            "rdmsr" => {
                asm!("rdmsr", in("ecx") 0xc000_0082u32, out("eax") _, out("edx") _, options(nostack))
            }
            "wrmsr" => {
                asm!("wrmsr", in("ecx") 0xc000_0082u32, in("eax") 0x1000u32, in("edx") 0u32, options(nostack))
            }
            "read-cr3" => asm!("mov {r}, cr3", r = out(reg) _, options(nostack)),
            "write-cr0" => asm!("mov cr0, {r}", r = in(reg) 0x8000_0011u64, options(nostack)),
            "lidt" => {
                let desc = [0u64; 2];
                asm!("lidt [{d}]", d = in(reg) desc.as_ptr(), options(nostack));
            }
            "invlpg" => asm!("invlpg [{a}]", a = in(reg) heap, options(nostack)),
            "wbinvd" => asm!("wbinvd", options(nostack)),
            "rdpmc" => asm!("rdpmc", in("ecx") 0u32, out("eax") _, out("edx") _, options(nostack)),
            "xsetbv" => {
                asm!("xsetbv", in("ecx") 0u32, in("eax") 7u32, in("edx") 0u32, options(nostack))
            }
            "load-tss-selector" => {
                // The TSS descriptor (index 3) is no data segment: #GP.
                asm!("mov ds, {s:x}", "mov ds, {u:x}", s = in(reg) 0x1bu16, u = in(reg) 0x0bu16, options(nostack));
            }
            "iret-to-cpl0" => {
                // An IRET frame asking for CPL 0 with the guest's own code
                // selector at RPL 0: #GP, never ring 0.
                asm!(
                    "mov rax, rsp",
                    "push 0x0b",
                    "push rax",
                    "pushfq",
                    "push 0x10",
                    "lea rax, [rip + 2f]",
                    "push rax",
                    "iretq",
                    "2:",
                    out("rax") _,
                );
            }
            "noncanonical-load" => {
                asm!("mov {v}, qword ptr [{a}]", a = in(reg) 0x8000_0000_0000_0000u64, v = out(reg) _, options(nostack, readonly));
            }
            "noncanonical-jump" => {
                asm!("jmp {a}", a = in(reg) 0x0000_8000_0000_0000u64, options(nostack));
            }
            "noncanonical-stack" => {
                asm!("mov {save}, rsp", "mov rsp, {a}", "push 1", "mov rsp, {save}", a = in(reg) 0x8000_0000_0000_0000u64, save = out(reg) _);
            }
            "exec-hypercall-page" => {
                asm!("call {t}", t = in(reg) HYPERCALL_PAGE, clobber_abi("C"));
            }
            "exec-bootinfo" => {
                asm!("call {t}", t = in(reg) boot_info_addr(), clobber_abi("C"));
            }
            "exec-null" => asm!("call {t}", t = in(reg) 0u64, clobber_abi("C")),
            "read-monitor-page" => {
                asm!("mov {v}, qword ptr [{a}]", a = in(reg) monitor_page(), v = out(reg) _, options(nostack, readonly));
            }
            "write-cmdline" => {
                asm!("mov byte ptr [{t}], 0", t = in(reg) info.cmdline, options(nostack));
            }
            "load-no-ram" => {
                asm!("mov {v}, qword ptr [{a}]", a = in(reg) 0x8000_0000u64, v = out(reg) _, options(nostack, readonly));
            }
            "store16" => {
                let at = HYPERCALL_PAGE + 8 * Hypercall::Clock.nr();
                asm!("mov word ptr [{p}], {v:x}", p = in(reg) at, v = in(reg) 0u16, options(nostack));
            }
            "store-sse16" => {
                // movups [rax], xmm0: one 16-byte store over CLOCK and POLL.
                let at = HYPERCALL_PAGE + 8 * Hypercall::Clock.nr();
                asm!(".byte 0x0f, 0x11, 0x00", in("rax") at, options(nostack));
            }
            "store-sse16-valid" => {
                // The same 16-byte store, its halves two valid blocks:
                // CLOCK's (low) and POLL's (high, deadline 0).
                let mut clock = [0u64; 2];
                let mut poll = [0u64, 7, 7];
                let halves = [&mut clock as *mut _ as u64, &mut poll as *mut _ as u64];
                let at = HYPERCALL_PAGE + 8 * Hypercall::Clock.nr();
                asm!(
                    ".byte 0x0f, 0x10, 0x01", // movups xmm0, [rcx]
                    ".byte 0x0f, 0x11, 0x00", // movups [rax], xmm0
                    in("rax") at,
                    in("rcx") halves.as_ptr(),
                    options(nostack),
                );
                let clock = ptr::read_volatile(&clock);
                let poll = ptr::read_volatile(&poll);
                println!(
                    "sse16 clock_ns={} poll_ready={} poll_ret={}",
                    clock[0], poll[1], poll[2]
                );
            }
            "xchg-hypercall-page" => {
                // A locked read-modify-write: a load as well as a store.
                let at = HYPERCALL_PAGE + 8 * Hypercall::Clock.nr();
                asm!("xchg qword ptr [{p}], {v}", p = in(reg) at, v = inout(reg) 0u64 => _, options(nostack));
            }
            "sse-exception" => {
                // MXCSR with every exception unmasked, then 0/0: #XM.
                let mxcsr = 0u32;
                asm!(
                    ".byte 0x0f, 0xae, 0x10", // ldmxcsr [rax]
                    ".byte 0x0f, 0x57, 0xc0", // xorps xmm0, xmm0
                    ".byte 0xf3, 0x0f, 0x5e, 0xc0", // divss xmm0, xmm0
                    in("rax") &mxcsr as *const u32,
                    options(nostack),
                );
            }
            "x87-exception" => {
                // x87 control word with every exception unmasked, 0/0,
                // then FWAIT delivers #MF.
                let cw = 0u16;
                asm!(
                    ".byte 0xdb, 0xe3", // fninit
                    ".byte 0xd9, 0x28", // fldcw [rax]
                    ".byte 0xd9, 0xee", // fldz
                    ".byte 0xd9, 0xee", // fldz
                    ".byte 0xde, 0xf9", // fdivp
                    ".byte 0x9b",       // fwait
                    in("rax") &cw as *const u16,
                    options(nostack),
                );
            }
            other => {
                println!("probe: unknown edge case {other:?}");
                return 2;
            }
        }
    }
    println!("probe: survived {case}");
    3
}

/// `badblock NR WHERE`.
pub fn bad_block(nr: &str, place: &str) -> i32 {
    let info = boot_info();
    let Some(call) = nr.parse().ok().and_then(Hypercall::from_nr) else {
        println!("probe: badblock needs a hypercall number 1 to 8, not {nr:?}");
        return 2;
    };
    let mut good = [0u64; 8];
    let good = &mut good as *mut [u64; 8] as u64;
    let block = match place {
        "rodata" => rodata_addr(),
        "unaligned" => good + 4,
        // 8 writable bytes at the heap's end, the rest in the guard page.
        "straddle-guard" => info.heap_end - 8,
        other => {
            println!("probe: unknown badblock place {other:?}");
            return 2;
        }
    };
    println!("about to badblock {} block={block:#x}", call.name());
    // SAFETY: deliberately broken: the block breaks ABI.md section 4's
    // block rule, so the monitor must stop the instance here, and it never
    // writes outside the guest's writable RAM.
    unsafe { hypercall::raw(call.nr(), block) };
    println!("probe: survived badblock");
    3
}

/// `poll-deadline N` or `poll-deadline now+N`.
pub fn poll_deadline(arg: &str) -> i32 {
    let deadline = match arg.strip_prefix("now+") {
        Some(delta) => hypercall::clock()
            .monotonic_ns
            .saturating_add(delta.parse().unwrap_or(0)),
        None => arg.parse().unwrap_or(0),
    };
    println!("about to poll {deadline}");
    let p = hypercall::poll(deadline);
    println!("poll ret={} ready={}", p.ret, p.ready);
    println!("probe: still running");
    0
}
