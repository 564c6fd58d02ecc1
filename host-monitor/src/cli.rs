//! The `flint` command line.

use crate::net::spec::{
    parse_cidr, parse_gateway, parse_mac, parse_net_mode, parse_publish, Cidr, Mac, NetArgs,
    NetMode, Publish,
};
use clap::{Args, Parser, Subcommand};
use hypercall_abi::{MEM_SIZE_MAX, PAGE_SIZE, STACK_SIZE_MIN};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

/// Run Flint unikernel images as KVM micro-VMs.
#[derive(Debug, Parser)]
#[command(name = "flint", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What `flint` does.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot IMAGE in a new micro-VM and wait for it; the exit status is the
    /// guest's (0-255), or 101 panic, 124 timeout, 125 could not start,
    /// 139 guest fault.
    Run(RunArgs),
    /// Start N instances of IMAGE, each its own micro-VM, across worker
    /// processes; show progress and a summary, then wait until they end.
    /// Exit status 0 when every instance ended with 0, 1 otherwise.
    Fleet(FleetArgs),
    /// One worker process of a fleet (started by `flint fleet`).
    #[command(hide = true)]
    FleetWorker(FleetWorkerArgs),
    /// Serve the HTTP/JSON control API (docs/api.yaml) on a Unix socket:
    /// instances run as threads of the daemon, driven by the commands
    /// below or any HTTP client.
    Daemon(crate::daemon::DaemonArgs),
    #[command(flatten)]
    Client(crate::client::ClientCommand),
}

/// What `--restart` says to do with an instance that ended with a
/// non-zero status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RestartPolicy {
    /// Boot it again (not after a stop signal).
    OnFailure,
    /// Leave it stopped.
    Never,
}

/// Options of `flint fleet`: its own, then those of `flint run` that make
/// sense for many instances.
#[derive(Debug, Args)]
#[command(after_help = FLEET_AFTER_HELP)]
pub struct FleetArgs {
    /// How many instances to start (ids 1..=N).
    #[arg(short = 'n', value_name = "N", value_parser = parse_instances)]
    pub instances: u64,

    /// Instances per worker process (at most 1000: per-VM costs grow with
    /// the VMs in one process).
    #[arg(long, value_name = "K", default_value = "500", value_parser = parse_per_worker)]
    pub per_worker: u64,

    #[command(flatten)]
    pub fleet: FleetCommon,

    /// Write the summary as JSON to FILE too.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,

    #[command(flatten)]
    pub run: RunArgs,
}

/// The options a fleet parent passes on to its workers unchanged.
#[derive(Debug, Args)]
pub struct FleetCommon {
    /// What to do with an instance that ends with a non-zero status.
    #[arg(long, value_enum, value_name = "POLICY", default_value = "never")]
    pub restart: RestartPolicy,

    /// Write each instance's console to DIR/ID.log (byte for byte) instead
    /// of `[ID] `-prefixed lines on stdout.
    #[arg(long, value_name = "DIR")]
    pub console_dir: Option<PathBuf>,
}

/// Options of the hidden `flint fleet-worker`.
#[derive(Debug, Args)]
pub struct FleetWorkerArgs {
    /// The id of this worker's first instance.
    #[arg(long, value_name = "ID", value_parser = parse_instances)]
    pub first_id: u64,

    /// How many instances this worker runs (ids FIRST_ID..FIRST_ID+K).
    #[arg(short = 'n', value_name = "K", value_parser = parse_instances)]
    pub instances: u64,

    #[command(flatten)]
    pub fleet: FleetCommon,

    #[command(flatten)]
    pub run: RunArgs,
}

/// The largest fleet: instance addresses are 10.64.0.0/16 + id + 1.
pub const MAX_INSTANCES: u64 = 65_000;

/// The most instances one worker process may hold.
pub const MAX_PER_WORKER: u64 = 1_000;

const FLEET_AFTER_HELP: &str = "\
Every instance gets its own id (1..=N, BootInfo.instance_id), MAC 52:54:00 + id and, with
--net user or --publish, address 10.64.0.0/16 + id + 1 on the fleet's virtual switch.
--publish load-balances the connections to HOST_PORT over the instances, round-robin.
Not available in a fleet: --net tap, --ip, --gateway, --mac, --timings.

While starting, a progress bar shows on stderr (if it is a terminal); then a summary:
instances running, start rate, time to first hypercall, memory and idle CPU per instance.
Ctrl-C or SIGTERM stops every instance.

Example:
  flint fleet -n 1000 --publish 127.0.0.1:8080:80 target/flint/http.elf";

/// Options of `flint run`.
#[derive(Debug, Args)]
#[command(after_help = RUN_AFTER_HELP)]
pub struct RunArgs {
    /// Guest RAM (a multiple of 4K, at most 3G); it is mapped lazily, so
    /// untouched memory costs the host nothing.
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = parse_mem)]
    pub mem: u64,

    /// Guest stack size (a multiple of 4K, at least 16K).
    #[arg(long, value_name = "SIZE", default_value = "256K", value_parser = parse_stack)]
    pub stack: u64,

    /// Stop the guest after SECS seconds of wall time (status 124).
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,

    /// Print the monitor's start-up phases to stderr.
    #[arg(long)]
    pub timings: bool,

    /// Network device: none (the default without --publish), user (the
    /// monitor's rootless network; the default with --publish) or tap:NAME
    /// (a TAP device, created if missing; needs CAP_NET_ADMIN and --ip).
    #[arg(long, value_name = "MODE", value_parser = parse_net_mode)]
    pub net: Option<NetMode>,

    /// Forward TCP connections to HOST_IP:HOST_PORT on the host (HOST_IP
    /// defaults to 127.0.0.1) to the guest's GUEST_PORT; repeatable;
    /// implies --net user.
    #[arg(long, value_name = "[HOST_IP:]HOST_PORT:GUEST_PORT", value_parser = parse_publish)]
    pub publish: Vec<Publish>,

    /// The guest's IPv4 address and prefix length (user mode: 10.0.2.15/24).
    #[arg(long, value_name = "ADDR/PREFIX", value_parser = parse_cidr)]
    pub ip: Option<Cidr>,

    /// The guest's default gateway (user mode: 10.0.2.2, the monitor).
    #[arg(long, value_name = "ADDR", value_parser = parse_gateway)]
    pub gateway: Option<Ipv4Addr>,

    /// The guest's MAC address (default 52:54:00:12:34:56).
    #[arg(long, value_name = "MAC", value_parser = parse_mac)]
    pub mac: Option<Mac>,

    /// Print VM exits, hypercalls, network counters and what the limits
    /// dropped to stderr at the end.
    #[arg(long)]
    pub stats: bool,

    /// Run without the seccomp filters (debugging only: a compromised
    /// monitor could then make any system call). Says so on stderr.
    #[arg(long)]
    pub no_seccomp: bool,

    /// Limit console output to BYTES in all, and with /RATE to RATE bytes
    /// a second (bursts up to one second's worth), e.g. 1M or 1M/64K.
    /// Output past a limit is dropped and counted; the instance goes on.
    #[arg(long, value_name = "BYTES[/RATE]", value_parser = crate::limits::parse_console_limit)]
    pub console_limit: Option<crate::limits::ConsoleLimit>,

    /// Limit the frames the guest sends to PPS a second (bursts up to one
    /// second's worth); frames beyond it are dropped and counted, like a
    /// full NIC queue. The instance goes on.
    #[arg(long, value_name = "PPS", value_parser = crate::limits::parse_net_rate)]
    pub net_rate: Option<u64>,

    /// Write a snapshot of the instance to FILE the first time the guest
    /// blocks in POLL (initialised and waiting for work); the instance
    /// then goes on as usual.
    #[arg(long, value_name = "FILE", conflicts_with = "restore")]
    pub snapshot_on_idle: Option<PathBuf>,

    /// Resume the instance saved in FILE by --snapshot-on-idle instead of
    /// booting; IMAGE defaults to the image path the snapshot recorded and
    /// must be that image. --mem, --stack and the app's arguments come
    /// from the snapshot; the network from this command line.
    #[arg(long, value_name = "FILE")]
    pub restore: Option<PathBuf>,

    /// Debug the guest with gdb: listen on [ADDR:]PORT (ADDR defaults to
    /// 127.0.0.1; anyone who can connect controls the guest) and wait for
    /// gdb (`target remote ADDR:PORT`) before the first instruction.
    #[arg(long, value_name = "[ADDR:]PORT", value_parser = crate::debug::parse_addr)]
    pub gdb: Option<std::net::SocketAddr>,

    /// The Flint image (an ELF built by `cargo xtask build <app>`).
    #[arg(value_name = "IMAGE", required_unless_present = "restore")]
    pub image: Option<PathBuf>,

    /// Arguments for the app, after `--`; joined by single spaces into the
    /// guest's command line (at most 4096 bytes).
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

const RUN_AFTER_HELP: &str = "\
Guest console output goes to stdout. Sizes accept K, M and G suffixes (powers of 1024). \
Set FLINT_TIMINGS=1 for the same output as --timings, FLINT_STATS=1 for --stats.

Networking:
  --net user (implied by --publish) needs no privileges. The monitor is the guest's
  gateway and the guest is reachable only through the --publish ports; it gets
      address 10.0.2.15/24, gateway 10.0.2.2 (the monitor: answers ARP and ping),
      MAC 52:54:00:12:34:56, MTU 1500
  unless --ip, --gateway or --mac say otherwise.
  --net tap:NAME attaches TAP device NAME; the MTU is the device's, the address must
  be given with --ip ADDR/PREFIX (and --gateway if the guest needs one).

Limits:
  --mem and --timeout bound memory and wall time. --console-limit and --net-rate never
  stop the instance: output or frames past them are dropped (the guest is told they
  went out), the first hit of each limit prints one line on stderr
  (`flint: limit: ...`), and --stats counts the drops on its `limits` line.

Example:
  flint run --publish 127.0.0.1:8080:80 target/flint/http.elf";

impl RunArgs {
    /// The network options, for [`crate::net::spec::resolve`].
    pub fn net_args(&self) -> NetArgs {
        NetArgs {
            mode: self.net.clone(),
            publish: self.publish.clone(),
            ip: self.ip,
            gateway: self.gateway,
            mac: self.mac,
        }
    }
}

/// Parses `-n` and `--first-id`: 1 to [`MAX_INSTANCES`].
pub fn parse_instances(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (1..=MAX_INSTANCES).contains(n))
        .ok_or_else(|| format!("'{text}' is not a number from 1 to {MAX_INSTANCES}"))
}

/// Parses `--per-worker`: 1 to [`MAX_PER_WORKER`].
pub fn parse_per_worker(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (1..=MAX_PER_WORKER).contains(n))
        .ok_or_else(|| format!("'{text}' is not a number from 1 to {MAX_PER_WORKER}"))
}

/// Parses `4096`, `64K`, `16M`, `1G` (also `16MiB`, `16m`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(digits_end);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a size such as 4096, 64K, 16M or 1G"))?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("'{text}' has an unknown suffix; use K, M or G")),
    };
    number
        .checked_mul(1 << shift)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("'{text}' is not a positive size that fits in 64 bits"))
}

/// Parses `--mem`: a size, a multiple of 4 KiB, at most 3 GiB.
pub fn parse_mem(text: &str) -> Result<u64, String> {
    let size = parse_size(text)?;
    if !size.is_multiple_of(PAGE_SIZE) || size > MEM_SIZE_MAX {
        return Err(format!(
            "guest RAM must be a multiple of 4K and at most 3G, not {text}"
        ));
    }
    Ok(size)
}

/// Parses `--stack`: a size, a multiple of 4 KiB, at least 16 KiB.
pub fn parse_stack(text: &str) -> Result<u64, String> {
    let size = parse_size(text)?;
    if !size.is_multiple_of(PAGE_SIZE) || size < STACK_SIZE_MIN {
        return Err(format!(
            "the stack must be a multiple of 4K and at least 16K, not {text}"
        ));
    }
    Ok(size)
}

/// Parses a positive number of seconds, e.g. `5` or `0.5`.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("'{text}' is not a positive number of seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
    }

    #[test]
    fn bad_sizes_are_refused() {
        for bad in ["", "abc", "0", "16X", "-1", "99999999999999999999G", "1.5M"] {
            assert!(parse_size(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn mem_and_stack_sizes_follow_the_layout_rules() {
        assert_eq!(parse_mem("3G"), Ok(3 << 30));
        assert!(parse_mem("5G").is_err());
        assert!(parse_mem("6000").is_err());
        assert_eq!(parse_stack("16K"), Ok(16 << 10));
        assert!(parse_stack("8K").is_err());
        assert!(parse_stack("20000").is_err());
    }

    #[test]
    fn timeouts_are_positive_seconds() {
        assert_eq!(parse_timeout("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_timeout("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["0", "-1", "nan", "inf", "x"] {
            assert!(parse_timeout(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
