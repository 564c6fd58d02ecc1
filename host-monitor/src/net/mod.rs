//! The network device: one Ethernet port for the guest, behind one of the
//! backends of DESIGN.md (`tap:NAME`, or `user`: the monitor's own gateway).
//!
//! All of it runs on the vCPU thread inside hypercalls: NET_WRITE hands a
//! frame to the backend (which may answer it at once), NET_READ takes the
//! frame at the head of the backend's queue, and POLL sleeps in the
//! [`Poller`] on the backend's fds until a frame waits. No extra threads,
//! no locks, and nothing runs while the guest runs. (A fleet instance is
//! the exception: its port on the worker's [`switch`] is served by the
//! switch thread, with locked bounded queues between them.)

pub mod frame;
pub mod spec;
pub mod switch;
mod tap;
mod user;

use crate::limits::{LimitCounts, NetRateLimiter};
use crate::poller::{Poller, Ready, Woken};
use hypercall_abi::{NetConfig, ETH_HEADER_LEN};
use spec::{Identity, NetSetup};
use std::net::SocketAddr;
use std::time::Instant;

/// The network device's counters. `rx` is towards the guest, `tx` from it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// Frames NET_READ delivered to the guest.
    pub rx_frames: u64,
    /// NET_WRITE frames the guest sent (every one that passed the ABI's
    /// checks, including those then dropped).
    pub tx_frames: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Frames lost without being malformed: a queue was full, a frame did
    /// not fit NET_READ's `cap` or the MTU, the backend could not take it.
    pub dropped: u64,
    /// Frames from the guest that failed the header and checksum gate.
    pub malformed: u64,
}

/// A host-side carrier of Ethernet frames.
pub trait Backend: Send {
    /// Carries one frame from the guest, already checked by the gate;
    /// counts it in `dropped` if it cannot.
    fn send(&mut self, frame: &[u8], poller: &Poller, counters: &mut NetCounters);
    /// The frame waiting for the guest, fetched without blocking if need
    /// be; never longer than the MTU plus the Ethernet header.
    fn peek(&mut self, counters: &mut NetCounters) -> Option<&[u8]>;
    /// Forgets the frame `peek` returned.
    fn discard(&mut self);
    /// A registered fd is ready.
    fn ready(&mut self, ready: &Ready, poller: &Poller);
    /// Does the host-side work that is due (timers, carrying bytes).
    fn service(&mut self, poller: &Poller, counters: &mut NetCounters);
    /// When `service` must run again even if no fd gets ready.
    fn next_wake(&mut self) -> Option<Instant>;
    /// The host addresses this backend accepts connections on.
    fn listening_addrs(&self) -> Vec<SocketAddr> {
        Vec::new()
    }
    /// Host connections it carries now.
    fn connections(&self) -> usize {
        0
    }
    /// Every fd the backend reads or writes, if that set is fixed for its
    /// life (see `seccomp`); `None` (the default) if it is not, e.g.
    /// connections accepted later.
    fn io_fds(&self) -> Option<Vec<std::os::fd::RawFd>> {
        None
    }
}

/// The network could not be set up (status 125).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("--net tap:{name}: {why}")]
    Tap { name: String, why: String },
    #[error("--publish: cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("--publish: cannot watch the listening socket on {addr}: {source}")]
    Watch {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the network's wait set: {0}")]
    Poller(std::io::Error),
    #[error("instance id {0} has no address on the fleet's switch (1 to {max})", max = switch::MAX_INSTANCE_ID)]
    InstanceId(u64),
    #[error("cannot make the instance's switch port: {0}")]
    Port(std::io::Error),
}

/// What NET_READ found.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// The frame went to the guest; its length.
    Delivered(usize),
    /// The waiting frame was longer than `cap`: dropped; its length.
    TooBig(usize),
    /// No frame is waiting.
    Nothing,
    /// The guest's buffer could not be written; the frame stays.
    Fault,
}

/// The guest's network device, with the wait set POLL sleeps in.
pub struct NetDevice {
    backend: Box<dyn Backend>,
    poller: Poller,
    policy: frame::Policy,
    config: NetConfig,
    counters: NetCounters,
    /// Scratch list of ready fds, kept to save an allocation per wait.
    ready: Vec<Ready>,
    /// `--net-rate`, if given, and what it dropped.
    rate: Option<NetRateLimiter>,
    limited: LimitCounts,
}

impl NetDevice {
    /// Opens the backend `setup` asks for; `None` for `--net none`.
    pub fn open(setup: &NetSetup) -> Result<Option<NetDevice>, NetError> {
        if *setup == NetSetup::None {
            return Ok(None);
        }
        let poller = Poller::new().map_err(NetError::Poller)?;
        let (backend, policy, guest, mtu): (Box<dyn Backend>, _, _, _) = match setup {
            NetSetup::None => return Ok(None),
            NetSetup::Tap { name, guest } => {
                let tap = tap::Tap::open(name, &poller)?;
                let mtu = tap.mtu();
                (Box::new(tap), frame::Policy::PassUnknown, guest, mtu)
            }
            NetSetup::User {
                guest,
                gateway,
                publish,
            } => {
                let net = user::UserNet::new(guest, *gateway, publish, &poller)?;
                (
                    Box::new(net),
                    frame::Policy::UserMode,
                    guest,
                    spec::USER_MTU,
                )
            }
        };
        Ok(Some(NetDevice {
            backend,
            poller,
            policy,
            config: boot_config(guest, mtu),
            counters: NetCounters::default(),
            ready: Vec::new(),
            rate: None,
            limited: LimitCounts::default(),
        }))
    }

    /// The device of a fleet instance: its port on the worker's switch.
    pub fn attach(port: switch::SwitchPort) -> Result<NetDevice, NetError> {
        let poller = Poller::new().map_err(NetError::Poller)?;
        port.register(&poller).map_err(NetError::Poller)?;
        let config = boot_config(&switch::instance_identity(port.id()), port.mtu());
        Ok(NetDevice {
            backend: Box::new(port),
            poller,
            policy: frame::Policy::UserMode,
            config,
            counters: NetCounters::default(),
            ready: Vec::new(),
            rate: None,
            limited: LimitCounts::default(),
        })
    }

    /// This device, sending at most `pps` frames a second from now on
    /// (`--net-rate`); frames beyond it are dropped and counted.
    pub fn limited(mut self, pps: Option<u64>) -> NetDevice {
        self.rate = pps.map(NetRateLimiter::new);
        self
    }

    /// Frames `--net-rate` dropped (in `net_rate_dropped`).
    pub fn limit_counts(&self) -> LimitCounts {
        self.limited
    }

    /// `BootInfo.net` for this device.
    pub fn boot_config(&self) -> NetConfig {
        self.config
    }

    /// The longest frame either way: the MTU plus the Ethernet header.
    pub fn max_frame(&self) -> u64 {
        u64::from(self.config.mtu) + ETH_HEADER_LEN
    }

    /// The counters so far.
    pub fn counters(&self) -> NetCounters {
        self.counters
    }

    /// Every fd the device reads or writes, if that set is fixed (a TAP
    /// device); `None` otherwise (see `seccomp`).
    pub fn io_fds(&self) -> Option<Vec<std::os::fd::RawFd>> {
        let mut fds = self.backend.io_fds()?;
        fds.extend(self.poller.fds());
        Some(fds)
    }

    /// The eventfd that ends [`NetDevice::wait`] for good (see `signals`).
    pub fn wake_fd(&self) -> std::os::fd::RawFd {
        self.poller.wake_fd()
    }

    /// NET_WRITE of a frame whose length the ABI checks accepted.
    pub fn send(&mut self, frame: &[u8]) {
        self.counters.tx_frames += 1;
        self.counters.tx_bytes += frame.len() as u64;
        if let Some(rate) = self.rate.as_mut() {
            if !rate.allow(Instant::now(), &mut self.limited) {
                self.counters.dropped += 1;
                return;
            }
        }
        match frame::check(frame, self.policy) {
            Ok(()) => self.backend.send(frame, &self.poller, &mut self.counters),
            Err(frame::Reject::Malformed(_)) => self.counters.malformed += 1,
            Err(frame::Reject::Unsupported(_)) => self.counters.dropped += 1,
        }
    }

    /// NET_READ: gives the waiting frame to `deliver` if it fits `cap`.
    pub fn receive(&mut self, cap: u64, deliver: impl FnOnce(&[u8]) -> bool) -> Received {
        let Some(frame) = self.backend.peek(&mut self.counters) else {
            return Received::Nothing;
        };
        let len = frame.len();
        if len as u64 > cap {
            self.backend.discard();
            self.counters.dropped += 1;
            return Received::TooBig(len);
        }
        if !deliver(frame) {
            return Received::Fault;
        }
        self.backend.discard();
        self.counters.rx_frames += 1;
        self.counters.rx_bytes += len as u64;
        Received::Delivered(len)
    }

    /// True while a frame waits for the guest (POLL's ready bit 0).
    pub fn frame_waiting(&mut self) -> bool {
        self.backend.peek(&mut self.counters).is_some()
    }

    /// Waits until a backend fd is ready, `until` passes (`None`: no
    /// deadline; a past one: just look) or the wake eventfd is set, then
    /// does the host-side work that is due.
    pub fn wait(&mut self, until: Option<Instant>) -> std::io::Result<Woken> {
        let woken = self.poller.wait(until, &mut self.ready);
        for ready in self.ready.drain(..) {
            self.backend.ready(&ready, &self.poller);
        }
        self.backend.service(&self.poller, &mut self.counters);
        woken
    }

    /// The host addresses `--publish` listens on (with the port the kernel
    /// chose, for a port 0).
    pub fn listening_addrs(&self) -> Vec<SocketAddr> {
        self.backend.listening_addrs()
    }

    /// Host connections carried to the guest now (`--publish`).
    pub fn connections(&self) -> usize {
        self.backend.connections()
    }

    /// When [`NetDevice::service`] must run again at the latest.
    pub fn next_wake(&mut self) -> Option<Instant> {
        self.backend.next_wake()
    }
}

fn boot_config(guest: &Identity, mtu: u16) -> NetConfig {
    NetConfig {
        present: 1,
        mac: guest.mac.0,
        prefix_len: guest.ip.prefix,
        ipv4: guest.ip.addr.octets(),
        gateway: guest.gateway.map_or([0; 4], |g| g.octets()),
        mtu,
        _pad: [0; 6],
    }
}
