//! The API's JSON bodies (docs/api.yaml describes the same shapes).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `POST /images`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterImage {
    /// The image file (an ELF built by `cargo xtask build <app>`).
    pub path: String,
    /// Its id in the API; default the file name without `.elf`.
    pub name: Option<String>,
}

/// An image as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ImageInfo {
    pub id: String,
    pub path: String,
    pub size_bytes: u64,
    pub registered_at: f64,
}

/// A size: bytes as a number, or text such as `16M`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

/// `POST /instances`: what to run and how (the options of `flint run`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateInstance {
    /// A registered image's id, or a path to an image (registered then).
    pub image: Option<String>,
    /// A snapshot file to resume instead of booting (`flint run --restore`).
    pub snapshot: Option<String>,
    /// The app's arguments (joined by single spaces).
    #[serde(default)]
    pub args: Vec<String>,
    pub mem: Option<Size>,
    pub stack: Option<Size>,
    pub timeout_secs: Option<f64>,
    /// `none`, `user` or `tap:NAME`.
    pub net: Option<String>,
    /// `[HOST_IP:]HOST_PORT:GUEST_PORT`, as `--publish`.
    #[serde(default)]
    pub publish: Vec<String>,
    pub ip: Option<String>,
    pub gateway: Option<String>,
    pub mac: Option<String>,
    /// `BYTES[/RATE]`, as `--console-limit`.
    pub console_limit: Option<String>,
    /// Frames a second, as `--net-rate`.
    pub net_rate: Option<u64>,
    /// Start it at once (create + start in one call).
    #[serde(default)]
    pub start: bool,
}

/// `POST /instances/{id}/snapshot`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    /// Where to write the snapshot file (replaced if it exists).
    pub path: String,
    /// How long to wait for the guest to block in POLL (default 10).
    pub wait_secs: Option<f64>,
}

/// How an instance was configured.
#[derive(Clone, Debug, Serialize)]
pub struct RunConfig {
    pub mem_bytes: u64,
    pub stack_bytes: u64,
    pub timeout_secs: Option<f64>,
    pub cmdline: String,
    pub net: String,
    pub publish: Vec<String>,
}

/// An instance as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct InstanceInfo {
    pub id: String,
    pub image: String,
    pub snapshot: Option<String>,
    pub state: &'static str,
    pub created_at: f64,
    pub started_at: Option<f64>,
    pub ended_at: Option<f64>,
    /// When its first hypercall came (Unix seconds, µs resolution).
    pub first_hypercall_at: Option<f64>,
    /// The exit status as `flint run` would give it (0-255, 101, 124,
    /// 139, 128 + signal when stopped).
    pub exit_status: Option<i32>,
    /// Why it ended, when the monitor decided (panic, fault, timeout).
    pub verdict: Option<String>,
    pub config: RunConfig,
    pub metrics: Metrics,
}

/// What an instance has done and cost.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Metrics {
    /// Seconds since start (until the end once it ended).
    pub uptime_secs: f64,
    /// From start to its first hypercall.
    pub first_hypercall_us: Option<u64>,
    /// VM exits by reason, and `total`.
    pub vm_exits: BTreeMap<&'static str, u64>,
    /// Hypercalls by name (`unknown`: numbers v1 does not define), and
    /// `total`.
    pub hypercalls: BTreeMap<&'static str, u64>,
    pub console: ConsoleMetrics,
    pub net: NetMetrics,
    /// CPU time of its vCPU thread (guest and host side).
    pub vcpu_time_secs: f64,
    /// Resident pages of its guest RAM mapping, in bytes.
    pub memory_touched_bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ConsoleMetrics {
    /// Bytes the guest wrote to its console.
    pub bytes: u64,
    /// Console writes (one per line for `guest-kernel`'s println).
    pub writes: u64,
    /// Bytes kept for `flint logs`.
    pub kept_bytes: u64,
    /// Bytes dropped by `console_limit`.
    pub limit_dropped_bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct NetMetrics {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub dropped: u64,
    pub malformed: u64,
    pub rate_dropped: u64,
}

/// `GET /host`.
#[derive(Clone, Debug, Serialize)]
pub struct HostInfo {
    pub version: &'static str,
    pub uptime_secs: f64,
    pub instances: BTreeMap<&'static str, u64>,
    pub images: u64,
    pub instance_cap: u64,
    pub memory_budget_bytes: u64,
    /// Guest RAM of the instances that hold a VM.
    pub memory_reserved_bytes: u64,
    pub host_mem_total_bytes: Option<u64>,
    pub host_mem_available_bytes: Option<u64>,
    pub daemon_rss_bytes: Option<u64>,
    pub daemon_threads: Option<u64>,
    pub daemon_fds: Option<u64>,
    /// Sums over every instance the daemon holds.
    pub totals: Metrics,
}
