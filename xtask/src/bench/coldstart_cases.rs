//! The cold-start cases beyond "spawn a process, read its first byte":
//! `flint run --restore` of an http snapshot (exec → first byte of an HTTP
//! response through `--publish`) and the in-process cases that engineer
//! P's `coldstart_inprocess` example measures (API call → first hypercall).
//! Each one that cannot run here says why ("not available: ...") instead
//! of failing the bench.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::{cmd, root, target_dir};

/// How long a snapshot may take to appear, and a restored server to answer.
const WITHIN: Duration = Duration::from_secs(20);

/// What the restored http server is asked.
const REQUEST: &[u8] = b"GET /health HTTP/1.1\r\nHost: flint\r\nConnection: close\r\n\r\n";

/// A loopback port free right now.
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("binding 127.0.0.1:0: {e}"))
}

/// Kills `child` by its PID (SIGKILL) and reaps it.
fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// `flint run --restore` of a snapshot of `apps/http`.
pub struct Restore {
    flint: PathBuf,
    snapshot: PathBuf,
}

impl Restore {
    /// Takes the snapshot: `flint run --snapshot-on-idle FILE --publish
    /// ... http.elf`, waits for FILE, kills that instance. Err says why the
    /// case is not available.
    pub fn prepare(flint: &Path, http: &Path) -> Result<Restore, String> {
        let help = Command::new(flint)
            .args(["run", "--help"])
            .output()
            .map_err(|e| format!("running {} run --help: {e}", flint.display()))?;
        let help = String::from_utf8_lossy(&help.stdout);
        if !help.contains("--restore") || !help.contains("--snapshot-on-idle") {
            return Err("this flint has no --snapshot-on-idle/--restore".into());
        }
        let dir = target_dir().join("bench");
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let snapshot = dir.join("coldstart-http.snap");
        let _ = std::fs::remove_file(&snapshot);
        let publish = format!("127.0.0.1:{}:80", free_port()?);
        let mut child = Command::new(flint)
            .arg("run")
            .arg("--snapshot-on-idle")
            .arg(&snapshot)
            .args(["--publish", &publish])
            .arg(http)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting flint: {e}"))?;
        let start = Instant::now();
        let outcome = loop {
            if snapshot.is_file() {
                break Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                break Err(format!(
                    "flint --snapshot-on-idle ended ({status}) without a snapshot: {}",
                    err.trim()
                ));
            }
            if start.elapsed() > WITHIN {
                break Err(format!("no snapshot after {WITHIN:?}"));
            }
            thread::sleep(Duration::from_millis(5));
        };
        kill(&mut child);
        outcome.map(|()| Restore {
            flint: flint.to_owned(),
            snapshot,
        })
    }

    fn spawn(&self, port: u16, timings: bool) -> Result<Child, String> {
        let mut cmd = Command::new(&self.flint);
        cmd.arg("run")
            .arg("--restore")
            .arg(&self.snapshot)
            .args(["--publish", &format!("127.0.0.1:{port}:80")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if timings {
            cmd.env("FLINT_TIMINGS", "1");
        }
        cmd.spawn()
            .map_err(|e| format!("starting flint --restore: {e}"))
    }

    /// One restore: exec → the first byte of the HTTP response to a request
    /// sent as soon as the published port accepts.
    pub fn run_once(&self) -> Result<Duration, String> {
        let port = free_port()?;
        let start = Instant::now();
        let mut child = self.spawn(port, false)?;
        let got = first_response_byte(&mut child, port, start);
        kill(&mut child);
        got
    }

    /// The monitor's phases for one restore (`FLINT_TIMINGS=1`, stopped
    /// with SIGTERM after the first response so it reports).
    pub fn timings(&self) -> Vec<String> {
        let Ok(port) = free_port() else {
            return Vec::new();
        };
        let Ok(mut child) = self.spawn(port, true) else {
            return Vec::new();
        };
        let _ = first_response_byte(&mut child, port, Instant::now());
        // SAFETY: plain kill(2) on our own child's PID, not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = child.wait();
        err.lines().map(str::to_owned).collect()
    }
}

/// Connects to `port` until it accepts (the monitor is starting), sends
/// [`REQUEST`] and waits for the first byte of the answer, which must be
/// the start of `HTTP/1.1 200`.
fn first_response_byte(child: &mut Child, port: u16, start: Instant) -> Result<Duration, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = loop {
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) => {
                if let Ok(Some(status)) = child.try_wait() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    return Err(format!("flint --restore ended ({status}): {}", err.trim()));
                }
                if start.elapsed() > WITHIN {
                    return Err(format!("port {port} did not accept within {WITHIN:?}: {e}"));
                }
                thread::yield_now();
            }
        }
    };
    let io = |e: std::io::Error| format!("talking to the restored server: {e}");
    stream.set_read_timeout(Some(WITHIN)).map_err(io)?;
    stream.write_all(REQUEST).map_err(io)?;
    let mut head = [0u8; 12];
    let n = stream.read(&mut head[..1]).map_err(io)?;
    let first = start.elapsed();
    if n == 0 {
        return Err("the restored server closed the connection without answering".into());
    }
    stream.read_exact(&mut head[1..]).map_err(io)?;
    if &head != b"HTTP/1.1 200" {
        return Err(format!(
            "the restored server answered {:?}",
            String::from_utf8_lossy(&head)
        ));
    }
    Ok(first)
}

/// One in-process case as the example reported it.
#[derive(Clone, Debug)]
pub struct InProcess {
    pub case: String,
    pub n: u64,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    /// Each phase's median, in start order.
    pub phases: Vec<(String, Duration)>,
    /// Every sample, if the example printed them (`samples_us`).
    pub samples: Vec<Duration>,
}

/// The example that measures the in-process cases.
const EXAMPLE: &str = "coldstart_inprocess";

/// Builds `host-monitor/examples/coldstart_inprocess.rs`. Err says why
/// the in-process cases are not available.
pub fn build_inprocess() -> Result<PathBuf, String> {
    let source = root()
        .join("host-monitor/examples")
        .join(format!("{EXAMPLE}.rs"));
    if !source.is_file() {
        return Err(format!("{} is not there", source.display()));
    }
    let mut build = cmd::cargo();
    build
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "host-monitor",
            "--example",
            EXAMPLE,
        ])
        .arg("--target-dir")
        .arg(target_dir())
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    cmd::run(&mut build).map_err(|e| format!("building the example failed: {e}"))?;
    let bin = target_dir().join("release/examples").join(EXAMPLE);
    match bin.is_file() {
        true => Ok(bin),
        false => Err(format!("the build left no {}", bin.display())),
    }
}

/// Runs the example on `image` with `n` runs per case; its JSON lines.
pub fn run_inprocess(bin: &Path, image: &Path, n: usize) -> Result<Vec<InProcess>, String> {
    let out = Command::new(bin)
        .arg(image)
        .arg(n.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", bin.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "{EXAMPLE} failed ({}): {}",
            out.status,
            err.lines().last().unwrap_or("").trim()
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(parse_inprocess)
        .collect()
}

fn parse_inprocess(line: &str) -> Result<InProcess, String> {
    let bad = |why: &str| format!("{EXAMPLE} printed {line:?}: {why}");
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(&e.to_string()))?;
    let us = |v: &serde_json::Value| {
        v.as_f64()
            .map(|us| Duration::from_secs_f64(us.max(0.0) / 1e6))
    };
    let field = |k: &str| us(&v[k]).ok_or_else(|| bad(&format!("no number {k}")));
    // In the order the example printed them (start order), which a
    // serde_json map does not keep.
    let phases = v["phases_us"]
        .as_object()
        .map(|m| {
            let mut named: Vec<(usize, String, Duration)> = m
                .iter()
                .filter_map(|(k, x)| {
                    Some((
                        line.find(&format!("\"{k}\"")).unwrap_or(usize::MAX),
                        k.clone(),
                        us(x)?,
                    ))
                })
                .collect();
            named.sort_by_key(|(at, _, _)| *at);
            named.into_iter().map(|(_, k, d)| (k, d)).collect()
        })
        .unwrap_or_default();
    let samples = v["samples_us"]
        .as_array()
        .map(|a| a.iter().filter_map(us).collect())
        .unwrap_or_default();
    Ok(InProcess {
        case: v["case"].as_str().ok_or_else(|| bad("no case"))?.to_owned(),
        n: v["n"].as_u64().unwrap_or(0),
        p50: field("p50_us")?,
        p90: field("p90_us")?,
        p99: field("p99_us")?,
        phases,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_inprocess;
    use std::time::Duration;

    #[test]
    fn example_lines_parse_with_and_without_samples() {
        let line = r#"{"case":"inprocess-reset","n":3,"p50_us":31.5,"p90_us":40.0,"p99_us":52.0,"phases_us":{"reset":20.0,"first hypercall":11.5}}"#;
        let c = parse_inprocess(line).unwrap();
        assert_eq!(c.case, "inprocess-reset");
        assert_eq!(c.p50, Duration::from_nanos(31_500));
        assert_eq!(c.phases[0].0, "reset", "start order kept");
        assert_eq!(c.phases.len(), 2);
        assert!(c.samples.is_empty());
        let with = r#"{"case":"x","n":2,"p50_us":1,"p90_us":2,"p99_us":2,"samples_us":[1,2]}"#;
        assert_eq!(parse_inprocess(with).unwrap().samples.len(), 2);
        assert!(parse_inprocess(r#"{"case":"x"}"#).is_err());
        assert!(parse_inprocess("{nope").is_err());
    }
}
