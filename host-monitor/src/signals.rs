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
use std::sync::{Arc, Mutex, Once};

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

/// How an instance learns it must stop, and how it is woken for that.
#[derive(Clone, Default)]
pub enum StopSource {
    /// The process-wide SIGTERM/SIGINT handler above (`flint run`: one
    /// instance per process).
    #[default]
    Process,
    /// A stop asked for by the code that owns the instance, e.g. a fleet
    /// worker stopping hundreds of instances, each on its own thread.
    Handle(Arc<StopHandle>),
}

impl StopSource {
    /// The stop signal received, if any.
    pub fn requested(&self) -> Option<libc::c_int> {
        match self {
            StopSource::Process => stop_requested(),
            StopSource::Handle(handle) => handle.requested(),
        }
    }

    /// Lets a stop kick the calling vCPU thread's `immediate_exit` and
    /// `wake_fd` (-1: none yet) until the result is dropped.
    pub fn attach(&self, immediate_exit: *mut u8, wake_fd: RawFd) -> StopAttached {
        match self {
            StopSource::Process => StopAttached::Process(attach(immediate_exit, wake_fd)),
            StopSource::Handle(handle) => {
                handle.attach(immediate_exit, wake_fd);
                StopAttached::Handle(handle.clone())
            }
        }
    }

    /// Points a stop at another wake eventfd (a poller made later).
    pub fn set_wake_fd(&self, wake_fd: RawFd) {
        match self {
            StopSource::Process => set_wake_fd(wake_fd),
            StopSource::Handle(handle) => handle.set_wake_fd(wake_fd),
        }
    }
}

/// Undoes [`StopSource::attach`] when dropped.
pub enum StopAttached {
    Process(Attached),
    Handle(Arc<StopHandle>),
}

impl Drop for StopAttached {
    fn drop(&mut self) {
        if let StopAttached::Handle(handle) = self {
            handle.detach();
        }
    }
}

/// A stop request for one instance, made from any thread.
///
/// Unlike the process-wide handler this runs in thread context, so it can
/// take a lock: the vCPU thread registers its `kvm_run.immediate_exit`
/// byte, its poller's wake eventfd and its thread id under the same lock
/// that [`StopHandle::stop`] holds while kicking them, so neither can be
/// gone (unmapped, closed and reused) while a stop writes to it.
#[derive(Default)]
pub struct StopHandle {
    signo: AtomicI32,
    target: Mutex<Target>,
}

#[derive(Default)]
struct Target {
    immediate_exit: usize,
    wake_fd: Option<RawFd>,
    thread: Option<libc::pthread_t>,
}

fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN() + 1
}

extern "C" fn ignore_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

impl StopHandle {
    /// A handle with no stop requested. The first one installs the no-op
    /// handler of the signal that kicks a vCPU thread out of KVM_RUN.
    pub fn new() -> io::Result<Arc<StopHandle>> {
        static HANDLER: Once = Once::new();
        let mut registered = Ok(());
        HANDLER.call_once(|| {
            registered = vmm_sys_util::signal::register_signal_handler(kick_signal(), ignore_kick)
                .map_err(|e| io::Error::from_raw_os_error(e.errno()));
        });
        registered?;
        Ok(Arc::new(StopHandle::default()))
    }

    /// Asks the instance to stop as if by `signo`: it leaves KVM_RUN or
    /// POLL soon and its run ends with `Outcome::Signalled(signo)`.
    pub fn stop(&self, signo: libc::c_int) {
        let _ = self
            .signo
            .compare_exchange(0, signo, Ordering::SeqCst, Ordering::SeqCst);
        let target = self.target.lock().unwrap_or_else(|e| e.into_inner());
        kick(&target);
    }

    /// The stop asked for, if any.
    pub fn requested(&self) -> Option<libc::c_int> {
        match self.signo.load(Ordering::SeqCst) {
            0 => None,
            signo => Some(signo),
        }
    }

    fn attach(&self, immediate_exit: *mut u8, wake_fd: RawFd) {
        let mut target = self.target.lock().unwrap_or_else(|e| e.into_inner());
        target.immediate_exit = immediate_exit as usize;
        target.wake_fd = (wake_fd >= 0).then_some(wake_fd);
        // SAFETY: pthread_self has no preconditions.
        target.thread = Some(unsafe { libc::pthread_self() });
        if self.requested().is_some() {
            kick(&target);
        }
    }

    fn set_wake_fd(&self, wake_fd: RawFd) {
        let mut target = self.target.lock().unwrap_or_else(|e| e.into_inner());
        target.wake_fd = (wake_fd >= 0).then_some(wake_fd);
        if self.requested().is_some() {
            kick(&target);
        }
    }

    fn detach(&self) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = Target::default();
    }
}

/// Sets `immediate_exit` (a KVM_RUN entered later returns at once), writes
/// the wake eventfd (a POLL wait ends) and signals the thread (a KVM_RUN in
/// progress returns EINTR). The caller holds the target's lock.
fn kick(target: &Target) {
    if target.immediate_exit != 0 {
        // SAFETY: `attach` stored a pointer into the vCPU's kvm_run page,
        // which stays mapped until `detach`, which needs the lock we hold.
        unsafe { (target.immediate_exit as *mut u8).write_volatile(1) };
    }
    if let Some(fd) = target.wake_fd {
        let one = 1u64.to_ne_bytes();
        // SAFETY: 8 bytes from a local array to an eventfd that stays open
        // until `detach` or `set_wake_fd` replaces it, both under the lock.
        unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
    }
    if let Some(thread) = target.thread {
        // SAFETY: the thread is attached, so alive: it detaches (under the
        // lock we hold) before it ends.
        unsafe { libc::pthread_kill(thread, kick_signal()) };
    }
}
