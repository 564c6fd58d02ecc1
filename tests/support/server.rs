//! A `flint` that keeps running while the test talks to it: started in the
//! background, held to a time limit by a watchdog, and killed by its PID on
//! every path (drop), with everything it printed kept for failure messages.

use std::fmt;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::run::{Outcome, Run};

/// How long a serving `flint` may live before the watchdog kills it: far
/// above what any test needs, so only a hang reaches it.
pub const SERVE_LIMIT: Duration = Duration::from_secs(120);

/// How long a guest may take from `flint run` to its `listening on` line.
pub const LISTEN_WITHIN: Duration = Duration::from_secs(20);

/// A running `flint`; dropping it kills the process (SIGKILL to its PID)
/// and reaps it.
pub struct Server {
    argv: String,
    pid: u32,
    started: Instant,
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Notified on new output and on exit.
    changed: Condvar,
}

struct State {
    /// Only reaped (`status` set) under this lock, so a signal sent while
    /// holding it can never reach a recycled PID.
    child: Child,
    status: Option<ExitStatus>,
    exited_after: Option<Duration>,
    killed_at_limit: Option<Duration>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Both pipes reached EOF.
    pipes_closed: u8,
}

impl Run {
    /// Starts `flint` in the background; see [`Server`].
    pub fn serve(&self) -> Server {
        let (mut cmd, argv) = self.command();
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {argv}: {e}"));
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                child,
                status: None,
                exited_after: None,
                killed_at_limit: None,
                stdout: Vec::new(),
                stderr: Vec::new(),
                pipes_closed: 0,
            }),
            changed: Condvar::new(),
        });
        pump(stdout, shared.clone(), |s| &mut s.stdout);
        pump(stderr, shared.clone(), |s| &mut s.stderr);
        // A `Run`'s default limit suits a run to completion; a server lives
        // as long as its test, so it gets SERVE_LIMIT unless the test chose.
        let limit = if self.limit == super::RUN_LIMIT {
            SERVE_LIMIT
        } else {
            self.limit
        };
        watch(shared.clone(), started, limit);
        Server {
            argv,
            pid,
            started,
            shared,
        }
    }
}

/// Copies a pipe into the shared state as it arrives.
fn pump(
    mut pipe: impl Read + Send + 'static,
    shared: Arc<Shared>,
    pick: fn(&mut State) -> &mut Vec<u8>,
) {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            let n = pipe.read(&mut buf).unwrap_or(0);
            let mut state = shared.lock();
            if n == 0 {
                state.pipes_closed += 1;
                shared.changed.notify_all();
                return;
            }
            pick(&mut state).extend_from_slice(&buf[..n]);
            shared.changed.notify_all();
        }
    });
}

/// Reaps the child when it exits, and kills it at `limit`.
fn watch(shared: Arc<Shared>, started: Instant, limit: Duration) {
    thread::spawn(move || loop {
        {
            let mut state = shared.lock();
            if state.status.is_none() && started.elapsed() >= limit {
                let _ = state.child.kill();
                state.killed_at_limit = Some(limit);
            }
            if state.status.is_none() {
                if let Ok(Some(status)) = state.child.try_wait() {
                    state.status = Some(status);
                    state.exited_after = Some(started.elapsed());
                    shared.changed.notify_all();
                }
            }
            if state.status.is_some() {
                return;
            }
        }
        thread::sleep(Duration::from_millis(5));
    });
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Server {
    /// The monitor's PID (valid until the process is reaped).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits until stdout has a line containing `needle` and returns it.
    /// Fails (with everything seen) if `flint` exits first or `within`
    /// passes.
    #[track_caller]
    pub fn wait_line(&self, needle: &str, within: Duration) -> String {
        self.try_wait_line(needle, within)
            .unwrap_or_else(|why| self.fail(why))
    }

    /// [`Server::wait_line`], returning why it failed instead of failing.
    pub fn try_wait_line(&self, needle: &str, within: Duration) -> Result<String, String> {
        let deadline = Instant::now() + within;
        let mut state = self.shared.lock();
        loop {
            let text = String::from_utf8_lossy(&state.stdout).into_owned();
            let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            if let Some(line) = complete.lines().find(|l| l.contains(needle)) {
                return Ok(line.to_owned());
            }
            let now = Instant::now();
            if state.status.is_some() && state.pipes_closed == 2 {
                return Err(format!(
                    "flint ended before printing a line with {needle:?}"
                ));
            }
            if now >= deadline {
                return Err(format!(
                    "no line with {needle:?} on stdout within {within:?}"
                ));
            }
            let wait = (deadline - now).min(Duration::from_millis(50));
            state = self
                .shared
                .changed
                .wait_timeout(state, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits for the guest's `listening on` line.
    #[track_caller]
    pub fn wait_listening(&self) -> String {
        self.wait_line("listening on", LISTEN_WITHIN)
    }

    /// Sends `signal` to `flint` if it has not been reaped yet.
    pub fn signal(&self, signal: i32) {
        let state = self.shared.lock();
        if state.status.is_none() {
            // SAFETY: kill(2) with a PID we own and have not reaped (the
            // lock keeps the watchdog from reaping it meanwhile).
            let rc = unsafe { libc::kill(self.pid as libc::pid_t, signal) };
            assert_eq!(
                rc,
                0,
                "kill({}, {signal}): {}",
                self.pid,
                std::io::Error::last_os_error()
            );
        }
    }

    /// True while the process has not exited.
    pub fn running(&self) -> bool {
        self.shared.lock().status.is_none()
    }

    /// Waits up to `within` for `flint` to exit and both pipes to close,
    /// then returns what it did. Fails if it is still running then.
    #[track_caller]
    pub fn wait_exit(&self, within: Duration) -> Outcome {
        let deadline = Instant::now() + within;
        let mut state = self.shared.lock();
        while !(state.status.is_some() && state.pipes_closed == 2) {
            let now = Instant::now();
            if now >= deadline {
                drop(state);
                self.fail(format_args!("flint did not exit within {within:?}"));
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, (deadline - now).min(Duration::from_millis(50)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(state);
        self.snapshot()
    }

    /// What `flint` did so far, as an [`Outcome`] (status unknown while it
    /// runs).
    pub fn snapshot(&self) -> Outcome {
        let state = self.shared.lock();
        Outcome {
            argv: self.argv.clone(),
            code: state.status.and_then(|s| s.code()),
            signal: state.status.and_then(|s| s.signal()),
            stdout: state.stdout.clone(),
            stderr: state.stderr.clone(),
            elapsed: state.exited_after.unwrap_or_else(|| self.started.elapsed()),
            killed_at_limit: state.killed_at_limit,
        }
    }

    /// Fails the test with `why` and everything `flint` printed so far.
    #[track_caller]
    pub fn fail(&self, why: impl fmt::Display) -> ! {
        let running = if self.running() {
            " (flint was still running)"
        } else {
            ""
        };
        panic!("{why}{running}\n{}", self.snapshot())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if state.status.is_none() {
            let _ = state.child.kill();
            if let Ok(status) = state.child.wait() {
                state.status = Some(status);
            }
        }
    }
}
