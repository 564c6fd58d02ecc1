//! The gateway both user-mode networks share: a host-side smoltcp
//! interface at the gateway's address (ARP, ping), the `--publish`
//! listeners, and the connections it carries from them to a guest's port.
//! `UserNet` runs it on the vCPU thread for its one guest; the fleet switch
//! (`net::switch`) runs it on its own thread for many, and says which guest
//! each accepted connection goes to.

use super::forward::{close_with_reset, Conn, Verdict};
use super::listen::listen;
pub use super::listen::Bind;
use super::ports::Ports;
use super::queues::Queues;
use crate::net::spec::{gateway_mac, Publish};
use crate::net::{NetCounters, NetError};
use crate::poller::{Interest, Poller, Ready, FIRST_FREE_TOKEN};
use hypercall_abi::ETH_HEADER_LEN;
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Connections carried at once; past this, clients wait in the listening
/// sockets' backlogs until one ends.
const MAX_CONNS: usize = 512;
/// Each connection's smoltcp buffers, each way.
const SOCKET_BUFFER: usize = 64 << 10;
/// Connections accepted per listener wake-up, so one busy listener cannot
/// hold the thread.
const ACCEPTS_PER_WAKE: usize = 32;
/// After an accept error that is not the client's (EMFILE, ENOBUFS), the
/// listener rests this long instead of waking the thread again at once.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Rounds of "run the stack, pump the connections" per call: each pump
/// may queue bytes or a FIN that the next run sends.
const MAX_ROUNDS: usize = 4;
/// Tokens of connections start here; listeners count up from
/// [`FIRST_FREE_TOKEN`]. Tokens in between are the owner's.
pub const CONN_TOKEN_BASE: u64 = 1 << 32;

/// The gateway's own address on its link.
#[derive(Clone, Copy, Debug)]
pub struct GatewayAddr {
    pub ip: Ipv4Addr,
    pub prefix: u8,
    /// The IP MTU of the link.
    pub mtu: u16,
}

/// One `--publish` listener.
struct Listener {
    socket: TcpListener,
    guest_port: u16,
    /// epoll said a connection waits.
    pending: bool,
    /// Not watched until this instant (or until a connection ends, at the
    /// connection limit).
    resting: Option<Instant>,
    watched: bool,
}

/// The gateway: its stack, its listeners and the connections it carries.
pub struct Gateway {
    iface: Interface,
    device: Queues,
    sockets: SocketSet<'static>,
    epoch: Instant,
    listeners: Vec<Listener>,
    conns: Vec<Option<Conn>>,
    free_slots: Vec<usize>,
    live: usize,
    ports: Ports,
}

impl Gateway {
    /// The gateway at `addr`, listening for each of `publish`; the
    /// listeners' fds go into `poller`.
    pub fn new(
        addr: GatewayAddr,
        publish: &[Publish],
        bind: Bind,
        poller: &Poller,
    ) -> Result<Gateway, NetError> {
        let max_frame = usize::from(addr.mtu) + ETH_HEADER_LEN as usize;
        let mut device = Queues::new(max_frame);
        let mac = EthernetAddress(gateway_mac(addr.ip).0);
        let mut config = Config::new(HardwareAddress::Ethernet(mac));
        let mut seed = [0u8; 8];
        // The seed picks TCP initial sequence numbers; without entropy they
        // are merely predictable, which this private link can live with.
        let _ = getrandom::fill(&mut seed);
        config.random_seed = u64::from_ne_bytes(seed);
        let epoch = Instant::now();
        let mut iface = Interface::new(config, &mut device, smoltcp::time::Instant::ZERO);
        iface.update_ip_addrs(|addrs| {
            // One address into an empty list: cannot overflow.
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(addr.ip), addr.prefix));
        });

        let mut listeners = Vec::with_capacity(publish.len());
        for (i, p) in publish.iter().enumerate() {
            let listen_error = |source| NetError::Listen {
                addr: p.host,
                source,
            };
            let socket = listen(p.host, bind).map_err(listen_error)?;
            socket.set_nonblocking(true).map_err(listen_error)?;
            poller
                .add(socket.as_raw_fd(), listener_token(i), Interest::READ)
                .map_err(|source| NetError::Watch {
                    addr: p.host,
                    source,
                })?;
            listeners.push(Listener {
                socket,
                guest_port: p.guest_port,
                pending: false,
                resting: None,
                watched: true,
            });
        }
        Ok(Gateway {
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            epoch,
            listeners,
            conns: Vec::new(),
            free_slots: Vec::new(),
            live: 0,
            ports: Ports::new(),
        })
    }

    /// The stack's wire: frames for the gateway go in, its frames for the
    /// guests come out.
    pub fn wire(&mut self) -> &mut Queues {
        &mut self.device
    }

    fn stack_time(&self, now: Instant) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(
            now.saturating_duration_since(self.epoch).as_micros() as i64
        )
    }

    /// Notes a ready fd of the gateway's (a listener or a connection).
    pub fn ready(&mut self, ready: &Ready) {
        if ready.token >= CONN_TOKEN_BASE {
            let slot = (ready.token - CONN_TOKEN_BASE) as usize;
            if let Some(Some(conn)) = self.conns.get_mut(slot) {
                conn.on_ready(ready);
            }
        } else if let Some(l) = ready
            .token
            .checked_sub(FIRST_FREE_TOKEN)
            .and_then(|i| self.listeners.get_mut(i as usize))
        {
            l.pending = true;
        }
    }

    /// Accepts the connections waiting on listeners epoll named; `pick`
    /// names the guest each goes to (`None`: no guest can take it, and the
    /// client is reset).
    pub fn accept(
        &mut self,
        poller: &Poller,
        now: Instant,
        pick: &mut dyn FnMut() -> Option<Ipv4Addr>,
    ) {
        for i in 0..self.listeners.len() {
            if !self.listeners[i].pending {
                continue;
            }
            self.listeners[i].pending = false;
            for _ in 0..ACCEPTS_PER_WAKE {
                if self.live >= MAX_CONNS {
                    break;
                }
                let guest_port = self.listeners[i].guest_port;
                match self.listeners[i].socket.accept() {
                    Ok((stream, _)) => match pick() {
                        Some(guest) => self.carry(stream, (guest, guest_port), poller, now),
                        None => close_with_reset(stream),
                    },
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    // The client gave up while queued: its problem, not ours.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.listeners[i].resting = Some(now + ACCEPT_BACKOFF);
                        break;
                    }
                }
            }
        }
    }

    /// Starts carrying a freshly accepted host connection to `guest`.
    fn carry(
        &mut self,
        stream: std::net::TcpStream,
        guest: (Ipv4Address, u16),
        poller: &Poller,
        now: Instant,
    ) {
        let Some(local_port) = self.ports.take() else {
            close_with_reset(stream);
            return;
        };
        if stream.set_nonblocking(true).is_err() {
            self.ports.give_back(local_port);
            close_with_reset(stream);
            return;
        }
        // Bytes are forwarded as they come: the client's own stack already
        // decided how to segment them.
        let _ = stream.set_nodelay(true);
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
        );
        sock.set_nagle_enabled(false);
        let remote = (IpAddress::Ipv4(guest.0), guest.1);
        if sock
            .connect(self.iface.context(), remote, local_port)
            .is_err()
        {
            self.ports.give_back(local_port);
            close_with_reset(stream);
            return;
        }
        let handle = self.sockets.add(sock);
        let slot = self.free_slots.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        let mut conn = Conn::new(stream, handle, local_port, guest, now);
        if poller
            .add(conn.stream.as_raw_fd(), conn_token(slot), Interest::NONE)
            .is_ok()
        {
            conn.registered = Some(Interest::NONE);
        }
        self.conns[slot] = Some(conn);
        self.live += 1;
    }

    /// Resets every connection carried to `guest` (it stopped: nothing
    /// will ever answer them).
    pub fn abandon(&mut self, guest: Ipv4Addr) {
        for conn in self.conns.iter_mut().flatten() {
            if conn.guest_ip == guest {
                conn.fail();
            }
        }
    }

    /// Runs the stack and pumps every connection until nothing moves;
    /// `flush` takes the stack's frames off the wire after each run (the
    /// switch routes them; `UserNet` leaves them for NET_READ).
    pub fn cycle(
        &mut self,
        poller: &Poller,
        counters: &mut NetCounters,
        flush: &mut dyn FnMut(&mut Queues),
    ) {
        let now = Instant::now();
        let stamp = self.stack_time(now);
        for _ in 0..MAX_ROUNDS {
            // Connections aborted before this run have now sent their RST.
            self.iface.poll(stamp, &mut self.device, &mut self.sockets);
            flush(&mut self.device);
            if !self.pump_all(poller, now) {
                break;
            }
        }
        self.device.account(counters);
        self.watch_listeners(poller, now);
    }

    /// Pumps every connection once; true if any moved something the stack
    /// must now send.
    fn pump_all(&mut self, poller: &Poller, now: Instant) -> bool {
        let mut stirred = false;
        for slot in 0..self.conns.len() {
            let Some(conn) = self.conns[slot].as_mut() else {
                continue;
            };
            let sock = self.sockets.get_mut::<tcp::Socket>(conn.handle);
            conn.stirred = false;
            let verdict = conn.pump(sock, now);
            stirred |= conn.stirred;
            let remove = match verdict {
                Verdict::Keep => {
                    let wanted = conn.wanted(sock);
                    update_interest(poller, conn, slot, wanted);
                    None
                }
                Verdict::Reconnect => match self.ports.take() {
                    Some(port) => {
                        self.ports.give_back(conn.local_port);
                        conn.local_port = port;
                        let remote = (IpAddress::Ipv4(conn.guest_ip), conn.guest_port);
                        if sock.connect(self.iface.context(), remote, port).is_ok() {
                            conn.reconnected(port);
                            stirred = true;
                            None
                        } else {
                            Some(true)
                        }
                    }
                    // Every local port is busy: as good as refused.
                    None => Some(true),
                },
                Verdict::Remove => Some(conn.reset_host),
            };
            if let Some(reset) = remove {
                self.remove(poller, slot, reset);
            }
        }
        stirred
    }

    /// Ends the connection in `slot`, resetting the host client if asked.
    fn remove(&mut self, poller: &Poller, slot: usize, reset: bool) {
        let Some(conn) = self.conns[slot].take() else {
            return;
        };
        if conn.registered.is_some() {
            let _ = poller.remove(conn.stream.as_raw_fd());
        }
        self.sockets.remove(conn.handle);
        self.ports.give_back(conn.local_port);
        if reset {
            close_with_reset(conn.stream);
        }
        self.free_slots.push(slot);
        self.live -= 1;
    }

    /// Watches listeners again once they have rested, or once there is
    /// room for another connection.
    fn watch_listeners(&mut self, poller: &Poller, now: Instant) {
        let full = self.live >= MAX_CONNS;
        for (i, l) in self.listeners.iter_mut().enumerate() {
            if l.resting.is_some_and(|until| now >= until) {
                l.resting = None;
            }
            let watch = !full && l.resting.is_none();
            if watch != l.watched {
                let interest = if watch {
                    Interest::READ
                } else {
                    Interest::NONE
                };
                if poller
                    .modify(l.socket.as_raw_fd(), listener_token(i), interest)
                    .is_ok()
                {
                    l.watched = watch;
                }
            }
        }
    }

    /// When [`Gateway::cycle`] must run again even if no fd gets ready.
    pub fn next_wake(&mut self) -> Option<Instant> {
        let now = Instant::now();
        let stamp = self.stack_time(now);
        // The stack was just run, so "now" means it is stuck behind a full
        // queue to the guest (which POLL reports as ready anyway): a short
        // nap rather than a spin.
        let stack = self
            .iface
            .poll_delay(stamp, &self.sockets)
            .map(|d| now + Duration::from_micros(d.total_micros()).max(Duration::from_millis(1)));
        let conns = self.conns.iter().flatten().filter_map(|c| {
            if c.dying() {
                Some(now)
            } else {
                c.deadline()
            }
        });
        let listeners = self.listeners.iter().filter_map(|l| l.resting);
        stack.into_iter().chain(conns).chain(listeners).min()
    }

    /// Host connections carried now.
    pub fn connections(&self) -> usize {
        self.live
    }

    /// The host addresses the listeners are bound to.
    pub fn listening_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.socket.local_addr().ok())
            .collect()
    }
}

fn listener_token(index: usize) -> u64 {
    FIRST_FREE_TOKEN + index as u64
}

fn conn_token(slot: usize) -> u64 {
    CONN_TOKEN_BASE + slot as u64
}

/// Tells epoll what `conn` waits for now, if that changed.
fn update_interest(poller: &Poller, conn: &mut Conn, slot: usize, wanted: Option<Interest>) {
    if conn.registered == wanted {
        return;
    }
    let fd = conn.stream.as_raw_fd();
    let done = match (conn.registered, wanted) {
        (None, Some(interest)) => poller.add(fd, conn_token(slot), interest),
        (Some(_), Some(interest)) => poller.modify(fd, conn_token(slot), interest),
        (Some(_), None) => poller.remove(fd),
        (None, None) => Ok(()),
    };
    if done.is_ok() {
        conn.registered = wanted;
    }
}
