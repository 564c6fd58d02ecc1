//! What the host and the daemon process have: /proc/meminfo, the daemon's
//! RSS, threads and open fds.

use super::model::HostInfo;
use super::registry::{self, Daemon};

/// `GET /host`.
pub fn info(daemon: &Daemon) -> HostInfo {
    let (instances, reserved, images) = daemon.usage();
    let all = daemon.list();
    HostInfo {
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: daemon.started.elapsed().as_secs_f64(),
        instances,
        images,
        instance_cap: daemon.settings.max_instances,
        memory_budget_bytes: daemon.settings.memory_budget,
        memory_reserved_bytes: reserved,
        host_mem_total_bytes: meminfo("MemTotal:"),
        host_mem_available_bytes: meminfo("MemAvailable:"),
        daemon_rss_bytes: status_kib("VmRSS:").map(|k| k * 1024),
        daemon_threads: status_kib("Threads:"),
        daemon_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count() as u64),
        totals: registry::total(&all),
    }
}

/// A `/proc/meminfo` line's value in bytes.
pub fn meminfo(key: &str) -> Option<u64> {
    field("/proc/meminfo", key).map(|kib| kib * 1024)
}

/// A `/proc/self/status` line's number (kB for sizes).
fn status_kib(key: &str) -> Option<u64> {
    field("/proc/self/status", key)
}

fn field(file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}
