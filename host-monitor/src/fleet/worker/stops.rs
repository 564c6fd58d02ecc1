//! Stopping a worker: SIGTERM and SIGINT are waited for on a thread of
//! their own (blocked everywhere else), which stops every running instance
//! through its [`StopHandle`], and every instance registered later.

use crate::signals::{StopHandle, STOP_SIGNALS};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The stop handles of the running instances, and the worker-wide stop.
#[derive(Default)]
pub struct Stops {
    signo: AtomicI32,
    handles: Mutex<HashMap<u64, Arc<StopHandle>>>,
    /// Wakes restart back-offs when a stop comes.
    wake: Condvar,
}

impl Stops {
    /// The stop signal the worker got, if any.
    pub fn requested(&self) -> Option<i32> {
        match self.signo.load(Ordering::SeqCst) {
            0 => None,
            signo => Some(signo),
        }
    }

    /// Stops every instance, and every one registered later.
    pub fn stop_all(&self, signo: i32) {
        let _ = self
            .signo
            .compare_exchange(0, signo, Ordering::SeqCst, Ordering::SeqCst);
        let handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        for handle in handles.values() {
            handle.stop(signo);
        }
        self.wake.notify_all();
    }

    /// Lists `handle` as instance `id`'s until the result is dropped; stops
    /// it at once if the worker is already stopping.
    pub fn register(&self, id: u64, handle: Arc<StopHandle>) -> Registered<'_> {
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(signo) = self.requested() {
            handle.stop(signo);
        }
        handles.insert(id, handle);
        Registered { stops: self, id }
    }

    /// Sleeps for `how_long` unless a stop comes first; false if it did.
    pub fn sleep(&self, how_long: Duration) -> bool {
        let deadline = Instant::now() + how_long;
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        while self.requested().is_none() {
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            handles = match self.wake.wait_timeout(handles, deadline - now) {
                Ok((guard, _)) => guard,
                Err(e) => e.into_inner().0,
            };
        }
        false
    }
}

pub struct Registered<'s> {
    stops: &'s Stops,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut handles = self.stops.handles.lock().unwrap_or_else(|e| e.into_inner());
        handles.remove(&self.id);
    }
}

/// Blocks SIGTERM and SIGINT in this thread and so in every thread it
/// starts later, and waits for them on a thread of their own, which stops
/// every instance.
///
/// With `filter`, the thread confines itself with it as it starts (see
/// `seccomp::fleet::signals_filter`).
pub fn watch_stop_signals(
    stops: Arc<Stops>,
    filter: Option<seccompiler::BpfProgram>,
) -> std::io::Result<()> {
    // SAFETY: sigset_t is plain data set up by sigemptyset/sigaddset;
    // pthread_sigmask only changes this thread's mask.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signo in STOP_SIGNALS {
            libc::sigaddset(&mut set, signo);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::Builder::new()
        .name("flint-signals".into())
        .stack_size(64 << 10)
        .spawn(move || {
            if let Some(program) = &filter {
                if let Err(e) = crate::seccomp::apply(program) {
                    eprintln!("flint: fleet-worker: cannot filter the stop-signal thread: {e}");
                    std::process::exit(crate::outcome::STATUS_START_FAILED);
                }
            }
            loop {
                let mut signo = 0;
                // SAFETY: `set` is a valid signal set; `signo` a local int.
                if unsafe { libc::sigwait(&set, &mut signo) } == 0 {
                    stops.stop_all(signo);
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_stop_reaches_running_and_later_instances_and_ends_back_offs() {
        let stops = Stops::default();
        let running = StopHandle::new().expect("handle");
        let _registered = stops.register(1, running.clone());
        assert!(stops.sleep(Duration::from_millis(1)));
        stops.stop_all(libc::SIGTERM);
        assert_eq!(running.requested(), Some(libc::SIGTERM));
        let later = StopHandle::new().expect("handle");
        let _registered = stops.register(2, later.clone());
        assert_eq!(later.requested(), Some(libc::SIGTERM));
        assert!(!stops.sleep(Duration::from_secs(60)));
    }
}
