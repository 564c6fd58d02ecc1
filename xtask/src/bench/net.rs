//! `cargo xtask bench net [-d SECS] [-t THREADS] [-c CONNS] [--path PATH]`:
//! HTTP through a micro-VM next to the same HTTP served natively.
//!
//! `wrk --latency` drives `apps/http` in `flint run --stats --publish
//! 127.0.0.1:<port>:80`, then, with the same load, a native Rust server on
//! loopback ([`native_http`](super::native_http)) that serves the very bytes
//! the guest answered `/`, `/health`, an unknown path and a malformed
//! request with. The table gives req/s, latency p50/p99, the ratio, and VM
//! exits per request: flint's `vm_exits` after wrk (stopped by SIGTERM)
//! less those of an instance that only booted, over the requests served.
//! `target/bench/net.json` holds the same and wrk's reports.

use std::collections::HashMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;

use super::native_http::{self, Responses};
use super::serve::{fetch, stats_line, Serving};
use super::stats::json_str;
use super::wrk::{self, Load, WrkResult};
use crate::{guest, monitor, packages, target_dir, Error, Result};

/// The targets.
const TARGET_RATIO: f64 = 0.5;
const TARGET_EXITS_PER_REQUEST: f64 = 2.0;

/// Hypercall counters broken down per request in the report.
const PER_REQUEST: [&str; 4] = ["poll", "net_read", "net_write", "clock"];

/// The bench's options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// wrk's load, the same for both servers.
    pub load: Load,
    /// The path wrk requests.
    pub path: String,
}

impl Options {
    /// Parses `[-d SECS] [-t THREADS] [-c CONNS] [--path PATH]`.
    pub fn parse(args: &[String]) -> Result<Options> {
        let usage = |why: String| {
            Error::Bench(format!(
                "{why}; usage: cargo xtask bench net [-d SECS] [-t THREADS] [-c CONNS] [--path PATH]"
            ))
        };
        let mut o = Options {
            load: Load {
                seconds: 5,
                threads: 2,
                connections: 10,
            },
            path: "/".into(),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || {
                args.next()
                    .cloned()
                    .ok_or_else(|| usage(format!("{arg} needs a value")))
            };
            let number = |v: String| {
                v.parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| usage(format!("`{v}` is not a positive number")))
            };
            match arg.as_str() {
                "-d" | "--duration" => o.load.seconds = number(value()?)?,
                "-t" | "--threads" => o.load.threads = number(value()?)?,
                "-c" | "--connections" => o.load.connections = number(value()?)?,
                "--path" => o.path = value()?,
                a => return Err(usage(format!("unknown option `{a}`"))),
            }
        }
        if o.load.connections < o.load.threads {
            return Err(usage("-c must be at least -t (wrk's rule)".into()));
        }
        if !o.path.starts_with('/') {
            return Err(usage(format!("--path must start with /, not `{}`", o.path)));
        }
        Ok(o)
    }
}

/// Runs the bench and prints its report.
pub fn run(options: &Options) -> Result<()> {
    packages::ensure(&[("wrk", "wrk")])?;
    if !packages::on_path("wrk") {
        return Err(Error::Bench(
            "wrk is not installed: apt-get install wrk (as root, `cargo xtask bench net` does it)"
                .into(),
        ));
    }
    eprintln!("net: building http.elf and the monitor...");
    let image = guest::build("http")?;
    let flint = monitor::build()?;

    eprintln!("net: boot-only baseline (for VM exits not caused by requests)...");
    let baseline = Serving::start(&flint, &image, 80, &["--stats"])?;
    let baseline = stopped_stats(baseline)?;

    let serving = Serving::start(&flint, &image, 80, &["--stats"])?;
    let responses = capture(&serving)?;
    let native = native_http::start(responses).map_err(Error::io("native http server"))?;

    let l = &options.load;
    eprintln!(
        "net: wrk -t{} -c{} -d{}s against flint ({})...",
        l.threads, l.connections, l.seconds, serving.addr
    );
    let flint_wrk = wrk::run(&format!("http://{}{}", serving.addr, options.path), l)?;
    let flint_stats = stopped_stats(serving)?;
    eprintln!(
        "net: the same against the native server ({})...",
        native.addr
    );
    let native_wrk = wrk::run(&format!("http://{}{}", native.addr, options.path), l)?;

    let report = Report::new(options, flint_wrk, native_wrk, baseline, flint_stats);
    println!("{}", report.table());
    let dir = target_dir().join("bench");
    fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    let json_path = dir.join("net.json");
    fs::write(&json_path, report.json()).map_err(Error::io(&json_path))?;
    println!("wrote {}", json_path.display());
    Ok(())
}

/// The guest's exact answers, for the native server to repeat.
fn capture(serving: &Serving) -> Result<Responses> {
    let get = |path: &str| {
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        fetch(serving.addr, req.as_bytes(), false)
    };
    let page = get("/")?;
    if !page.starts_with(b"HTTP/1.1 200") {
        return Err(Error::Bench(format!(
            "the http guest answered GET / with {:?}, not 200",
            String::from_utf8_lossy(&page)
        )));
    }
    let mut by_path = HashMap::new();
    by_path.insert("/".to_owned(), page);
    by_path.insert("/health".to_owned(), get("/health")?);
    Ok(Responses {
        by_path,
        not_found: get("/flint-bench-no-such-page")?,
        bad_request: fetch(serving.addr, b"NOT HTTP\r\n\r\n", true)?,
    })
}

/// Stops flint with SIGTERM and returns its stats counters (both lines).
fn stopped_stats(serving: Serving) -> Result<HashMap<String, u64>> {
    let argv = serving.argv.clone();
    let stopped = serving.stop(libc::SIGTERM)?;
    if stopped.status.signal() != Some(libc::SIGTERM) {
        return Err(Error::Bench(format!(
            "`{argv}` should die by SIGTERM, ended with {}; stderr: {}",
            stopped.status, stopped.stderr
        )));
    }
    let mut all = stats_line(&stopped.stderr, "vm_exits").ok_or_else(|| {
        Error::Bench(format!(
            "`{argv}` printed no `flint: stats: vm_exits=...` line; stderr: {}",
            stopped.stderr
        ))
    })?;
    all.extend(stats_line(&stopped.stderr, "net").unwrap_or_default());
    Ok(all)
}

/// What the bench found.
struct Report {
    options: Options,
    flint: WrkResult,
    native: WrkResult,
    baseline: HashMap<String, u64>,
    stats: HashMap<String, u64>,
}

impl Report {
    fn new(
        options: &Options,
        flint: WrkResult,
        native: WrkResult,
        baseline: HashMap<String, u64>,
        stats: HashMap<String, u64>,
    ) -> Report {
        Report {
            options: options.clone(),
            flint,
            native,
            baseline,
            stats,
        }
    }

    /// Requests the instance served: wrk's and the four captured.
    fn served(&self) -> u64 {
        self.flint.requests + 4
    }

    /// Counter `key` caused by requests (less the boot-only baseline), per
    /// request served.
    fn per_request(&self, key: &str) -> f64 {
        let total = self.stats.get(key).copied().unwrap_or(0);
        let base = self.baseline.get(key).copied().unwrap_or(0);
        total.saturating_sub(base) as f64 / self.served().max(1) as f64
    }

    fn ratio(&self) -> f64 {
        self.flint.req_per_sec / self.native.req_per_sec.max(1e-9)
    }

    fn table(&self) -> String {
        let l = &self.options.load;
        let mut t = format!(
            "\nnet: wrk -t{} -c{} -d{}s --latency, GET {}, over 127.0.0.1\n\n",
            l.threads, l.connections, l.seconds, self.options.path
        );
        t += &format!(
            "{:<8} {:>12} {:>12} {:>12} {:>10} {:>8}\n",
            "server", "req/s", "p50", "p99", "requests", "errors"
        );
        for (name, r) in [("flint", &self.flint), ("native", &self.native)] {
            t += &format!(
                "{name:<8} {:>12.0} {:>12} {:>12} {:>10} {:>8}\n",
                r.req_per_sec,
                us(r.p50),
                us(r.p99),
                r.requests,
                r.socket_errors + r.non_2xx
            );
        }
        let ratio = self.ratio();
        let exits = self.per_request("vm_exits");
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        t += &format!(
            "\nratio flint/native req/s: {ratio:.3} (target >= {TARGET_RATIO}: {})\n",
            verdict(ratio >= TARGET_RATIO)
        );
        t += &format!(
            "VM exits per request:     {exits:.2} (target <= {TARGET_EXITS_PER_REQUEST}: {})\n",
            verdict(exits <= TARGET_EXITS_PER_REQUEST)
        );
        t += &format!(
            "  {} exits in all, {} of them at boot and idle (an instance that only booted), over {} requests\n",
            self.stats.get("vm_exits").copied().unwrap_or(0),
            self.baseline.get("vm_exits").copied().unwrap_or(0),
            self.served()
        );
        let calls: Vec<String> = PER_REQUEST
            .iter()
            .map(|k| format!("{k} {:.2}", self.per_request(k)))
            .collect();
        t += &format!("  hypercalls per request: {}\n", calls.join(", "));
        t += &format!(
            "  frames per request: rx {:.2}, tx {:.2}\n",
            self.per_request("rx_frames"),
            self.per_request("tx_frames")
        );
        t
    }

    fn json(&self) -> String {
        let l = &self.options.load;
        let wrk = |r: &WrkResult| {
            format!(
                "{{\"requests\": {}, \"elapsed_ns\": {}, \"req_per_sec\": {:.2}, \"p50_ns\": {}, \"p75_ns\": {}, \"p90_ns\": {}, \"p99_ns\": {}, \"socket_errors\": {}, \"non_2xx\": {}, \"wrk_report\": {}}}",
                r.requests,
                r.elapsed.as_nanos(),
                r.req_per_sec,
                r.p50.as_nanos(),
                r.p75.as_nanos(),
                r.p90.as_nanos(),
                r.p99.as_nanos(),
                r.socket_errors,
                r.non_2xx,
                json_str(&r.raw)
            )
        };
        let counters = |m: &HashMap<String, u64>| {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let kv: Vec<String> = keys
                .iter()
                .map(|k| format!("{}: {}", json_str(k), m[*k]))
                .collect();
            format!("{{{}}}", kv.join(", "))
        };
        let per: Vec<String> = ["vm_exits", "hypercalls"]
            .iter()
            .chain(PER_REQUEST.iter())
            .chain(["rx_frames", "tx_frames"].iter())
            .map(|k| format!("{}: {:.4}", json_str(k), self.per_request(k)))
            .collect();
        format!(
            "{{\n  \"bench\": \"net\",\n  \"load\": {{\"seconds\": {}, \"threads\": {}, \"connections\": {}, \"path\": {}}},\n  \"flint\": {},\n  \"native\": {},\n  \"ratio_req_per_sec\": {:.4},\n  \"requests_served\": {},\n  \"flint_stats\": {},\n  \"boot_only_stats\": {},\n  \"per_request\": {{{}}},\n  \"target_ratio\": {TARGET_RATIO},\n  \"target_exits_per_request\": {TARGET_EXITS_PER_REQUEST}\n}}\n",
            l.seconds,
            l.threads,
            l.connections,
            json_str(&self.options.path),
            wrk(&self.flint),
            wrk(&self.native),
            self.ratio(),
            self.served(),
            counters(&self.stats),
            counters(&self.baseline),
            per.join(", ")
        )
    }
}

/// A latency for the table.
fn us(d: std::time::Duration) -> String {
    if d.as_micros() >= 10_000 {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{} us", d.as_micros())
    }
}

#[cfg(test)]
mod tests {
    use super::Options;

    fn parse(args: &[&str]) -> crate::Result<Options> {
        Options::parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn defaults_are_short() {
        let o = parse(&[]).unwrap();
        assert_eq!(
            (o.load.seconds, o.load.threads, o.load.connections),
            (5, 2, 10)
        );
        assert_eq!(o.path, "/");
    }

    #[test]
    fn options_are_read() {
        let o = parse(&["-d", "2", "-t", "1", "-c", "50", "--path", "/health"]).unwrap();
        assert_eq!(
            (o.load.seconds, o.load.threads, o.load.connections),
            (2, 1, 50)
        );
        assert_eq!(o.path, "/health");
    }

    #[test]
    fn bad_options_are_refused() {
        for bad in [
            &["-d"][..],
            &["-d", "0"],
            &["-t", "x"],
            &["-t", "4", "-c", "2"],
            &["--path", "health"],
            &["--fast"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
