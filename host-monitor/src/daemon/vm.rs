//! One instance under the daemon: its own vCPU thread, which builds the VM
//! (so a create reports start errors at once), waits for `start`, applies
//! the vCPU seccomp filter and runs the guest. Everything the API reads
//! while it runs is in [`Shared`]; control goes through the instance's
//! [`StopHandle`] (stop, pause, resume, snapshot requests).

use super::console::ConsoleLog;
use crate::hypercall::Console;
use crate::image::Image;
use crate::instance::{Config, Instance, Launch};
use crate::limits::Limits;
use crate::outcome::Outcome;
use crate::seccomp::{self, VcpuPolicy};
use crate::signals::{self, StopHandle, StopSource};
use crate::snapshot::Snapshot;
use crate::stats::Stats;
use crate::timings::Timings;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

/// Stack of a vCPU thread, as for a fleet worker's: the deepest path (a
/// fault diagnosis reading symbols) needs a few tens of KiB.
const VCPU_STACK: usize = 256 << 10;

/// Where an instance is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The VM exists and has not run yet.
    Created,
    Running,
    /// Its vCPU is parked off the CPU: no guest instruction runs.
    Paused,
    /// It ended (exited, faulted, timed out or was stopped); its VM is
    /// gone, its console log and final metrics stay until it is deleted.
    Exited,
}

impl State {
    /// Holds a VM (and counts against the memory budget and cap).
    pub fn is_live(self) -> bool {
        self != State::Exited
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Paused => "paused",
            State::Exited => "exited",
        }
    }
}

/// What the API and the vCPU thread share about one instance.
pub struct Shared {
    pub console: Arc<ConsoleLog>,
    pub handle: Arc<StopHandle>,
    pub inner: Mutex<Live>,
}

/// The mutable part of [`Shared`].
pub struct Live {
    pub state: State,
    pub created_at: SystemTime,
    pub started: Option<(Instant, SystemTime)>,
    pub ended: Option<(Instant, SystemTime)>,
    /// From `start` to the first VM exit (the first hypercall).
    pub first_hypercall_us: Option<u64>,
    /// The vCPU thread's kernel id, for its CPU time.
    pub tid: Option<libc::pid_t>,
    /// CPU time of the vCPU thread when it ended.
    pub final_cpu_ns: Option<u64>,
    /// Guest RAM (host address, length) while the VM exists.
    pub ram: Option<(u64, u64)>,
    /// Pages of guest RAM resident when last measured (the vCPU thread's
    /// seccomp filter keeps it from measuring at its end).
    pub touched: u64,
    /// Counters at the end (while it runs: the handle's live ones).
    pub final_stats: Option<Stats>,
    pub status: Option<i32>,
    pub verdict: Option<String>,
}

/// What the vCPU thread is told after the VM is built.
pub enum Go {
    /// Run the guest.
    Start,
    /// Drop the VM without running it (delete or stop before start).
    Abort,
}

/// How to make the instance.
pub struct Spec {
    pub id: u64,
    pub image: Arc<Image>,
    pub snapshot: Option<Arc<Snapshot>>,
    pub config: Config,
    pub limits: Limits,
    pub seccomp: bool,
    pub console_capacity: usize,
}

/// A built instance's thread and the means to drive it.
pub struct VmThread {
    pub shared: Arc<Shared>,
    pub go: mpsc::Sender<Go>,
    pub thread: JoinHandle<()>,
}

/// Builds the VM on a new vCPU thread and waits until it is ready to run
/// (or could not be made: the error says why).
pub fn spawn(spec: Spec) -> Result<VmThread, String> {
    let handle = StopHandle::new().map_err(|e| format!("cannot set up its stop signal: {e}"))?;
    handle.publish_stats();
    let shared = Arc::new(Shared {
        console: ConsoleLog::new(spec.console_capacity),
        handle,
        inner: Mutex::new(Live {
            state: State::Created,
            created_at: SystemTime::now(),
            started: None,
            ended: None,
            first_hypercall_us: None,
            tid: None,
            final_cpu_ns: None,
            ram: None,
            touched: 0,
            final_stats: None,
            status: None,
            verdict: None,
        }),
    });
    let (go_tx, go_rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(), String>>(1);
    let thread_shared = shared.clone();
    // The stop signals stay blocked on the vCPU thread: the daemon's own
    // SIGTERM handler (tokio's) must not run on a filtered thread.
    let thread = signals::spawn_blocked(|| {
        std::thread::Builder::new()
            .name(format!("vcpu-{}", spec.id))
            .stack_size(VCPU_STACK)
            .spawn(move || vcpu_thread(spec, thread_shared, ready_tx, go_rx))
    })
    .map_err(|e| format!("cannot start its vCPU thread: {e}"))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(VmThread {
            shared,
            go: go_tx,
            thread,
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err("its vCPU thread died while building the VM".into())
        }
    }
}

fn vcpu_thread(
    spec: Spec,
    shared: Arc<Shared>,
    ready: mpsc::SyncSender<Result<(), String>>,
    go: mpsc::Receiver<Go>,
) {
    let first_shared = shared.clone();
    let launch = Launch {
        instance_id: Some(spec.id),
        console: Some(Console::new(shared.console.sink())),
        stop: StopSource::Handle(shared.handle.clone()),
        on_first_hypercall: Some(Box::new(move || {
            let mut live = lock(&first_shared);
            if let Some((at, _)) = live.started {
                live.first_hypercall_us = Some(at.elapsed().as_micros() as u64);
            }
        })),
        // POLL's wait set made now: its wake fd exists before the filter.
        idle_poller: true,
        restore: spec.snapshot.as_deref(),
        limits: spec.limits,
        ..Launch::default()
    };
    let mut instance = match Instance::start_with(
        &spec.image,
        &spec.config,
        launch,
        Timings::new(spec.config.timings),
    ) {
        Ok(instance) => instance,
        Err(e) => {
            let _ = ready.send(Err(format!("{}: {e}", spec.image.path().display())));
            return;
        }
    };
    {
        let mut live = lock(&shared);
        // SAFETY: gettid has no preconditions.
        live.tid = Some(unsafe { libc::gettid() });
        live.ram = Some(instance.guest_ram());
    }
    // Confined now, at create: the filter's cost (it is built for this
    // instance's fds) is paid before `start`, and a failure is the
    // create's error. From here the thread only waits and runs the guest.
    if spec.seccomp {
        if let Err(e) = confine(&instance) {
            let _ = ready.send(Err(format!("cannot confine its vCPU thread: {e}")));
            return;
        }
    }
    let _ = ready.send(Ok(()));
    let outcome = match go.recv() {
        Ok(Go::Start) => instance.run(),
        Ok(Go::Abort) | Err(_) => Outcome::Signalled(libc::SIGTERM),
    };
    let stats = instance.stats();
    let cpu_ns = thread_cpu_ns();
    if spec.config.timings {
        eprintln!("flint: daemon: instance {} timings:", spec.id);
        instance.timings().report();
    }
    {
        // Under the lock: the API measures `ram` only under it, so the
        // mapping is never measured after it is gone.
        let mut live = lock(&shared);
        live.ram = None;
        live.final_stats = Some(stats);
        live.final_cpu_ns = Some(cpu_ns);
    }
    drop(instance);
    let mut live = lock(&shared);
    live.state = State::Exited;
    live.ended = Some((Instant::now(), SystemTime::now()));
    live.status = Some(outcome.status());
    live.verdict = outcome.verdict();
}

/// Puts the calling (vCPU) thread under `flint run`'s vCPU filter, plus
/// writing snapshot files (POST /instances/ID/snapshot).
fn confine(instance: &Instance<'_>) -> Result<(), seccomp::SeccompError> {
    let policy = VcpuPolicy {
        snapshot: true,
        ..VcpuPolicy::default()
    };
    seccomp::confine_vcpu(instance, &policy)
}

/// CPU time the calling thread has used, in ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time of thread `tid` of this process, in ns (from schedstat).
pub fn cpu_ns_of(tid: libc::pid_t) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Pages of `len` bytes at host address `base` that are resident: the
/// guest memory the instance has touched.
pub fn resident_pages(base: u64, len: u64) -> u64 {
    let page = 4096u64;
    let pages = len.div_ceil(page) as usize;
    let mut vec = vec![0u8; pages];
    // SAFETY: mincore only reads the page tables of [base, base + len),
    // a mapping the caller holds (guest RAM, under the instance's lock),
    // and writes one byte per page into `vec`, which has that many.
    let rc = unsafe { libc::mincore(base as *mut libc::c_void, len as usize, vec.as_mut_ptr()) };
    if rc != 0 {
        return 0;
    }
    vec.iter().filter(|b| *b & 1 != 0).count() as u64
}

/// The instance's mutable state, whoever panicked while holding it.
pub fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Live> {
    shared.inner.lock().unwrap_or_else(|e| e.into_inner())
}
