//! Running `wrk` (the Debian package) and reading its report.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{Error, Result};

/// How hard and how long wrk drives a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Load {
    /// Seconds per case (`-d`).
    pub seconds: u32,
    /// wrk threads (`-t`).
    pub threads: u32,
    /// Open connections (`-c`), at least `threads`.
    pub connections: u32,
}

/// What one wrk run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WrkResult {
    /// Completed requests.
    pub requests: u64,
    /// The run's length as wrk reports it.
    pub elapsed: Duration,
    /// wrk's `Requests/sec`.
    pub req_per_sec: f64,
    /// Latency median, from `--latency`.
    pub p50: Duration,
    /// Latency 75th percentile.
    pub p75: Duration,
    /// Latency 90th percentile.
    pub p90: Duration,
    /// Latency 99th percentile.
    pub p99: Duration,
    /// connect, read, write and timeout errors, summed.
    pub socket_errors: u64,
    /// Responses that were not 2xx or 3xx.
    pub non_2xx: u64,
    /// wrk's whole report, for the JSON.
    pub raw: String,
}

/// Runs `wrk --latency` against `url` with `load`.
pub fn run(url: &str, load: &Load) -> Result<WrkResult> {
    let mut cmd = Command::new("wrk");
    cmd.arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.seconds))
        .arg("--latency")
        .arg(url)
        .stdin(Stdio::null());
    let out = cmd.output().map_err(|source| Error::Spawn {
        program: "wrk".into(),
        source,
    })?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(Error::Bench(format!(
            "wrk against {url} failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    parse(&text).map_err(|why| Error::Bench(format!("wrk against {url}: {why}:\n{text}")))
}

/// Reads wrk's report.
pub fn parse(text: &str) -> Result<WrkResult, String> {
    let mut r = WrkResult {
        raw: text.to_owned(),
        ..WrkResult::default()
    };
    let mut seen_requests = false;
    let mut seen_p50 = false;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [pct, value] if pct.ends_with('%') => {
                let d = duration(value).ok_or(format!("bad latency {value:?}"))?;
                match *pct {
                    "50%" => {
                        r.p50 = d;
                        seen_p50 = true;
                    }
                    "75%" => r.p75 = d,
                    "90%" => r.p90 = d,
                    "99%" => r.p99 = d,
                    _ => {}
                }
            }
            [n, "requests", "in", secs, ..] => {
                r.requests = n.parse().map_err(|_| format!("bad request count {n:?}"))?;
                r.elapsed =
                    duration(secs.trim_end_matches(',')).ok_or(format!("bad duration {secs:?}"))?;
                seen_requests = true;
            }
            ["Requests/sec:", n] => {
                r.req_per_sec = n.parse().map_err(|_| format!("bad Requests/sec {n:?}"))?;
            }
            ["Socket", "errors:", rest @ ..] => {
                r.socket_errors = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                r.non_2xx = n.parse().map_err(|_| format!("bad Non-2xx count {n:?}"))?;
            }
            _ => {}
        }
    }
    if !seen_requests || !seen_p50 {
        return Err("no `N requests in` line or latency distribution in its output".into());
    }
    Ok(r)
}

/// `107.00us`, `1.23ms`, `2.00s`, `1.50m` as a duration.
fn duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let ns_per_unit = match unit {
        "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return None,
    };
    let ns = (number * ns_per_unit).round();
    (ns.is_finite() && ns >= 0.0).then(|| Duration::from_nanos(ns as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 5s test @ http://127.0.0.1:8080/
  2 threads and 10 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   116.72us   52.20us   2.58ms   91.03%
    Req/Sec    40.52k     2.06k   44.53k    70.59%
  Latency Distribution
     50%  107.00us
     75%  122.00us
     90%    1.45ms
     99%    2.72s
  411130 requests in 5.10s, 42.34MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 5
Requests/sec:  80614.02
Transfer/sec:      8.30MB
";

    #[test]
    fn reads_wrks_report() {
        let r = parse(REPORT).unwrap();
        assert_eq!(r.requests, 411130);
        assert_eq!(r.elapsed, Duration::from_millis(5100));
        assert_eq!(r.req_per_sec, 80614.02);
        assert_eq!(r.p50, Duration::from_micros(107));
        assert_eq!(r.p90, Duration::from_micros(1450));
        assert_eq!(r.p99, Duration::from_millis(2720));
        assert_eq!(r.socket_errors, 5);
        assert_eq!(r.non_2xx, 5);
    }

    #[test]
    fn a_report_without_counts_is_an_error() {
        assert!(parse("wrk: something went wrong").is_err());
    }
}
