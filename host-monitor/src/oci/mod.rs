//! `flint-oci`: a runc-compatible OCI runtime that runs Flint images, so
//! containerd (`ctr run --runc-binary flint-oci`, or a CRI runtime handler
//! whose `BinaryName` is flint-oci) and Kubernetes (a RuntimeClass naming
//! that handler) can run them.
//!
//! It speaks the subset of runc's command line that containerd's
//! `io.containerd.runc.v2` shim uses (shared/CONTAINERD.md records the
//! contract): `create`, `start`, `state`, `kill`, `delete` and `ps`;
//! `exec`, `pause` and `resume` are refused with a message. A container is
//! a bundle whose `process.args[0]` names a Flint image inside `rootfs`;
//! the rest of the arguments are the guest's. `create` forks the process
//! that will run the guest and leaves it waiting on a fifo in the state
//! directory; `start` writes to the fifo and the process then does what
//! `flint run` would (the guest's console is its stdout). A CRI pod's
//! sandbox container (annotation `io.kubernetes.cri.container-type=sandbox`)
//! runs no VM: its process only waits until it is killed.
//!
//! Resources and networking come from the spec: `linux.resources.memory.limit`
//! bounds guest RAM (see [`spec::Spec::guest_mem`]), annotation
//! `dev.flint.publish` lists ports to publish as `flint run --publish` does
//! (pods use host networking), `dev.flint.mem` asks for guest RAM, and
//! `linux.cgroupsPath` is the cgroup the process is put in.

pub mod cgroup;
pub mod commands;
pub mod console;
pub mod create;
pub mod log;
pub mod spec;
pub mod state;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Run Flint images as OCI containers (a runc-compatible runtime).
#[derive(Debug, Parser)]
#[command(name = "flint-oci", version)]
pub struct OciCli {
    /// Directory for the containers' state.
    #[arg(long, global = true, value_name = "DIR", default_value = state::DEFAULT_ROOT)]
    pub root: PathBuf,

    /// Append errors to FILE (containerd's shim reads the last one).
    #[arg(long, global = true, value_name = "FILE")]
    pub log: Option<PathBuf>,

    /// Format of --log: text or json.
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text")]
    pub log_format: String,

    /// Accepted for runc compatibility; ignored.
    #[arg(long, global = true)]
    pub debug: bool,

    /// Refused: flint-oci manages cgroups through cgroupfs only.
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,

    /// Accepted for runc compatibility; ignored.
    #[arg(long, global = true, value_name = "VALUE")]
    pub rootless: Option<String>,

    #[command(subcommand)]
    pub command: OciCommand,
}

/// The runc commands.
#[derive(Debug, Subcommand)]
pub enum OciCommand {
    /// Prepare container ID from its bundle; it runs only after `start`.
    Create {
        /// The bundle directory (config.json and rootfs/).
        #[arg(long, short = 'b', value_name = "DIR", default_value = ".")]
        bundle: PathBuf,
        /// Write the pid of the container's process here.
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
        /// With process.terminal: send the pty master to this Unix socket.
        #[arg(long, value_name = "PATH")]
        console_socket: Option<PathBuf>,
        /// Accepted for runc compatibility; ignored.
        #[arg(long)]
        no_pivot: bool,
        /// Accepted for runc compatibility; ignored.
        #[arg(long)]
        no_new_keyring: bool,
        /// Accepted for runc compatibility; ignored (a guest has no fds).
        #[arg(long, value_name = "N")]
        preserve_fds: Option<u32>,
        /// The container's id.
        id: String,
    },
    /// Let created container ID run.
    Start { id: String },
    /// Print container ID's state as JSON.
    State { id: String },
    /// Send SIGNAL (default TERM) to container ID's process.
    Kill {
        /// Every process of the container (there is one).
        #[arg(long, short = 'a')]
        all: bool,
        id: String,
        #[arg(default_value = "TERM")]
        signal: String,
    },
    /// Remove container ID's state (and stop it, with --force).
    Delete {
        #[arg(long, short = 'f')]
        force: bool,
        id: String,
    },
    /// List container ID's processes.
    Ps {
        #[arg(long, short = 'f', default_value = "table")]
        format: String,
        id: String,
        /// ps options (ignored).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Refused: a Flint guest is one unikernel, there is nothing to exec into.
    #[command(disable_help_flag = true)]
    Exec {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    /// Refused: pausing a Flint guest is not supported by flint-oci.
    Pause { id: String },
    /// Refused: pausing a Flint guest is not supported by flint-oci.
    Resume { id: String },
}

/// Runs the command `cli` names; returns the exit status.
pub fn main(cli: OciCli) -> i32 {
    let log = log::Log {
        file: cli.log.clone(),
        json: cli.log_format == "json",
    };
    if cli.systemd_cgroup {
        log.error(
            "--systemd-cgroup is not supported: flint-oci uses cgroupfs paths \
             (set SystemdCgroup = false in the containerd runtime options)",
        );
        return 1;
    }
    let root = cli.root;
    let result = match cli.command {
        OciCommand::Create {
            bundle,
            pid_file,
            console_socket,
            id,
            ..
        } => {
            return create::create(
                create::CreateArgs {
                    root,
                    id,
                    bundle,
                    pid_file,
                    console_socket,
                },
                &log,
            )
        }
        OciCommand::Start { id } => commands::start(&root, &id),
        OciCommand::State { id } => commands::state(&root, &id),
        OciCommand::Kill { all, id, signal } => commands::kill(&root, &id, &signal, all),
        OciCommand::Delete { force, id } => commands::delete(&root, &id, force),
        OciCommand::Ps { format, id, .. } => commands::ps(&root, &id, &format),
        OciCommand::Exec { .. } => Err(
            "exec is not supported: a Flint container is a single unikernel guest with no \
             processes or shell to exec into"
                .into(),
        ),
        OciCommand::Pause { .. } | OciCommand::Resume { .. } => Err(
            "pause and resume are not supported by flint-oci; stop the container instead".into(),
        ),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            log.error(&e);
            1
        }
    }
}
