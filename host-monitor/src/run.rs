//! `flint run`: one image, one instance, the guest's status as ours.

use crate::cli::RunArgs;
use crate::debug;
use crate::image::Image;
use crate::instance::{Config, Instance, Launch, StartError};
use crate::limits::Limits;
use crate::net::spec::{self, Mac, NetSetup};
use crate::outcome::{Outcome, STATUS_START_FAILED};
use crate::seccomp;
use crate::signals;
use crate::snapshot::{Recorder, Snapshot};
use crate::timings::Timings;
use std::path::Path;

/// Runs the instance `args` describes and returns the exit status. If a
/// stop signal ends it, the process dies by that signal instead.
pub fn run(args: RunArgs) -> i32 {
    let timings = args.timings || env_flag("FLINT_TIMINGS");
    let stats = args.stats || env_flag("FLINT_STATS");
    let net = match spec::resolve(args.net_args()) {
        Ok(net) => net,
        Err(e) => return refuse(&e),
    };
    if let Err(e) = signals::install() {
        return refuse(&format!("cannot catch SIGTERM and SIGINT: {e}"));
    }
    let mut config = Config {
        mem_size: args.mem,
        stack_size: args.stack,
        timeout: args.timeout,
        cmdline: args.args.join(" "),
        timings,
        net,
    };
    let mut timings = Timings::new(config.timings);
    let restored = match &args.restore {
        Some(file) => match open_snapshot(file, &args, &mut config) {
            Ok(restored) => Some(restored),
            Err(e) => return refuse(&e),
        },
        None => None,
    };
    let (snapshot, image) = match restored {
        Some((snapshot, image)) => (Some(snapshot), image),
        None => {
            // clap requires IMAGE without --restore.
            let path = args.image.clone().unwrap_or_default();
            match Image::load(&path, config.mem_size) {
                Ok(image) => (None, image),
                Err(e) => return refuse(&e),
            }
        }
    };
    timings.mark(if snapshot.is_some() {
        "read snapshot"
    } else {
        "read image"
    });
    // Two instances restored from one snapshot are two instances: each its
    // own id and (unless --mac says otherwise) its own MAC.
    let instance_id = match &snapshot {
        Some(_) => match fresh_identity(&mut config, args.mac.is_some()) {
            Ok(id) => Some(id),
            Err(e) => return refuse(&e),
        },
        None => None,
    };
    let launch = Launch {
        instance_id,
        snapshot_on_idle: args
            .snapshot_on_idle
            .as_deref()
            .map(|file| Recorder::new(file, &image, &config)),
        restore: snapshot.as_ref(),
        limits: Limits {
            console: args.console_limit,
            net_pps: args.net_rate,
        },
        // The wait set made at start: its fds are known when the vCPU
        // thread's reads and writes are pinned (seccomp).
        idle_poller: true,
        ..Launch::default()
    };
    let snapshotting = launch.snapshot_on_idle.is_some();
    if args.no_seccomp {
        eprintln!(
            "flint: WARNING: --no-seccomp: running WITHOUT the seccomp filters; \
             a guest that breaks the monitor could make any system call (debugging only)"
        );
    } else if let Err(e) = seccomp::confine_service_threads() {
        return refuse(&e);
    }
    // Bound before the start, so that a taken port refuses it.
    let gdb = match args.gdb.map(debug::Listener::bind).transpose() {
        Ok(gdb) => gdb,
        Err(e) => return refuse(&e),
    };
    let mut instance = match Instance::start_with(&image, &config, launch, timings) {
        Ok(instance) => instance,
        // The network's errors name the option at fault, not the image.
        Err(e @ StartError::Net(_)) => return refuse(&e),
        Err(e) => return refuse(&format!("{}: {e}", image.path().display())),
    };
    // `--gdb`: wait for gdb; the guest's first instruction waits for it.
    let session = match gdb.map(|gdb| gdb.accept(!args.no_seccomp)).transpose() {
        Ok(Some((session, debugger))) => {
            instance.attach_debugger(debugger);
            Some(session)
        }
        Ok(None) => None,
        Err(debug::DebugError::Stopped(signo)) => {
            drop(instance);
            signals::die_by(signo)
        }
        Err(e) => return refuse(&e),
    };
    if !args.no_seccomp {
        // Setup is done: from here on the vCPU thread may only service
        // the guest.
        let policy = seccomp::VcpuPolicy {
            snapshot: snapshotting,
            // The debugger loads registers (resuming after a breakpoint)
            // and wakes its stub thread (src/debug/mod.rs).
            reset: session.is_some(),
            extra_fds: session
                .as_ref()
                .map(debug::Session::wake_fds)
                .unwrap_or_default(),
            ..Default::default()
        };
        if let Err(e) = seccomp::confine_vcpu(&instance, &policy) {
            return refuse(&e);
        }
        seccomp::forbidden_syscall_hook(instance.vcpu_fd());
    }
    let outcome = instance.run();
    if let Some(session) = session {
        session.finish(&outcome);
    }
    instance.timings().report();
    if stats {
        instance.stats().report();
    }
    if let Some(line) = outcome.verdict() {
        eprintln!("{line}");
    }
    if let Outcome::Signalled(signo) = outcome {
        // Close the TAP device and the listening sockets before dying.
        drop(instance);
        signals::die_by(signo);
    }
    outcome.status()
}

/// Opens and validates the snapshot `file` for `flint run --restore`, and
/// makes `config` the snapshot's (sizes, command line) with this command
/// line's network and timeout.
fn open_snapshot(
    file: &Path,
    args: &RunArgs,
    config: &mut Config,
) -> Result<(Snapshot, Image), String> {
    let cannot = |e: &dyn std::fmt::Display| format!("cannot restore {}: {e}", file.display());
    if !args.args.is_empty() {
        return Err(cannot(
            &"the app's arguments come from the snapshot; give none",
        ));
    }
    Snapshot::open_for(file, args.image.as_deref(), config).map_err(|e| cannot(&e))
}

/// A random instance id for a restored instance, and a random MAC
/// (52:54:00:xx:xx:xx) unless `mac_given`.
fn fresh_identity(config: &mut Config, mac_given: bool) -> Result<u64, String> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random)
        .map_err(|e| format!("the host has no entropy for a restored instance's identity: {e}"))?;
    if !mac_given {
        if let NetSetup::User { guest, .. } | NetSetup::Tap { guest, .. } = &mut config.net {
            guest.mac = Mac([0x52, 0x54, 0x00, random[5], random[6], random[7]]);
        }
    }
    // 1 to 2^40: unique in practice, and short enough to read.
    let id = u64::from_le_bytes(random) & ((1 << 40) - 1);
    Ok(id.max(1))
}

fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == "1")
}

fn refuse(error: &dyn std::fmt::Display) -> i32 {
    eprintln!("flint: {error}");
    STATUS_START_FAILED
}
