//! Host tests of the stack: two [`Stack`]s, a "guest" and a "client",
//! joined by in-memory frame queues, driven with a fake clock.

extern crate std;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::vec::Vec;

use hypercall_abi::NetConfig;
use smoltcp::iface::SocketHandle;

use super::config::{Config, TcpBuffers};
use super::device::{Link, LinkRead};
use super::stack::{Stack, LINGER_NS};
use super::Error;

type Queue = Rc<RefCell<VecDeque<Vec<u8>>>>;

/// One end of a wire: reads from `rx`, writes to `tx`, counts reads.
struct Wire {
    rx: Queue,
    tx: Queue,
    reads: Rc<RefCell<usize>>,
}

impl Link for Wire {
    fn read(&mut self, buf: &mut [u8]) -> LinkRead {
        *self.reads.borrow_mut() += 1;
        match self.rx.borrow_mut().pop_front() {
            Some(frame) => {
                buf[..frame.len()].copy_from_slice(&frame);
                LinkRead::Frame(frame.len())
            }
            None => LinkRead::Empty,
        }
    }
    fn write(&mut self, frame: &[u8]) {
        self.tx.borrow_mut().push_back(frame.to_vec());
    }
}

fn config(last: u8) -> Config {
    Config::from_boot(&NetConfig {
        present: 1,
        mac: [0x52, 0x54, 0, 0x12, 0x34, last],
        prefix_len: 24,
        ipv4: [10, 0, 2, last],
        gateway: [10, 0, 2, 2],
        mtu: 1500,
        _pad: [0; 6],
    })
    .unwrap()
}

/// A guest stack (10.0.2.15) and a client stack (10.0.2.2) on one wire.
struct Net {
    guest: Stack<Wire>,
    client: Stack<Wire>,
    to_guest: Queue,
    guest_reads: Rc<RefCell<usize>>,
    now: u64,
}

impl Net {
    fn new() -> Net {
        let (a, b): (Queue, Queue) = Default::default();
        let guest_reads = Rc::default();
        let guest = Wire {
            rx: a.clone(),
            tx: b.clone(),
            reads: Rc::clone(&guest_reads),
        };
        let client = Wire {
            rx: b,
            tx: a.clone(),
            reads: Rc::default(),
        };
        Net {
            guest: Stack::new(guest, &config(15), 1, 0),
            client: Stack::new(client, &config(2), 2, 0),
            to_guest: a,
            guest_reads,
            now: 0,
        }
    }

    /// Runs only the client, so its frames queue up for the guest.
    fn client_only(&mut self) {
        self.client.device.set_rx_ready();
        self.client.poll(self.now);
    }

    /// Runs both sides until the wire is quiet, 1 ms of fake time per
    /// round; the guest reads only when frames are waiting, as after POLL.
    fn settle(&mut self) {
        for _ in 0..50 {
            self.now += 1_000_000;
            if !self.to_guest.borrow().is_empty() {
                self.guest.device.set_rx_ready();
            }
            self.guest.poll(self.now);
            self.client_only();
        }
    }

    fn connect(&mut self, port: u16) -> SocketHandle {
        let addr = config(15).ipv4;
        self.client
            .tcp_connect(addr, port, TcpBuffers::DEFAULT)
            .unwrap()
    }
}

#[test]
fn a_burst_of_syns_fills_the_backlog_and_no_more() {
    let mut net = Net::new();
    let listener = net.guest.tcp_listen(80, 4, TcpBuffers::DEFAULT).unwrap();
    // Resolve ARP first so the SYNs really come in one burst.
    let warm = net.connect(80);
    net.settle();
    let first = net.guest.tcp_accept(listener).unwrap();
    let conns: Vec<_> = (0..6).map(|_| net.connect(80)).collect();
    net.client_only();
    assert!(net.to_guest.borrow().len() >= 6, "the SYNs wait together");
    net.settle();
    let mut accepted = 0;
    while net.guest.tcp_accept(listener).is_some() {
        accepted += 1;
    }
    assert_eq!(accepted, 4, "backlog 4: four connections wait");
    let refused = conns
        .iter()
        .filter(|&&c| net.client.tcp_connected(c) == Err(Error::ConnectionRefused))
        .count();
    assert_eq!(refused, 2);
    let _ = (warm, first);
}

#[test]
fn bytes_go_both_ways_and_fin_reads_as_zero() {
    let mut net = Net::new();
    let listener = net.guest.tcp_listen(7, 8, TcpBuffers::DEFAULT).unwrap();
    let c = net.connect(7);
    net.settle();
    assert_eq!(net.client.tcp_connected(c), Ok(true));
    let g = net.guest.tcp_accept(listener).unwrap();
    assert_eq!(net.client.tcp_send(c, b"hello").unwrap(), 5);
    net.settle();
    let mut buf = [0; 64];
    assert_eq!(net.guest.tcp_recv(g, &mut buf), Ok(Some(5)));
    assert_eq!(&buf[..5], b"hello");
    assert_eq!(net.guest.tcp_recv(g, &mut buf), Ok(None));
    net.guest.tcp_send(g, b"world").unwrap();
    net.client.orphan(c, net.now); // client sends FIN after nothing
    net.settle();
    assert_eq!(
        net.guest.tcp_recv(g, &mut buf),
        Ok(Some(0)),
        "FIN reads as 0"
    );
    // The guest's data reached the client before its close.
    assert_eq!(net.guest.tcp_unacked(g), 0);
}

#[test]
fn closed_connections_are_reaped_and_memory_returns() {
    let mut net = Net::new();
    let listener = net.guest.tcp_listen(7, 8, TcpBuffers::DEFAULT).unwrap();
    let idle = net.guest.socket_count();
    assert_eq!(idle, 1, "an idle listener holds one spare socket");
    let c = net.connect(7);
    net.settle();
    let g = net.guest.tcp_accept(listener).unwrap();
    net.guest.tcp_send(g, b"bye").unwrap();
    net.guest.orphan(g, net.now);
    net.settle();
    let mut buf = [0; 8];
    assert_eq!(net.client.tcp_recv(c, &mut buf), Ok(Some(3)));
    net.client.orphan(c, net.now);
    net.settle();
    assert_eq!(net.guest.socket_count(), idle);
    assert_eq!(net.client.socket_count(), 0);
}

#[test]
fn a_vanished_peer_is_reset_after_the_linger_time() {
    let mut net = Net::new();
    let listener = net.guest.tcp_listen(7, 8, TcpBuffers::DEFAULT).unwrap();
    net.connect(7);
    net.settle();
    let g = net.guest.tcp_accept(listener).unwrap();
    // The client disappears: nothing it sends arrives any more.
    net.guest.tcp_send(g, b"anyone?").unwrap();
    net.guest.orphan(g, net.now);
    for _ in 0..40 {
        net.now += LINGER_NS / 8;
        net.to_guest.borrow_mut().clear();
        net.guest.poll(net.now);
    }
    assert_eq!(net.guest.socket_count(), 1, "only the spare is left");
}

#[test]
fn a_connection_reset_before_accept_is_never_returned() {
    let mut net = Net::new();
    let listener = net.guest.tcp_listen(7, 8, TcpBuffers::DEFAULT).unwrap();
    let c = net.connect(7);
    net.settle();
    net.client
        .sockets
        .get_mut::<smoltcp::socket::tcp::Socket>(c)
        .abort();
    net.settle();
    assert!(net.guest.tcp_accept(listener).is_none());
    assert_eq!(net.guest.socket_count(), 1);
}

#[test]
fn ports_are_exclusive_per_protocol() {
    let mut net = Net::new();
    net.guest.tcp_listen(80, 8, TcpBuffers::DEFAULT).unwrap();
    assert_eq!(
        net.guest.tcp_listen(80, 8, TcpBuffers::DEFAULT),
        Err(Error::AddrInUse)
    );
    assert_eq!(
        net.guest.tcp_listen(0, 8, TcpBuffers::DEFAULT),
        Err(Error::InvalidInput)
    );
    let (_, port) = net.guest.udp_bind(80, Default::default()).unwrap();
    assert_eq!(port, 80);
    let (_, port) = net.guest.udp_bind(0, Default::default()).unwrap();
    assert!(port >= 49152);
}

#[test]
fn the_guest_reads_only_after_a_ready_and_stops_at_empty() {
    let mut net = Net::new();
    net.guest.tcp_listen(7, 8, TcpBuffers::DEFAULT).unwrap();
    net.connect(7);
    net.client_only(); // an ARP request waits for the guest
    net.guest.poll(1);
    assert_eq!(*net.guest_reads.borrow(), 0, "no POLL said ready: no read");
    net.guest.device.set_rx_ready();
    net.guest.poll(2);
    assert_eq!(*net.guest_reads.borrow(), 2, "one frame, one empty read");
    net.guest.poll(3);
    assert_eq!(*net.guest_reads.borrow(), 2);
}

#[test]
fn udp_datagrams_carry_their_sender() {
    let mut net = Net::new();
    let (g, _) = net.guest.udp_bind(53, Default::default()).unwrap();
    let (c, cport) = net.client.udp_bind(0, Default::default()).unwrap();
    assert_eq!(
        net.client.udp_send(c, b"ping", config(15).ipv4, 53),
        Ok(true)
    );
    net.settle();
    let mut buf = [0; 16];
    assert_eq!(
        net.guest.udp_recv(g, &mut buf),
        Some((4, config(2).ipv4, cport))
    );
    assert_eq!(&buf[..4], b"ping");
}

#[test]
fn after_a_restore_the_new_identity_answers_and_the_listener_survives() {
    let mut net = Net::new();
    let listener = net.guest.tcp_listen(80, 4, TcpBuffers::DEFAULT).unwrap();
    // A snapshot restore gives the instance 10.0.2.16 and a new MAC.
    net.guest.reconfigure(&config(16), 77, net.now);
    assert_eq!(
        net.guest.iface.hardware_addr(),
        smoltcp::wire::EthernetAddress(config(16).mac).into()
    );
    let c = net
        .client
        .tcp_connect(config(16).ipv4, 80, TcpBuffers::DEFAULT)
        .unwrap();
    net.settle();
    assert_eq!(net.client.tcp_connected(c), Ok(true));
    assert!(net.guest.tcp_accept(listener).is_some());
    // The old address is gone.
    let old = net.connect(80);
    net.settle();
    assert_ne!(net.client.tcp_connected(old), Ok(true));
}
