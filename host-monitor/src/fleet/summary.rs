//! What a started fleet costs: the one-screen summary `flint fleet` prints
//! on stderr, and its JSON form (`--summary-json FILE`), plus the
//! measurements it is made of (VmRSS and CPU time of the workers).

use serde::Serialize;
use std::fmt::Write;
use std::fs;
use std::time::Duration;

/// The fleet's summary, measured once every worker has tried to start all
/// its instances and they settled.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// The instances asked for (`-n`).
    pub instances: u64,
    /// Worker processes, and instances per worker (`--per-worker`).
    pub workers: u64,
    pub per_worker: u64,
    /// Instances that started (reached their first hypercall).
    pub started: u64,
    /// Instances that could not start.
    pub failed: u64,
    /// Instances running when the summary was taken.
    pub running: u64,
    /// Instances that had reached their idle POLL.
    pub idle: u64,
    /// Instances that had ended.
    pub stopped: u64,
    /// From spawning the workers until all were ready.
    pub start_seconds: f64,
    /// `started / start_seconds`.
    pub start_rate_per_s: f64,
    /// Time from the start request to the first hypercall, over the
    /// instances that started.
    pub first_hypercall_p50_us: u64,
    pub first_hypercall_p99_us: u64,
    pub first_hypercall_max_us: u64,
    /// MemAvailable before the workers minus after they started.
    pub mem_available_drop_bytes: i64,
    /// That over the instances running.
    pub mem_per_instance_bytes: i64,
    /// The workers' VmRSS, summed, and over the instances running.
    pub rss_bytes: u64,
    pub rss_per_instance_bytes: u64,
    /// The workers' proportional set size (Pss), summed, and over the
    /// instances running. RSS counts the memory template's shared pages
    /// again in every instance; PSS divides them among their users.
    pub pss_bytes: u64,
    pub pss_per_instance_bytes: u64,
    /// The workers' CPU time (user + system) over `cpu_window_seconds`
    /// of wall time, in percent of one core.
    pub idle_cpu_percent: f64,
    pub cpu_window_seconds: f64,
    /// Why the first instance that could not start did not, if one.
    pub first_failure: Option<String>,
    /// Limit hits so far (`--console-limit`, `--net-rate`): each
    /// instance's first hit of each limit.
    pub limit_hits: u64,
}

const MIB: f64 = 1024.0 * 1024.0;

impl Summary {
    /// Fills the first-hypercall percentiles from the samples (µs).
    pub fn set_first_hypercalls(&mut self, mut samples: Vec<u64>) {
        samples.sort_unstable();
        self.first_hypercall_p50_us = quantile(&samples, 0.50);
        self.first_hypercall_p99_us = quantile(&samples, 0.99);
        self.first_hypercall_max_us = samples.last().copied().unwrap_or(0);
    }

    /// Fills the memory numbers, per instance running.
    pub fn set_memory(&mut self, mem_available_drop: i64, rss: u64, pss: u64) {
        // With nothing running there is nothing to divide by.
        let n = self.running;
        self.mem_available_drop_bytes = mem_available_drop;
        self.mem_per_instance_bytes = mem_available_drop.checked_div(n as i64).unwrap_or(0);
        self.rss_bytes = rss;
        self.rss_per_instance_bytes = rss.checked_div(n).unwrap_or(0);
        self.pss_bytes = pss;
        self.pss_per_instance_bytes = pss.checked_div(n).unwrap_or(0);
    }

    /// The summary for a person: a few lines, each starting `flint: `.
    pub fn text(&self, image: &str) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "flint: fleet of {} instances of {image} in {} worker(s) of up to {}",
            self.instances, self.workers, self.per_worker
        );
        let _ = writeln!(
            t,
            "flint:   running        {} ({} idle, {} ended, {} failed to start)",
            self.running, self.idle, self.stopped, self.failed
        );
        let _ = writeln!(
            t,
            "flint:   started        {} in {:.2} s: {:.0} instances/s",
            self.started, self.start_seconds, self.start_rate_per_s
        );
        let _ = writeln!(
            t,
            "flint:   1st hypercall  p50 {}  p99 {}  max {}",
            us(self.first_hypercall_p50_us),
            us(self.first_hypercall_p99_us),
            us(self.first_hypercall_max_us)
        );
        let _ = writeln!(
            t,
            "flint:   host memory    {:.3} MiB per instance (MemAvailable {:+.1} MiB)",
            self.mem_per_instance_bytes as f64 / MIB,
            -self.mem_available_drop_bytes as f64 / MIB
        );
        let _ = writeln!(
            t,
            "flint:   RSS            {:.3} MiB per instance (workers: {:.1} MiB); PSS {:.3} MiB (shared pages counted once)",
            self.rss_per_instance_bytes as f64 / MIB,
            self.rss_bytes as f64 / MIB,
            self.pss_per_instance_bytes as f64 / MIB
        );
        let _ = writeln!(
            t,
            "flint:   idle CPU       {:.2}% of one core (workers, over {:.1} s)",
            self.idle_cpu_percent, self.cpu_window_seconds
        );
        if let Some(why) = &self.first_failure {
            let _ = writeln!(t, "flint:   first failure  {why}");
        }
        if self.limit_hits > 0 {
            let _ = writeln!(
                t,
                "flint:   limits hit     {} (console/network output dropped; instances go on)",
                self.limit_hits
            );
        }
        t
    }

    /// The summary as pretty JSON.
    pub fn json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into());
        s.push('\n');
        s
    }
}

/// The nearest-rank `q`-quantile of sorted samples (0 for none).
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Microseconds for a person: `850 us`, `12.4 ms`.
fn us(v: u64) -> String {
    if v >= 10_000 {
        format!("{:.1} ms", v as f64 / 1000.0)
    } else {
        format!("{v} us")
    }
}

/// A process's resident set (VmRSS) in bytes; 0 once it is gone.
pub fn rss(pid: u32) -> u64 {
    kib_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// A process's proportional set size (Pss) in bytes; 0 once it is gone.
pub fn pss(pid: u32) -> u64 {
    kib_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

/// The `key  N kB` line of a /proc file, in bytes; 0 if it is not there.
fn kib_field(path: &str, key: &str) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with(key))?;
            let kib: u64 = line
                .trim_start_matches(key)
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}

/// A process's user + system CPU time so far, all its threads; zero once
/// it is gone.
pub fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // The fields after `(comm)`, which may hold spaces: utime and stime
    // are fields 14 and 15, the 12th and 13th after it.
    let Some(close) = stat.rfind(')') else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos((ticks(11) + ticks(12)) * 1_000_000_000 / hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&[7], 0.99), 7);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    #[test]
    fn memory_is_per_running_instance() {
        let mut s = Summary {
            running: 4,
            ..Summary::default()
        };
        s.set_memory(4 << 20, 2 << 20, 1 << 20);
        assert_eq!(s.mem_per_instance_bytes, 1 << 20);
        assert_eq!(s.rss_per_instance_bytes, 512 << 10);
        assert_eq!(s.pss_per_instance_bytes, 256 << 10);
        assert!(s.json().contains("\"rss_per_instance_bytes\": 524288"));
        assert!(s.text("x.elf").contains("1.000 MiB per instance"));
    }

    #[test]
    fn this_process_has_rss_and_cpu() {
        let me = std::process::id();
        assert!(rss(me) > 0);
        assert!(pss(me) > 0);
        let _ = cpu_time(me);
        assert_eq!(rss(u32::MAX), 0);
        assert_eq!(pss(u32::MAX), 0);
    }
}
