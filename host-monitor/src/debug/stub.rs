//! The stub thread's half: the GDB remote protocol (the `gdbstub` crate)
//! over gdb's TCP connection, with a target that forwards every register,
//! memory and breakpoint request to the stopped vCPU thread.

use super::link::{End, Note, Reply, Request, StopKind};
use gdbstub::common::Signal;
use gdbstub::conn::ConnectionExt;
use gdbstub::stub::run_blocking::{BlockingEventLoop, Event, WaitForStopReasonError};
use gdbstub::stub::{DisconnectReason, GdbStub, SingleThreadStopReason};
use gdbstub::target::ext::base::singlethread::{
    SingleThreadBase, SingleThreadResume, SingleThreadResumeOps, SingleThreadSingleStep,
    SingleThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, SwBreakpoint, SwBreakpointOps,
};
use gdbstub::target::{Target, TargetError, TargetResult};
use gdbstub_arch::x86::reg::X86_64CoreRegs;
use gdbstub_arch::x86::X86_64_SSE;
use std::fs::File;
use std::io::Read;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

/// How often a Ctrl-C kick repeats until the vCPU thread stops: a signal
/// that lands just before KVM_RUN is entered is lost (as for the watchdog).
const KICK_INTERVAL: Duration = Duration::from_millis(5);

/// Kicks the vCPU thread out of KVM_RUN with the watchdog's kick signal.
pub struct Kick {
    pub thread: libc::pthread_t,
    pub signal: libc::c_int,
}

impl Kick {
    fn kick(&self) {
        // SAFETY: `thread` is the vCPU thread, the process's main thread,
        // which outlives this one (the process ends when it returns).
        unsafe { libc::pthread_kill(self.thread, self.signal) };
    }
}

/// The target gdbstub drives: a proxy for the vCPU thread.
pub struct Proxy {
    pub requests: Sender<Request>,
    pub notes: Receiver<Note>,
    /// The read end of the wake pipe (non-blocking).
    pub wake: File,
    pub interrupt: Arc<AtomicBool>,
    pub kick: Kick,
    /// A Ctrl-C is being delivered.
    pub interrupting: bool,
}

/// Why a request could not be carried out: the instance is gone.
const GONE: &str = "the instance has ended";

impl Proxy {
    fn call(&mut self, request: Request) -> Result<Reply, &'static str> {
        self.requests.send(request).map_err(|_| GONE)?;
        loop {
            match self.notes.recv() {
                Ok(Note::Reply(reply)) => return Ok(reply),
                // Stops come only after a resume, never during a request.
                Ok(_) => continue,
                Err(_) => return Err(GONE),
            }
        }
    }

    fn done(&mut self, request: Request) -> TargetResult<bool, Self> {
        match self.call(request).map_err(TargetError::Fatal)? {
            Reply::Done(done) => Ok(done),
            _ => Err(TargetError::Fatal("the vCPU thread answered out of turn")),
        }
    }

    fn resume_with(&mut self, step: bool) -> Result<(), &'static str> {
        self.requests
            .send(Request::Resume { step })
            .map_err(|_| GONE)
    }
}

impl Target for Proxy {
    type Arch = X86_64_SSE;
    type Error = &'static str;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::SingleThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    // The guest image is not relocated: the ELF's addresses are the
    // guest's (gdb's defaults need no target description beyond the arch).
}

impl SingleThreadBase for Proxy {
    fn read_registers(&mut self, regs: &mut X86_64CoreRegs) -> TargetResult<(), Self> {
        match self.call(Request::ReadRegs).map_err(TargetError::Fatal)? {
            Reply::Regs(read) => {
                *regs = *read;
                Ok(())
            }
            _ => Err(TargetError::Fatal("the vCPU thread answered out of turn")),
        }
    }

    fn write_registers(&mut self, regs: &X86_64CoreRegs) -> TargetResult<(), Self> {
        match self.done(Request::WriteRegs(Box::new(regs.clone())))? {
            true => Ok(()),
            false => Err(TargetError::NonFatal),
        }
    }

    fn read_addrs(&mut self, start_addr: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
        let request = Request::ReadMem {
            addr: start_addr,
            len: data.len(),
        };
        match self.call(request).map_err(TargetError::Fatal)? {
            Reply::Bytes(bytes) if bytes.is_empty() => Err(TargetError::NonFatal),
            Reply::Bytes(bytes) => {
                let n = bytes.len().min(data.len());
                data[..n].copy_from_slice(&bytes[..n]);
                Ok(n)
            }
            _ => Err(TargetError::Fatal("the vCPU thread answered out of turn")),
        }
    }

    fn write_addrs(&mut self, start_addr: u64, data: &[u8]) -> TargetResult<(), Self> {
        let request = Request::WriteMem {
            addr: start_addr,
            bytes: data.to_vec(),
        };
        match self.done(request)? {
            true => Ok(()),
            false => Err(TargetError::NonFatal),
        }
    }

    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadResume for Proxy {
    // A signal gdb passes on (after SIGSEGV, say) is not delivered: the
    // guest has no signals. Resuming after a fault ends the instance.
    fn resume(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.resume_with(false)
    }

    fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadSingleStep for Proxy {
    fn step(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.resume_with(true)
    }
}

impl Breakpoints for Proxy {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for Proxy {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.done(Request::AddBreakpoint(addr))
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.done(Request::RemoveBreakpoint(addr))
    }
}

fn stop_reason(kind: StopKind) -> SingleThreadStopReason<u64> {
    match kind {
        StopKind::Breakpoint => SingleThreadStopReason::SwBreak(()),
        StopKind::Step => SingleThreadStopReason::DoneStep,
        StopKind::Interrupted => SingleThreadStopReason::Signal(Signal::SIGINT),
        StopKind::Fault => SingleThreadStopReason::Signal(Signal::SIGSEGV),
    }
}

fn end_reason(end: End) -> SingleThreadStopReason<u64> {
    match end {
        End::Exited(code) => SingleThreadStopReason::Exited(code),
        End::Terminated(signo) => SingleThreadStopReason::Terminated(Signal(signo)),
    }
}

/// gdbstub's blocking event loop: while the guest runs, waits for its next
/// stop and for bytes from gdb (Ctrl-C) at once.
pub enum Loop {}

impl BlockingEventLoop for Loop {
    type Target = Proxy;
    type Connection = TcpStream;
    type StopReason = SingleThreadStopReason<u64>;

    #[allow(clippy::type_complexity)]
    fn wait_for_stop_reason(
        target: &mut Proxy,
        conn: &mut TcpStream,
    ) -> Result<
        Event<SingleThreadStopReason<u64>>,
        WaitForStopReasonError<&'static str, std::io::Error>,
    > {
        loop {
            match target.notes.try_recv() {
                Ok(Note::Stopped(kind)) => {
                    target.interrupting = false;
                    return Ok(Event::TargetStopped(stop_reason(kind)));
                }
                Ok(Note::Ended(end)) => return Ok(Event::TargetStopped(end_reason(end))),
                Ok(Note::Reply(_)) => continue,
                Err(TryRecvError::Disconnected) => {
                    return Ok(Event::TargetStopped(SingleThreadStopReason::Terminated(
                        Signal::SIGKILL,
                    )))
                }
                Err(TryRecvError::Empty) => {}
            }
            if ConnectionExt::peek(conn)
                .map_err(WaitForStopReasonError::Connection)?
                .is_some()
            {
                let byte = ConnectionExt::read(conn).map_err(WaitForStopReasonError::Connection)?;
                return Ok(Event::IncomingData(byte));
            }
            let timeout = match target.interrupting {
                true => KICK_INTERVAL.as_millis() as libc::c_int,
                false => -1,
            };
            wait_readable(&[conn.as_raw_fd(), target.wake.as_raw_fd()], timeout);
            let mut drain = [0u8; 64];
            while matches!(Read::read(&mut target.wake, &mut drain), Ok(n) if n > 0) {}
            if target.interrupting {
                target.kick.kick();
            }
        }
    }

    fn on_interrupt(
        target: &mut Proxy,
    ) -> Result<Option<SingleThreadStopReason<u64>>, &'static str> {
        // The vCPU thread stops at its next look at the flag and reports
        // SIGINT; kicks get it out of KVM_RUN until it does.
        target.interrupting = true;
        target.interrupt.store(true, Ordering::Release);
        target.kick.kick();
        Ok(None)
    }
}

/// Waits until one of `fds` is readable (or hung up), or `timeout_ms`
/// passes (-1: no limit). EINTR counts as a wake-up.
fn wait_readable(fds: &[libc::c_int], timeout_ms: libc::c_int) {
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `polls` is a valid array of `polls.len()` pollfd structs.
    unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, timeout_ms) };
}

/// Runs the GDB session on `conn` until gdb detaches, kills the guest,
/// disconnects, or the instance ends; then tells the vCPU thread (a
/// detach or a lost connection lets the guest run on alone).
pub fn serve(conn: TcpStream, mut target: Proxy) {
    let result = GdbStub::new(conn).run_blocking::<Loop>(&mut target);
    let last = match result {
        Ok(DisconnectReason::Kill) => Some(Request::Kill),
        Ok(DisconnectReason::Disconnect) => Some(Request::Detach),
        Ok(DisconnectReason::TargetExited(_) | DisconnectReason::TargetTerminated(_)) => None,
        Err(e) => {
            eprintln!("flint: gdb: {e}; the guest runs on without the debugger");
            Some(Request::Detach)
        }
    };
    if let Some(request) = last {
        // Answered only if the guest is stopped; otherwise the vCPU thread
        // sees the stub gone at its next stop and detaches.
        let _ = target.requests.send(request);
    }
}
