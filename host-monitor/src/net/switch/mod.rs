//! The fleet switch: one in-process Ethernet segment for the instances of a
//! worker process, with the user-mode gateway (10.64.0.1/16) on it.
//!
//! - Instance `ID` sits on port `ID`, with MAC [`instance_mac`] and IPv4
//!   [`instance_ip`]; the worker puts both in its `BootInfo.net`.
//! - Frames between instances go straight from the sender's vCPU thread
//!   (NET_WRITE) into the receiver's bounded queue, and ring the eventfd
//!   its POLL sleeps on. Frames for the gateway go to the switch thread
//!   through one queue (bounded per port) and its doorbell eventfd.
//! - The switch thread runs the gateway of `net::user` with the fleet's
//!   `--publish` listeners, bound with SO_REUSEPORT so that every worker of
//!   the fleet shares each address; it hands accepted connections to the
//!   serving instances round-robin (from `instance_started` to
//!   `instance_stopped`).
//! - Broadcasts go to every port, except ARP requests for an address the
//!   switch knows (the gateway's, an instance's): those go only to its
//!   owner, so the gateway's ARP for one instance wakes one vCPU, not all.
//! - A guest may only send from its own MAC and address; frames to a
//!   stopped instance, or past a full queue, are dropped and counted.

mod port;
mod thread;

use super::spec::{gateway_mac, Cidr, Identity, Mac, Publish};
use super::NetError;
use port::PortShared;
pub use port::SwitchPort;
use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// The fleet's gateway: the switch thread's own address.
pub const FLEET_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 64, 0, 1);
/// The fleet's subnet: 10.64.0.0/16.
pub const FLEET_PREFIX: u8 = 16;
/// The highest instance id with an address on the subnet.
pub const MAX_INSTANCE_ID: u64 = 65000;
/// Frames waiting for one guest; past this they are dropped (TCP sends
/// them again), so a guest that never reads costs a fixed amount.
pub const TO_GUEST_MAX: usize = 256;
/// Frames of one guest on their way to the gateway, not yet taken by the
/// switch thread: a flooding guest cannot crowd out the others.
pub const TO_GATEWAY_PER_PORT: usize = 64;

const SUBNET_BASE: u32 = u32::from_be_bytes([10, 64, 0, 0]);
const MAC_PREFIX: [u8; 3] = [0x52, 0x54, 0x00];
const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];

/// Instance `id`'s IPv4 address: 10.64.0.0 + id + 1 (id 1 is 10.64.0.2).
pub fn instance_ip(id: u64) -> Ipv4Addr {
    Ipv4Addr::from(SUBNET_BASE + (id as u32) + 1)
}

/// Instance `id`'s MAC address: 52:54:00 and the id's low 24 bits.
pub fn instance_mac(id: u64) -> Mac {
    let [_, a, b, c] = (id as u32).to_be_bytes();
    Mac([MAC_PREFIX[0], MAC_PREFIX[1], MAC_PREFIX[2], a, b, c])
}

/// Instance `id`'s identity on the fleet's segment, for `BootInfo.net`.
pub fn instance_identity(id: u64) -> Identity {
    Identity {
        mac: instance_mac(id),
        ip: Cidr {
            addr: instance_ip(id),
            prefix: FLEET_PREFIX,
        },
        gateway: Some(FLEET_GATEWAY),
    }
}

/// The instance that owns `ip` on the subnet.
fn id_of_ip(ip: [u8; 4]) -> Option<u64> {
    let offset = u32::from_be_bytes(ip).checked_sub(SUBNET_BASE + 1)?;
    let id = u64::from(offset);
    (1..=MAX_INSTANCE_ID).contains(&id).then_some(id)
}

/// The instance that owns `mac`.
fn id_of_mac(mac: &[u8]) -> Option<u64> {
    if mac[..3] != MAC_PREFIX {
        return None;
    }
    let id = u64::from(u32::from_be_bytes([0, mac[3], mac[4], mac[5]]));
    (1..=MAX_INSTANCE_ID).contains(&id).then_some(id)
}

/// Where a frame goes, from its Ethernet header (and an ARP request's
/// target address).
#[derive(Debug, PartialEq, Eq)]
enum Dest {
    Gateway,
    Port(u64),
    /// Every port but the sender's, and the gateway.
    Flood,
    Nowhere,
}

fn destination(frame: &[u8], gateway: &[u8; 6]) -> Dest {
    let dst = &frame[..6];
    if dst == gateway {
        return Dest::Gateway;
    }
    if dst[0] & 1 == 0 {
        return id_of_mac(dst).map_or(Dest::Nowhere, Dest::Port);
    }
    // The gate checked an ARP frame's length: target IP at bytes 38..42.
    if frame[12..14] == ETHERTYPE_ARP && frame.len() >= 42 {
        let target: [u8; 4] = frame[38..42].try_into().unwrap_or_default();
        if Ipv4Addr::from(target) == FLEET_GATEWAY {
            return Dest::Gateway;
        }
        if let Some(id) = id_of_ip(target) {
            return Dest::Port(id);
        }
    }
    Dest::Flood
}

/// What the switch thread and every port share.
struct Shared {
    ports: RwLock<BTreeMap<u64, Arc<PortShared>>>,
    /// Frames for the gateway, with the port each came from.
    to_gateway: Mutex<VecDeque<(Arc<PortShared>, Vec<u8>)>>,
    /// Rung when `to_gateway` gets its first frame, or `stopped` an entry.
    doorbell: EventFd,
    /// Instances that stopped, whose connections the thread must reset.
    stopped: Mutex<Vec<Ipv4Addr>>,
    /// Ends the switch thread.
    stop: EventFd,
    gateway_mac: [u8; 6],
    /// Frames no port could take (no such instance, or it stopped).
    dropped: AtomicU64,
    /// Host connections the gateway carries now.
    connections: AtomicUsize,
}

impl Shared {
    fn ring(&self) {
        // An eventfd write fails only when the counter would overflow,
        // and then it is set anyway.
        let _ = self.doorbell.write(1);
    }

    /// Carries a frame to where its header says: from port `from` (`None`:
    /// the gateway). False if it went nowhere.
    fn route(&self, from: Option<&Arc<PortShared>>, frame: &[u8]) -> bool {
        match destination(frame, &self.gateway_mac) {
            Dest::Gateway => from.is_some_and(|port| self.to_gateway(port, frame)),
            Dest::Port(id) => {
                let ports = self.ports.read().unwrap_or_else(|e| e.into_inner());
                match ports.get(&id) {
                    Some(to) if from.is_none_or(|f| f.id != id) && to.alive() => {
                        to.deliver(frame);
                        true
                    }
                    _ => {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                        false
                    }
                }
            }
            Dest::Flood => {
                let ports = self.ports.read().unwrap_or_else(|e| e.into_inner());
                for to in ports.values() {
                    if from.is_none_or(|f| f.id != to.id) && to.alive() {
                        to.deliver(frame);
                    }
                }
                drop(ports);
                if let Some(port) = from {
                    self.to_gateway(port, frame);
                }
                true
            }
            Dest::Nowhere => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Queues a guest's frame for the switch thread; false if that guest
    /// already has its share queued.
    fn to_gateway(&self, port: &Arc<PortShared>, frame: &[u8]) -> bool {
        if !port.reserve_to_gateway() {
            return false;
        }
        let mut queue = self.to_gateway.lock().unwrap_or_else(|e| e.into_inner());
        let first = queue.is_empty();
        queue.push_back((Arc::clone(port), frame.to_vec()));
        drop(queue);
        if first {
            self.ring();
        }
        true
    }

    /// The serving instance after `cursor` in id order, wrapping round.
    fn next_live(&self, cursor: u64) -> Option<u64> {
        let ports = self.ports.read().unwrap_or_else(|e| e.into_inner());
        ports
            .range(cursor.saturating_add(1)..)
            .chain(ports.range(..=cursor))
            .find(|(_, p)| p.serving())
            .map(|(&id, _)| id)
    }
}

/// One worker's switch. Dropping it stops its thread and closes the
/// listeners.
pub struct Switch {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
    listening: Vec<SocketAddr>,
    mtu: u16,
}

impl Switch {
    /// Starts the switch thread with a listener for each of `publish`
    /// (SO_REUSEPORT) and the gateway at [`FLEET_GATEWAY`]; `mtu` is the
    /// IP MTU of the segment.
    pub fn start(publish: &[Publish], mtu: u16) -> Result<Switch, NetError> {
        let shared = Arc::new(Shared {
            ports: RwLock::new(BTreeMap::new()),
            to_gateway: Mutex::new(VecDeque::new()),
            doorbell: EventFd::new(EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(NetError::Poller)?,
            stopped: Mutex::new(Vec::new()),
            stop: EventFd::new(EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(NetError::Poller)?,
            gateway_mac: gateway_mac(FLEET_GATEWAY).0,
            dropped: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
        });
        let (runner, listening) = thread::Runner::new(Arc::clone(&shared), publish, mtu)?;
        let thread = std::thread::Builder::new()
            .name("flint-switch".into())
            .spawn(move || {
                crate::seccomp::fleet::apply_switch();
                runner.run()
            })
            .map_err(NetError::Poller)?;
        Ok(Switch {
            shared,
            thread: Some(thread),
            listening,
            mtu,
        })
    }

    /// Instance `id`'s port: frames flow from now on, connections once
    /// [`Switch::instance_started`] says it serves. The same port again for
    /// a restarted instance (its queue emptied). One `SwitchPort` per id at
    /// a time.
    pub fn port(&self, id: u64) -> Result<SwitchPort, NetError> {
        if !(1..=MAX_INSTANCE_ID).contains(&id) {
            return Err(NetError::InstanceId(id));
        }
        let mut ports = self.shared.ports.write().unwrap_or_else(|e| e.into_inner());
        let port = match ports.get(&id) {
            Some(port) => {
                port.reset();
                Arc::clone(port)
            }
            None => {
                let port = Arc::new(PortShared::new(id).map_err(NetError::Port)?);
                ports.insert(id, Arc::clone(&port));
                port
            }
        };
        port.set_serving(false);
        port.set_alive(true);
        drop(ports);
        Ok(SwitchPort::new(Arc::clone(&self.shared), port, self.mtu))
    }

    /// Instance `id` is ready to serve (e.g. it first waits in POLL):
    /// published connections may go to it, round-robin.
    pub fn instance_started(&self, id: u64) {
        let ports = self.shared.ports.read().unwrap_or_else(|e| e.into_inner());
        if let Some(port) = ports.get(&id) {
            port.set_serving(true);
        }
    }

    /// Instance `id` stopped: it gets no more connections or frames, and
    /// those carried to it are reset.
    pub fn instance_stopped(&self, id: u64) {
        let ports = self.shared.ports.read().unwrap_or_else(|e| e.into_inner());
        if let Some(port) = ports.get(&id) {
            port.set_serving(false);
            port.set_alive(false);
            port.reset();
        }
        drop(ports);
        self.shared
            .stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(instance_ip(id));
        self.shared.ring();
    }

    /// The host addresses the listeners are bound to (with the port the
    /// kernel chose, for a port 0: then every worker gets its own).
    pub fn listening_addrs(&self) -> Vec<SocketAddr> {
        self.listening.clone()
    }

    /// Host connections carried to instances now.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Frames the switch dropped because no live port could take them.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        let _ = self.shared.stop.write(1);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests;
