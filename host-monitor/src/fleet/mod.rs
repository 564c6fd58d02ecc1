//! Fleets: many instances of one image, each its own KVM VM, spread over
//! worker processes (per-VM create and teardown costs grow with the VMs in
//! one process, and so do its file descriptors and memory maps).
//!
//! `flint fleet` is the [`parent`]: it checks the host's [`limits`],
//! starts `flint fleet-worker` processes for ids `1..=N` in blocks of
//! `--per-worker`, relays their console lines, reads their events, and
//! prints the [`summary`]. Each worker ([`worker`]) boots its block of
//! instances and speaks a line protocol on its stdout:
//!
//! - `[ID] <line>`: a console line of instance ID;
//! - `@event <JSON>`: `started`, `idle`, `stopped`, `restarting`, `failed`,
//!   `worker-ready` (see [`parent`]).

pub mod limits;
pub mod parent;
pub mod summary;
pub mod worker;

use crate::cli::{FleetCommon, FleetWorkerArgs, RestartPolicy, RunArgs};
use crate::instance::Config;
use crate::net::spec::{self, NetMode};
use crate::outcome::STATUS_START_FAILED;

/// Refuses the `flint run` options that cannot apply to many instances at
/// once: each instance gets its own identity on the fleet's switch.
pub fn check_run_options(run: &RunArgs) -> Result<(), String> {
    let refused = [
        (run.ip.is_some(), "--ip"),
        (run.gateway.is_some(), "--gateway"),
        (run.mac.is_some(), "--mac"),
        (run.timings, "--timings"),
        (run.gdb.is_some(), "--gdb"),
        (matches!(run.net, Some(NetMode::Tap(_))), "--net tap"),
    ];
    match refused.iter().find(|(given, _)| *given) {
        Some((_, option)) => Err(format!(
            "{option} cannot be used with a fleet: each instance gets its own id, MAC and address"
        )),
        None => Ok(()),
    }
}

/// The instance configuration every instance of a fleet shares (the
/// worker gives each its own identity on the switch).
pub fn instance_config(run: &RunArgs) -> Result<Config, String> {
    check_run_options(run)?;
    let net = spec::resolve(run.net_args()).map_err(|e| e.to_string())?;
    Ok(Config {
        mem_size: run.mem,
        stack_size: run.stack,
        timeout: run.timeout,
        cmdline: run.args.join(" "),
        timings: false,
        net,
    })
}

impl From<RestartPolicy> for worker::Restart {
    fn from(policy: RestartPolicy) -> worker::Restart {
        match policy {
            RestartPolicy::OnFailure => worker::Restart::OnFailure,
            RestartPolicy::Never => worker::Restart::Never,
        }
    }
}

/// `flint fleet-worker`: builds the worker's configuration and runs it.
pub fn worker_main(args: FleetWorkerArgs) -> i32 {
    let instance = match instance_config(&args.run) {
        Ok(config) => config,
        Err(why) => {
            eprintln!("flint: {why}");
            return STATUS_START_FAILED;
        }
    };
    let FleetCommon {
        restart,
        console_dir,
    } = args.fleet;
    worker::run(worker::WorkerConfig {
        image: args.run.image.clone(),
        restore: args.run.restore.clone(),
        first_id: args.first_id,
        count: args.instances,
        restart: restart.into(),
        console_dir,
        instance,
        publish: args.run.publish.clone(),
        stats: args.run.stats || std::env::var_os("FLINT_STATS").is_some_and(|v| v == "1"),
        limits: crate::limits::Limits {
            console: args.run.console_limit,
            net_pps: args.run.net_rate,
        },
        seccomp: !args.run.no_seccomp,
    })
}
