//! The host limits a fleet runs into, checked before any worker starts so
//! that a limit that binds is one clear line instead of thousands of
//! failed starts: open files per process, memory maps per process
//! (`vm.max_map_count`), threads on the host (`kernel.threads-max`,
//! `kernel.pid_max`, RLIMIT_NPROC), and the memory the host has free.

use std::fs;
use std::io;

/// File descriptors one instance holds in its worker: the VM, the vCPU,
/// eventfds, the timer and epoll of its poller, a switch port; with room.
pub const FDS_PER_INSTANCE: u64 = 8;
/// Memory maps one instance adds to its worker: guest RAM (a few with a
/// template), the vCPU's kvm_run page, the vCPU thread's stack and guard.
pub const MAPS_PER_INSTANCE: u64 = 8;
/// Threads one instance adds: its vCPU thread and the kernel thread KVM
/// makes for each VM (it counts against `kernel.threads-max` too); a
/// watchdog thread more with `--timeout`.
pub const THREADS_PER_INSTANCE: u64 = 2;
/// What a worker needs besides its instances (the switch, stdout, ...).
const WORKER_FDS: u64 = 64;
const WORKER_MAPS: u64 = 512;
const WORKER_THREADS: u64 = 8;

/// Raises this process's soft RLIMIT_NOFILE to the hard limit (workers
/// inherit it) and returns the new soft limit.
pub fn raise_nofile() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(lim.rlim_cur)
}

/// The soft limit of `resource`, `u64::MAX` for unlimited.
fn soft_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer to a local rlimit.
    if unsafe { libc::getrlimit(resource, &mut lim) } != 0 {
        return u64::MAX;
    }
    lim.rlim_cur
}

/// A number from a `/proc/sys` file, if it is readable.
pub fn sysctl(path: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The threads that exist on the host now (the 4th field of loadavg is
/// `running/total`).
fn host_threads() -> u64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| {
            let field = l.split_whitespace().nth(3)?;
            field.split_once('/')?.1.parse().ok()
        })
        .unwrap_or(0)
}

/// A value of /proc/meminfo in bytes (`MemAvailable`, ...).
pub fn meminfo(key: &str) -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    })
}

/// What the host offers, read once.
#[derive(Clone, Copy, Debug)]
pub struct Host {
    pub nofile: u64,
    pub max_map_count: Option<u64>,
    pub threads_max: Option<u64>,
    pub pid_max: Option<u64>,
    pub nproc: u64,
    pub threads_now: u64,
}

impl Host {
    /// Reads the limits of this host and process.
    pub fn read(nofile: u64) -> Host {
        Host {
            nofile,
            max_map_count: sysctl("/proc/sys/vm/max_map_count"),
            threads_max: sysctl("/proc/sys/kernel/threads-max"),
            pid_max: sysctl("/proc/sys/kernel/pid_max"),
            nproc: soft_limit(libc::RLIMIT_NPROC),
            threads_now: host_threads(),
        }
    }

    /// The first limit that `instances` in workers of `per_worker` would
    /// run into, as one sentence saying what to change; None if none
    /// binds. `timeout` adds a watchdog thread per instance.
    pub fn binding(&self, instances: u64, per_worker: u64, timeout: bool) -> Option<String> {
        let per_worker = per_worker.min(instances);
        let workers = instances.div_ceil(per_worker);
        let threads_each = THREADS_PER_INSTANCE + u64::from(timeout);
        let fds = per_worker * FDS_PER_INSTANCE + WORKER_FDS;
        if fds > self.nofile {
            let fit = self.nofile.saturating_sub(WORKER_FDS) / FDS_PER_INSTANCE;
            return Some(format!(
                "a worker of {per_worker} instances needs about {fds} open files, but RLIMIT_NOFILE is {}: \
                 use --per-worker {} or less, or raise the hard limit (ulimit -Hn)",
                self.nofile,
                fit.max(1)
            ));
        }
        if let Some(max) = self.max_map_count {
            let maps = per_worker * MAPS_PER_INSTANCE + WORKER_MAPS;
            if maps > max {
                let fit = max.saturating_sub(WORKER_MAPS) / MAPS_PER_INSTANCE;
                return Some(format!(
                    "a worker of {per_worker} instances needs about {maps} memory maps, but vm.max_map_count is {max}: \
                     use --per-worker {} or less, or sysctl -w vm.max_map_count={}",
                    fit.max(1),
                    maps.next_power_of_two()
                ));
            }
        }
        let threads = instances * threads_each + workers * WORKER_THREADS;
        for (limit, name, fix) in [
            (
                self.threads_max,
                "kernel.threads-max",
                "sysctl -w kernel.threads-max=",
            ),
            (self.pid_max, "kernel.pid_max", "sysctl -w kernel.pid_max="),
        ] {
            if let Some(max) = limit {
                let free = max.saturating_sub(self.threads_now);
                if threads > free {
                    return Some(format!(
                        "{instances} instances need about {threads} threads, but {name} is {max} and {} exist already: \
                         start fewer instances, or {fix}{}",
                        self.threads_now,
                        (self.threads_now + threads * 2).next_power_of_two()
                    ));
                }
            }
        }
        if self.nproc != u64::MAX && self.nproc != libc::RLIM_INFINITY && threads > self.nproc {
            return Some(format!(
                "{instances} instances need about {threads} threads, but RLIMIT_NPROC is {}: \
                 start fewer instances, or raise it (ulimit -u)",
                self.nproc
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host {
            nofile: 20_000,
            max_map_count: Some(65_530),
            threads_max: Some(192_731),
            pid_max: Some(4_194_304),
            nproc: u64::MAX,
            threads_now: 300,
        }
    }

    #[test]
    fn ten_thousand_in_workers_of_500_fit_this_host() {
        assert_eq!(host().binding(10_000, 500, false), None);
        assert_eq!(host().binding(10_000, 1_000, true), None);
    }

    #[test]
    fn too_few_files_name_a_per_worker_that_fits() {
        let h = Host {
            nofile: 1024,
            ..host()
        };
        let why = h.binding(1000, 500, false).unwrap();
        assert!(
            why.contains("RLIMIT_NOFILE") && why.contains("--per-worker 120"),
            "{why}"
        );
    }

    #[test]
    fn map_count_binds_per_worker() {
        let h = Host {
            max_map_count: Some(4096),
            ..host()
        };
        let why = h.binding(1000, 1000, false).unwrap();
        assert!(why.contains("vm.max_map_count is 4096"), "{why}");
        assert_eq!(h.binding(1000, 100, false), None);
    }

    #[test]
    fn threads_max_binds_on_the_whole_fleet() {
        let h = Host {
            threads_max: Some(5_000),
            ..host()
        };
        let why = h.binding(10_000, 500, false).unwrap();
        assert!(why.contains("kernel.threads-max is 5000"), "{why}");
    }

    #[test]
    fn meminfo_reads_bytes() {
        assert!(meminfo("MemAvailable").unwrap() > 0);
        assert_eq!(meminfo("NoSuchKey"), None);
    }
}
