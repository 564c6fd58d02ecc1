//! Running the real clients the network tests use (`curl`, `ip`, `ping`)
//! with a time limit, and skipping loudly when one is not installed.

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// True if `program` is on PATH. If not, says loudly that the calling test
/// is skipped (never a silent pass) and returns false.
pub fn tool_or_skip(program: &str, package: &str) -> bool {
    if xtask::packages::on_path(program) {
        return true;
    }
    skip(&format!(
        "`{program}` is not installed (apt-get install {package}; `cargo xtask test` as root does it)"
    ));
    false
}

/// Prints the loud skip line for the calling test.
pub fn skip(why: &str) {
    let name = thread::current().name().unwrap_or("<test>").to_owned();
    // Straight to the stderr handle: libtest captures `eprintln!`.
    let _ = writeln!(
        std::io::stderr(),
        "!!!!!! SKIPPED, NOT PASSED: {name}: {why}"
    );
}

/// What one tool run did.
pub struct ToolOut {
    pub argv: String,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl ToolOut {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Fails the test with `why` and what the tool printed.
    #[track_caller]
    pub fn fail(&self, why: impl fmt::Display) -> ! {
        panic!("{why}\n{self}")
    }
}

impl fmt::Display for ToolOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "---- what the client did ----")?;
        writeln!(f, "command: {}", self.argv)?;
        writeln!(
            f,
            "status:  {:?} signal {:?} after {:?}",
            self.code, self.signal, self.elapsed
        )?;
        writeln!(f, "stdout:\n{}", cut(&self.stdout))?;
        writeln!(f, "stderr:\n{}", cut(&self.stderr))?;
        write!(f, "-----------------------------")
    }
}

fn cut(s: &str) -> String {
    const MAX: usize = 4000;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}\n... ({} bytes in all)", &s[..i], s.len()),
        None => s.to_owned(),
    }
}

/// Runs `program args` to completion, killing it after `limit`.
pub fn run_tool(program: &str, args: &[&str], limit: Duration) -> ToolOut {
    let argv = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let start = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {argv}: {e}"));
    let out = drain(child.stdout.take().expect("piped"));
    let err = drain(child.stderr.take().expect("piped"));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() >= limit => {
                let _ = child.kill();
                break child.wait().expect("waiting for a killed client");
            }
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("waiting for {argv}: {e}"),
        }
    };
    ToolOut {
        argv,
        code: status.code(),
        signal: status.signal(),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
        elapsed: start.elapsed(),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// What `curl` fetched.
pub struct Curl {
    pub out: ToolOut,
    /// The HTTP status (0 if there was no response).
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Curl {
    /// Checks curl succeeded with HTTP `status` and returns the body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &str {
        if !self.out.ok() || self.status != status {
            self.out.fail(format_args!(
                "expected curl to get HTTP {status}, got {} (curl status {:?})",
                self.status, self.out.code
            ));
        }
        &self.body
    }
}

/// Marks where curl's `--write-out` starts in its stdout.
const MARK: &str = "\n@@flint-curl@@ ";

/// `curl URL` with a time limit, through `prefix` (e.g. `ip netns exec NS`)
/// if not empty; `extra` goes before the URL.
pub fn curl(prefix: &[&str], extra: &[&str], url: &str) -> Curl {
    let write_out = format!("{MARK}%{{http_code}} %{{content_type}}");
    let mut args: Vec<&str> = prefix.to_vec();
    args.push("curl");
    args.extend(["-sS", "--max-time", "15", "--connect-timeout", "10"]);
    args.extend(["-o", "-", "-w", &write_out]);
    args.extend(extra);
    args.push(url);
    let out = run_tool(args[0], &args[1..], Duration::from_secs(30));
    let (body, tail) = out.stdout.rsplit_once(MARK).unwrap_or(("", ""));
    let (code, content_type) = tail.split_once(' ').unwrap_or((tail, ""));
    Curl {
        status: code.trim().parse().unwrap_or(0),
        content_type: content_type.trim().to_owned(),
        body: body.to_owned(),
        out,
    }
}
