//! `cargo xtask bench density [--sizes 1000,5000,10000] [--idle SECS]`:
//! how many idle micro-VMs one host holds, and what each costs.
//!
//! For each N, `flint fleet -n N --publish 127.0.0.1:<port>:7` boots N
//! instances of `apps/echo`; once all N said `listening on` (each then
//! sleeps in POLL) and a second passed, the bench measures MemAvailable
//! against before the fleet, the workers' summed VmRSS, and their CPU time
//! over `--idle` seconds. Then it connects once per instance through the
//! published port (in parallel batches, 127.0.0.1 only), sends a few bytes
//! and counts echoes, and finally times the teardown: SIGTERM to `flint
//! fleet` until it and every worker process are gone. The start rate is
//! N over the time from spawning `flint fleet` to the last `listening on`
//! line, beside the parent's own figure (`--summary-json`). The table goes
//! to stdout; `target/bench/density.json` holds the same and
//! `target/bench/density.svg` plots memory and start rate against N.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use super::density_plot;
use super::stats::json_str;
use crate::{guest, monitor, target_dir, Error, Result};

/// The issue's targets.
const TARGET_MIB: f64 = 1.0;
const TARGET_RATE: f64 = 500.0;

/// Parallel clients for the once-per-instance connections.
const CLIENTS: usize = 32;
/// The bytes each client sends, and expects back.
const PING: &[u8] = b"flint density\n";

/// The bench's options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Fleet sizes, in order.
    pub sizes: Vec<u64>,
    /// Seconds of idle over which CPU is measured.
    pub idle_secs: u64,
    /// `--per-worker` for the fleets.
    pub per_worker: u64,
}

impl Options {
    /// Parses `[--sizes N,N,...] [--idle SECS] [--per-worker K]`.
    pub fn parse(args: &[String]) -> Result<Options> {
        let usage = |why: String| {
            Error::Bench(format!(
                "{why}; usage: cargo xtask bench density [--sizes 1000,5000,10000] [--idle SECS] [--per-worker K]"
            ))
        };
        let mut o = Options {
            sizes: vec![1000, 5000, 10000],
            idle_secs: 10,
            per_worker: 500,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let value = args
                .next()
                .ok_or_else(|| usage(format!("{arg} needs a value")))?;
            let number = |v: &str| {
                v.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| usage(format!("`{v}` is not a positive number")))
            };
            match arg.as_str() {
                "--sizes" => {
                    o.sizes = value.split(',').map(number).collect::<Result<_>>()?;
                }
                "--idle" => o.idle_secs = number(value)?,
                "--per-worker" => o.per_worker = number(value)?,
                a => return Err(usage(format!("unknown option `{a}`"))),
            }
        }
        Ok(o)
    }
}

/// What one fleet size gave.
#[derive(Clone, Debug, Default)]
pub struct Point {
    /// Instances asked for.
    pub n: u64,
    /// Instances that said `listening on`.
    pub listening: u64,
    /// Spawn to the last `listening on`.
    pub start_secs: f64,
    /// `listening / start_secs`.
    pub start_rate: f64,
    /// The parent's own start rate (its summary).
    pub parent_start_rate: f64,
    /// MemAvailable before the fleet minus while it idled.
    pub mem_drop_bytes: i64,
    /// The workers' VmRSS, summed.
    pub rss_bytes: u64,
    /// The workers' CPU over the idle window, percent of one core.
    pub idle_cpu_percent: f64,
    /// SIGTERM until the parent and every worker were gone.
    pub teardown_secs: f64,
    /// Connections made.
    pub connections: u64,
    /// Connections that echoed.
    pub answered: u64,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

impl Point {
    /// MemAvailable drop per listening instance, MiB.
    pub fn mem_per_instance_mib(&self) -> f64 {
        self.mem_drop_bytes as f64 / self.listening.max(1) as f64 / (1024.0 * 1024.0)
    }
    /// RSS per listening instance, MiB.
    pub fn rss_per_instance_mib(&self) -> f64 {
        self.rss_bytes as f64 / self.listening.max(1) as f64 / (1024.0 * 1024.0)
    }
}

/// Runs the bench and prints its report.
pub fn run(options: &Options) -> Result<()> {
    eprintln!("density: building echo.elf and the monitor...");
    let image = guest::build("echo")?;
    let flint = monitor::build()?;
    let dir = target_dir().join("bench");
    fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    let mut points = Vec::new();
    for &n in &options.sizes {
        eprintln!("density: {n} instances...");
        let point = measure(&flint, &image, n, options, &dir);
        if let Some(e) = &point.error {
            eprintln!("density: N={n}: {e}");
        }
        points.push(point);
        // Let the host take back what the last fleet freed.
        thread::sleep(Duration::from_secs(2));
    }
    println!("{}", table(&points, options));
    let json_path = dir.join("density.json");
    fs::write(&json_path, json(&points, options)).map_err(Error::io(&json_path))?;
    let svg_path = dir.join("density.svg");
    fs::write(&svg_path, density_plot::svg(&points)).map_err(Error::io(&svg_path))?;
    println!("wrote {} and {}", json_path.display(), svg_path.display());
    Ok(())
}

/// One fleet of `n`: start, measure, connect, tear down. Never leaves a
/// process behind.
fn measure(flint: &Path, image: &Path, n: u64, o: &Options, dir: &Path) -> Point {
    let mut point = Point {
        n,
        ..Point::default()
    };
    let summary_path = dir.join(format!("density-{n}.summary.json"));
    let _ = fs::remove_file(&summary_path);
    let port = match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(a) => a.port(),
        Err(e) => {
            point.error = Some(format!("no free port: {e}"));
            return point;
        }
    };
    let mem_before = meminfo_available();
    let started = Instant::now();
    let mut cmd = Command::new(flint);
    cmd.args(["fleet", "-n", &n.to_string()])
        .args(["--per-worker", &o.per_worker.to_string()])
        .args(["--publish", &format!("127.0.0.1:{port}:7")])
        .arg("--summary-json")
        .arg(&summary_path)
        .arg(image)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut fleet = match cmd.spawn() {
        Ok(child) => Running::new(child),
        Err(e) => {
            point.error = Some(format!("cannot start flint fleet: {e}"));
            return point;
        }
    };
    // All N listening, or the deadline.
    let deadline = Duration::from_secs(60 + n / 50);
    while fleet.listening() < n && started.elapsed() < deadline && fleet.alive() {
        thread::sleep(Duration::from_millis(20));
    }
    point.listening = fleet.listening();
    point.start_secs = fleet.last_listening_secs();
    point.start_rate = point.listening as f64 / point.start_secs.max(1e-6);
    if point.listening < n {
        point.error = Some(format!(
            "only {} of {n} instances listened within {deadline:?}; flint said: {}",
            point.listening,
            fleet.stderr_tail()
        ));
    }
    thread::sleep(Duration::from_secs(1));
    let workers = children(fleet.child.id());
    point.mem_drop_bytes = mem_before as i64 - meminfo_available() as i64;
    point.rss_bytes = workers.iter().map(|&p| rss(p)).sum();
    let cpu0: Duration = workers.iter().map(|&p| cpu_time(p)).sum();
    let t0 = Instant::now();
    thread::sleep(Duration::from_secs(o.idle_secs));
    let cpu1: Duration = workers.iter().map(|&p| cpu_time(p)).sum();
    point.idle_cpu_percent =
        100.0 * cpu1.saturating_sub(cpu0).as_secs_f64() / t0.elapsed().as_secs_f64();
    // The parent writes its summary once its instances settled and it
    // measured two seconds of idle.
    let wait_summary = Instant::now();
    while !summary_path.is_file() && wait_summary.elapsed() < Duration::from_secs(15) {
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(50));
    point.parent_start_rate = fs::read_to_string(&summary_path)
        .ok()
        .and_then(|s| json_number(&s, "start_rate_per_s"))
        .unwrap_or(0.0);

    point.connections = n;
    let (answered, why) = connect_all(port, n);
    point.answered = answered;
    if let Some(why) = why {
        let e = point.error.get_or_insert_with(String::new);
        e.push_str(&format!(
            "{} connections failed, the first: {why}",
            n - answered
        ));
    }

    let t = Instant::now();
    fleet.terminate(&workers);
    point.teardown_secs = t.elapsed().as_secs_f64();
    point
}

/// `flint fleet` running: its console is drained and `listening on` lines
/// counted; killed (with its workers) by PID on drop.
struct Running {
    child: Child,
    reaped: bool,
    listening: Arc<AtomicU64>,
    last_listening_ns: Arc<AtomicU64>,
    stderr: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
}

impl Running {
    fn new(mut child: Child) -> Running {
        let listening = Arc::new(AtomicU64::new(0));
        let last = Arc::new(AtomicU64::new(0));
        let out = child.stdout.take().expect("piped stdout");
        let (count, at) = (listening.clone(), last.clone());
        let t0 = Instant::now();
        thread::spawn(move || {
            for line in BufReader::new(out).split(b'\n').map_while(|l| l.ok()) {
                if line.windows(12).any(|w| w == b"listening on") {
                    count.fetch_add(1, Ordering::SeqCst);
                    at.store(t0.elapsed().as_nanos() as u64, Ordering::SeqCst);
                }
            }
        });
        let err = child.stderr.take().expect("piped stderr");
        let (tx, stderr) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(|l| l.ok()) {
                let _ = tx.send(line);
            }
        });
        Running {
            child,
            reaped: false,
            listening,
            last_listening_ns: last,
            stderr,
            stderr_seen: Vec::new(),
        }
    }

    fn listening(&self) -> u64 {
        self.listening.load(Ordering::SeqCst)
    }

    /// From spawning `flint fleet` to the last `listening on` line.
    fn last_listening_secs(&self) -> f64 {
        self.last_listening_ns.load(Ordering::SeqCst) as f64 / 1e9
    }

    fn alive(&mut self) -> bool {
        !self.reaped && matches!(self.child.try_wait(), Ok(None))
    }

    fn stderr_tail(&mut self) -> String {
        self.stderr_seen.extend(self.stderr.try_iter());
        let start = self.stderr_seen.len().saturating_sub(3);
        self.stderr_seen[start..].join(" | ")
    }

    /// SIGTERM, then wait for the parent and every worker to be gone
    /// (SIGKILL after 60 s).
    fn terminate(&mut self, workers: &[u32]) {
        if !self.reaped {
            // SAFETY: kill(2) on our own child, not reaped yet.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let parent_done = self.reaped || !matches!(self.child.try_wait(), Ok(None));
            self.reaped = parent_done;
            if parent_done && workers.iter().all(|&p| !alive(p)) {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
        self.kill(workers);
    }

    fn kill(&mut self, workers: &[u32]) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.reaped = true;
        }
        for &p in workers {
            if alive(p) {
                // SAFETY: kill(2) by PID; the worker was our child's child
                // and is still there (its parent died, so it was not reaped
                // by anyone who could have recycled the PID meanwhile).
                unsafe { libc::kill(p as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let workers = children(self.child.id());
        self.kill(&workers);
    }
}

/// Connects `n` times to 127.0.0.1:`port` from [`CLIENTS`] threads, sends
/// [`PING`] on each and counts the connections that echoed it whole; also
/// why the first that did not failed.
fn connect_all(port: u16, n: u64) -> (u64, Option<String>) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let next = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (next, answered, first_error) =
                (next.clone(), answered.clone(), first_error.clone());
            thread::spawn(move || {
                while next.fetch_add(1, Ordering::SeqCst) < n {
                    match echo_once(addr) {
                        Ok(()) => {
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => {
                            let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
                            first.get_or_insert(e);
                        }
                    }
                }
            })
        })
        .collect();
    for c in clients {
        let _ = c.join();
    }
    let first = first_error.lock().unwrap_or_else(|p| p.into_inner()).take();
    (answered.load(Ordering::SeqCst), first)
}

/// One connection that must echo [`PING`].
fn echo_once(addr: SocketAddr) -> std::result::Result<(), String> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    c.write_all(PING).map_err(|e| format!("write: {e}"))?;
    let mut got = vec![0u8; PING.len()];
    c.read_exact(&mut got).map_err(|e| format!("read: {e}"))?;
    match got == PING {
        true => Ok(()),
        false => Err(format!("echoed {:?}", String::from_utf8_lossy(&got))),
    }
}

/// The live children of `parent` (the fleet's workers).
fn children(parent: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s[s.rfind(')')? + 1..].trim_start().starts_with('Z')))
        == Some(false)
}

fn meminfo_available() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            let line = t.lines().find(|l| l.starts_with("MemAvailable:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}

fn rss(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            let line = t.lines().find(|l| l.starts_with("VmRSS:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}

fn cpu_time(pid: u32) -> Duration {
    let ticks = fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let f: Vec<&str> = s[s.rfind(')')? + 1..].split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// The number after `"key":` in a flat JSON object.
fn json_number(text: &str, key: &str) -> Option<f64> {
    let at = text.find(&format!("\"{key}\""))?;
    let rest = text[at..].split_once(':')?.1.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn table(points: &[Point], o: &Options) -> String {
    let mut t = format!(
        "\ndensity: idle apps/echo instances with --publish, --per-worker {}, CPU over {} s idle\n\n",
        o.per_worker, o.idle_secs
    );
    t += &format!(
        "{:>7} {:>9} {:>11} {:>11} {:>13} {:>12} {:>9} {:>10} {:>13}\n",
        "N",
        "listening",
        "start/s",
        "(parent)",
        "MemAvail/inst",
        "RSS/inst",
        "idle CPU",
        "teardown",
        "answered"
    );
    for p in points {
        t += &format!(
            "{:>7} {:>9} {:>11.0} {:>11.0} {:>9.3} MiB {:>8.3} MiB {:>8.2}% {:>8.2} s {:>6}/{:<6}\n",
            p.n,
            p.listening,
            p.start_rate,
            p.parent_start_rate,
            p.mem_per_instance_mib(),
            p.rss_per_instance_mib(),
            p.idle_cpu_percent,
            p.teardown_secs,
            p.answered,
            p.connections
        );
    }
    if let Some(big) = points.iter().max_by_key(|p| p.n) {
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        t += &format!(
            "\nat N={}: host memory {:.3} MiB/instance (target <= {TARGET_MIB}: {}), start {:.0}/s (target >= {TARGET_RATE}: {}), {} of {} answered\n",
            big.n,
            big.mem_per_instance_mib(),
            verdict(big.mem_per_instance_mib() <= TARGET_MIB),
            big.start_rate,
            verdict(big.start_rate >= TARGET_RATE),
            big.answered,
            big.connections
        );
    }
    t
}

fn json(points: &[Point], o: &Options) -> String {
    let rows: Vec<String> = points
        .iter()
        .map(|p| {
            format!(
                "    {{\"n\": {}, \"listening\": {}, \"start_seconds\": {:.4}, \"start_rate_per_s\": {:.2}, \"parent_start_rate_per_s\": {:.2}, \"mem_available_drop_bytes\": {}, \"mem_per_instance_bytes\": {}, \"rss_bytes\": {}, \"rss_per_instance_bytes\": {}, \"idle_cpu_percent\": {:.4}, \"teardown_seconds\": {:.4}, \"connections\": {}, \"answered\": {}, \"error\": {}}}",
                p.n,
                p.listening,
                p.start_secs,
                p.start_rate,
                p.parent_start_rate,
                p.mem_drop_bytes,
                p.mem_drop_bytes / p.listening.max(1) as i64,
                p.rss_bytes,
                p.rss_bytes / p.listening.max(1),
                p.idle_cpu_percent,
                p.teardown_secs,
                p.connections,
                p.answered,
                p.error.as_deref().map_or("null".into(), json_str)
            )
        })
        .collect();
    format!(
        "{{\n  \"bench\": \"density\",\n  \"app\": \"echo\",\n  \"per_worker\": {},\n  \"idle_seconds\": {},\n  \"target_mem_per_instance_mib\": {TARGET_MIB},\n  \"target_start_rate_per_s\": {TARGET_RATE},\n  \"points\": [\n{}\n  ]\n}}\n",
        o.per_worker,
        o.idle_secs,
        rows.join(",\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options> {
        Options::parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn default_sizes_are_the_issues() {
        assert_eq!(parse(&[]).unwrap().sizes, vec![1000, 5000, 10000]);
        assert_eq!(parse(&["--sizes", "10,20"]).unwrap().sizes, vec![10, 20]);
        assert!(parse(&["--sizes", "10,x"]).is_err());
        assert!(parse(&["--idle"]).is_err());
        assert!(parse(&["--fast", "1"]).is_err());
    }

    #[test]
    fn numbers_are_read_from_the_summary() {
        let s = "{\n  \"started\": 12,\n  \"start_rate_per_s\": 812.5,\n}";
        assert_eq!(json_number(s, "start_rate_per_s"), Some(812.5));
        assert_eq!(json_number(s, "started"), Some(12.0));
        assert_eq!(json_number(s, "nope"), None);
    }
}
