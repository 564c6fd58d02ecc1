//! `flint daemon`: a control plane for Flint instances, serving an
//! HTTP/JSON API on a Unix socket (described in `docs/api.yaml`): images
//! (register by path, list), instances (create from an image or a snapshot
//! with run options, start, stop, pause, resume, snapshot, delete, list,
//! get), host stats, admission control and Prometheus metrics. The `flint`
//! CLI's `ps`, `create`, `start`, `stop`, `pause`, `resume`, `rm`, `logs`
//! and `stats` are its client ([`crate::client`]).
//!
//! Instances run as threads of the daemon process, one vCPU thread each
//! (as in a fleet worker), not as child processes: a create costs a VM and
//! a thread, not an exec; every metric (exit counts, console bytes, CPU
//! time, resident guest RAM) is read in-process; pause and resume are a
//! condition variable, not a signal protocol. The price is a shared fate:
//! a bug that crashes the monitor takes every instance down, and a guest
//! that breaks out of its vCPU thread's seccomp filter is in the daemon.
//! So each vCPU thread runs under the same seccomp filter as `flint run`'s
//! ([`crate::seccomp::confine_vcpu`]; `--no-seccomp` turns it off for
//! debugging), and the socket is the caller's alone (mode 0600): whoever
//! can connect can run any image as the daemon's user. See SECURITY.md.
//!
//! Pausing kicks the vCPU out of KVM_RUN (or out of its POLL sleep) and
//! parks the thread on a condition variable until resume
//! ([`crate::signals::StopHandle::pause`]): no guest instruction runs while
//! an instance is paused; its clocks go on.

mod api;
mod console;
mod error;
mod host;
mod metrics;
mod model;
mod registry;
mod vm;

use crate::cli::parse_size;
use crate::outcome::STATUS_START_FAILED;
use clap::Args;
use registry::{Daemon, Settings};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Options of `flint daemon`.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// The socket to listen on (default: $FLINT_SOCKET, else
    /// $XDG_RUNTIME_DIR/flint.sock, else /tmp/flint-UID.sock).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Most guest RAM (the sum of `mem` of the instances holding a VM) the
    /// daemon hands out; a create past it is refused (HTTP 429). Default:
    /// the host's MemTotal.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory_budget: Option<u64>,

    /// Most instances holding a VM (created, running or paused) at once; a
    /// create past it is refused (HTTP 429).
    #[arg(long, value_name = "N", default_value = "1000")]
    pub max_instances: u64,

    /// Console bytes kept per instance for `flint logs` (the oldest go
    /// first).
    #[arg(long, value_name = "SIZE", default_value = "256K", value_parser = parse_size)]
    pub console_buffer: u64,

    /// Run the vCPU threads without the seccomp filter (debugging only).
    #[arg(long)]
    pub no_seccomp: bool,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
enum DaemonError {
    #[error("another flint daemon is already listening on {0}; stop it or give another --socket")]
    InUse(PathBuf),
    #[error("cannot listen on {path}: {source}; give a --socket in a directory you can write")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{0}")]
    Seccomp(#[from] crate::seccomp::SeccompError),
}

/// Runs the daemon until SIGTERM or SIGINT, then stops every instance and
/// removes the socket; 0, or 125 if it could not start.
pub fn run(args: DaemonArgs) -> i32 {
    match serve(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("flint: daemon: {e}");
            STATUS_START_FAILED
        }
    }
}

fn serve(args: DaemonArgs) -> Result<(), DaemonError> {
    let socket = args.socket.unwrap_or_else(crate::client::default_socket);
    let settings = Settings {
        memory_budget: args
            .memory_budget
            .or_else(|| host::meminfo("MemTotal:"))
            .unwrap_or(u64::MAX),
        max_instances: args.max_instances,
        seccomp: !args.no_seccomp,
        console_buffer: args.console_buffer as usize,
    };
    if args.no_seccomp {
        eprintln!(
            "flint: daemon: WARNING: --no-seccomp: vCPU threads run WITHOUT the seccomp filter \
             (debugging only)"
        );
    } else {
        crate::seccomp::confine_service_threads()?;
    }
    // Each instance holds a few fds (VM, vCPU, poller): the default soft
    // limit of 1024 would stop it at a few hundred. Best effort.
    let _ = crate::fleet::limits::raise_nofile();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        // Blocking threads (VM builds, pauses, stops) end soon after use,
        // so an idle daemon holds only its own threads and the vCPUs'.
        .thread_keep_alive(Duration::from_millis(500))
        .max_blocking_threads(16)
        .build()
        .map_err(DaemonError::Runtime)?;
    let daemon = Arc::new(Daemon::new(settings));
    runtime.block_on(async {
        let listener = bind(&socket)?;
        eprintln!("flint: daemon: listening on {}", socket.display());
        let app = api::router(daemon.clone());
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop_signal())
            .await;
        if let Err(e) = served {
            eprintln!("flint: daemon: serving stopped: {e}");
        }
        Ok::<(), DaemonError>(())
    })?;
    let stopper = daemon.clone();
    // Stop the instances off the runtime (it is shutting down).
    let _ = std::thread::spawn(move || stopper.stop_all()).join();
    let _ = std::fs::remove_file(&socket);
    eprintln!("flint: daemon: stopped");
    Ok(())
}

/// Listens on `path`, replacing a stale socket file (no daemon answering)
/// but never a live one; the socket is for this user only (0600).
fn bind(path: &Path) -> Result<tokio::net::UnixListener, DaemonError> {
    let bind_err = |source| DaemonError::Bind {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(DaemonError::InUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(bind_err)?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(bind_err)?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

/// Resolves on SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    std::future::poll_fn(|cx| {
        if term.poll_recv(cx).is_ready() || int.poll_recv(cx).is_ready() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}
