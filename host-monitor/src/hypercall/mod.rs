//! Hypercall dispatch: ABI.md section 4's table in one place. Each handler
//! lives in the file of the device it belongs to and touches the guest only
//! through [`GuestRam`]'s checked accessors.

mod clock;
mod console;
mod lifecycle;
mod net;
mod poll;
mod random;

pub use clock::{wall_ns, InstanceClock};
pub use console::{Console, ConsoleSink};

use crate::guest_memory::{BadBlock, GuestRam};
use crate::net::NetDevice;
use crate::outcome::Outcome;
use crate::poller::Poller;
use crate::signals::StopSource;
use crate::stats::CallCounts;
use hypercall_abi::{Hypercall, HYPERCALLS_V1};
use std::time::{Duration, Instant};

/// A wall-time limit on an instance.
#[derive(Clone, Copy, Debug)]
pub struct Timeout {
    /// When it runs out.
    pub at: Instant,
    /// How long it was (for the verdict line).
    pub limit: Duration,
}

/// What the instance's hypercalls act on.
pub struct Services {
    /// Guest RAM, behind the permission checks.
    pub ram: GuestRam,
    /// The instance clock.
    pub clock: InstanceClock,
    /// Where console output goes.
    pub console: Console,
    /// The instance's `--timeout`, if it was given.
    pub timeout: Option<Timeout>,
    /// The network device, if the instance has one.
    pub net: Option<NetDevice>,
    /// Where POLL sleeps without a network device: made at the first POLL,
    /// so an instance that never waits never pays for it.
    pub idle: Option<Poller>,
    /// Hypercalls served, by number.
    pub calls: CallCounts,
    /// Where a stop request comes from.
    pub stop: StopSource,
    /// Called the first time POLL blocks (the guest is initialised and
    /// waiting for work).
    pub on_idle: Option<Box<dyn FnOnce() + Send>>,
    /// Written the first time POLL blocks (`--snapshot-on-idle`).
    pub snapshot: Option<crate::snapshot::Recorder>,
}

impl Services {
    /// Services for `ram` with no network, wall-time limit, idle hook or
    /// snapshot, stopped only by the process's signals: the least an
    /// instance needs. Tests and the fuzz targets (fuzz/) drive
    /// [`dispatch`] with it, no KVM needed; set the public fields for more.
    pub fn new(ram: GuestRam, console: Console) -> Services {
        Services {
            ram,
            clock: InstanceClock::start(),
            console,
            timeout: None,
            net: None,
            idle: None,
            calls: CallCounts::default(),
            stop: StopSource::Process,
            on_idle: None,
            snapshot: None,
        }
    }
}

/// What the vCPU does after a hypercall.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Run the guest on from after the store.
    Resume,
    /// The instance is over.
    Stop(Outcome),
}

/// A hypercall the instance must stop for, described for the fault line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Broken {
    #[error("unknown hypercall number {0}")]
    UnknownNumber(u64),
    #[error("{name} argument block at {gpa:#x} {why}")]
    Block {
        name: &'static str,
        gpa: u64,
        why: BadBlock,
    },
}

/// Services hypercall `nr` with the argument block at `block`.
pub fn dispatch(services: &mut Services, nr: u64, block: u64) -> Result<Flow, Broken> {
    services.calls.count(nr);
    let call = Hypercall::from_nr(nr)
        .filter(|call| HYPERCALLS_V1 & (1 << call.nr()) != 0)
        .ok_or(Broken::UnknownNumber(nr))?;
    let handled = match call {
        Hypercall::ConsoleWrite => console::write(services, block),
        Hypercall::Exit => lifecycle::exit(services, block),
        Hypercall::Panic => lifecycle::panic(services, block),
        Hypercall::Clock => clock::clock(services, block),
        Hypercall::Poll => poll::poll(services, block),
        Hypercall::NetWrite => net::write(services, block),
        Hypercall::NetRead => net::read(services, block),
        Hypercall::Random => random::fill(services, block),
    };
    handled.map_err(|why| Broken::Block {
        name: call.name(),
        gpa: block,
        why,
    })
}
