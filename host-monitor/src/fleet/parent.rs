//! `flint fleet`: starts the worker processes, relays their console lines
//! to stdout whole, follows their events, shows progress and then the
//! [`Summary`], and waits until every instance has ended (status 0 if all
//! ended with 0, 1 otherwise) or a stop signal came (SIGTERM to every
//! worker, then die by the signal).

mod protocol;

use super::limits::{self, Host};
use super::summary::{self, Summary};
use crate::cli::FleetArgs;
use crate::image::Image;
use crate::outcome::STATUS_START_FAILED;
use crate::signals;
use crate::snapshot::Snapshot;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use protocol::{read_lines, Event};
use std::io::{IsTerminal, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

/// How long instances may take to settle (reach POLL) before the summary
/// measures them anyway.
const SETTLE_WITHIN: Duration = Duration::from_secs(3);
/// The window over which idle CPU is measured.
const CPU_WINDOW: Duration = Duration::from_secs(2);
/// How long workers get to stop after SIGTERM before SIGKILL.
const STOP_WITHIN: Duration = Duration::from_secs(20);
/// How often the parent looks at its workers and its phase.
const TICK: Duration = Duration::from_millis(50);
/// Start failures reported one line each; the rest only in the count.
const FAILURES_SHOWN: u64 = 5;

/// What a reader thread saw on a worker's pipe.
enum Msg {
    Stdout(usize, Vec<u8>),
    Stderr(Vec<u8>),
    Closed(usize),
}

/// Where one instance is.
#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Pending,
    Running {
        idle: bool,
    },
    /// Ended with a non-zero status; `--restart on-failure` boots it again.
    Restarting,
    Ended(i32),
    Failed,
}

/// One worker process.
struct Worker {
    child: Child,
    ids: std::ops::RangeInclusive<u64>,
    reaped: Option<std::process::ExitStatus>,
    ready: bool,
    stdout_open: bool,
}

/// Where the fleet is in its life.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Starting,
    Settling(Instant),
    Measuring(Instant, Duration),
    Running,
}

/// Runs `flint fleet`; the exit status (or dies by a stop signal).
pub fn run(args: FleetArgs) -> i32 {
    let fail = |why: &dyn std::fmt::Display| {
        eprintln!("flint: {why}");
        STATUS_START_FAILED
    };
    if let Err(why) = super::instance_config(&args.run) {
        return fail(&why);
    }
    // Parse and check the image (or snapshot) once here, so a bad one is
    // one line.
    match (&args.run.restore, &args.run.image) {
        (Some(file), image) => {
            let mut config = match super::instance_config(&args.run) {
                Ok(config) => config,
                Err(why) => return fail(&why),
            };
            if let Err(e) = Snapshot::open_for(file, image.as_deref(), &mut config) {
                return fail(&format!("cannot restore {}: {e}", file.display()));
            }
        }
        (None, image) => {
            if let Err(e) = Image::load(image.as_deref().unwrap_or(Path::new("")), args.run.mem) {
                return fail(&e);
            }
        }
    }
    if let Some(dir) = &args.fleet.console_dir {
        if let Err(e) = std::fs::create_dir_all(dir) {
            return fail(&format!("--console-dir {}: {e}", dir.display()));
        }
    }
    let nofile = match limits::raise_nofile() {
        Ok(n) => n,
        Err(e) => return fail(&format!("cannot raise RLIMIT_NOFILE: {e}")),
    };
    let host = Host::read(nofile);
    if let Some(why) = host.binding(args.instances, args.per_worker, args.run.timeout.is_some()) {
        return fail(&why);
    }
    if let Err(e) = signals::install() {
        return fail(&format!("cannot catch SIGTERM and SIGINT: {e}"));
    }
    if args.run.no_seccomp {
        eprintln!(
            "flint: WARNING: --no-seccomp: the fleet runs WITHOUT the seccomp filters; \
             a guest that breaks a worker could make any system call (debugging only)"
        );
    }
    Fleet::new(args).run()
}

/// The running fleet, as the parent sees it.
struct Fleet {
    args: FleetArgs,
    workers: Vec<Worker>,
    states: Vec<State>,
    first_hypercall_us: Vec<u64>,
    first_failure: Option<String>,
    failures: u64,
    started_at: Instant,
    ready_after: Option<Duration>,
    mem_before: u64,
    summary_done: bool,
    stopping: Option<(i32, Instant)>,
    bar: ProgressBar,
    /// Limit hits the workers reported (each instance's first of each
    /// limit).
    limits_hit: u64,
}

impl Fleet {
    fn new(args: FleetArgs) -> Fleet {
        let n = args.instances;
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(n), target);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} starting [{elapsed_precise}] [{wide_bar}] {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        Fleet {
            args,
            workers: Vec::new(),
            states: vec![State::Pending; n as usize + 1],
            first_hypercall_us: Vec::new(),
            first_failure: None,
            failures: 0,
            started_at: Instant::now(),
            ready_after: None,
            mem_before: limits::meminfo("MemAvailable").unwrap_or(0),
            summary_done: false,
            stopping: None,
            bar,
            limits_hit: 0,
        }
    }

    fn run(mut self) -> i32 {
        let (tx, rx) = mpsc::channel();
        let n = self.args.instances;
        let k = self.args.per_worker;
        self.started_at = Instant::now();
        let mut first = 1;
        while first <= n {
            let count = k.min(n - first + 1);
            if let Err(e) = self.spawn(first, count, &tx) {
                self.note_failure(first, &format!("cannot start a worker process: {e}"));
                for id in first..first + count {
                    self.states[id as usize] = State::Failed;
                    self.failures += 1;
                }
                self.bar.inc(count);
            }
            first += count;
        }
        drop(tx);
        if !self.args.run.no_seccomp {
            // Every worker is started: from here on the parent only
            // relays, waits and signals.
            let confined = crate::seccomp::fleet::confine_parent(self.args.summary_json.is_some());
            if let Err(e) = confined {
                self.say(&format!("flint: {e}; stopping the fleet"));
                self.signal_workers(libc::SIGKILL);
                return STATUS_START_FAILED;
            }
        }
        let mut phase = Phase::Starting;
        let mut housekeeping = Instant::now();
        loop {
            match rx.recv_timeout(TICK) {
                Ok(msg) => self.handle(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            // Thousands of instances send tens of thousands of lines: look
            // at the processes and the phase once per tick, not per line.
            if housekeeping.elapsed() < TICK {
                continue;
            }
            housekeeping = Instant::now();
            self.reap();
            self.check_stop();
            if phase == Phase::Starting {
                self.show_progress();
            }
            phase = self.advance(phase);
        }
        // Every pipe is closed: wait for the workers themselves.
        for i in 0..self.workers.len() {
            if self.workers[i].reaped.is_none() {
                if let Ok(status) = self.workers[i].child.wait() {
                    self.reaped(i, status);
                }
            }
        }
        self.bar.finish_and_clear();
        if let Some((signo, _)) = self.stopping {
            signals::die_by(signo);
        }
        if !self.summary_done && !self.nothing_started() {
            self.summarise(Duration::ZERO);
        }
        self.status()
    }

    fn spawn(&mut self, first: u64, count: u64, tx: &Sender<Msg>) -> std::io::Result<()> {
        // Our own binary, whatever its path; named as we were in `ps`.
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0(std::env::args_os().next().unwrap_or_else(|| "flint".into()))
            .args(protocol::worker_argv(&self.args, first, count))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Workers get their own process group: a Ctrl-C at the terminal (or
        // a `kill` of our group) reaches only the parent, which stops the
        // workers itself and so knows every instance's stop was asked for.
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
        // A worker must not outlive its parent (even one killed by SIGKILL).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let index = self.workers.len();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let out = tx.clone();
        thread::spawn(move || {
            read_lines(stdout, |line| out.send(Msg::Stdout(index, line)));
            let _ = out.send(Msg::Closed(index));
        });
        let err = tx.clone();
        thread::spawn(move || read_lines(stderr, |line| err.send(Msg::Stderr(line))));
        self.workers.push(Worker {
            child,
            ids: first..=first + count - 1,
            reaped: None,
            ready: false,
            stdout_open: true,
        });
        Ok(())
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Stdout(w, line) => match line.strip_prefix(b"@event ") {
                Some(json) => match serde_json::from_slice::<Event>(json) {
                    Ok(event) => self.event(w, event),
                    Err(e) => self.say(&format!(
                        "flint: worker {}: unreadable event ({e}): {}",
                        w + 1,
                        String::from_utf8_lossy(json).trim_end()
                    )),
                },
                None => self.bar.suspend(|| {
                    let _ = std::io::stdout().lock().write_all(&line);
                }),
            },
            Msg::Stderr(line) => self.bar.suspend(|| {
                let _ = std::io::stderr().lock().write_all(&line);
            }),
            Msg::Closed(w) => {
                self.workers[w].stdout_open = false;
                self.workers[w].ready = true;
            }
        }
    }

    fn event(&mut self, w: usize, event: Event) {
        let quiet = self.stopping.is_some();
        let valid = |id: u64| self.workers[w].ids.contains(&id);
        match event {
            Event::Started {
                id,
                first_hypercall_us,
            } if valid(id) => {
                // A restarted instance is not counted again.
                if self.states[id as usize] == State::Pending {
                    self.first_hypercall_us.push(first_hypercall_us);
                    self.bar.inc(1);
                }
                self.states[id as usize] = State::Running { idle: false };
            }
            Event::Idle { id } if valid(id) => {
                if let State::Running { .. } = self.states[id as usize] {
                    self.states[id as usize] = State::Running { idle: true };
                }
            }
            Event::Stopped {
                id,
                status,
                verdict,
            } if valid(id) => {
                self.states[id as usize] = State::Ended(status);
                if status != 0 && !quiet {
                    let why = match verdict.as_str() {
                        "" => format!("exited with status {status}"),
                        v => v.trim_start_matches("flint: ").to_owned(),
                    };
                    self.say(&format!("flint: instance {id} stopped: {why}"));
                }
            }
            Event::Restarting { id } if valid(id) => {
                self.states[id as usize] = State::Restarting;
                if !quiet {
                    self.say(&format!(
                        "flint: instance {id} restarting (--restart on-failure)"
                    ));
                }
            }
            Event::Failed { id, error } if valid(id) => {
                let first_start = self.states[id as usize] == State::Pending;
                self.states[id as usize] = State::Failed;
                if first_start {
                    self.bar.inc(1);
                    self.failures += 1;
                    self.note_failure(id, &error);
                } else if !quiet {
                    self.say(&format!("flint: instance {id} could not restart: {error}"));
                }
            }
            Event::WorkerReady {} => self.workers[w].ready = true,
            Event::Limit { id, what } if valid(id) => {
                self.limits_hit += 1;
                if !quiet {
                    self.say(&format!("flint: limit: instance {id}: {what}"));
                }
            }
            other => self.say(&format!(
                "flint: worker {} reported an instance it does not run: {other:?}",
                w + 1
            )),
        }
    }

    /// The progress bar's message: the start rate and failures so far.
    fn show_progress(&self) {
        let started = self.first_hypercall_us.len() as f64;
        let rate = started / self.started_at.elapsed().as_secs_f64().max(1e-3);
        let failed = match self.failures {
            0 => String::new(),
            f => format!(", {f} failed"),
        };
        self.bar.set_message(format!("{rate:.0}/s{failed}"));
    }

    fn note_failure(&mut self, id: u64, error: &str) {
        if self.first_failure.is_none() {
            self.first_failure = Some(error.to_owned());
        }
        if self.failures <= FAILURES_SHOWN && self.stopping.is_none() {
            self.say(&format!("flint: instance {id} could not start: {error}"));
        }
    }

    /// One line on stderr, around the progress bar.
    fn say(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    fn reap(&mut self) {
        for i in 0..self.workers.len() {
            if self.workers[i].reaped.is_some() {
                continue;
            }
            if let Ok(Some(status)) = self.workers[i].child.try_wait() {
                // `ready` waits for its pipe's EOF: lines may still be
                // on their way.
                self.reaped(i, status);
            }
        }
    }

    /// Worker `i` has ended with `status`: says so if it failed. One
    /// killed by its seccomp filter (SIGSYS) took its instances with it.
    fn reaped(&mut self, i: usize, status: std::process::ExitStatus) {
        let w = &mut self.workers[i];
        w.reaped = Some(status);
        let (first, last) = (*w.ids.start(), *w.ids.end());
        if status.signal() == Some(libc::SIGSYS) {
            for id in first..=last {
                let state = &mut self.states[id as usize];
                match state {
                    State::Running { .. } | State::Restarting => {
                        *state = State::Ended(128 + libc::SIGSYS);
                    }
                    State::Pending => {
                        *state = State::Failed;
                        self.failures += 1;
                        self.bar.inc(1);
                    }
                    State::Ended(_) | State::Failed => {}
                }
            }
            self.say(&format!(
                "flint: worker {} (instances {first}-{last}) was killed by its seccomp filter \
                 (SIGSYS): a monitor thread made a forbidden system call; its instances are gone",
                i + 1
            ));
        } else if !status.success() && self.stopping.is_none() {
            self.say(&format!(
                "flint: worker {} (instances {first}-{last}) ended: {status}",
                i + 1
            ));
        }
    }

    /// On a stop signal: SIGTERM to every worker; SIGKILL to those still
    /// there after [`STOP_WITHIN`].
    fn check_stop(&mut self) {
        match self.stopping {
            None => {
                if let Some(signo) = signals::stop_requested() {
                    self.stopping = Some((signo, Instant::now()));
                    self.signal_workers(libc::SIGTERM);
                }
            }
            Some((_, since)) if since.elapsed() > STOP_WITHIN => {
                self.signal_workers(libc::SIGKILL);
            }
            Some(_) => {}
        }
    }

    fn signal_workers(&mut self, signo: i32) {
        for w in &mut self.workers {
            if w.reaped.is_none() {
                // SAFETY: kill(2) on our own child, which is not reaped yet
                // (so its PID cannot have been reused).
                unsafe { libc::kill(w.child.id() as libc::pid_t, signo) };
            }
        }
    }

    fn count(&self, f: impl Fn(State) -> bool) -> u64 {
        self.states[1..].iter().filter(|s| f(**s)).count() as u64
    }

    fn advance(&mut self, phase: Phase) -> Phase {
        if self.stopping.is_some() || self.summary_done {
            return phase;
        }
        let now = Instant::now();
        match phase {
            Phase::Starting if self.workers.iter().all(|w| w.ready) => {
                self.ready_after = Some(self.started_at.elapsed());
                self.bar.finish_and_clear();
                let started = self.first_hypercall_us.len() as u64;
                if self.failures > 0 {
                    let first = self.first_failure.clone().unwrap_or_default();
                    self.say(&format!(
                        "flint: {started} of {} instances started; {} could not start: {first}",
                        self.args.instances, self.failures
                    ));
                }
                Phase::Settling(now)
            }
            Phase::Settling(since) => {
                let settled = self.count(|s| matches!(s, State::Running { idle: false })) == 0;
                if settled || since.elapsed() > SETTLE_WITHIN {
                    Phase::Measuring(now, self.workers_cpu())
                } else {
                    phase
                }
            }
            Phase::Measuring(since, cpu0) => {
                let running = self.count(|s| matches!(s, State::Running { .. }));
                if running == 0 || since.elapsed() >= CPU_WINDOW {
                    let window = since.elapsed();
                    let cpu = self.workers_cpu().saturating_sub(cpu0);
                    self.summarise_with_cpu(cpu, window);
                    Phase::Running
                } else {
                    phase
                }
            }
            other => other,
        }
    }

    fn workers_cpu(&self) -> Duration {
        self.workers
            .iter()
            .filter(|w| w.reaped.is_none())
            .map(|w| summary::cpu_time(w.child.id()))
            .sum()
    }

    fn summarise(&mut self, window: Duration) {
        self.summarise_with_cpu(Duration::ZERO, window)
    }

    fn summarise_with_cpu(&mut self, cpu: Duration, window: Duration) {
        self.summary_done = true;
        let start = self
            .ready_after
            .unwrap_or_else(|| self.started_at.elapsed());
        let mut s = Summary {
            instances: self.args.instances,
            workers: self.workers.len() as u64,
            per_worker: self.args.per_worker,
            started: self.first_hypercall_us.len() as u64,
            failed: self.failures,
            running: self.count(|s| matches!(s, State::Running { .. })),
            idle: self.count(|s| s == State::Running { idle: true }),
            stopped: self.count(|s| matches!(s, State::Ended(_))),
            start_seconds: start.as_secs_f64(),
            first_failure: self.first_failure.clone(),
            limit_hits: self.limits_hit,
            ..Summary::default()
        };
        s.start_rate_per_s = s.started as f64 / s.start_seconds.max(1e-6);
        s.set_first_hypercalls(self.first_hypercall_us.clone());
        let after = limits::meminfo("MemAvailable").unwrap_or(0);
        let live: Vec<u32> = self
            .workers
            .iter()
            .filter(|w| w.reaped.is_none())
            .map(|w| w.child.id())
            .collect();
        let rss = live.iter().map(|&pid| summary::rss(pid)).sum();
        let pss = live.iter().map(|&pid| summary::pss(pid)).sum();
        s.set_memory(self.mem_before as i64 - after as i64, rss, pss);
        s.cpu_window_seconds = window.as_secs_f64();
        if !window.is_zero() {
            s.idle_cpu_percent = 100.0 * cpu.as_secs_f64() / window.as_secs_f64();
        }
        let run = &self.args.run;
        let what = run.restore.as_ref().or(run.image.as_ref());
        let text = s.text(&what.map(|p| p.display().to_string()).unwrap_or_default());
        self.bar.suspend(|| eprint!("{text}"));
        if let Some(path) = &self.args.summary_json {
            // Whole or not at all, for whoever waits for the file.
            let mut tmp = path.clone().into_os_string();
            tmp.push(".tmp");
            let written = std::fs::write(&tmp, s.json()).and_then(|()| std::fs::rename(&tmp, path));
            if let Err(e) = written {
                self.say(&format!("flint: --summary-json {}: {e}", path.display()));
            }
        }
    }

    /// True if no instance started because the instances or the workers
    /// could not (every worker that ended said 125).
    fn nothing_started(&self) -> bool {
        self.first_hypercall_us.is_empty()
            && (self.failures > 0
                || self.workers.iter().all(|w| {
                    w.reaped
                        .is_some_and(|s| s.code() == Some(STATUS_START_FAILED))
                }))
    }

    /// 0 if every instance ended with status 0, 1 if any did not; 125 if
    /// none could start.
    fn status(&self) -> i32 {
        if self.nothing_started() {
            return STATUS_START_FAILED;
        }
        let all_zero = self.states[1..].iter().all(|s| *s == State::Ended(0));
        let workers_ok = self
            .workers
            .iter()
            .all(|w| w.reaped.is_some_and(|s| s.success()));
        if all_zero && workers_ok {
            0
        } else {
            1
        }
    }
}
