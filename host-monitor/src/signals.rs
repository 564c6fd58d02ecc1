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

use crate::snapshot::Recorder;
use crate::stats::Stats;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::time::{Duration, Instant};

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

    /// On the vCPU thread: if the owner paused the instance, blocks until
    /// it is resumed or stopped (see [`StopHandle::pause`]); true if it
    /// was paused. Never blocks for `flint run` (no one pauses it).
    pub fn park_if_paused(&self) -> bool {
        match self {
            StopSource::Process => false,
            StopSource::Handle(handle) => handle.park_if_paused(),
        }
    }

    /// On the vCPU thread after KVM_RUN returned EINTR: clears a kick
    /// left over from a pause that was resumed before the thread parked,
    /// so the next KVM_RUN enters the guest again.
    pub fn clear_stale_kick(&self) {
        if let StopSource::Handle(handle) = self {
            handle.clear_stale_kick();
        }
    }

    /// On the vCPU thread: hands the instance's counters to whoever asked
    /// for them ([`StopHandle::publish_stats`]); `stats` is only called
    /// then, so an instance nobody watches pays one atomic load.
    pub fn publish(&self, stats: impl FnOnce() -> Stats) {
        if let StopSource::Handle(handle) = self {
            if handle.publishing.load(Ordering::Relaxed) {
                handle.set_live(stats());
            }
        }
    }

    /// On the vCPU thread at a POLL exit: the snapshot its owner asked
    /// for ([`StopHandle::request_snapshot`]), if any.
    pub fn take_snapshot_request(&self) -> Option<Recorder> {
        match self {
            StopSource::Process => None,
            StopSource::Handle(handle) => handle.take_snapshot_request(),
        }
    }

    /// True if a snapshot was asked for and not yet taken up.
    pub fn snapshot_requested(&self) -> bool {
        match self {
            StopSource::Process => false,
            StopSource::Handle(handle) => handle.snapshot_requested.load(Ordering::SeqCst),
        }
    }
}

/// Empties the wake eventfd `fd` after a wake that was not a stop (a
/// pause or a snapshot request), so that later waits sleep again.
pub fn drain_wake(fd: RawFd) {
    if fd < 0 {
        return;
    }
    let mut count = [0u8; 8];
    // SAFETY: an 8-byte read into a local array from the poller's
    // non-blocking eventfd, which is open while the instance runs.
    unsafe { libc::read(fd, count.as_mut_ptr().cast(), count.len()) };
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
///
/// The same handle pauses and resumes the instance ([`StopHandle::pause`]:
/// the vCPU thread leaves KVM_RUN and blocks until [`StopHandle::resume`],
/// so no guest instruction runs meanwhile), carries its counters out while
/// it runs ([`StopHandle::publish_stats`]) and asks for a snapshot
/// ([`StopHandle::request_snapshot`]): what an owner such as `flint
/// daemon` needs to manage an instance running on another thread.
#[derive(Default)]
pub struct StopHandle {
    signo: AtomicI32,
    paused: AtomicBool,
    publishing: AtomicBool,
    snapshot_requested: AtomicBool,
    target: Mutex<Target>,
    /// Signalled when the vCPU thread parks, unparks or detaches, and on
    /// resume and stop (for a parked thread).
    changed: Condvar,
    live: Mutex<Option<Stats>>,
    snapshot: Mutex<Option<Recorder>>,
}

#[derive(Default)]
struct Target {
    immediate_exit: usize,
    wake_fd: Option<RawFd>,
    thread: Option<libc::pthread_t>,
    /// The vCPU thread is blocked in [`StopHandle::park_if_paused`].
    parked: bool,
    /// The run this handle was attached to has ended.
    ended: bool,
}

/// What [`StopHandle::pause`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paused {
    /// The vCPU thread is parked: no guest instruction runs until resume.
    Parked,
    /// The instance's run has ended (or it was stopped): nothing to pause.
    Ended,
    /// The vCPU thread did not park in time (it is busy in the host, e.g.
    /// writing a snapshot); it still parks at its next chance.
    NotYet,
}

/// The signal that kicks a vCPU thread out of KVM_RUN on a stop (seccomp
/// filters allow raising it).
pub(crate) fn kick_signal() -> libc::c_int {
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
        let target = self.lock();
        kick(&target);
        // A parked vCPU thread wakes up to stop.
        self.changed.notify_all();
    }

    /// Pauses the instance: kicks its vCPU thread out of KVM_RUN (or out
    /// of its POLL sleep) and waits up to `wait` until it has parked, off
    /// the CPU, in [`StopHandle::park_if_paused`]. It stays there until
    /// [`StopHandle::resume`] or [`StopHandle::stop`]; the guest's clocks
    /// go on meanwhile (it sees the pause as time passing).
    pub fn pause(&self, wait: Duration) -> Paused {
        self.paused.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + wait;
        let mut target = self.lock();
        kick(&target);
        loop {
            if target.ended || self.requested().is_some() {
                return Paused::Ended;
            }
            if target.parked {
                return Paused::Parked;
            }
            let now = Instant::now();
            if now >= deadline {
                return Paused::NotYet;
            }
            target = self
                .changed
                .wait_timeout(target, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Lets a paused instance run on; nothing if it is not paused.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        let _target = self.lock();
        self.changed.notify_all();
    }

    /// True between [`StopHandle::pause`] and [`StopHandle::resume`].
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Makes the vCPU thread hand out its counters at every VM exit from
    /// now on, for [`StopHandle::live_stats`].
    pub fn publish_stats(&self) {
        self.publishing.store(true, Ordering::Relaxed);
    }

    /// The counters the vCPU thread handed out last (after its latest VM
    /// exit), if [`StopHandle::publish_stats`] was called and it has run.
    pub fn live_stats(&self) -> Option<Stats> {
        *self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_live(&self, stats: Stats) {
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = Some(stats);
    }

    /// Asks for a snapshot the way `--snapshot-on-idle` takes one: at the
    /// instance's next POLL that blocks. An instance asleep in POLL is
    /// woken for it (its POLL returns with nothing ready and the guest
    /// asks again). Replaces a request not yet taken up.
    pub fn request_snapshot(&self, recorder: Recorder) {
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Some(recorder);
        self.snapshot_requested.store(true, Ordering::SeqCst);
        let target = self.lock();
        if let Some(fd) = target.wake_fd {
            wake(fd);
        }
    }

    fn take_snapshot_request(&self) -> Option<Recorder> {
        if !self.snapshot_requested.load(Ordering::SeqCst) {
            return None;
        }
        self.snapshot_requested.store(false, Ordering::SeqCst);
        self.snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// On the vCPU thread: blocks while the instance is paused and no stop
    /// has come; true if it blocked. Nothing runs the guest meanwhile.
    fn park_if_paused(&self) -> bool {
        if !self.paused.load(Ordering::SeqCst) {
            return false;
        }
        let mut target = self.lock();
        target.parked = true;
        self.changed.notify_all();
        while self.paused.load(Ordering::SeqCst) && self.requested().is_none() {
            target = self.changed.wait(target).unwrap_or_else(|e| e.into_inner());
        }
        target.parked = false;
        if self.requested().is_none() && target.immediate_exit != 0 {
            // The pause's kick set it; without this every KVM_RUN would
            // return at once. A stop or pause after this point sets it
            // again under the lock, so none is lost.
            // SAFETY: as in `kick`: the kvm_run page stays mapped until
            // `detach`, which needs the lock we hold.
            unsafe { (target.immediate_exit as *mut u8).write_volatile(0) };
        }
        self.changed.notify_all();
        true
    }

    fn clear_stale_kick(&self) {
        let target = self.lock();
        if self.requested().is_none()
            && !self.paused.load(Ordering::SeqCst)
            && target.immediate_exit != 0
        {
            // SAFETY: as in `kick`: the kvm_run page stays mapped until
            // `detach`, which needs the lock we hold.
            unsafe { (target.immediate_exit as *mut u8).write_volatile(0) };
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Target> {
        self.target.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stop asked for, if any.
    pub fn requested(&self) -> Option<libc::c_int> {
        match self.signo.load(Ordering::SeqCst) {
            0 => None,
            signo => Some(signo),
        }
    }

    fn attach(&self, immediate_exit: *mut u8, wake_fd: RawFd) {
        let mut target = self.lock();
        target.ended = false;
        target.immediate_exit = immediate_exit as usize;
        target.wake_fd = (wake_fd >= 0).then_some(wake_fd);
        // SAFETY: pthread_self has no preconditions.
        target.thread = Some(unsafe { libc::pthread_self() });
        if self.requested().is_some() {
            kick(&target);
        }
    }

    fn set_wake_fd(&self, wake_fd: RawFd) {
        let mut target = self.lock();
        target.wake_fd = (wake_fd >= 0).then_some(wake_fd);
        if self.requested().is_some() {
            kick(&target);
        }
    }

    fn detach(&self) {
        *self.lock() = Target {
            ended: true,
            ..Target::default()
        };
        self.changed.notify_all();
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
        wake(fd);
    }
    if let Some(thread) = target.thread {
        // SAFETY: the thread is attached, so alive: it detaches (under the
        // lock we hold) before it ends.
        unsafe { libc::pthread_kill(thread, kick_signal()) };
    }
}

/// Sets the wake eventfd `fd`, ending the POLL wait it belongs to. The
/// caller holds the target's lock.
fn wake(fd: RawFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: 8 bytes from a local array to an eventfd that stays open
    // until `detach` or `set_wake_fd` replaces it, both under the lock.
    unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
}

#[cfg(test)]
mod pause_tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// A stand-in vCPU thread: "runs" (counts) unless parked, until
    /// stopped; `exit` plays the kvm_run immediate_exit byte.
    fn fake_vcpu(
        handle: Arc<StopHandle>,
        exit: Arc<AtomicU64>,
        runs: Arc<AtomicU64>,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let source = StopSource::Handle(handle);
            let byte = exit.as_ptr().cast::<u8>();
            let _attached = source.attach(byte, -1);
            while source.requested().is_none() {
                if source.park_if_paused() {
                    continue;
                }
                runs.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    }

    #[test]
    fn a_paused_thread_makes_no_progress_until_resumed() {
        let handle = StopHandle::new().expect("handle");
        let exit = Arc::new(AtomicU64::new(0));
        let runs = Arc::new(AtomicU64::new(0));
        let thread = fake_vcpu(handle.clone(), exit.clone(), runs.clone());
        while runs.load(Ordering::SeqCst) < 3 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(handle.pause(Duration::from_secs(10)), Paused::Parked);
        // The kick asked KVM_RUN to return at once.
        assert_eq!(exit.load(Ordering::SeqCst) & 0xff, 1);
        let before = runs.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(runs.load(Ordering::SeqCst), before, "progress while paused");
        handle.resume();
        while runs.load(Ordering::SeqCst) == before {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Unparking cleared the kick, so the next KVM_RUN enters the guest.
        assert_eq!(exit.load(Ordering::SeqCst) & 0xff, 0);
        // A stop reaches a parked thread.
        assert_eq!(handle.pause(Duration::from_secs(10)), Paused::Parked);
        handle.stop(libc::SIGTERM);
        thread.join().expect("the fake vCPU thread");
        assert_eq!(handle.pause(Duration::from_secs(1)), Paused::Ended);
    }
}
