//! `flint fleet-worker`: one process running `count` instances of one image,
//! each its own KVM VM on its own vCPU thread, reporting on stdout in the
//! line protocol of INTERFACES-4.md (console lines `[ID] ...` and
//! `@event {json}` lines).
//!
//! The image is read and validated once, and its guest RAM contents (page
//! tables, GDT, segments, command line) are prepared once as a sealed memfd
//! that every instance maps copy-on-write (`MemoryTemplate`), so read-only
//! pages are shared and an instance costs only the pages it writes.
//! One instance faulting or exiting never touches the others: each has its
//! own VM, memory, thread and console, and a stop reaches each through its
//! own [`StopHandle`].

mod console_sink;
mod events;
mod stops;

pub use events::Event;

use crate::guest_memory::MemoryTemplate;
use crate::hypercall::Console;
use crate::image::Image;
use crate::instance::{self, Instance, Launch, StartError};
use crate::limits::Limits;
use crate::net::spec::{self, NetSetup, Publish};
use crate::net::switch::Switch;
use crate::net::{NetDevice, NetError};
use crate::outcome::{Outcome, STATUS_START_FAILED};
use crate::seccomp;
use crate::signals::{StopHandle, StopSource};
use crate::snapshot::Snapshot;
use crate::timings::Timings;
use crate::vcpu;
use console_sink::{LogFile, PrefixedLines};
use kvm_ioctls::Kvm;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stops::{watch_stop_signals, Stops};

/// Stack of a vCPU thread. The deepest path (a fault diagnosis reading the
/// image's symbols) uses a few tens of KiB; only touched pages cost memory.
const VCPU_STACK: usize = 256 << 10;

/// Instances being created at once. VM creation is serialised inside the
/// kernel (per process), so more in flight only lengthens each start:
/// measured with 1000 echo instances on 2 cores, 1 → 724/s (first
/// hypercall p50 1.8 ms), 2 → 667/s (3.0 ms), 8 → 663/s (9.5 ms).
const START_WINDOW: usize = 1;

/// A restarted instance that failed again within this long waits before
/// the next start, doubling up to [`MAX_BACKOFF`]: a guest that always
/// fails must not spin the host.
const QUICK_FAILURE: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What to do with an instance that ended with a non-zero status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Start it again (not after a stop signal).
    OnFailure,
    /// Leave it stopped.
    Never,
}

/// One worker's instances.
#[derive(Debug)]
pub struct WorkerConfig {
    /// The image every instance runs (with `restore`: default the one the
    /// snapshot recorded).
    pub image: Option<PathBuf>,
    /// Restore every instance from this snapshot instead of booting.
    pub restore: Option<PathBuf>,
    /// The first instance's id; the others follow (`BootInfo.instance_id`).
    pub first_id: u64,
    /// How many instances.
    pub count: u64,
    pub restart: Restart,
    /// Console output to `DIR/ID.log` instead of `[ID] ` lines on stdout.
    pub console_dir: Option<PathBuf>,
    /// How each instance runs (mem, stack, timeout, cmdline, net).
    pub instance: instance::Config,
    /// `--publish` for the fleet's switch.
    pub publish: Vec<Publish>,
    /// Print each instance's counters on stderr when it ends.
    pub stats: bool,
    /// `--console-limit` and `--net-rate` of every instance.
    pub limits: Limits,
    /// Confine every thread with seccomp once set up (not `--no-seccomp`).
    pub seccomp: bool,
}

/// Runs the worker until all its instances have ended, or a SIGTERM or
/// SIGINT has stopped them; 0, or 125 if nothing could be started at all
/// (bad image or options: one line on stderr).
pub fn run(mut config: WorkerConfig) -> i32 {
    // Each instance holds a few fds (VM, vCPU, poller): the default soft
    // limit of 1024 would stop it at a few hundred. Best effort.
    let _ = crate::fleet::limits::raise_nofile();
    let stops = Arc::new(Stops::default());
    let filter = match config.seccomp {
        true => match seccomp::fleet::signals_filter() {
            Ok(program) => Some(program),
            Err(e) => return refuse(&e),
        },
        false => None,
    };
    if let Err(e) = watch_stop_signals(stops.clone(), filter) {
        return refuse(&format!("cannot catch SIGTERM and SIGINT: {e}"));
    }
    // From a snapshot, its mapping is every instance's template.
    let image_path = config.image.clone().unwrap_or_default();
    let (snapshot, image) = match &config.restore {
        Some(file) => {
            match Snapshot::open_for(file, config.image.as_deref(), &mut config.instance) {
                Ok((snapshot, image)) => (Some(snapshot), image),
                Err(e) => return refuse(&format!("cannot restore {}: {e}", file.display())),
            }
        }
        None => match Image::load(&image_path, config.instance.mem_size) {
            Ok(image) => (None, image),
            Err(e) => return refuse(&e),
        },
    };
    let prepared;
    let template = match &snapshot {
        Some(snapshot) => snapshot.template(),
        None => match instance::prepare_template(&image, &config.instance) {
            Ok(template) => {
                prepared = template;
                &prepared
            }
            Err(e) => return refuse(&format!("{}: {e}", image_path.display())),
        },
    };
    let kvm = match vcpu::open_kvm() {
        Ok(kvm) => kvm,
        Err(e) => return refuse(&e),
    };
    if let Some(dir) = &config.console_dir {
        if let Err(e) = std::fs::create_dir_all(dir) {
            return refuse(&format!("--console-dir {}: {e}", dir.display()));
        }
    }
    if config.seccomp {
        // Before the switch starts: its thread filters itself.
        if let Err(e) = seccomp::confine_service_threads() {
            return refuse(&e);
        }
    }
    let switch = match &config.instance.net {
        NetSetup::None if config.publish.is_empty() => None,
        NetSetup::None | NetSetup::User { .. } => {
            match Switch::start(&config.publish, spec::USER_MTU) {
                Ok(switch) => Some(Arc::new(switch)),
                Err(e) => return refuse(&e),
            }
        }
        NetSetup::Tap { .. } => return refuse(&"--net tap cannot be used with a fleet"),
    };
    if config.seccomp {
        // Set up: from here on every thread may only start and run
        // instances.
        if let Err(e) = seccomp::fleet::confine_worker() {
            return refuse(&e);
        }
    }
    let fleet = Fleet {
        config: &config,
        image: &image,
        template,
        restore: snapshot.as_ref(),
        kvm: &kvm,
        stops: &stops,
        switch,
    };
    fleet.start_all();
    0
}

/// What every instance thread of the worker shares.
struct Fleet<'w> {
    config: &'w WorkerConfig,
    image: &'w Image,
    template: &'w MemoryTemplate,
    /// The snapshot every instance resumes, if the fleet is restored.
    restore: Option<&'w Snapshot>,
    kvm: &'w Kvm,
    stops: &'w Stops,
    /// The worker's L2 segment, when the instances are networked.
    switch: Option<Arc<Switch>>,
}

/// An instance thread's first start, as the starting loop learns it.
enum Started {
    Yes,
    /// It could not start; the host is out of something if `exhausted`.
    No {
        error: String,
        exhausted: bool,
    },
}

/// What an instance thread tells the worker's main thread.
enum Msg {
    /// How its first start went.
    Started(Started),
    /// It has ended; with `again`, start the instance again on a new
    /// thread (its back-off slept), whose next back-off is `again`'s.
    Ended { id: u64, again: Option<Duration> },
}

impl Fleet<'_> {
    /// Starts every instance ([`START_WINDOW`] at a time), emits
    /// `worker-ready`, and waits for all to end, starting again on a new
    /// thread each instance that asks for a restart: a vCPU thread's
    /// seccomp filter cannot be lifted, so a thread runs one start only.
    fn start_all(&self) {
        let config = self.config;
        let window = START_WINDOW;
        let (tx, rx) = mpsc::channel::<Msg>();
        std::thread::scope(|scope| {
            let spawn = |id: u64, first: bool, backoff: Duration| {
                let tx = tx.clone();
                std::thread::Builder::new()
                    .name(format!("vcpu-{id}"))
                    .stack_size(VCPU_STACK)
                    .spawn_scoped(scope, move || self.instance(id, first, backoff, &tx))
            };
            let mut tally = Tally::default();
            // First starts not answered yet; instance threads running.
            let (mut in_flight, mut live) = (0, 0);
            let mut next = config.first_id;
            let end = config.first_id + config.count;
            let mut ready = false;
            loop {
                let starting =
                    next < end && tally.exhausted.is_none() && self.stops.requested().is_none();
                if starting && in_flight < window {
                    let id = next;
                    next += 1;
                    match spawn(id, true, FIRST_BACKOFF) {
                        Ok(_) => {
                            in_flight += 1;
                            live += 1;
                        }
                        Err(e) => {
                            let error = format!("cannot start its vCPU thread: {e}");
                            Event::Failed { id, error: &error }.emit();
                            tally.count(Started::No {
                                error,
                                exhausted: true,
                            });
                        }
                    }
                    continue;
                }
                if !starting && in_flight == 0 && !ready {
                    ready = true;
                    self.report_ready(&mut tally, next, end);
                }
                if ready && live == 0 {
                    break;
                }
                // Every running thread holds a sender, so this answers.
                match rx.recv() {
                    Ok(Msg::Started(started)) => {
                        tally.count(started);
                        in_flight -= 1;
                    }
                    Ok(Msg::Ended { id, again }) => {
                        live -= 1;
                        let Some(backoff) = again else { continue };
                        match spawn(id, false, backoff) {
                            Ok(_) => live += 1,
                            Err(e) => {
                                let error = format!("cannot start its vCPU thread: {e}");
                                Event::Failed { id, error: &error }.emit();
                            }
                        }
                    }
                    Err(_) => break,
                }
            }
            // Leaving the scope waits for every instance thread.
        });
    }

    /// Every first start has been tried: accounts for the ids never tried
    /// and emits `worker-ready`.
    fn report_ready(&self, tally: &mut Tally, next: u64, end: u64) {
        if let Some(reason) = &tally.exhausted {
            // Account for every id: the rest were never tried.
            let error = format!("not started: the host ran out ({reason})");
            for id in next..end {
                Event::Failed { id, error: &error }.emit();
                tally.failed += 1;
            }
            eprintln!(
                "flint: fleet-worker: started {} of {} instances; stopped starting: {reason}",
                tally.started, self.config.count
            );
        }
        Event::WorkerReady {
            started: tally.started,
            failed: tally.failed,
        }
        .emit();
    }

    /// One instance's thread: start, run, report; then, per the restart
    /// policy, sleep its back-off and ask the main thread to start it
    /// again on a new thread. `first`: its first start, which the
    /// starting loop waits to hear about.
    fn instance(&self, id: u64, first: bool, backoff: Duration, tx: &mpsc::Sender<Msg>) {
        let again = self.run_once(id, first, backoff, tx);
        let _ = tx.send(Msg::Ended { id, again });
    }

    /// [`Fleet::instance`] up to the restart decision: the next back-off
    /// if the instance is to start again.
    fn run_once(
        &self,
        id: u64,
        first: bool,
        backoff: Duration,
        tx: &mpsc::Sender<Msg>,
    ) -> Option<Duration> {
        let mut first_start = first.then_some(tx);
        let began = Instant::now();
        let outcome = match self.start_and_run(id, &mut first_start) {
            Ok(outcome) => outcome,
            Err(e) => {
                let error = e.to_string();
                Event::Failed { id, error: &error }.emit();
                if let Some(tx) = first_start.take() {
                    let exhausted = e.is_exhaustion();
                    let _ = tx.send(Msg::Started(Started::No { error, exhausted }));
                }
                return None;
            }
        };
        let status = outcome.status();
        let restart = self.config.restart == Restart::OnFailure
            && status != 0
            && !matches!(outcome, Outcome::Signalled(_))
            && self.stops.requested().is_none();
        if !restart {
            return None;
        }
        let next = if began.elapsed() < QUICK_FAILURE {
            // A stop during the back-off leaves it stopped: its last
            // event stays `stopped`.
            if !self.stops.sleep(backoff) {
                return None;
            }
            (backoff * 2).min(MAX_BACKOFF)
        } else {
            FIRST_BACKOFF
        };
        Event::Restarting { id }.emit();
        Some(next)
    }

    /// Starts instance `id` and runs it to its end, then emits `stopped`.
    /// On its first start (`first` is the starting loop's channel), tells
    /// the loop as soon as the VM exists.
    fn start_and_run(
        &self,
        id: u64,
        first: &mut Option<&mpsc::Sender<Msg>>,
    ) -> Result<Outcome, WorkerStartError> {
        let restarted = first.is_none();
        let handle = StopHandle::new().map_err(WorkerStartError::Signal)?;
        let _registered = self.stops.register(id, handle.clone());
        let console = self.console(id, restarted)?;
        let requested = Instant::now();
        let net = match &self.switch {
            Some(switch) => Some(attach_port(switch, id).map_err(StartError::Net)?),
            None => None,
        };
        let switch = self.switch.clone();
        let launch = Launch {
            instance_id: Some(id),
            template: Some(self.template),
            // No VmPool: measured with 1000 echo instances (2 workers on
            // 2 cores, both busy starting), a pool refilled by a thread of
            // its own started 1586/s against 1676/s without (mean of 3
            // interleaved runs each): the VM creation it moves off the
            // start path has no idle core to go to.
            pooled: None,
            kvm: Some(self.kvm),
            net,
            console: Some(console),
            stop: StopSource::Handle(handle),
            on_first_hypercall: Some(Box::new(move || {
                let first_hypercall_us = requested.elapsed().as_micros() as u64;
                Event::Started {
                    id,
                    first_hypercall_us,
                }
                .emit();
            })),
            on_idle: Some(Box::new(move || {
                // Initialised and waiting: it may get connections now.
                if let Some(switch) = switch {
                    switch.instance_started(id);
                }
                Event::Idle { id }.emit();
            })),
            idle_poller: true,
            snapshot_on_idle: None,
            restore: self.restore,
            limits: self.config.limits,
        };
        let mut instance = Instance::start_with(
            self.image,
            &self.config.instance,
            launch,
            Timings::new(false),
        )?;
        // Limit hits become events naming the instance.
        crate::limits::report_to(Some(Box::new(move |what| {
            Event::Limit { id, what }.emit();
        })));
        if self.config.seccomp {
            // Started: from here on this thread may only run its guest.
            seccomp::confine_vcpu(&instance, &seccomp::VcpuPolicy::default())
                .map_err(WorkerStartError::Seccomp)?;
            seccomp::forbidden_syscall_hook_for(id, instance.vcpu_fd());
        }
        if let Some(tx) = first.take() {
            let _ = tx.send(Msg::Started(Started::Yes));
        }
        let outcome = instance.run();
        if let Some(switch) = &self.switch {
            switch.instance_stopped(id);
        }
        if self.config.stats {
            for line in instance.stats().lines() {
                eprintln!("flint: stats: [{id}] {line}");
            }
        }
        // Dropping the instance flushes its console's partial last line,
        // which must come before the `stopped` event.
        drop(instance);
        let verdict = outcome.verdict().unwrap_or_default();
        Event::Stopped {
            id,
            status: outcome.status(),
            verdict: &verdict,
        }
        .emit();
        Ok(outcome)
    }

    /// Instance `id`'s console: `DIR/ID.log` (truncated at its first start,
    /// appended to after a restart), or prefixed lines on stdout.
    fn console(&self, id: u64, restarted: bool) -> Result<Console, WorkerStartError> {
        match &self.config.console_dir {
            None => Ok(Console::new(Box::new(PrefixedLines::new(id)))),
            Some(dir) => {
                let path = dir.join(format!("{id}.log"));
                let file = open_log(&path, restarted)
                    .map_err(|source| WorkerStartError::Console { path, source })?;
                Ok(Console::new(Box::new(LogFile(file))))
            }
        }
    }
}

/// Instance `id`'s network device: its port on the worker's switch.
fn attach_port(switch: &Switch, id: u64) -> Result<NetDevice, NetError> {
    NetDevice::attach(switch.port(id)?)
}

fn open_log(path: &Path, append: bool) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(path)
}

/// Why an instance of the worker could not start.
#[derive(Debug, thiserror::Error)]
enum WorkerStartError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("cannot open its console file {}: {source}", path.display())]
    Console {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up its stop signal: {0}")]
    Signal(std::io::Error),
    #[error("cannot confine its vCPU thread ({0}); run with --no-seccomp only to debug this")]
    Seccomp(seccomp::SeccompError),
}

impl WorkerStartError {
    fn is_exhaustion(&self) -> bool {
        let io = match self {
            WorkerStartError::Start(e) => return e.is_exhaustion(),
            WorkerStartError::Seccomp(_) => return false,
            WorkerStartError::Console { source, .. } | WorkerStartError::Signal(source) => source,
        };
        matches!(
            io.raw_os_error(),
            Some(libc::ENOMEM | libc::EMFILE | libc::ENFILE | libc::ENOSPC)
        )
    }
}

/// How the first starts went.
#[derive(Default)]
struct Tally {
    started: u64,
    failed: u64,
    /// Why starting stopped early: the host ran out of something.
    exhausted: Option<String>,
}

impl Tally {
    fn count(&mut self, started: Started) {
        match started {
            Started::Yes => self.started += 1,
            Started::No { error, exhausted } => {
                self.failed += 1;
                if exhausted && self.exhausted.is_none() {
                    self.exhausted = Some(error);
                }
            }
        }
    }
}

fn refuse(error: &dyn std::fmt::Display) -> i32 {
    eprintln!("flint: fleet-worker: {error}");
    STATUS_START_FAILED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starting_stops_at_the_first_exhaustion() {
        let mut tally = Tally::default();
        tally.count(Started::Yes);
        tally.count(Started::No {
            error: "bad".into(),
            exhausted: false,
        });
        assert!(tally.exhausted.is_none());
        tally.count(Started::No {
            error: "out of fds".into(),
            exhausted: true,
        });
        tally.count(Started::No {
            error: "later".into(),
            exhausted: true,
        });
        assert_eq!((tally.started, tally.failed), (1, 3));
        assert_eq!(tally.exhausted.as_deref(), Some("out of fds"));
    }
}
