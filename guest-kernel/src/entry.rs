//! From the first instruction to the app's `main`, and back out through
//! [`exit`].
//!
//! The monitor starts the vCPU at `_start` with `RDI` = the address of the
//! read-only [`BootInfo`] and `RSP` = `BootInfo.stack_top`, 16-byte aligned
//! (ABI.md section 2). `_start` reaches Rust with a `call`, so the callee
//! sees the stack alignment the System V ABI promises (`RSP + 8` a multiple
//! of 16).

use hypercall_abi::{BootInfo, ABI_VERSION, BOOTINFO_MAGIC, CMDLINE_MAX};
use spin::Once;

use crate::args::Args;

#[cfg(target_os = "none")]
core::arch::global_asm!(
    ".pushsection .text._start, \"ax\", @progbits",
    ".globl _start",
    ".type _start, @function",
    "_start:",
    // A zero frame pointer ends backtraces here.
    "    xor ebp, ebp",
    // RDI (the BootInfo address) is the first argument as it is. The app's
    // `entry!` defines `__flint_start`, which calls `start` below.
    "    call __flint_start",
    "    ud2",
    ".size _start, . - _start",
    ".popsection",
);

/// The boot information, set once at entry.
static BOOT_INFO: Once<&'static BootInfo> = Once::new();
/// The command line, set once at entry.
static CMDLINE: Once<&'static str> = Once::new();

/// The [`BootInfo`] the monitor gave this instance.
///
/// # Panics
///
/// Outside a Flint VM (there is none).
pub fn boot_info() -> &'static BootInfo {
    match BOOT_INFO.get() {
        Some(info) => info,
        None => panic!("{}", crate::HOST_ONLY_MESSAGE),
    }
}

/// The rest of the boot after `_start`: check `BootInfo`, set up the heap
/// and logger, run `main`, exit with its status. Called by [`crate::entry!`].
pub fn start(boot_info: u64, main: fn(Args) -> i32) -> ! {
    let info = BOOT_INFO.call_once(|| boot_info_at(boot_info));
    check(info);
    crate::time::init(info);
    crate::generation::init(info);
    crate::heap::init(info);
    crate::logger::init();
    let args = Args::new(CMDLINE.call_once(|| cmdline(info)));
    exit(main(args))
}

/// Flushes the console and stops the instance with status `code & 0xff`.
pub fn exit(code: i32) -> ! {
    crate::console::flush();
    crate::hypercall::exit(code as u64)
}

/// Turns the address in `RDI` into a reference.
fn boot_info_at(addr: u64) -> &'static BootInfo {
    let ptr = addr as *const BootInfo;
    assert!(
        !ptr.is_null() && ptr.is_aligned(),
        "BootInfo address {addr:#x} is not valid"
    );
    // SAFETY: the monitor passes in RDI the address of a BootInfo it wrote
    // (ABI.md section 2), identity-mapped, read-only and alive for the whole
    // life of the instance; it is non-null and aligned (checked above).
    unsafe { &*ptr }
}

/// Refuses to run on a monitor that speaks another ABI.
fn check(info: &BootInfo) {
    assert!(
        info.magic == BOOTINFO_MAGIC,
        "BootInfo magic is {:#x}, expected {BOOTINFO_MAGIC:#x}",
        info.magic
    );
    assert!(
        info.abi_version == ABI_VERSION,
        "the monitor speaks Flint ABI {}, this image ABI {ABI_VERSION}",
        info.abi_version
    );
    assert!(
        info.size as usize >= core::mem::size_of::<BootInfo>(),
        "BootInfo is {} bytes, expected at least {}",
        info.size,
        core::mem::size_of::<BootInfo>()
    );
}

/// The app's arguments, as the monitor joined them (ABI.md section 3).
fn cmdline(info: &BootInfo) -> &'static str {
    let len = info.cmdline_len;
    if info.cmdline == 0 || len == 0 {
        return "";
    }
    assert!(
        len <= CMDLINE_MAX,
        "command line is {len} bytes, at most {CMDLINE_MAX} allowed"
    );
    // SAFETY: the monitor maps the command line read-only at `cmdline` for
    // `cmdline_len` (at most 4096) bytes and never changes it while the
    // instance runs (ABI.md sections 2 and 3).
    let bytes = unsafe { core::slice::from_raw_parts(info.cmdline as *const u8, len as usize) };
    match core::str::from_utf8(bytes) {
        Ok(line) => line,
        Err(e) => panic!("the command line is not UTF-8: {e}"),
    }
}
