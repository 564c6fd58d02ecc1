//! `flint fleet` in tests: the command line, and a running fleet whose
//! worker processes are found (children of the parent) and killed by PID
//! on every path, after the parent itself.

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::{Run, Server};

impl Run {
    /// `flint fleet -n N IMAGE` (monitor options go in with [`Run::opts`]).
    pub fn fleet(image: &Path, instances: u32) -> Run {
        Run::raw(&[
            "fleet".as_ref(),
            "-n".as_ref(),
            instances.to_string().as_ref(),
            image.as_os_str(),
        ])
    }
}

/// A process we may signal: its PID and start time (so a recycled PID is
/// never mistaken for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    start: u64,
}

impl Proc {
    /// True while this very process exists and is not a zombie.
    pub fn alive(&self) -> bool {
        stat(self.pid).is_some_and(|s| s.start == self.start && s.state != 'Z')
    }

    fn kill(&self) {
        if self.alive() {
            // SAFETY: kill(2) with a PID whose start time we just checked.
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

struct Stat {
    ppid: u32,
    state: char,
    start: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

/// The live children of `parent`.
pub fn children(parent: u32) -> Vec<Proc> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let s = stat(pid)?;
            (s.ppid == parent && s.state != 'Z').then_some(Proc {
                pid,
                start: s.start,
            })
        })
        .collect()
}

/// A running `flint fleet`; dropping it kills the parent, then any worker
/// still there, each by PID.
pub struct Fleet {
    pub server: Server,
    workers: Vec<Proc>,
}

impl Fleet {
    pub fn start(run: &Run) -> Fleet {
        Fleet {
            server: run.serve(),
            workers: Vec::new(),
        }
    }

    /// The worker processes seen so far (looked up again now).
    pub fn workers(&mut self) -> Vec<Proc> {
        for w in children(self.server.pid()) {
            if !self.workers.contains(&w) {
                self.workers.push(w);
            }
        }
        self.workers.clone()
    }

    /// Waits until stdout has `count` lines containing `needle`.
    #[track_caller]
    pub fn wait_lines(&self, needle: &str, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let out = self.server.snapshot().stdout_str();
            let seen = out.lines().filter(|l| l.contains(needle)).count();
            if seen >= count {
                return;
            }
            if Instant::now() >= deadline || !self.server.running() {
                self.server.fail(format_args!(
                    "expected {count} stdout lines with {needle:?} within {within:?}, saw {seen}"
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until stderr has a line containing `needle` and returns it.
    #[track_caller]
    pub fn wait_stderr(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let err = self.server.snapshot().stderr_str();
            if let Some(line) = err.lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            if Instant::now() >= deadline || !self.server.running() {
                self.server.fail(format_args!(
                    "expected a stderr line with {needle:?} within {within:?}"
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Waits up to `within` for every one of `procs` to be gone; the ones
/// still there.
pub fn wait_gone(procs: &[Proc], within: Duration) -> Vec<Proc> {
    let deadline = Instant::now() + within;
    loop {
        let left: Vec<Proc> = procs.iter().copied().filter(Proc::alive).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let workers = self.workers();
        // The parent first (Server's own drop does it too): its workers
        // then get SIGTERM from the kernel (PR_SET_PDEATHSIG).
        if self.server.running() {
            self.server.signal(libc::SIGKILL);
        }
        for w in wait_gone(&workers, Duration::from_secs(10)) {
            w.kill();
        }
    }
}
