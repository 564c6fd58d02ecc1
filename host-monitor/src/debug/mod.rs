//! `flint run --gdb ADDR:PORT`: a GDB remote stub for the guest.
//!
//! The monitor listens on ADDR:PORT (the command line's default host is
//! 127.0.0.1: anyone who can connect controls the guest and reads all of its
//! memory) and waits for one gdb to connect before the guest's first
//! instruction. gdb can then read and write the x86-64 core registers and
//! the guest's memory (only pages the guest has mapped; code too, through
//! the monitor's own mapping of guest RAM), set software breakpoints,
//! single-step, continue, interrupt with Ctrl-C, detach (the guest runs on
//! alone) and kill (the monitor dies by SIGKILL). When the instance ends,
//! gdb is told its exit status (or the signal: SIGSEGV for a fault,
//! SIGALRM for `--timeout`).
//!
//! Two threads: the stub thread ([`stub`]) speaks the protocol (the
//! `gdbstub` crate) to gdb; the vCPU thread runs the guest and, whenever it
//! stops, serves the stub's requests in [`control::Controller`], which is
//! how a breakpoint or a step is told from a real fault (see there for
//! what kvm_pvm allows). A Ctrl-C from gdb kicks the vCPU thread out of
//! KVM_RUN with the watchdog's kick signal.
//!
//! seccomp: the stub thread gets a filter of its own ([`filter`]); the vCPU
//! thread's filter must also allow loading registers (KVM_SET_REGS,
//! KVM_SET_SREGS) and writing the wake pipe, which `flint run --gdb`
//! asks of `seccomp::confine_vcpu`.

mod control;
mod filter;
mod link;
mod regs;
mod stub;

use crate::guest_memory::GuestRam;
use crate::outcome::Outcome;
use kvm_ioctls::VcpuFd;
use link::{End, Note};
use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Why the debugger could not be set up (`flint run` refuses to start).
#[derive(Debug, thiserror::Error)]
pub enum DebugError {
    #[error("--gdb {addr}: cannot listen there: {source}; choose another port")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("--gdb: waiting for gdb to connect failed: {0}")]
    Accept(std::io::Error),
    #[error("--gdb: cannot set up the stub thread: {0}")]
    Setup(String),
    /// A stop signal came while waiting for gdb: `flint` dies by it.
    #[error("stopped by signal {0} while waiting for gdb")]
    Stopped(i32),
}

/// Where the run loop hands the vCPU to an attached debugger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebugEvent {
    /// Before the guest's first instruction.
    Start,
    /// The debugger asked to stop ([`Debugger::wants_stop`]).
    Interrupt,
    /// A shutdown exit: a breakpoint, a step, or a real fault.
    Shutdown,
    /// A hypercall was serviced and the guest is about to go on. KVM
    /// emulates the hypercall's store and does not trap after it with
    /// RFLAGS.TF set (measured on kvm_pvm: the step ends one instruction
    /// late), so a step over it ends here.
    Hypercall,
}

/// What the run loop does after [`Debugger::stopped`].
#[derive(Debug)]
pub enum Verdict {
    /// Run the guest on (registers are loaded).
    Resume,
    /// Not a debug event: handle it as without a debugger (a shutdown is
    /// then the guest's fault).
    NotMine,
    /// End the instance so.
    End(Outcome),
}

/// A debugger attached to [`crate::instance::Instance::run`].
pub trait Debugger {
    /// True if the debugger wants the guest stopped now (gdb's Ctrl-C);
    /// the run loop then calls [`Debugger::stopped`] with
    /// [`DebugEvent::Interrupt`]. Looked at before every KVM_RUN: cheap.
    fn wants_stop(&self) -> bool;

    /// The vCPU is stopped at `event`; returns when the guest may go on.
    fn stopped(&mut self, event: DebugEvent, vcpu: &mut VcpuFd, ram: &GuestRam) -> Verdict;
}

/// The default host of `--gdb PORT`.
pub const DEFAULT_HOST: [u8; 4] = [127, 0, 0, 1];

/// Parses `--gdb`: `PORT` (on 127.0.0.1) or `HOST:PORT`.
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from((DEFAULT_HOST, port)));
    }
    text.parse()
        .map_err(|_| format!("'{text}' is not PORT or ADDR:PORT (e.g. 127.0.0.1:1234)"))
}

/// `--gdb`'s listening socket, bound before the instance starts so that a
/// taken port refuses the start.
pub struct Listener {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Listener {
    /// Listens on `addr`.
    pub fn bind(addr: SocketAddr) -> Result<Listener, DebugError> {
        let listener =
            TcpListener::bind(addr).map_err(|source| DebugError::Listen { addr, source })?;
        let addr = listener.local_addr().unwrap_or(addr);
        Ok(Listener { listener, addr })
    }

    /// The address it listens on (with the port, if 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for gdb, then starts the stub thread. Call it on the vCPU
    /// thread (Ctrl-C kicks the calling thread), before its seccomp filter
    /// is applied; `filter` gives the stub thread its own. Returns the
    /// session (for [`Session::finish`]) and the debugger to attach to the
    /// instance.
    pub fn accept(self, filter: bool) -> Result<(Session, Box<dyn Debugger + Send>), DebugError> {
        eprintln!(
            "flint: waiting for gdb on {addr} (in gdb: target remote {addr}); {how}",
            addr = self.addr,
            how = method()
        );
        let (conn, peer) = accept_or_stop(&self.listener)?;
        drop(self.listener);
        eprintln!("flint: gdb connected from {peer}");
        // A gdb that stops reading must not hang the monitor's end.
        let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
        let setup = |e: std::io::Error| DebugError::Setup(e.to_string());
        let (stub_wake, vcpu_wake) = wake_pipe().map_err(setup)?;
        let (requests_tx, requests_rx) = mpsc::channel();
        let (notes_tx, notes_rx) = mpsc::channel();
        let interrupt = Arc::new(AtomicBool::new(false));
        let kick_signal = crate::watchdog::kick_signal();
        install_kick_handler(kick_signal).map_err(setup)?;
        let program = match filter {
            true => Some(filter::stub_filter(kick_signal).map_err(DebugError::Setup)?),
            false => None,
        };
        let proxy = stub::Proxy {
            requests: requests_tx,
            notes: notes_rx,
            wake: stub_wake,
            interrupt: interrupt.clone(),
            kick: stub::Kick {
                // SAFETY: pthread_self has no preconditions.
                thread: unsafe { libc::pthread_self() },
                signal: kick_signal,
            },
            interrupting: false,
        };
        // Stop signals must reach the vCPU thread, not this one.
        let thread = crate::signals::spawn_blocked(|| {
            std::thread::Builder::new()
                .name("flint-gdb".into())
                .spawn(move || {
                    if let Some(program) = program {
                        // Set up what the filter would refuse later.
                        let _ = std::thread::current();
                        if let Err(e) = seccompiler::apply_filter(&program) {
                            eprintln!("flint: cannot filter the gdb stub thread: {e}");
                            std::process::exit(crate::outcome::STATUS_START_FAILED);
                        }
                    }
                    stub::serve(conn, proxy);
                })
        })
        .map_err(setup)?;
        let controller =
            control::Controller::new(requests_rx, notes_tx.clone(), vcpu_wake.clone(), interrupt);
        let session = Session {
            notes: notes_tx,
            wake: vcpu_wake,
            thread: Some(thread),
        };
        Ok((session, Box::new(controller)))
    }
}

/// Waits for gdb's connection, or for a stop signal (SIGTERM, SIGINT):
/// std's accept would just retry after the signal.
fn accept_or_stop(listener: &TcpListener) -> Result<(std::net::TcpStream, SocketAddr), DebugError> {
    listener.set_nonblocking(true).map_err(DebugError::Accept)?;
    loop {
        if let Some(signo) = crate::signals::stop_requested() {
            return Err(DebugError::Stopped(signo));
        }
        match listener.accept() {
            Ok((conn, peer)) => {
                conn.set_nonblocking(false).map_err(DebugError::Accept)?;
                return Ok((conn, peer));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut poll = libc::pollfd {
                    fd: listener.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd; a signal ends the wait early.
                unsafe { libc::poll(&mut poll, 1, 200) };
            }
            Err(e) => return Err(DebugError::Accept(e)),
        }
    }
}

/// How breakpoints and steps work on this host, for the waiting line.
fn method() -> &'static str {
    // kvm_pvm's KVM_SET_GUEST_DEBUG does not work (the #DB reaches the
    // guest; hardware breakpoints never fire): measured, issue 7. The int3
    // and RFLAGS.TF method works on it and on any KVM that reports a
    // guest's triple fault as a shutdown exit, so it is used everywhere.
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        "breakpoints are int3, steps RFLAGS.TF (kvm_pvm: no KVM guest debugging)"
    } else {
        "breakpoints are int3, steps RFLAGS.TF"
    }
}

/// The wake pipe: (read end for the stub thread, write end for the vCPU
/// thread), both non-blocking. A pipe, not a socket pair: the vCPU
/// thread's filter allows write(2) on its fds, not send(2), which std's
/// UnixStream uses.
fn wake_pipe() -> std::io::Result<(File, Arc<File>)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array on success; checked.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and owned by nothing else.
    let (read, write) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    Ok((read, Arc::new(write)))
}

/// The kick signal must interrupt KVM_RUN, not kill: a handler that does
/// nothing (the watchdog installs the same).
fn install_kick_handler(signal: libc::c_int) -> std::io::Result<()> {
    extern "C" fn ignore_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
    vmm_sys_util::signal::register_signal_handler(signal, ignore_kick)
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
}

/// A gdb session, as `flint run` holds it.
pub struct Session {
    notes: Sender<Note>,
    wake: Arc<File>,
    thread: Option<JoinHandle<()>>,
}

impl Session {
    /// The fds the vCPU thread writes to wake the stub thread (its seccomp
    /// filter must allow writing them).
    pub fn wake_fds(&self) -> Vec<RawFd> {
        vec![self.wake.as_raw_fd()]
    }

    /// Tells gdb how the instance ended and waits for the stub thread.
    pub fn finish(mut self, outcome: &Outcome) {
        let end = match outcome {
            Outcome::Exited(code) => End::Exited(*code),
            Outcome::Panicked(_) => End::Exited(crate::outcome::STATUS_PANIC as u8),
            Outcome::TimedOut(_) => End::Terminated(libc::SIGALRM as u8),
            Outcome::Fault(_) => End::Terminated(libc::SIGSEGV as u8),
            Outcome::Signalled(signo) => End::Terminated(*signo as u8),
        };
        // Nobody listening (gdb detached or killed) is fine.
        let _ = self.notes.send(Note::Ended(end));
        let _ = (&*self.wake).write(&[1]);
        // The stub tells gdb and ends at once if gdb was waiting for the
        // guest; if gdb holds it stopped (a stop signal ended it), the
        // process's exit closes the connection instead.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while let Some(thread) = self.thread.take() {
            if thread.is_finished() {
                let _ = thread.join();
            } else if std::time::Instant::now() < deadline {
                self.thread = Some(thread);
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdb_addresses_default_to_loopback() {
        assert_eq!(
            parse_addr("1234"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 1234)))
        );
        assert_eq!(
            parse_addr("0.0.0.0:9000"),
            Ok(SocketAddr::from(([0, 0, 0, 0], 9000)))
        );
        assert_eq!(parse_addr("[::1]:1").map(|a| a.port()), Ok(1));
        for bad in ["", "x", "127.0.0.1", "70000", "localhost:1234"] {
            assert!(parse_addr(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
