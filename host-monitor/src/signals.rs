//! SIGTERM and SIGINT: stop the instance cleanly wherever the vCPU thread
//! is (running the guest, or asleep in POLL), then die by the same signal
//! so whoever waits for `flint` sees it.
//!
//! The handler only does async-signal-safe things: it records the signal,
//! sets `kvm_run.immediate_exit` (so a KVM_RUN entered after it returns at
//! once with EINTR, closing the race with the check before KVM_RUN), and
//! writes the poller's eventfd (so an epoll wait ends). The signal itself
//! interrupts a KVM_RUN in progress, because the other threads block it and
//! the kernel therefore delivers it to the vCPU thread.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicPtr, Ordering};

/// The signals that stop an instance.
pub const STOP_SIGNALS: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGINT];

static STOP: AtomicI32 = AtomicI32::new(0);
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
static IMMEDIATE_EXIT: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());

extern "C" fn on_stop(signo: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let _ = STOP.compare_exchange(0, signo, Ordering::SeqCst, Ordering::SeqCst);
    let exit = IMMEDIATE_EXIT.load(Ordering::SeqCst);
    if !exit.is_null() {
        // SAFETY: `attach` stored a pointer into the vCPU's kvm_run page,
        // which stays mapped until the matching `Attached` is dropped, and
        // that clears the pointer first.
        unsafe { exit.write_volatile(1) };
    }
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one = 1u64.to_ne_bytes();
        // SAFETY: write(2) is async-signal-safe; 8 bytes from a local array.
        unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
    }
}

/// Makes SIGTERM and SIGINT stop the instance instead of killing the
/// process outright. Call it from the vCPU thread before the run. A signal
/// the parent set to be ignored stays ignored, as for any program (`nohup`,
/// or SIGINT for a non-interactive shell's background jobs).
pub fn install() -> io::Result<()> {
    for signo in STOP_SIGNALS {
        if ignored(signo) {
            continue;
        }
        vmm_sys_util::signal::register_signal_handler(signo, on_stop)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
    }
    Ok(())
}

/// True if `signo`'s disposition is SIG_IGN.
fn ignored(signo: libc::c_int) -> bool {
    // SAFETY: sigaction with a null new action only reads the current one
    // into `old`, a zeroed plain-data struct.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signo, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Runs `spawn` with the stop signals blocked, so that the thread it starts
/// inherits the block and the kernel hands those signals to the vCPU
/// thread instead.
pub fn spawn_blocked<T>(spawn: impl FnOnce() -> T) -> T {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use;
    // pthread_sigmask only changes this thread's mask, and the old mask is
    // put back before returning.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signo in STOP_SIGNALS {
            libc::sigaddset(&mut set, signo);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        let result = spawn();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        result
    }
}

/// The stop signal received, if any.
pub fn stop_requested() -> Option<libc::c_int> {
    match STOP.load(Ordering::SeqCst) {
        0 => None,
        signo => Some(signo),
    }
}

/// Points the handler at the running vCPU while this is alive.
pub struct Attached(());

/// Lets the handler kick `immediate_exit` (a byte of the vCPU's kvm_run
/// page) and the poller's `wake_fd` (-1: none yet) until the result is
/// dropped. If a stop signal came before, both are set at once.
pub fn attach(immediate_exit: *mut u8, wake_fd: RawFd) -> Attached {
    IMMEDIATE_EXIT.store(immediate_exit, Ordering::SeqCst);
    WAKE_FD.store(wake_fd, Ordering::SeqCst);
    if let Some(signo) = stop_requested() {
        on_stop(signo, std::ptr::null_mut(), std::ptr::null_mut());
    }
    Attached(())
}

/// Points the handler at another wake eventfd (a poller made later).
pub fn set_wake_fd(wake_fd: RawFd) {
    WAKE_FD.store(wake_fd, Ordering::SeqCst);
    if let Some(signo) = stop_requested() {
        on_stop(signo, std::ptr::null_mut(), std::ptr::null_mut());
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        IMMEDIATE_EXIT.store(std::ptr::null_mut(), Ordering::SeqCst);
        WAKE_FD.store(-1, Ordering::SeqCst);
    }
}

/// Ends the process by `signo` with its default action, as if the monitor
/// had never caught it; exits with 128 + `signo` should that not kill.
pub fn die_by(signo: libc::c_int) -> ! {
    // SAFETY: resets the disposition to default, unblocks the signal in this
    // thread and raises it; all with valid arguments.
    unsafe {
        libc::signal(signo, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signo);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signo);
    }
    std::process::exit(128 + signo)
}
