//! The vCPU thread's half of the gdb stub: software breakpoints, single
//! steps and telling a breakpoint or a step from a real fault, on a host
//! whose KVM cannot debug the guest itself.
//!
//! What kvm_pvm does (measured, issue 7): an `int3` at CPL 3 with no IDT
//! ends KVM_RUN with a shutdown exit and RIP just after the `int3`;
//! loading the registers again (KVM_SET_SREGS, KVM_SET_REGS) and running
//! resumes the guest. With RFLAGS.TF set, every instruction ends the same
//! way: that is single-step. KVM's own guest debugging
//! (KVM_SET_GUEST_DEBUG) does not work there: its #DB reaches the guest and
//! triple-faults, and hardware breakpoints never fire. So:
//!
//! - a breakpoint is an `int3` (0xCC) written over the instruction's first
//!   byte through the monitor's own mapping of guest RAM (code is
//!   read-only to the guest, not to the monitor);
//! - a shutdown with a breakpoint at RIP-1 is that breakpoint: RIP is
//!   rewound onto it and gdb told SIGTRAP;
//! - a step sets TF; the next shutdown with RIP moved is the step;
//! - continuing from a breakpoint first steps over it with its original
//!   byte back in place, then puts the `int3` back;
//! - any other shutdown (CR2 set by a page fault, RIP not where a
//!   breakpoint or step would leave it) is a real fault: gdb sees SIGSEGV
//!   and may look around; the instance then ends with the usual diagnosis.

use super::link::{Note, Reply, Request, StopKind};
use super::regs::{self, TRAP_FLAG};
use super::{DebugEvent, Debugger, Verdict};
use crate::guest_memory::GuestRam;
use crate::outcome::Outcome;
use crate::vcpu::CR2_SENTINEL;
use kvm_bindings::{kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;

/// The `int3` instruction.
const INT3: u8 = 0xcc;
/// How often a stopped guest looks for a stop signal (SIGTERM, SIGINT).
const STOP_CHECK: std::time::Duration = std::time::Duration::from_millis(100);
/// The most bytes one memory read returns (gdb asks for a few KiB at most).
const MAX_READ: usize = 64 << 10;

/// What the guest was let run for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Running {
    /// Until a breakpoint, a fault or the end.
    Free,
    /// One instruction from `from`.
    Step { from: u64 },
    /// One instruction at breakpoint `addr` with its own byte back; then
    /// one step more is done (`then_step`) or the guest runs free.
    StepOver { addr: u64, then_step: bool },
}

/// How a shutdown exit reads.
enum Shutdown {
    Stop(StopKind),
    /// A step over a breakpoint ended and the guest is to run on.
    RunOn,
}

/// The vCPU thread's side of a gdb session ([`super::Session`]).
pub struct Controller {
    pub(super) requests: Receiver<Request>,
    pub(super) notes: Sender<Note>,
    /// The write end of the wake pipe: one byte per stop.
    pub(super) wake: Arc<File>,
    /// Set by the stub thread for gdb's Ctrl-C.
    pub(super) interrupt: Arc<AtomicBool>,
    /// Breakpoint address → the byte the `int3` replaced.
    breakpoints: BTreeMap<u64, u8>,
    running: Running,
    /// gdb left: the guest runs on alone.
    detached: bool,
}

impl Controller {
    pub(super) fn new(
        requests: Receiver<Request>,
        notes: Sender<Note>,
        wake: Arc<File>,
        interrupt: Arc<AtomicBool>,
    ) -> Controller {
        Controller {
            requests,
            notes,
            wake,
            interrupt,
            breakpoints: BTreeMap::new(),
            running: Running::Free,
            detached: false,
        }
    }

    fn note(&mut self, note: Note) {
        let wakes = !matches!(note, Note::Reply(_));
        // The stub thread gone (gdb left) is handled at the next request.
        let _ = self.notes.send(note);
        if wakes {
            let _ = (&*self.wake).write(&[1]);
        }
    }

    fn reply(&mut self, reply: Reply) {
        self.note(Note::Reply(reply));
    }

    /// Reads a shutdown exit, given what the guest was let run for.
    fn classify(
        &mut self,
        running: Running,
        regs: &mut kvm_regs,
        sregs: &kvm_sregs,
        ram: &GuestRam,
    ) -> Shutdown {
        if let Running::StepOver { addr, .. } = running {
            // Re-arm the breakpoint stepped over, whatever happened.
            if self.breakpoints.contains_key(&addr) {
                let _ = ram.debug_write(addr, &[INT3]);
            }
        }
        // A page fault leaves CR2 (entry: a sentinel no fault can leave).
        if sregs.cr2 != CR2_SENTINEL {
            return Shutdown::Stop(StopKind::Fault);
        }
        match running {
            // A fault leaves RIP on the faulting instruction; a step moves it.
            Running::StepOver { addr, .. } | Running::Step { from: addr } if regs.rip == addr => {
                Shutdown::Stop(StopKind::Fault)
            }
            Running::StepOver {
                then_step: false, ..
            } => Shutdown::RunOn,
            Running::StepOver { .. } | Running::Step { .. } => Shutdown::Stop(StopKind::Step),
            Running::Free => match regs.rip.checked_sub(1) {
                Some(at) if self.breakpoints.contains_key(&at) => {
                    regs.rip = at;
                    Shutdown::Stop(StopKind::Breakpoint)
                }
                _ => Shutdown::Stop(StopKind::Fault),
            },
        }
    }

    /// Where the step in flight started (0 if none).
    fn step_start(&self) -> u64 {
        match self.running {
            Running::Step { from } => from,
            Running::StepOver { addr, .. } => addr,
            Running::Free => 0,
        }
    }

    /// Answers gdb's requests while the guest is stopped, until it resumes
    /// it, detaches or kills it. After a fault the guest cannot resume:
    /// resuming ends the instance with the fault.
    fn serve(
        &mut self,
        vcpu: &mut VcpuFd,
        mut regs: kvm_regs,
        sregs: kvm_sregs,
        ram: &GuestRam,
        fault: bool,
    ) -> Verdict {
        loop {
            let request = match self.requests.recv_timeout(STOP_CHECK) {
                Ok(request) => request,
                // SIGTERM/SIGINT to flint ends the instance even while gdb
                // holds it stopped.
                Err(RecvTimeoutError::Timeout) => match crate::signals::stop_requested() {
                    Some(signo) => {
                        self.remove_all(ram);
                        self.detached = true;
                        return Verdict::End(Outcome::Signalled(signo));
                    }
                    None => continue,
                },
                // The stub thread ended: gdb is gone.
                Err(RecvTimeoutError::Disconnected) => {
                    return self.detach(vcpu, regs, sregs, ram, fault)
                }
            };
            match request {
                Request::ReadRegs => {
                    let gdb = regs::to_gdb(&regs, &sregs);
                    self.reply(Reply::Regs(Box::new(gdb)));
                }
                Request::WriteRegs(gdb) => {
                    regs = regs::from_gdb(&gdb, regs);
                    self.reply(Reply::Done(true));
                }
                Request::ReadMem { addr, len } => {
                    let mut bytes = ram.debug_read(addr, len.min(MAX_READ));
                    self.show_original(addr, &mut bytes);
                    self.reply(Reply::Bytes(bytes));
                }
                Request::WriteMem { addr, bytes } => {
                    let done = self.write_mem(ram, addr, &bytes);
                    self.reply(Reply::Done(done));
                }
                Request::AddBreakpoint(addr) => {
                    let done = self.insert(ram, addr);
                    self.reply(Reply::Done(done));
                }
                Request::RemoveBreakpoint(addr) => {
                    let done = self.remove(ram, addr);
                    self.reply(Reply::Done(done));
                }
                Request::Resume { step } if !fault => {
                    return self.resume(vcpu, regs, sregs, ram, step);
                }
                Request::Resume { .. } => {
                    self.remove_all(ram);
                    return Verdict::NotMine;
                }
                Request::Detach => {
                    self.reply(Reply::Done(true));
                    return self.detach(vcpu, regs, sregs, ram, fault);
                }
                Request::Kill => {
                    self.reply(Reply::Done(true));
                    // The one stderr line for a status the monitor decided.
                    eprintln!("flint: gdb killed the guest");
                    self.remove_all(ram);
                    self.detached = true;
                    return Verdict::End(Outcome::Signalled(libc::SIGKILL));
                }
            }
        }
    }

    /// Lets the guest run (one instruction if `step`), first stepping
    /// over a breakpoint at RIP with its own byte back in place.
    fn resume(
        &mut self,
        vcpu: &mut VcpuFd,
        mut regs: kvm_regs,
        sregs: kvm_sregs,
        ram: &GuestRam,
        step: bool,
    ) -> Verdict {
        let at = regs.rip;
        self.running = match self.breakpoints.get(&at) {
            Some(&original) if ram.debug_write(at, &[original]).is_ok() => Running::StepOver {
                addr: at,
                then_step: step,
            },
            _ if step => Running::Step { from: at },
            _ => Running::Free,
        };
        if self.running == Running::Free {
            regs.rflags &= !TRAP_FLAG;
        } else {
            regs.rflags |= TRAP_FLAG;
        }
        load(vcpu, &regs, &sregs)
    }

    /// gdb left: every breakpoint out, no step, the guest runs on alone.
    fn detach(
        &mut self,
        vcpu: &mut VcpuFd,
        mut regs: kvm_regs,
        sregs: kvm_sregs,
        ram: &GuestRam,
        fault: bool,
    ) -> Verdict {
        self.remove_all(ram);
        self.detached = true;
        self.running = Running::Free;
        if fault {
            return Verdict::NotMine;
        }
        regs.rflags &= !TRAP_FLAG;
        load(vcpu, &regs, &sregs)
    }

    fn insert(&mut self, ram: &GuestRam, addr: u64) -> bool {
        if self.breakpoints.contains_key(&addr) {
            return true;
        }
        let Some(&original) = ram.debug_read(addr, 1).first() else {
            return false;
        };
        if ram.debug_write(addr, &[INT3]).is_err() {
            return false;
        }
        self.breakpoints.insert(addr, original);
        true
    }

    fn remove(&mut self, ram: &GuestRam, addr: u64) -> bool {
        match self.breakpoints.remove(&addr) {
            Some(original) => ram.debug_write(addr, &[original]).is_ok(),
            None => false,
        }
    }

    fn remove_all(&mut self, ram: &GuestRam) {
        for (addr, original) in std::mem::take(&mut self.breakpoints) {
            let _ = ram.debug_write(addr, &[original]);
        }
    }

    /// Memory as gdb should see it: the original bytes where breakpoints are.
    fn show_original(&self, addr: u64, bytes: &mut [u8]) {
        let end = addr.saturating_add(bytes.len() as u64);
        for (&at, &original) in self.breakpoints.range(addr..end) {
            bytes[(at - addr) as usize] = original;
        }
    }

    /// Writes guest memory for gdb; a breakpoint inside keeps its `int3`
    /// and takes the written byte as its original.
    fn write_mem(&mut self, ram: &GuestRam, addr: u64, bytes: &[u8]) -> bool {
        if ram.debug_write(addr, bytes).is_err() {
            return false;
        }
        let end = addr.saturating_add(bytes.len() as u64);
        for (&at, original) in self.breakpoints.range_mut(addr..end) {
            *original = bytes[(at - addr) as usize];
            let _ = ram.debug_write(at, &[INT3]);
        }
        true
    }
}

/// Loads the registers for the next KVM_RUN. After a shutdown exit both
/// sets must be loaded again for the guest to resume (measured on
/// kvm_pvm); elsewhere it does no harm.
fn load(vcpu: &mut VcpuFd, regs: &kvm_regs, sregs: &kvm_sregs) -> Verdict {
    match vcpu.set_sregs(sregs).and_then(|()| vcpu.set_regs(regs)) {
        Ok(()) => Verdict::Resume,
        Err(e) => Verdict::End(Outcome::Fault(format!(
            "the debugger could not load the vCPU's registers ({e})"
        ))),
    }
}

impl Debugger for Controller {
    fn wants_stop(&self) -> bool {
        // A step in flight finishes first (a breakpoint stepped over is
        // out of memory until then).
        !self.detached && self.running == Running::Free && self.interrupt.load(Ordering::Acquire)
    }

    fn stopped(&mut self, event: DebugEvent, vcpu: &mut VcpuFd, ram: &GuestRam) -> Verdict {
        let stepping = self.running != Running::Free;
        if self.detached || (event == DebugEvent::Hypercall && !stepping) {
            return Verdict::NotMine;
        }
        let (Ok(mut regs), Ok(sregs)) = (vcpu.get_regs(), vcpu.get_sregs()) else {
            return Verdict::NotMine;
        };
        if event == DebugEvent::Hypercall && regs.rip == self.step_start() {
            // Not past the store yet: the step's own trap will come.
            return Verdict::NotMine;
        }
        let running = std::mem::replace(&mut self.running, Running::Free);
        let stop = match event {
            DebugEvent::Start => None,
            DebugEvent::Interrupt => Some(StopKind::Interrupted),
            DebugEvent::Shutdown | DebugEvent::Hypercall => {
                match self.classify(running, &mut regs, &sregs, ram) {
                    Shutdown::Stop(kind) => Some(kind),
                    Shutdown::RunOn => {
                        regs.rflags &= !TRAP_FLAG;
                        return load(vcpu, &regs, &sregs);
                    }
                }
            }
        };
        // Any stop answers a Ctrl-C that came meanwhile.
        self.interrupt.store(false, Ordering::Release);
        regs.rflags &= !TRAP_FLAG;
        let fault = stop == Some(StopKind::Fault);
        if let Some(kind) = stop {
            self.note(Note::Stopped(kind));
        }
        self.serve(vcpu, regs, sregs, ram, fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Layout, Perm, Region, RegionKind};
    use std::sync::mpsc;

    const CODE: u64 = 0x20_0000;

    fn ram() -> GuestRam {
        let layout = Layout {
            mem_size: 4 << 20,
            heap_start: 0x20_1000,
            heap_end: (4 << 20) - 0x5000,
            stack_top: 4 << 20,
            stack_size: 0x4000,
            cmdline: 0,
            regions: vec![Region {
                start: CODE,
                end: CODE + 0x1000,
                perm: Perm {
                    write: false,
                    exec: true,
                },
                kind: RegionKind::Image,
            }],
        };
        let ram = GuestRam::new(layout).expect("ram");
        ram.setup_write(CODE, &[0x90, 0x48, 0x89, 0xc8, 0xc3], "code")
            .expect("code");
        ram
    }

    fn controller() -> Controller {
        let (_, requests) = mpsc::channel();
        let (notes, _) = mpsc::channel();
        let wake = tempfile_like();
        Controller::new(requests, notes, wake, Arc::new(AtomicBool::new(false)))
    }

    /// A writable file nobody reads (the wake pipe's stand-in).
    fn tempfile_like() -> Arc<File> {
        Arc::new(
            File::options()
                .write(true)
                .open("/dev/null")
                .expect("/dev/null"),
        )
    }

    fn sregs(cr2: u64) -> kvm_sregs {
        kvm_sregs {
            cr2,
            ..Default::default()
        }
    }

    #[test]
    fn an_int3_of_ours_is_a_breakpoint_with_rip_rewound() {
        let ram = ram();
        let mut c = controller();
        assert!(c.insert(&ram, CODE + 1));
        assert_eq!(ram.peek(CODE + 1, 1).as_deref(), Some(&[INT3][..]));
        let mut regs = kvm_regs {
            rip: CODE + 2,
            ..Default::default()
        };
        let read = c.classify(Running::Free, &mut regs, &sregs(CR2_SENTINEL), &ram);
        assert!(matches!(read, Shutdown::Stop(StopKind::Breakpoint)));
        assert_eq!(regs.rip, CODE + 1);
    }

    #[test]
    fn other_shutdowns_are_faults() {
        let ram = ram();
        let mut c = controller();
        assert!(c.insert(&ram, CODE + 1));
        // Not after one of our breakpoints.
        let mut regs = kvm_regs {
            rip: CODE + 4,
            ..Default::default()
        };
        let read = c.classify(Running::Free, &mut regs, &sregs(CR2_SENTINEL), &ram);
        assert!(matches!(read, Shutdown::Stop(StopKind::Fault)));
        // A page fault, even right after a breakpoint.
        regs.rip = CODE + 2;
        let read = c.classify(Running::Free, &mut regs, &sregs(0x10), &ram);
        assert!(matches!(read, Shutdown::Stop(StopKind::Fault)));
        assert_eq!(regs.rip, CODE + 2);
        // A step that did not move: the instruction faulted.
        regs.rip = CODE;
        let read = c.classify(
            Running::Step { from: CODE },
            &mut regs,
            &sregs(CR2_SENTINEL),
            &ram,
        );
        assert!(matches!(read, Shutdown::Stop(StopKind::Fault)));
    }

    #[test]
    fn a_step_that_moved_is_a_step() {
        let ram = ram();
        let mut c = controller();
        let mut regs = kvm_regs {
            rip: CODE + 1,
            ..Default::default()
        };
        let read = c.classify(
            Running::Step { from: CODE },
            &mut regs,
            &sregs(CR2_SENTINEL),
            &ram,
        );
        assert!(matches!(read, Shutdown::Stop(StopKind::Step)));
    }

    #[test]
    fn stepping_over_a_breakpoint_puts_its_int3_back() {
        let ram = ram();
        let mut c = controller();
        assert!(c.insert(&ram, CODE + 1));
        // What resume does: the original byte back for one step.
        ram.debug_write(CODE + 1, &[0x48]).expect("write");
        let mut regs = kvm_regs {
            rip: CODE + 4,
            ..Default::default()
        };
        let over = Running::StepOver {
            addr: CODE + 1,
            then_step: false,
        };
        let read = c.classify(over, &mut regs, &sregs(CR2_SENTINEL), &ram);
        assert!(matches!(read, Shutdown::RunOn));
        assert_eq!(ram.peek(CODE + 1, 1).as_deref(), Some(&[INT3][..]));
        let over = Running::StepOver {
            addr: CODE + 1,
            then_step: true,
        };
        let read = c.classify(over, &mut regs, &sregs(CR2_SENTINEL), &ram);
        assert!(matches!(read, Shutdown::Stop(StopKind::Step)));
    }

    #[test]
    fn gdb_sees_and_writes_the_original_bytes_under_breakpoints() {
        let ram = ram();
        let mut c = controller();
        assert!(c.insert(&ram, CODE + 1));
        let mut bytes = ram.debug_read(CODE, 3);
        c.show_original(CODE, &mut bytes);
        assert_eq!(bytes, [0x90, 0x48, 0x89]);
        assert!(c.write_mem(&ram, CODE, &[0x90, 0x4c, 0x89]));
        assert_eq!(ram.peek(CODE + 1, 1).as_deref(), Some(&[INT3][..]));
        assert!(c.remove(&ram, CODE + 1));
        assert_eq!(ram.peek(CODE, 3).as_deref(), Some(&[0x90, 0x4c, 0x89][..]));
        // Outside the guest's pages: refused.
        assert!(!c.insert(&ram, 0x1000));
        assert!(!c.write_mem(&ram, 0x1000, &[1]));
        assert!(ram.debug_read(CODE + 0xfff, 4).len() == 1);
    }
}
