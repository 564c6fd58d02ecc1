//! What every integration test needs: fresh images and monitor from the
//! xtask library, KVM detection, and a `flint` runner with a time limit that
//! prints everything it saw when a check fails.
//!
//! Each test binary includes this with `mod support;` and uses only part of
//! it, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod elf;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long any one `flint` process may run before the test kills it. Far
/// above what a healthy run takes (milliseconds), so only a hung monitor or
/// a broken `--timeout` ever reaches it.
pub const RUN_LIMIT: Duration = Duration::from_secs(20);

/// One lock for every build this process starts: parallel tests must not
/// run two cargo builds of the same target directory at once.
static BUILDS: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);

/// True if KVM is usable. If it is not, says loudly that the calling test is
/// skipped (never a silent pass) and returns false; the test then returns.
pub fn kvm_or_skip() -> bool {
    static KVM: OnceLock<Result<(), String>> = OnceLock::new();
    let kvm = KVM.get_or_init(|| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .map(drop)
            .map_err(|e| format!("cannot open /dev/kvm: {e}"))
    });
    match kvm {
        Ok(()) => true,
        Err(why) => {
            let name = thread::current().name().unwrap_or("<test>").to_owned();
            eprintln!("!!!!!! SKIPPED, NOT PASSED: {name}: {why}; this test boots a KVM guest");
            false
        }
    }
}

/// The `flint` binary, built fresh by `xtask::monitor::build` (or `FLINT_BIN`
/// when the caller already built it, as `cargo xtask test` does).
pub fn flint_bin() -> PathBuf {
    cached_build("<monitor>", || {
        xtask::monitor::build().map_err(|e| format!("building the flint monitor failed: {e}"))
    })
}

/// The image of guest `name` (`apps/<name>` or `tests/guests/<name>`), built
/// fresh by `xtask::guest::build`: never a stale file.
pub fn image(name: &str) -> PathBuf {
    cached_build(name, || {
        xtask::guest::build(name).map_err(|e| format!("building guest image {name} failed: {e}"))
    })
}

fn cached_build(key: &str, build: impl FnOnce() -> Result<PathBuf, String>) -> PathBuf {
    let mut builds = BUILDS.lock().unwrap_or_else(|poison| poison.into_inner());
    let builds = builds.get_or_insert_with(HashMap::new);
    if let Some(path) = builds.get(key) {
        return path.clone();
    }
    let path = build().unwrap_or_else(|e| panic!("{e}"));
    assert!(path.is_file(), "{key}: the build reported {path:?}, which is not a file");
    builds.insert(key.to_owned(), path.clone());
    path
}

/// `flint run [OPTIONS] IMAGE [-- ARGS]` for the `probe` test guest.
pub fn probe(args: &[&str]) -> Run {
    Run::image(&image("probe")).guest(args)
}

/// A directory for files a test writes (edited images), under the target
/// directory cargo gives integration tests.
pub fn scratch_dir(sub: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(sub);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {dir:?}: {e}"));
    dir
}

/// A `flint` command line under construction.
#[derive(Clone, Debug)]
pub struct Run {
    args: Vec<OsString>,
    limit: Duration,
    env: Vec<(OsString, OsString)>,
}

impl Run {
    /// `flint` with exactly these arguments (for command-line tests).
    pub fn raw<S: AsRef<OsStr>>(args: &[S]) -> Run {
        Run {
            args: args.iter().map(|a| a.as_ref().to_owned()).collect(),
            limit: RUN_LIMIT,
            env: Vec::new(),
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

    /// Runs `flint` to completion (or kills it at the limit) and returns
    /// what it did.
    pub fn go(&self) -> Outcome {
        let bin = flint_bin();
        let argv = format!(
            "{} {}",
            bin.display(),
            self.args
                .iter()
                .map(|a| shell_word(&a.to_string_lossy()))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let mut cmd = Command::new(&bin);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("FLINT_TIMINGS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {argv}: {e}"));
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

fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+".contains(&b)) {
        s.to_owned()
    } else {
        let shown: String = s.chars().take(80).collect();
        let more = if s.chars().count() > 80 { format!("...({} bytes)", s.len()) } else { String::new() };
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
        writeln!(f, "stdout ({} bytes):\n{}", self.stdout.len(), show_bytes(&self.stdout))?;
        writeln!(f, "stderr ({} bytes):\n{}", self.stderr.len(), show_bytes(&self.stderr))?;
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
        match self.stdout_str().lines().find_map(|l| l.strip_prefix(&prefix)) {
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
        v.parse().unwrap_or_else(|_| self.fail(format_args!("`{key}={v}` is not a number")))
    }
}

/// Every `0x...` number in `text`: fault lines name addresses in hex, padded
/// or not.
pub fn hex_numbers(text: &str) -> Vec<u64> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i + 2 <= bytes.len() {
        if bytes[i] == b'0' && matches!(bytes.get(i + 1), Some(b'x' | b'X')) {
            let digits: String =
                text[i + 2..].chars().take_while(|c| c.is_ascii_hexdigit()).collect();
            if let Ok(n) = u64::from_str_radix(&digits, 16) {
                out.push(n);
            }
            i += 2 + digits.len();
        } else {
            i += 1;
        }
    }
    out
}

/// The text after `prefix` in `line`, for checks that name the first
/// address after e.g. `page fault at `.
pub fn hex_after(line: &str, prefix: &str) -> Option<u64> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    hex_numbers(rest).first().copied().filter(|_| rest.starts_with("0x"))
}
