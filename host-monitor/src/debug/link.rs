//! What the gdb stub thread and the vCPU thread say to each other.
//!
//! The stub thread speaks the GDB remote protocol; the vCPU thread owns the
//! vCPU and guest RAM. While the guest is stopped, the vCPU thread waits in
//! [`super::control::Controller`] for [`Request`]s and answers each with one
//! [`Note::Reply`]; a [`Request::Resume`] lets the guest run until its next
//! [`Note::Stopped`] (or [`Note::Ended`]), which also writes one byte to the
//! wake pipe so that the stub thread can wait for it and for gdb at once.

use gdbstub_arch::x86::reg::X86_64CoreRegs;

/// From the stub thread to the stopped vCPU thread.
#[derive(Debug)]
pub enum Request {
    ReadRegs,
    WriteRegs(Box<X86_64CoreRegs>),
    /// Up to `len` bytes at guest address `addr` (fewer if the guest has
    /// not mapped them all).
    ReadMem {
        addr: u64,
        len: usize,
    },
    WriteMem {
        addr: u64,
        bytes: Vec<u8>,
    },
    AddBreakpoint(u64),
    RemoveBreakpoint(u64),
    /// Let the guest run: one instruction if `step`.
    Resume {
        step: bool,
    },
    /// gdb left: remove every breakpoint and let the guest run on alone.
    Detach,
    /// gdb killed the guest.
    Kill,
}

/// The answer to one [`Request`].
#[derive(Debug)]
pub enum Reply {
    Regs(Box<X86_64CoreRegs>),
    Bytes(Vec<u8>),
    /// Whether the request could be carried out.
    Done(bool),
}

/// Why the guest stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopKind {
    /// At one of gdb's breakpoints (RIP rewound onto it).
    Breakpoint,
    /// A single step finished.
    Step,
    /// gdb's Ctrl-C.
    Interrupted,
    /// A real CPU exception (a triple fault, there is no IDT): the guest
    /// cannot go on; resuming ends the instance with the fault.
    Fault,
}

/// How the instance ended, as gdb is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The guest's exit status (a panic is 101, as for `flint run`).
    Exited(u8),
    /// Ended by a fault, a timeout or a signal.
    Terminated(u8),
}

/// From the vCPU thread (and `flint run` at the end) to the stub thread.
#[derive(Debug)]
pub enum Note {
    Reply(Reply),
    Stopped(StopKind),
    Ended(End),
}
