//! `cargo xtask bench api [-n N]`: the daemon's API against `flint run`.
//!
//! One `flint daemon` on a private socket; N rounds (default 100, after a
//! few warm-up rounds), each interleaving:
//!
//! - API create+start: `POST /instances {"image": hello, "start": true}`
//!   sent by a client in this process over the Unix socket → the instance's
//!   first hypercall (the daemon's `first_hypercall_at`, same clock), then
//!   `DELETE` (timed on its own); also, from the daemon's own clock, the
//!   part from `start` to the first hypercall (the VM and the vCPU
//!   thread's seccomp filter are built at create);
//! - `flint run hello.elf`: exec → first console byte (hello's first
//!   hypercall is that console write);
//! - resume, then (2 ms later) pause of a busy instance (`probe count`,
//!   never idle, paused the rest of the time): the round trip of
//!   `POST .../resume` and of `POST .../pause` (which returns once the
//!   vCPU is parked off the CPU); and the same for an instance asleep in
//!   POLL (`probe poll-forever`).
//!
//! Prints p50/p90/p99 per case and writes `target/bench/api.json`.

use super::stats::{json_ns, Samples};
use crate::{guest, monitor, target_dir, Error, Result};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WARMUP: usize = 5;

/// Parses `[-n N]`.
pub fn parse(args: &[String]) -> Result<usize> {
    super::runs_option("api", args, 100)
}

/// Runs the bench.
pub fn run(runs: usize) -> Result<()> {
    eprintln!("api: building the monitor, hello.elf and probe.elf...");
    let flint = monitor::build()?;
    let hello = guest::build("hello")?;
    let probe = guest::build("probe")?;
    let dir = std::env::temp_dir().join(format!("flint-bench-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    let daemon = Daemon::start(&flint, &dir)?;
    let result = measure(&daemon, &flint, &hello, &probe, runs);
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
    report(&result?, runs)
}

struct Results {
    api_first_hypercall: Vec<Duration>,
    api_delete: Vec<Duration>,
    start_first_hypercall: Vec<Duration>,
    idle_pause: Vec<Duration>,
    idle_resume: Vec<Duration>,
    run_first_byte: Vec<Duration>,
    pause: Vec<Duration>,
    resume: Vec<Duration>,
}

fn measure(d: &Daemon, flint: &Path, hello: &Path, probe: &Path, runs: usize) -> Result<Results> {
    let mut r = Results {
        api_first_hypercall: Vec::new(),
        api_delete: Vec::new(),
        start_first_hypercall: Vec::new(),
        idle_pause: Vec::new(),
        idle_resume: Vec::new(),
        run_first_byte: Vec::new(),
        pause: Vec::new(),
        resume: Vec::new(),
    };
    let hello_body = format!(
        "{{\"image\": {}, \"start\": true}}",
        serde_json::Value::from(hello.display().to_string())
    );
    let busy = d.post_json(
        "/instances",
        &format!(
            "{{\"image\": {}, \"args\": [\"count\"], \"start\": true}}",
            serde_json::Value::from(probe.display().to_string())
        ),
    )?;
    let busy_id = busy["id"].as_str().unwrap_or_default().to_owned();
    let idle = d.post_json(
        "/instances",
        &format!(
            "{{\"image\": {}, \"args\": [\"poll-forever\"], \"start\": true}}",
            serde_json::Value::from(probe.display().to_string())
        ),
    )?;
    let idle_id = idle["id"].as_str().unwrap_or_default().to_owned();
    // Paused between its rounds, so that it does not take a core from the
    // other cases.
    d.request("POST", &format!("/instances/{busy_id}/pause"), None, 200)?;
    for round in 0..WARMUP + runs {
        let keep = round >= WARMUP;
        // API: create+start → first hypercall.
        let sent = SystemTime::now();
        let created = d.post_json("/instances", &hello_body)?;
        let id = created["id"].as_str().unwrap_or_default().to_owned();
        let (first, from_start) = wait_first_hypercall(d, &id)?;
        let latency = first
            .duration_since(sent)
            .map_err(|_| Error::Bench("the first hypercall came before the request".into()))?;
        let started = Instant::now();
        d.request("DELETE", &format!("/instances/{id}"), None, 204)?;
        let delete = started.elapsed();
        // flint run: exec → first byte.
        let run = run_first_byte(flint, hello)?;
        // Resume the busy instance, let it run, pause it again.
        let started = Instant::now();
        d.request("POST", &format!("/instances/{busy_id}/resume"), None, 200)?;
        let resume = started.elapsed();
        std::thread::sleep(Duration::from_millis(2));
        let started = Instant::now();
        d.request("POST", &format!("/instances/{busy_id}/pause"), None, 200)?;
        let pause = started.elapsed();
        // Pause and resume of an instance asleep in POLL.
        let started = Instant::now();
        d.request("POST", &format!("/instances/{idle_id}/pause"), None, 200)?;
        let idle_pause = started.elapsed();
        let started = Instant::now();
        d.request("POST", &format!("/instances/{idle_id}/resume"), None, 200)?;
        let idle_resume = started.elapsed();
        if keep {
            r.start_first_hypercall.push(from_start);
            r.idle_pause.push(idle_pause);
            r.idle_resume.push(idle_resume);
            r.api_first_hypercall.push(latency);
            r.api_delete.push(delete);
            r.run_first_byte.push(run);
            r.pause.push(pause);
            r.resume.push(resume);
        }
    }
    d.request("DELETE", &format!("/instances/{busy_id}"), None, 204)?;
    d.request("DELETE", &format!("/instances/{idle_id}"), None, 204)?;
    Ok(r)
}

/// Asks `GET /instances/ID` for its first hypercall's time (which the
/// daemon recorded), after a nap: polling hard would take the CPU the
/// instance is starting on.
fn wait_first_hypercall(d: &Daemon, id: &str) -> Result<(SystemTime, Duration)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        std::thread::sleep(Duration::from_millis(5));
        let info = d.get_json(&format!("/instances/{id}"))?;
        if let Some(at) = info["first_hypercall_at"].as_f64() {
            let from_start = info["metrics"]["first_hypercall_us"].as_u64().unwrap_or(0);
            return Ok((
                UNIX_EPOCH + Duration::from_secs_f64(at),
                Duration::from_micros(from_start),
            ));
        }
        if Instant::now() > deadline {
            return Err(Error::Bench(format!(
                "instance {id} never made a hypercall: {info}"
            )));
        }
    }
}

/// `flint run hello.elf`: exec → first stdout byte.
fn run_first_byte(flint: &Path, hello: &Path) -> Result<Duration> {
    let start = Instant::now();
    let mut child = Command::new(flint)
        .arg("run")
        .arg(hello)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::Bench(format!("cannot start flint run: {e}")))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut byte = [0u8; 1];
    let n = stdout
        .read(&mut byte)
        .map_err(|e| Error::Bench(format!("reading flint run's stdout: {e}")))?;
    let first = start.elapsed();
    let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    let status = child
        .wait()
        .map_err(|e| Error::Bench(format!("waiting: {e}")))?;
    if n != 1 || !status.success() {
        return Err(Error::Bench(format!(
            "flint run hello.elf failed: {status}"
        )));
    }
    Ok(first)
}

fn report(r: &Results, runs: usize) -> Result<()> {
    let cases: [(&str, &str, &[Duration]); 8] = [
        (
            "api_create_start",
            "API create+start (POST /instances, start) -> first hypercall",
            &r.api_first_hypercall,
        ),
        (
            "daemon_start",
            "  of which in the daemon: start -> first hypercall",
            &r.start_first_hypercall,
        ),
        (
            "flint_run",
            "flint run hello.elf: exec -> first console byte",
            &r.run_first_byte,
        ),
        (
            "api_pause",
            "API pause of a busy instance (vCPU parked)",
            &r.pause,
        ),
        ("api_resume", "API resume of it", &r.resume),
        (
            "api_pause_idle",
            "API pause of an instance asleep in POLL",
            &r.idle_pause,
        ),
        ("api_resume_idle", "API resume of it", &r.idle_resume),
        (
            "api_delete",
            "API delete of an ended instance",
            &r.api_delete,
        ),
    ];
    println!("api bench: {runs} rounds (after {WARMUP} warm-up), interleaved");
    println!("{:<64} {:>10} {:>10} {:>10}", "case", "p50", "p90", "p99");
    let mut json = String::from("{\n  \"runs\": ");
    json.push_str(&runs.to_string());
    json.push_str(",\n  \"cases\": {");
    for (i, (key, what, samples)) in cases.iter().enumerate() {
        let s = Samples::new(samples.to_vec());
        println!(
            "{what:<64} {:>10} {:>10} {:>10}",
            show(s.p50()),
            show(s.p90()),
            show(s.p99())
        );
        let sep = if i == 0 { "" } else { "," };
        json.push_str(&format!(
            "{sep}\n    \"{key}\": {{\"what\": {}, \"stats\": {}, \"samples_ns\": {}}}",
            serde_json::Value::from(*what),
            s.json(),
            json_ns(samples)
        ));
    }
    let api = Samples::new(r.api_first_hypercall.clone()).p50();
    let run = Samples::new(r.run_first_byte.clone()).p50();
    let ratio = api.as_secs_f64() / run.as_secs_f64();
    println!("API create+start p50 is {ratio:.2}x flint run's");
    json.push_str(&format!(
        "\n  }},\n  \"api_over_run_p50\": {ratio:.4}\n}}\n"
    ));
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    let path = dir.join("api.json");
    std::fs::write(&path, json).map_err(Error::io(&path))?;
    println!("wrote {}", path.display());
    Ok(())
}

fn show(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{} us", d.as_micros())
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

/// A `flint daemon` on a private socket, stopped by its pid when dropped.
struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Daemon {
    fn start(flint: &Path, dir: &Path) -> Result<Daemon> {
        let socket = dir.join("flint.sock");
        let child = Command::new(flint)
            .arg("daemon")
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Error::Bench(format!("cannot start flint daemon: {e}")))?;
        let daemon = Daemon { child, socket };
        let deadline = Instant::now() + Duration::from_secs(10);
        while daemon.request("GET", "/host", None, 200).is_err() {
            if Instant::now() > deadline {
                return Err(Error::Bench("flint daemon did not answer".into()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(daemon)
    }

    /// One HTTP/1.1 request (`Connection: close`); the body if the status
    /// is `want`.
    fn request(&self, method: &str, path: &str, body: Option<&str>, want: u16) -> Result<Vec<u8>> {
        let fail = |why: String| Error::Bench(format!("{method} {path}: {why}"));
        let mut stream =
            UnixStream::connect(&self.socket).map_err(|e| fail(format!("connect: {e}")))?;
        let body = body.unwrap_or("");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: flint\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| fail(format!("write: {e}")))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .map_err(|e| fail(format!("read: {e}")))?;
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| fail("no HTTP head".into()))?;
        let head = String::from_utf8_lossy(&raw[..end]);
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| fail("no status".into()))?;
        let body = raw[end + 4..].to_vec();
        if status != want {
            return Err(fail(format!(
                "status {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        Ok(body)
    }

    fn post_json(&self, path: &str, body: &str) -> Result<serde_json::Value> {
        let bytes = self.request("POST", path, Some(body), 201)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Bench(format!("POST {path}: {e}")))
    }

    fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        let bytes = self.request("GET", path, None, 200)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Bench(format!("GET {path}: {e}")))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of the child this guard started.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
