//! One instance's port on the switch: its bounded queue of frames for the
//! guest with the eventfd its POLL sleeps on, and the `Backend` the
//! instance's network device uses on its vCPU thread.

use super::{Shared, TO_GATEWAY_PER_PORT, TO_GUEST_MAX};
use crate::net::{Backend, NetCounters};
use crate::poller::{Interest, Poller, Ready, FIRST_FREE_TOKEN};
use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// The port's eventfd in the instance's wait set.
const BELL_TOKEN: u64 = FIRST_FREE_TOKEN;

/// The part of a port the switch thread and other ports' senders see.
pub(super) struct PortShared {
    pub id: u64,
    to_guest: Mutex<VecDeque<Vec<u8>>>,
    /// Set when `to_guest` gets a frame while empty; POLL waits on it.
    bell: EventFd,
    /// An instance runs on the port: frames are delivered to it.
    alive: AtomicBool,
    /// The instance is ready to serve: connections may go to it.
    serving: AtomicBool,
    /// This guest's frames queued for the gateway.
    to_gateway: AtomicUsize,
    /// Frames for this guest lost to a full queue, not yet counted in its
    /// device's counters.
    dropped: AtomicU64,
}

impl PortShared {
    pub fn new(id: u64) -> std::io::Result<PortShared> {
        Ok(PortShared {
            id,
            to_guest: Mutex::new(VecDeque::new()),
            bell: EventFd::new(EFD_NONBLOCK | libc::EFD_CLOEXEC)?,
            alive: AtomicBool::new(false),
            serving: AtomicBool::new(false),
            to_gateway: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    pub fn set_alive(&self, alive: bool) {
        self.alive.store(alive, Ordering::Relaxed);
    }

    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed) && self.alive()
    }

    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Relaxed);
    }

    /// Forgets the frames waiting for the guest (it stopped, or a new
    /// instance takes the port over).
    pub fn reset(&self) {
        self.to_guest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let _ = self.bell.read();
    }

    /// Queues a frame for the guest, or counts it dropped if the queue is
    /// full.
    pub fn deliver(&self, frame: &[u8]) {
        self.deliver_owned(frame.to_vec());
    }

    /// [`PortShared::deliver`] without a copy.
    pub fn deliver_owned(&self, frame: Vec<u8>) {
        let mut queue = self.to_guest.lock().unwrap_or_else(|e| e.into_inner());
        if queue.len() >= TO_GUEST_MAX {
            drop(queue);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let first = queue.is_empty();
        queue.push_back(frame);
        drop(queue);
        // The guest drains the bell before it looks at the queue, and looks
        // until the queue is empty before it sleeps: ringing only for the
        // first frame loses no wake-up.
        if first {
            let _ = self.bell.write(1);
        }
    }

    /// Takes room for one more frame towards the gateway.
    pub fn reserve_to_gateway(&self) -> bool {
        self.to_gateway
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < TO_GATEWAY_PER_PORT).then_some(n + 1)
            })
            .is_ok()
    }

    /// The switch thread took one of this guest's frames for the gateway.
    pub fn taken_to_gateway(&self) {
        self.to_gateway.fetch_sub(1, Ordering::Relaxed);
    }

    /// Frames waiting for the guest.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.to_guest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

/// An instance's end of its switch port: the `Backend` of its network
/// device. Made by [`super::Switch::port`].
pub struct SwitchPort {
    shared: Arc<Shared>,
    port: Arc<PortShared>,
    mtu: u16,
    /// The frame `peek` took off the queue, until NET_READ takes it.
    current: Option<Vec<u8>>,
}

impl SwitchPort {
    pub(super) fn new(shared: Arc<Shared>, port: Arc<PortShared>, mtu: u16) -> SwitchPort {
        SwitchPort {
            shared,
            port,
            mtu,
            current: None,
        }
    }

    /// The instance id this port belongs to.
    pub fn id(&self) -> u64 {
        self.port.id
    }

    /// The segment's IP MTU.
    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// Puts the port's eventfd into the instance's wait set.
    pub fn register(&self, poller: &Poller) -> std::io::Result<()> {
        poller.add(self.port.bell.as_raw_fd(), BELL_TOKEN, Interest::READ)
    }
}

impl Backend for SwitchPort {
    fn send(&mut self, frame: &[u8], _: &Poller, counters: &mut NetCounters) {
        if !speaks_as(frame, self.port.id) || !self.shared.route(Some(&self.port), frame) {
            counters.dropped += 1;
        }
    }

    fn peek(&mut self, counters: &mut NetCounters) -> Option<&[u8]> {
        if self.port.dropped.load(Ordering::Relaxed) != 0 {
            counters.dropped += self.port.dropped.swap(0, Ordering::Relaxed);
        }
        if self.current.is_none() {
            self.current = self
                .port
                .to_guest
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front();
        }
        self.current.as_deref()
    }

    fn discard(&mut self) {
        self.current = None;
    }

    fn ready(&mut self, ready: &Ready, _: &Poller) {
        if ready.token == BELL_TOKEN {
            // Drained before the queue is looked at again (see `deliver`).
            let _ = self.port.bell.read();
        }
    }

    fn service(&mut self, _: &Poller, _: &mut NetCounters) {}

    fn next_wake(&mut self) -> Option<Instant> {
        None
    }
}

/// True if `frame` comes from instance `id`'s own MAC and, for IPv4 and
/// ARP, its own address: a guest cannot pose as another.
fn speaks_as(frame: &[u8], id: u64) -> bool {
    if frame[6..12] != super::instance_mac(id).0 {
        return false;
    }
    // The gate checked the lengths of the headers it let through.
    let sender = match frame[12..14] {
        [0x08, 0x00] => frame.get(26..30),
        [0x08, 0x06] => frame.get(28..32),
        _ => return true,
    };
    sender == Some(&super::instance_ip(id).octets()[..])
}
