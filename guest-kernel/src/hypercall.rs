//! Hypercalls (ABI.md section 4): the only assembly that talks to the
//! monitor.
//!
//! A hypercall is one 8-byte store of the argument block's address to the
//! hypercall page at `HYPERCALL_PAGE + 8 * NR`. No RAM is behind that page,
//! so the store exits to the monitor, which reads the block, writes its
//! output fields and resumes the guest after the store. The typed wrappers
//! build the block on the stack, which is always guest-writable RAM.

use hypercall_abi::{
    ClockBlock, ConsoleWriteBlock, ExitBlock, Hypercall, NetReadBlock, NetWriteBlock, PanicBlock,
    PollBlock, RandomBlock, PANIC_MSG_MAX,
};

/// Makes hypercall `nr` with the argument block at guest address `block`:
/// one `mov qword ptr [page + 8*nr], rax` with `rax = block`.
///
/// # Safety
///
/// `block` must point to an argument block of the layout hypercall `nr`
/// expects, valid for the monitor to read and write its output fields, and
/// every buffer it names must be valid in the way ABI.md section 4 says. A
/// broken block or an unannounced `nr` stops the instance (status 139).
#[inline(always)]
pub unsafe fn raw(nr: u64, block: u64) {
    #[cfg(target_os = "none")]
    // SAFETY: the store goes to the hypercall page, which has no RAM behind
    // it, so it only exits to the monitor; the caller vouches for the block.
    // No `nomem`: the monitor reads and writes the block, so the compiler
    // must finish every store to it before this and reload it after.
    unsafe {
        core::arch::asm!(
            "mov qword ptr [{page} + 8*{nr}], rax",
            page = in(reg) hypercall_abi::HYPERCALL_PAGE,
            nr = in(reg) nr,
            in("rax") block,
            options(nostack, preserves_flags),
        );
    }
    #[cfg(not(target_os = "none"))]
    {
        let _ = (nr, block);
        panic!("{}", crate::HOST_ONLY_MESSAGE);
    }
}

/// Makes `call` with `block` and returns the block as the monitor left it.
fn call<T>(call: Hypercall, mut block: T) -> T {
    // SAFETY: every caller passes the block type ABI.md gives for `call`,
    // built from live Rust slices; it is on our stack, so 8-byte aligned
    // (every block is made of u64/i64) and writable.
    unsafe { raw(call.nr(), &mut block as *mut T as u64) };
    block
}

/// CONSOLE_WRITE: writes `bytes` to the console (`flint run`'s stdout).
/// Returns how many bytes the monitor took (at least 1 unless `bytes` is
/// empty; write the rest again) or a negated errno.
pub fn console_write(bytes: &[u8]) -> i64 {
    let block = ConsoleWriteBlock {
        buf: bytes.as_ptr() as u64,
        len: bytes.len() as u64,
        ret: 0,
    };
    call(Hypercall::ConsoleWrite, block).ret
}

/// EXIT: stops the instance with status `code & 0xff`. Does not flush the
/// console: [`crate::exit`] does.
pub fn exit(code: u64) -> ! {
    call(Hypercall::Exit, ExitBlock { code });
    unreachable_after_stop()
}

/// PANIC: stops the instance with status 101 and `msg` on the monitor's
/// stderr (at most 4096 bytes of it).
pub fn panic_msg(msg: &[u8]) -> ! {
    let len = msg.len().min(PANIC_MSG_MAX as usize);
    call(
        Hypercall::Panic,
        PanicBlock {
            msg: msg.as_ptr() as u64,
            len: len as u64,
        },
    );
    unreachable_after_stop()
}

/// CLOCK: the monitor's instance clock and the host's wall clock.
pub fn clock() -> ClockBlock {
    call(Hypercall::Clock, ClockBlock::default())
}

/// POLL: waits until a device is ready or the instance clock reaches
/// `deadline_ns` (`u64::MAX`: no deadline). The block's `ready` is the
/// ready set ([`hypercall_abi::POLL_READY_NET`]).
///
/// A snapshot is taken inside POLL, so a restored instance wakes up here:
/// on return the kernel checks `BootInfo.generation` and, if a restore
/// bumped it, takes in the new clock base ([`crate::generation`]).
pub fn poll(deadline_ns: u64) -> PollBlock {
    let before = crate::time::monotonic_ns();
    let block = call(
        Hypercall::Poll,
        PollBlock {
            deadline_ns,
            ready: 0,
            ret: 0,
        },
    );
    crate::generation::after_poll(before);
    block
}

/// NET_WRITE: sends one Ethernet frame. Returns its length or a negated
/// errno.
pub fn net_write(frame: &[u8]) -> i64 {
    let block = NetWriteBlock {
        buf: frame.as_ptr() as u64,
        len: frame.len() as u64,
        ret: 0,
    };
    call(Hypercall::NetWrite, block).ret
}

/// NET_READ: takes one waiting frame into `buf`. Returns `(ret, len)`:
/// `ret` is 0 or a negated errno, `len` the frame's size.
pub fn net_read(buf: &mut [u8]) -> (i64, u64) {
    let block = NetReadBlock {
        buf: buf.as_mut_ptr() as u64,
        cap: buf.len() as u64,
        len: 0,
        ret: 0,
    };
    let block = call(Hypercall::NetRead, block);
    (block.ret, block.len)
}

/// RANDOM: fills `buf` (at most 4096 bytes) with host entropy. Returns its
/// length or a negated errno.
pub fn random(buf: &mut [u8]) -> i64 {
    let block = RandomBlock {
        buf: buf.as_mut_ptr() as u64,
        len: buf.len() as u64,
        ret: 0,
    };
    call(Hypercall::Random, block).ret
}

/// After EXIT or PANIC the monitor never resumes the guest; if one did, the
/// guest must not run on.
fn unreachable_after_stop() -> ! {
    loop {
        core::hint::spin_loop();
    }
}
