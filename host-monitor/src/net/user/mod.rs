//! `--net user`: rootless networking. The monitor is the guest's gateway: a
//! host-side smoltcp interface at the gateway's address answers ARP and
//! ping, and each `--publish` listens on a host TCP socket whose accepted
//! connections it carries to the guest's port through a smoltcp socket of
//! its own, like `docker run -p` or QEMU's `hostfwd`. Nothing else leaves
//! the instance: the guest cannot reach the host or the outside world.
//!
//! The gateway itself lives in [`gateway`], which the fleet switch shares;
//! here it runs on the vCPU thread for one guest, and its wire is the
//! guest's: NET_READ takes the stack's frames straight off it.

mod forward;
pub(super) mod gateway;
mod listen;
mod ports;
pub(super) mod queues;

use super::spec::{Identity, Publish};
use super::{Backend, NetCounters, NetError};
use crate::poller::{Poller, Ready};
use gateway::{Bind, Gateway, GatewayAddr};
use std::net::Ipv4Addr;
use std::time::Instant;

/// The user-mode network of one guest.
pub struct UserNet {
    gateway: Gateway,
    guest_ip: Ipv4Addr,
}

impl UserNet {
    /// The gateway at `gateway` for `guest`, listening for each of `publish`.
    pub fn new(
        guest: &Identity,
        gateway: Ipv4Addr,
        publish: &[Publish],
        poller: &Poller,
    ) -> Result<UserNet, NetError> {
        let addr = GatewayAddr {
            ip: gateway,
            prefix: guest.ip.prefix,
            mtu: super::spec::USER_MTU,
        };
        Ok(UserNet {
            gateway: Gateway::new(addr, publish, Bind::Exclusive, poller)?,
            guest_ip: guest.ip.addr,
        })
    }

    fn cycle(&mut self, poller: &Poller, counters: &mut NetCounters) {
        // The stack's frames stay on the wire for NET_READ.
        self.gateway.cycle(poller, counters, &mut |_| {});
    }
}

impl Backend for UserNet {
    fn send(&mut self, frame: &[u8], poller: &Poller, counters: &mut NetCounters) {
        if !self.gateway.wire().push_inbound(frame) {
            counters.dropped += 1;
            return;
        }
        self.cycle(poller, counters);
    }

    fn peek(&mut self, _: &mut NetCounters) -> Option<&[u8]> {
        self.gateway.wire().front()
    }

    fn discard(&mut self) {
        self.gateway.wire().pop();
    }

    fn ready(&mut self, ready: &Ready, _: &Poller) {
        self.gateway.ready(ready);
    }

    fn service(&mut self, poller: &Poller, counters: &mut NetCounters) {
        let guest = self.guest_ip;
        self.gateway
            .accept(poller, Instant::now(), &mut || Some(guest));
        self.cycle(poller, counters);
    }

    fn next_wake(&mut self) -> Option<Instant> {
        self.gateway.next_wake()
    }

    fn connections(&self) -> usize {
        self.gateway.connections()
    }

    fn listening_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.gateway.listening_addrs()
    }
}

#[cfg(test)]
mod tests;
