//! The stack: one smoltcp interface, its device and its sockets, and the
//! bookkeeping the socket API needs on top (listeners, closed sockets
//! still finishing their goodbyes, local ports).
//!
//! Everything here is plain logic over a [`Link`] and a clock value passed
//! in, so host tests can run it against another smoltcp stack; `global.rs`
//! owns the instance's one stack and the POLL hypercall.

use alloc::vec::Vec;

use smoltcp::iface::{
    Config as IfaceConfig, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet,
};
use smoltcp::socket::{tcp, Socket};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, IpCidr};

use super::config::Config;
use super::device::{FrameDevice, Link};
use super::listener::Listener;
use super::{Error, Result};

/// How long a closed connection may take to finish its goodbye (send what
/// is queued, exchange FINs) before it is reset and forgotten.
pub(crate) const LINGER_NS: u64 = 30_000_000_000;
/// How long after that reset a socket is dropped even if the RST could
/// not be sent (no route, neighbour gone).
const RESET_GRACE_NS: u64 = 5_000_000_000;
/// Local ports for outgoing connections and unbound UDP sockets: the IANA
/// dynamic range, 49152 to 65535.
const EPHEMERAL_FIRST: u16 = 49152;
const EPHEMERAL_COUNT: u16 = 16384;

/// smoltcp's clock from the instance clock (microsecond resolution).
pub(crate) fn instant(now_ns: u64) -> Instant {
    Instant::from_micros(i64::try_from(now_ns / 1000).unwrap_or(i64::MAX))
}

/// A TCP connection the app has closed, kept until its close completes.
#[derive(Clone, Copy, Debug)]
struct Orphan {
    handle: SocketHandle,
    /// When to reset it if the close has not completed.
    give_up_ns: u64,
}

/// A smoltcp interface with its device and sockets.
pub(crate) struct Stack<L> {
    pub(crate) device: FrameDevice<L>,
    pub(crate) iface: Interface,
    pub(crate) sockets: SocketSet<'static>,
    /// Open listeners; a [`super::TcpListener`] is an index here.
    pub(crate) listeners: Vec<Option<Listener>>,
    orphans: Vec<Orphan>,
    /// Where the search for a free ephemeral port starts next.
    next_port: u16,
    /// `BootInfo.generation` the configuration was read at.
    pub(crate) generation: u64,
}

impl<L: Link> Stack<L> {
    /// A stack on `link` with the identity in `config`. `seed` randomises
    /// TCP sequence numbers and the first ephemeral port.
    pub(crate) fn new(link: L, config: &Config, seed: u64, now_ns: u64) -> Stack<L> {
        let mut device = FrameDevice::new(link, config.frame_max());
        let mut iface_config = IfaceConfig::new(EthernetAddress(config.mac).into());
        iface_config.random_seed = seed;
        let iface = Interface::new(iface_config, &mut device, instant(now_ns));
        let mut stack = Stack {
            device,
            iface,
            sockets: SocketSet::new(Vec::new()),
            listeners: Vec::new(),
            orphans: Vec::new(),
            next_port: (seed >> 32) as u16 % EPHEMERAL_COUNT,
            generation: 0,
        };
        stack.set_addresses(config);
        stack
    }

    /// Applies a new identity after a snapshot restore: MAC, address and
    /// gateway, and a fresh `seed`. The interface is made anew (smoltcp
    /// keeps its random state, for TCP sequence numbers and IP ids, inside
    /// it, and two instances restored from one snapshot must not share
    /// it; its neighbour cache belonged to the old identity too). The
    /// sockets are kept; the MTU stays what it was at boot.
    pub(crate) fn reconfigure(&mut self, config: &Config, seed: u64, now_ns: u64) {
        let mut iface_config = IfaceConfig::new(EthernetAddress(config.mac).into());
        iface_config.random_seed = seed;
        self.iface = Interface::new(iface_config, &mut self.device, instant(now_ns));
        self.next_port = (seed >> 32) as u16 % EPHEMERAL_COUNT;
        self.set_addresses(config);
    }

    fn set_addresses(&mut self, config: &Config) {
        let cidr = IpCidr::new(config.ipv4.into(), config.prefix_len);
        self.iface.update_ip_addrs(|addrs| {
            addrs.clear();
            // Room for two addresses (smoltcp's default): one always fits.
            let _ = addrs.push(cidr);
        });
        let routes = self.iface.routes_mut();
        routes.remove_default_ipv4_route();
        if let Some(gateway) = config.gateway {
            // One route in a table of two (smoltcp's default): always fits.
            let _ = routes.add_default_ipv4_route(gateway);
        }
    }

    /// Runs the interface once without blocking: takes in every frame the
    /// device has (only if POLL said one is waiting), sends everything the
    /// sockets have to send, and tidies up. Returns true if any socket may
    /// have changed (so callers should look at their sockets again).
    pub(crate) fn poll(&mut self, now_ns: u64) -> bool {
        let now = instant(now_ns);
        let mut changed = false;
        loop {
            let ingress = self
                .iface
                .poll_ingress_single(now, &mut self.device, &mut self.sockets);
            match ingress {
                PollIngressSingleResult::None => break,
                PollIngressSingleResult::PacketProcessed => {}
                PollIngressSingleResult::SocketStateChanged => changed = true,
            }
            // A SYN may have taken a listener's spare socket: put a new
            // one in place before the next frame, so a burst of
            // connections finds a listening socket for each SYN.
            self.replenish_listeners();
        }
        while self
            .iface
            .poll_egress(now, &mut self.device, &mut self.sockets)
            == PollResult::SocketStateChanged
        {
            changed = true;
        }
        self.reap(now_ns);
        changed
    }

    /// How long until the stack needs [`Stack::poll`] again even if no
    /// frame comes (a retransmission, a delayed ACK, giving up on a closed
    /// connection); `None` if never.
    pub(crate) fn poll_delay_ns(&mut self, now_ns: u64) -> Option<u64> {
        let stack = self
            .iface
            .poll_delay(instant(now_ns), &self.sockets)
            .map(|d| d.total_micros().saturating_mul(1000));
        let orphan = self
            .orphans
            .iter()
            .map(|o| o.give_up_ns.saturating_sub(now_ns))
            .min();
        match (stack, orphan) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Starts closing TCP socket `handle` (FIN after the queued data) and
    /// takes it over: it is dropped when the close completes, or reset
    /// after [`LINGER_NS`].
    pub(crate) fn orphan(&mut self, handle: SocketHandle, now_ns: u64) {
        self.sockets.get_mut::<tcp::Socket>(handle).close();
        self.orphans.push(Orphan {
            handle,
            give_up_ns: now_ns.saturating_add(LINGER_NS),
        });
    }

    /// Drops orphans whose close completed, resets those past their time.
    fn reap(&mut self, now_ns: u64) {
        let mut i = 0;
        while i < self.orphans.len() {
            let Orphan { handle, give_up_ns } = self.orphans[i];
            let socket = self.sockets.get_mut::<tcp::Socket>(handle);
            // Closed with no peer left: done (and any RST went out). In
            // TIME-WAIT the peer has had our ACK of its FIN; waiting out
            // 2 MSL would only hold memory.
            let done = match socket.state() {
                tcp::State::Closed => socket.remote_endpoint().is_none(),
                tcp::State::TimeWait => true,
                _ => false,
            };
            if done || now_ns >= give_up_ns.saturating_add(RESET_GRACE_NS) {
                self.sockets.remove(handle);
                self.orphans.swap_remove(i);
                continue;
            }
            if now_ns >= give_up_ns {
                socket.abort();
            }
            // Nobody reads it any more: take what the peer still sends
            // and throw it away, so a full window does not stall the
            // peer's close.
            while let Ok(n) = socket.recv(|data| (data.len(), data.len())) {
                if n == 0 {
                    break;
                }
            }
            i += 1;
        }
    }

    /// Number of sockets the stack holds, the app's and the orphans.
    #[cfg(test)]
    pub(crate) fn socket_count(&self) -> usize {
        self.sockets.iter().count()
    }

    /// True if a TCP socket or listener uses local `port`.
    pub(crate) fn tcp_port_in_use(&self, port: u16) -> bool {
        self.listeners.iter().flatten().any(|l| l.port() == port)
            || self.sockets.iter().any(|(_, socket)| match socket {
                Socket::Tcp(s) => {
                    s.listen_endpoint().port == port
                        || s.local_endpoint().is_some_and(|e| e.port == port)
                }
                _ => false,
            })
    }

    /// True if a UDP socket is bound to local `port`.
    pub(crate) fn udp_port_in_use(&self, port: u16) -> bool {
        self.sockets.iter().any(|(_, socket)| match socket {
            Socket::Udp(s) => s.endpoint().port == port,
            _ => false,
        })
    }

    /// A free local port from the dynamic range, for TCP (`tcp`) or UDP.
    pub(crate) fn ephemeral_port(&mut self, tcp: bool) -> Result<u16> {
        for _ in 0..EPHEMERAL_COUNT {
            let port = EPHEMERAL_FIRST + self.next_port % EPHEMERAL_COUNT;
            self.next_port = self.next_port.wrapping_add(1) % EPHEMERAL_COUNT;
            let used = if tcp {
                self.tcp_port_in_use(port)
            } else {
                self.udp_port_in_use(port)
            };
            if !used {
                return Ok(port);
            }
        }
        Err(Error::Exhausted)
    }
}
