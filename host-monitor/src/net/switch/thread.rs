//! The switch thread: it sleeps in a [`Poller`] on the listeners, the
//! carried host connections, the ports' doorbell and the gateway's next
//! timer, feeds the guests' frames to the gateway and routes the
//! gateway's frames to the ports.
//!
//! The gateway never has to ARP for an instance: an instance's MAC follows
//! from its address, so the thread tells the gateway's stack with an ARP
//! reply of its making before a connection goes to it, and again now and
//! then while it talks. (smoltcp sends at most one ARP request a second
//! for all neighbours together: asking for a thousand instances would take
//! a thousand seconds.)

use super::{instance_ip, instance_mac, Shared, FLEET_GATEWAY, FLEET_PREFIX};
use crate::net::spec::Publish;
use crate::net::user::gateway::{Bind, Gateway, GatewayAddr, CONN_TOKEN_BASE};
use crate::net::user::queues::Queues;
use crate::net::{NetCounters, NetError};
use crate::poller::{Interest, Poller, Ready};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr,
};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The ports' doorbell, between the listeners' tokens and the
/// connections'.
const DOORBELL_TOKEN: u64 = CONN_TOKEN_BASE - 1;
/// The eventfd that ends the thread.
const STOP_TOKEN: u64 = CONN_TOKEN_BASE - 2;
/// How often an instance that talks to the gateway is announced to it
/// again, well within smoltcp's neighbour lifetime of 60 s.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(20);

/// Everything the switch thread owns.
pub(super) struct Runner {
    shared: Arc<Shared>,
    poller: Poller,
    gateway: Gateway,
    /// The last instance a connection went to.
    cursor: u64,
    /// When each instance was last announced to the gateway.
    announced: HashMap<u64, Instant>,
    counters: NetCounters,
}

impl Runner {
    /// The gateway and its listeners, ready to run; and the addresses
    /// they listen on.
    pub fn new(
        shared: Arc<Shared>,
        publish: &[Publish],
        mtu: u16,
    ) -> Result<(Runner, Vec<SocketAddr>), NetError> {
        let poller = Poller::new().map_err(NetError::Poller)?;
        let addr = GatewayAddr {
            ip: FLEET_GATEWAY,
            prefix: FLEET_PREFIX,
            mtu,
        };
        let gateway = Gateway::new(addr, publish, Bind::Shared, &poller)?;
        poller
            .add(shared.doorbell.as_raw_fd(), DOORBELL_TOKEN, Interest::READ)
            .map_err(NetError::Poller)?;
        poller
            .add(shared.stop.as_raw_fd(), STOP_TOKEN, Interest::READ)
            .map_err(NetError::Poller)?;
        let listening = gateway.listening_addrs();
        let runner = Runner {
            shared,
            poller,
            gateway,
            cursor: 0,
            announced: HashMap::new(),
            counters: NetCounters::default(),
        };
        Ok((runner, listening))
    }

    /// Runs until the switch is dropped.
    pub fn run(mut self) {
        let mut ready: Vec<Ready> = Vec::new();
        let mut frames = VecDeque::new();
        let mut picked = Vec::new();
        loop {
            let until = self.gateway.next_wake();
            if self.poller.wait(until, &mut ready).is_err() {
                // Cannot happen with valid fds; a nap keeps it from spinning.
                std::thread::sleep(Duration::from_millis(1));
            }
            let mut stop = false;
            for r in ready.drain(..) {
                match r.token {
                    STOP_TOKEN => stop = true,
                    DOORBELL_TOKEN => {
                        // Drained before the queues are looked at again.
                        let _ = self.shared.doorbell.read();
                    }
                    _ => self.gateway.ready(&r),
                }
            }
            if stop {
                return;
            }
            let stopped = std::mem::take(
                &mut *self
                    .shared
                    .stopped
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()),
            );
            for ip in stopped {
                self.gateway.abandon(ip);
            }
            std::mem::swap(
                &mut frames,
                &mut *self
                    .shared
                    .to_gateway
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()),
            );
            self.take_frames(&mut frames);
            let (shared, cursor) = (&self.shared, &mut self.cursor);
            let mut pick = || {
                let id = shared.next_live(*cursor)?;
                *cursor = id;
                picked.push(id);
                Some(instance_ip(id))
            };
            self.gateway.accept(&self.poller, Instant::now(), &mut pick);
            // Before the stack runs and sends the SYNs.
            for id in picked.drain(..) {
                self.announce(id, Instant::now());
            }
            self.cycle();
            self.shared
                .connections
                .store(self.gateway.connections(), Ordering::Relaxed);
        }
    }

    /// Feeds the guests' frames to the gateway, running it whenever its
    /// inbound queue fills.
    fn take_frames(&mut self, frames: &mut VecDeque<(Arc<super::PortShared>, Vec<u8>)>) {
        let now = Instant::now();
        while let Some((port, frame)) = frames.pop_front() {
            port.taken_to_gateway();
            let due = self
                .announced
                .get(&port.id)
                .is_none_or(|at| now.duration_since(*at) >= ANNOUNCE_EVERY);
            if due {
                self.announce(port.id, now);
            }
            self.push(frame);
        }
    }

    /// Queues a frame for the gateway's stack, running it first if the
    /// queue is full (a run takes every queued frame).
    fn push(&mut self, frame: Vec<u8>) {
        if let Err(frame) = self.gateway.wire().push_inbound_owned(frame) {
            self.cycle();
            let _ = self.gateway.wire().push_inbound_owned(frame);
        }
    }

    /// Tells the gateway's stack where instance `id` is, as an ARP reply
    /// from it would.
    fn announce(&mut self, id: u64, now: Instant) {
        self.announced.insert(id, now);
        self.push(arp_announcement(id));
    }

    /// Runs the gateway, routing its frames to the ports as it goes.
    fn cycle(&mut self) {
        let shared = &self.shared;
        let mut flush = |wire: &mut Queues| {
            while let Some(frame) = wire.take() {
                route_owned(shared, frame);
            }
        };
        self.gateway
            .cycle(&self.poller, &mut self.counters, &mut flush);
    }
}

/// Routes one of the gateway's frames, moving it into the port's queue when
/// it goes to one port only.
fn route_owned(shared: &Shared, frame: Vec<u8>) {
    match super::destination(&frame, &shared.gateway_mac) {
        super::Dest::Port(id) => {
            let ports = shared.ports.read().unwrap_or_else(|e| e.into_inner());
            match ports.get(&id) {
                Some(port) if port.alive() => port.deliver_owned(frame),
                _ => {
                    shared.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        _ => {
            shared.route(None, &frame);
        }
    }
}

/// An ARP reply from instance `id` to the gateway.
fn arp_announcement(id: u64) -> Vec<u8> {
    let gateway = EthernetAddress(crate::net::spec::gateway_mac(FLEET_GATEWAY).0);
    arp_reply(id, gateway)
}

/// An Ethernet frame carrying an ARP reply from instance `from` to `to`.
pub(super) fn arp_reply(from: u64, to: EthernetAddress) -> Vec<u8> {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: EthernetAddress(instance_mac(from).0),
        source_protocol_addr: instance_ip(from),
        target_hardware_addr: to,
        target_protocol_addr: FLEET_GATEWAY,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(instance_mac(from).0),
        dst_addr: to,
        ethertype: EthernetProtocol::Arp,
    };
    let mut frame = vec![0u8; eth.buffer_len() + arp.buffer_len()];
    let mut packet = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.emit(&mut packet);
    arp.emit(&mut ArpPacket::new_unchecked(packet.payload_mut()));
    frame
}
