//! Running `flint` with a time limit, and what it did: status, output,
//! and a dump of all of it when a check fails.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{flint_bin, RUN_LIMIT};

/// A `flint` command line under construction.
#[derive(Clone, Debug)]
pub struct Run {
    pub(super) args: Vec<OsString>,
    pub(super) limit: Duration,
    pub(super) env: Vec<(OsString, OsString)>,
    /// A command that runs `flint` (e.g. `ip netns exec NS`); it must exec
    /// `flint` in place, so the PID the test holds is the monitor's.
    pub(super) prefix: Vec<OsString>,
}

impl Run {
    /// `flint` with exactly these arguments (for command-line tests).
    pub fn raw<S: AsRef<OsStr>>(args: &[S]) -> Run {
        Run {
            args: args.iter().map(|a| a.as_ref().to_owned()).collect(),
            limit: RUN_LIMIT,
            env: Vec::new(),
            prefix: Vec::new(),
        }
    }

    /// `flint run IMAGE`.
    pub fn image(image: &Path) -> Run {
        Run::raw(&[OsStr::new("run"), image.as_os_str()])
    }

    /// Inserts monitor options after `run`, before the image.
    pub fn opts(mut self, opts: &[&str]) -> Run {
        let at = 1.min(self.args.len());
        for (i, o) in opts.iter().enumerate() {
            self.args.insert(at + i, o.into());
        }
        self
    }

    /// Appends `-- ARGS` (the guest's arguments).
    pub fn guest(mut self, args: &[&str]) -> Run {
        self.args.push("--".into());
        self.args.extend(args.iter().map(OsString::from));
        self
    }

    /// Kill `flint` after `limit` instead of [`RUN_LIMIT`].
    pub fn limit(mut self, limit: Duration) -> Run {
        self.limit = limit;
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Run {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs `flint` through `prefix` (e.g. `ip netns exec NS`), which must
    /// exec it in place.
    pub fn prefix<S: AsRef<OsStr>>(mut self, prefix: &[S]) -> Run {
        self.prefix = prefix.iter().map(|a| a.as_ref().to_owned()).collect();
        self
    }

    /// The command to start, and its command line for messages.
    pub(super) fn command(&self) -> (Command, String) {
        let bin = flint_bin();
        let words: Vec<OsString> = self
            .prefix
            .iter()
            .cloned()
            .chain([bin.into_os_string()])
            .chain(self.args.iter().cloned())
            .collect();
        let argv = words
            .iter()
            .map(|a| shell_word(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new(&words[0]);
        cmd.args(&words[1..])
            .env_remove("FLINT_TIMINGS")
            .env_remove("FLINT_STATS")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // flint keeps a stop signal its parent ignores ignored, as any
        // program does, and a test run started as a background job ignores
        // SIGINT: the tests that send it must still reach flint's handler.
        // SAFETY: signal() is async-signal-safe, as pre_exec requires.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                libc::signal(libc::SIGTERM, libc::SIG_DFL);
                Ok(())
            });
        }
        (cmd, argv)
    }

    /// Runs `flint` to completion (or kills it at the limit) and returns
    /// what it did.
    pub fn go(&self) -> Outcome {
        let (mut cmd, argv) = self.command();
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {argv}: {e}"));
        let out = drain(child.stdout.take().expect("piped stdout"));
        let err = drain(child.stderr.take().expect("piped stderr"));
        let mut killed = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if start.elapsed() >= self.limit => {
                    killed = true;
                    let _ = child.kill();
                    break child.wait().expect("waiting for killed flint");
                }
                Ok(None) => thread::sleep(Duration::from_millis(2)),
                Err(e) => panic!("waiting for {argv}: {e}"),
            }
        };
        let elapsed = start.elapsed();
        Outcome {
            argv,
            code: status.code(),
            signal: status.signal(),
            stdout: out.join().expect("stdout reader"),
            stderr: err.join().expect("stderr reader"),
            elapsed,
            killed_at_limit: killed.then_some(self.limit),
        }
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

pub(super) fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+".contains(&b))
    {
        s.to_owned()
    } else {
        let shown: String = s.chars().take(80).collect();
        let more = if s.chars().count() > 80 {
            format!("...({} bytes)", s.len())
        } else {
            String::new()
        };
        format!("'{}'{more}", shown.replace('\'', r"'\''"))
    }
}

/// What one `flint` process did.
pub struct Outcome {
    pub argv: String,
    /// The exit status, if it exited.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
    /// Set if the test had to kill it.
    pub killed_at_limit: Option<Duration>,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "---- what flint did ----")?;
        writeln!(f, "command: {}", self.argv)?;
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "status:  {c}")?,
            (None, Some(s)) => write!(f, "status:  killed by signal {s}")?,
            _ => write!(f, "status:  unknown")?,
        }
        if let Some(limit) = self.killed_at_limit {
            write!(f, " (the test killed it after {limit:?})")?;
        }
        writeln!(f, "\ntime:    {:?}", self.elapsed)?;
        writeln!(
            f,
            "stdout ({} bytes):\n{}",
            self.stdout.len(),
            show_bytes(&self.stdout)
        )?;
        writeln!(
            f,
            "stderr ({} bytes):\n{}",
            self.stderr.len(),
            show_bytes(&self.stderr)
        )?;
        write!(f, "------------------------")
    }
}

/// Bytes as text, non-printing bytes escaped, long output cut.
fn show_bytes(bytes: &[u8]) -> String {
    const MAX: usize = 6000;
    let mut s = String::new();
    for chunk in bytes[..bytes.len().min(MAX)].utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\n' || (!c.is_control() && c != '\\') {
                s.push(c);
            } else {
                s.extend(c.escape_default());
            }
        }
        for b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    if bytes.len() > MAX {
        s.push_str(&format!("\n... ({} more bytes)", bytes.len() - MAX));
    }
    s
}

impl Outcome {
    /// Fails the test with `why` and everything this run showed.
    #[track_caller]
    pub fn fail(&self, why: impl fmt::Display) -> ! {
        panic!("{why}\n{self}")
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Checks the exit status.
    #[track_caller]
    pub fn status(&self, expected: i32) -> &Self {
        if self.killed_at_limit.is_some() || self.code != Some(expected) {
            self.fail(format_args!("expected exit status {expected}"));
        }
        self
    }

    /// Checks that stderr is empty (the guest's own EXIT: the monitor says
    /// nothing).
    #[track_caller]
    pub fn no_stderr(&self) -> &Self {
        if !self.stderr.is_empty() {
            self.fail("expected nothing on stderr");
        }
        self
    }

    /// Checks that stdout is exactly `expected`.
    #[track_caller]
    pub fn stdout_is(&self, expected: &str) -> &Self {
        if self.stdout != expected.as_bytes() {
            self.fail(format_args!("expected stdout to be exactly {expected:?}"));
        }
        self
    }

    /// Checks that stdout has `line` as one of its lines.
    #[track_caller]
    pub fn stdout_line(&self, line: &str) -> &Self {
        if !self.stdout_str().lines().any(|l| l == line) {
            self.fail(format_args!("expected the line {line:?} on stdout"));
        }
        self
    }

    /// Checks that stderr is exactly one `\n`-terminated, non-empty line and
    /// returns it (without the newline).
    #[track_caller]
    pub fn one_stderr_line(&self) -> String {
        let err = self.stderr_str();
        let ok = err.ends_with('\n') && err.len() > 1 && err.matches('\n').count() == 1;
        if !ok {
            self.fail("expected exactly one line on stderr");
        }
        err.trim_end_matches('\n').to_owned()
    }

    /// The monitor's verdict line for a guest fault: status 139 and one
    /// stderr line starting `guest fault: `.
    #[track_caller]
    pub fn guest_fault(&self) -> String {
        self.status(139);
        let line = self.one_stderr_line();
        if !line.starts_with("guest fault: ") {
            self.fail("expected the stderr line to start with `guest fault: `");
        }
        line
    }

    /// The value of the first stdout line `key=value` (the probe guest's
    /// report format).
    #[track_caller]
    pub fn value(&self, key: &str) -> String {
        let prefix = format!("{key}=");
        match self
            .stdout_str()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
        {
            Some(v) => v.to_owned(),
            None => self.fail(format_args!("expected a line `{key}=...` on stdout")),
        }
    }

    /// [`Outcome::value`] as a number (decimal, or hex with `0x`).
    #[track_caller]
    pub fn number(&self, key: &str) -> u64 {
        let v = self.value(key);
        let parsed = match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => v.parse(),
        };
        parsed.unwrap_or_else(|_| self.fail(format_args!("`{key}={v}` is not a number")))
    }

    /// [`Outcome::value`] as a signed number.
    #[track_caller]
    pub fn signed(&self, key: &str) -> i64 {
        let v = self.value(key);
        v.parse()
            .unwrap_or_else(|_| self.fail(format_args!("`{key}={v}` is not a number")))
    }
}
