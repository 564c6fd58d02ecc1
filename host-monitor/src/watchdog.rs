//! `--timeout` for a guest that never makes a hypercall: a thread that, once
//! the time is up, keeps kicking the vCPU thread out of KVM_RUN with a signal
//! until it notices.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the kick repeats: a signal that lands just before KVM_RUN is
/// entered is lost, so one kick is not enough.
const KICK_INTERVAL: Duration = Duration::from_millis(5);

/// The signal the watchdog kicks the vCPU thread with.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn ignore_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Set when the time is up; the vCPU loop checks it around every KVM_RUN.
pub struct Watchdog {
    fired: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Arms a watchdog for the calling (vCPU) thread that fires at `at`.
    pub fn arm(at: Instant) -> std::io::Result<Watchdog> {
        static HANDLER: Once = Once::new();
        let mut registered = Ok(());
        HANDLER.call_once(|| {
            registered = vmm_sys_util::signal::register_signal_handler(kick_signal(), ignore_kick)
                .map_err(|e| std::io::Error::from_raw_os_error(e.errno()));
        });
        registered?;
        // SAFETY: pthread_self has no preconditions.
        let target = unsafe { libc::pthread_self() };
        let fired = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (fired_w, stop_w) = (fired.clone(), stop.clone());
        // Stop signals must reach the vCPU thread, not this one.
        let thread = crate::signals::spawn_blocked(|| {
            std::thread::Builder::new()
                .name("flint-watchdog".into())
                .spawn(move || {
                    crate::seccomp::apply_watchdog();
                    while !stop_w.load(Ordering::Acquire) {
                        let now = Instant::now();
                        if now < at {
                            std::thread::park_timeout(at - now);
                            continue;
                        }
                        fired_w.store(true, Ordering::Release);
                        // SAFETY: `target` is the vCPU thread, which outlives this
                        // thread: the Watchdog's owner joins it on drop before
                        // returning from the vCPU loop's scope.
                        unsafe { libc::pthread_kill(target, kick_signal()) };
                        std::thread::park_timeout(KICK_INTERVAL);
                    }
                })
        })?;
        Ok(Watchdog {
            fired,
            stop,
            thread: Some(thread),
        })
    }

    /// True once the time is up.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}
