//! `flint-oci create`: validate the bundle, then fork the process that will
//! run the guest. That process waits on the container's `start` fifo and
//! boots the image only once `flint-oci start` writes to it; `create`
//! writes its pid to `--pid-file` and exits, leaving it to containerd's
//! shim (a subreaper), which reaps it and takes its wait status as the
//! container's exit status.

use super::cgroup;
use super::console::{self, Pty};
use super::log::Log;
use super::spec::{Spec, Workload};
use super::state::{self, Container, Record};
use crate::image::Image;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What `create` was asked.
pub struct CreateArgs {
    pub root: PathBuf,
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
}

/// Runs `create`; returns the process exit status.
pub fn create(args: CreateArgs, log: &Log) -> i32 {
    match try_create(&args) {
        Ok(()) => 0,
        Err(e) => {
            log.error(&e);
            1
        }
    }
}

fn try_create(args: &CreateArgs) -> Result<(), String> {
    state::check_id(&args.id)?;
    let bundle = args
        .bundle
        .canonicalize()
        .map_err(|e| format!("bundle {} is not usable: {e}", args.bundle.display()))?;
    let spec = Spec::load(&bundle)?;
    let workload = spec.workload(&bundle)?;
    if let Workload::Guest(plan) = &workload {
        // Checked now, so a bad image fails `create` (and the user sees why),
        // not the container after `start`.
        Image::load(&plan.image, plan.mem).map_err(|e| format!("{}: {e}", plan.image.display()))?;
    }
    let pty = match (spec.terminal(), &args.console_socket) {
        (true, Some(_)) => {
            Some(console::open_pty().map_err(|e| format!("cannot open a pty: {e}"))?)
        }
        (true, None) => {
            return Err("process.terminal is set but no --console-socket was given".into())
        }
        (false, _) => None,
    };
    std::fs::create_dir_all(&args.root)
        .map_err(|e| format!("cannot create the state root {}: {e}", args.root.display()))?;
    let dir = state::dir_of(&args.root, &args.id);
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(format!("container with id \"{}\" already exists", args.id))
        }
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    let made = spawn(args, &spec, workload, pty, &bundle, &dir);
    if made.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    made
}

/// Forks the container's process and records it. Cleans up the process
/// (not the directory) on failure.
fn spawn(
    args: &CreateArgs,
    spec: &Spec,
    workload: Workload,
    pty: Option<Pty>,
    bundle: &Path,
    dir: &Path,
) -> Result<(), String> {
    let fifo = state::fifo_of(dir);
    let fifo_c = CString::new(fifo.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: mkfifo with a NUL-terminated path.
    if unsafe { libc::mkfifo(fifo_c.as_ptr(), 0o600) } != 0 {
        return Err(format!(
            "cannot make {}: {}",
            fifo.display(),
            std::io::Error::last_os_error()
        ));
    }
    // Read-write, so the open does not block and the reader never sees EOF
    // before `start` writes (the process itself holds a writer).
    // SAFETY: open with a NUL-terminated path; we own the fd returned.
    let fifo_fd = unsafe { libc::open(fifo_c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fifo_fd < 0 {
        return Err(format!(
            "cannot open {}: {}",
            fifo.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fresh fd.
    let fifo_fd = unsafe { OwnedFd::from_raw_fd(fifo_fd) };
    let (ready_r, ready_w) = pipe().map_err(|e| format!("cannot make a pipe: {e}"))?;

    // SAFETY: this process is single-threaded (flint-oci starts no thread
    // before create), so the child may go on running Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("cannot fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(ready_r);
        if let Some(pty) = &pty {
            // The master is the shim's, not the container's. The child
            // never returns, so this fd is not closed a second time.
            // SAFETY: closes an fd this process holds.
            unsafe { libc::close(pty.master.as_raw_fd()) };
        }
        child(workload, pty.as_ref().map(|p| &p.slave), fifo_fd, ready_w);
    }
    drop(ready_w);
    drop(fifo_fd);
    let kill_child = |why: String| {
        // SAFETY: `pid` is our own child; kill and waitpid on it.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        why
    };
    let cgroups = match spec.cgroups_path() {
        Some(path) => cgroup::enter(path, pid, spec.memory_limit()).map_err(kill_child)?,
        None => Vec::new(),
    };
    let undo = |why: String| {
        cgroup::remove(&cgroups);
        kill_child(why)
    };
    let mut byte = [0u8; 1];
    let mut ready = std::fs::File::from(ready_r);
    match ready.read(&mut byte) {
        Ok(1) if byte[0] == b'r' => {}
        _ => {
            return Err(undo(
                "the container's process failed while setting up".into(),
            ))
        }
    }
    if let (Some(pty), Some(socket)) = (&pty, &args.console_socket) {
        console::send_fd(socket, pty.master.as_raw_fd(), &pty.name).map_err(|e| {
            undo(format!(
                "cannot send the pty to the console socket {}: {e}",
                socket.display()
            ))
        })?;
    }
    let record = Record {
        id: args.id.clone(),
        pid,
        pid_start: state::process_start(pid).unwrap_or(0),
        bundle: bundle.to_path_buf(),
        created: state::now_rfc3339(),
        annotations: spec.annotations.clone(),
        cgroups: cgroups.clone(),
    };
    let container = Container {
        dir: dir.to_path_buf(),
        record,
    };
    container.save().map_err(undo)?;
    if let Some(pid_file) = &args.pid_file {
        state::write_atomic(pid_file, pid.to_string().as_bytes()).map_err(undo)?;
    }
    if pty.is_some() {
        // With a terminal the shim waits for EOF on our stdout and stderr.
        drop(pty);
        devnull_stdio();
    }
    Ok(())
}

/// The container's process: report ready, wait for `start`, then run.
fn child(workload: Workload, slave: Option<&OwnedFd>, fifo: OwnedFd, ready: OwnedFd) -> ! {
    if let Some(slave) = slave {
        if let Err(e) = console::adopt_slave(slave) {
            eprintln!("flint-oci: cannot make the pty the container's terminal: {e}");
            std::process::exit(125);
        }
    }
    let mut ready = std::fs::File::from(ready);
    if ready.write_all(b"r").is_err() {
        std::process::exit(125);
    }
    drop(ready);
    let mut fifo = std::fs::File::from(fifo);
    let mut byte = [0u8; 1];
    loop {
        match fifo.read(&mut byte) {
            Ok(1) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            _ => std::process::exit(125),
        }
    }
    drop(fifo);
    match workload {
        Workload::Sandbox => loop {
            // A pod's sandbox holds nothing: it only lives until killed
            // (SIGTERM and SIGKILL keep their default action).
            // SAFETY: pause has no arguments.
            unsafe { libc::pause() };
        },
        Workload::Guest(plan) => {
            let argv = std::iter::once("flint".to_owned()).chain(plan.run_argv());
            let status = match <crate::cli::Cli as clap::Parser>::try_parse_from(argv) {
                Ok(crate::cli::Cli {
                    command: crate::cli::Command::Run(run),
                }) => crate::run::run(run),
                Ok(_) => 125,
                Err(e) => {
                    eprintln!("flint-oci: {e}");
                    125
                }
            };
            std::process::exit(status)
        }
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both are fresh fds.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Points fds 1 and 2 at /dev/null.
fn devnull_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto stdout and stderr from an fd we own.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
            libc::dup2(null.as_raw_fd(), 2);
        }
    }
}

/// Closes every fd >= 3: containerd's shim leaks its own socket to us, and
/// the container's process must hold nothing it did not open.
pub fn close_inherited_fds() {
    // SAFETY: close_range on fds >= 3 of this process; nothing in flint-oci
    // holds one yet when this runs, first thing in main.
    let done = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) } == 0;
    if done {
        return;
    }
    // Older kernels: close what /proc lists.
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|fd| *fd >= 3)
                .collect()
        })
        .unwrap_or_default();
    for fd in fds {
        // SAFETY: closing an fd number; one that was the directory listing's
        // own (already closed) fails harmlessly.
        unsafe { libc::close(fd) };
    }
}
