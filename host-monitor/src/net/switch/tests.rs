//! The switch without KVM: several guest-side smoltcp stacks in the test,
//! each on its own port through the same `NetDevice` calls the hypercalls
//! make, real loopback clients on the host side.

use super::*;
use crate::net::user::queues::Queues;
use crate::net::{NetDevice, Received};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{
    ArpOperation, ArpPacket, EthernetAddress, EthernetFrame, HardwareAddress, IpAddress, IpCidr,
};
use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const GUEST_PORT: u16 = 7;
const MTU: u16 = 1500;

/// A pretend instance: it greets every connection with its id and closes,
/// and may hold one client connection of its own.
struct Guest {
    id: u64,
    net: NetDevice,
    iface: Interface,
    wire: Queues,
    sockets: SocketSet<'static>,
    listeners: Vec<SocketHandle>,
    client: Option<SocketHandle>,
    epoch: Instant,
}

impl Guest {
    fn new(switch: &Switch, id: u64) -> Guest {
        let net = NetDevice::attach(switch.port(id).expect("port")).expect("device");
        switch.instance_started(id);
        let config = net.boot_config();
        let mut wire = Queues::new(usize::from(MTU) + 14);
        let hw = HardwareAddress::Ethernet(EthernetAddress(config.mac));
        let mut iface = Interface::new(Config::new(hw), &mut wire, smoltcp::time::Instant::ZERO);
        iface.update_ip_addrs(|a| {
            let ip = IpAddress::Ipv4(config.ipv4.into());
            let _ = a.push(IpCidr::new(ip, config.prefix_len));
        });
        iface
            .routes_mut()
            .add_default_ipv4_route(config.gateway.into())
            .expect("route");
        let mut sockets = SocketSet::new(Vec::new());
        let listeners = (0..4).map(|_| sockets.add(socket())).collect();
        Guest {
            id,
            net,
            iface,
            wire,
            sockets,
            listeners,
            client: None,
            epoch: Instant::now(),
        }
    }

    /// What POLL and the guest's loop would do, without sleeping.
    fn step(&mut self) {
        self.net.wait(Some(Instant::now())).expect("wait");
        let wire = &mut self.wire;
        while let Received::Delivered(_) = self.net.receive(1514, |f| wire.push_inbound(f)) {}
        let now = smoltcp::time::Instant::from_micros(self.epoch.elapsed().as_micros() as i64);
        self.iface.poll(now, &mut self.wire, &mut self.sockets);
        let greeting = self.id.to_string();
        for &h in &self.listeners {
            let sock = self.sockets.get_mut::<tcp::Socket>(h);
            if !sock.is_open() {
                sock.listen(GUEST_PORT).expect("listen");
            }
            if sock.state() == tcp::State::Established && sock.can_send() {
                sock.send_slice(greeting.as_bytes()).expect("room");
                sock.close();
            }
        }
        self.iface.poll(now, &mut self.wire, &mut self.sockets);
        while let Some(frame) = self.wire.front() {
            let frame = frame.to_vec();
            self.wire.pop();
            self.net.send(&frame);
        }
    }

    /// Connects to another instance's greeting port.
    fn connect(&mut self, to: u64) {
        let mut sock = socket();
        let remote = (IpAddress::Ipv4(instance_ip(to)), GUEST_PORT);
        sock.connect(self.iface.context(), remote, 40000)
            .expect("connect");
        self.client = Some(self.sockets.add(sock));
    }

    /// What the client connection received, once the peer closed it.
    fn greeting(&mut self) -> Option<String> {
        let sock = self.sockets.get_mut::<tcp::Socket>(self.client?);
        // The peer's FIN came after its greeting.
        if matches!(
            sock.state(),
            tcp::State::SynSent | tcp::State::SynReceived | tcp::State::Established
        ) {
            return None;
        }
        let mut buf = [0u8; 64];
        let n = sock.recv_slice(&mut buf).unwrap_or(0);
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

fn socket() -> tcp::Socket<'static> {
    tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 4096]),
        tcp::SocketBuffer::new(vec![0; 4096]),
    )
}

fn published() -> Switch {
    let publish = Publish {
        host: "127.0.0.1:0".parse().expect("addr"),
        guest_port: GUEST_PORT,
    };
    Switch::start(&[publish], MTU).expect("switch")
}

/// Steps every guest until `done` says so, or fails after 20 s.
fn run_until(guests: &mut [Guest], mut done: impl FnMut(&mut [Guest]) -> bool) {
    let give_up = Instant::now() + Duration::from_secs(20);
    while !done(guests) {
        assert!(Instant::now() < give_up, "gave up after 20 s");
        for g in guests.iter_mut() {
            g.step();
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Connects `n` times in turn through the published port; the greetings.
fn greetings(switch: &Switch, guests: &mut [Guest], n: usize) -> Vec<String> {
    let host = switch.listening_addrs()[0];
    let client = std::thread::spawn(move || {
        (0..n)
            .map(|_| {
                let mut s = TcpStream::connect(host).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(15)))
                    .expect("timeout");
                let mut got = String::new();
                s.read_to_string(&mut got).expect("read to EOF");
                got
            })
            .collect::<Vec<_>>()
    });
    run_until(guests, |_| client.is_finished());
    client.join().expect("client")
}

#[test]
fn addresses_follow_the_instance_id() {
    assert_eq!(instance_ip(1), Ipv4Addr::new(10, 64, 0, 2));
    assert_eq!(instance_ip(65000), Ipv4Addr::new(10, 64, 253, 233));
    assert_eq!(instance_mac(0x01_02_03).to_string(), "52:54:00:01:02:03");
    assert_eq!(id_of_ip(instance_ip(300).octets()), Some(300));
    assert_eq!(id_of_ip(FLEET_GATEWAY.octets()), None);
    assert_eq!(id_of_mac(&instance_mac(300).0), Some(300));
    let identity = instance_identity(7);
    assert_eq!(identity.gateway, Some(FLEET_GATEWAY));
    assert_eq!(identity.ip.prefix, 16);
    assert!(identity.ip.contains(FLEET_GATEWAY));
    let switch = Switch::start(&[], MTU).expect("switch");
    assert!(matches!(switch.port(0), Err(NetError::InstanceId(0))));
    assert!(matches!(switch.port(65001), Err(NetError::InstanceId(_))));
}

#[test]
fn instances_find_each_other_by_arp_and_talk_tcp() {
    let switch = Switch::start(&[], MTU).expect("switch");
    let mut guests: Vec<Guest> = (1..=3).map(|id| Guest::new(&switch, id)).collect();
    guests[0].connect(3);
    let mut got = None;
    run_until(&mut guests, |g| {
        got = got.take().or_else(|| g[0].greeting());
        got.is_some()
    });
    assert_eq!(got.as_deref(), Some("3"));
    let counters: Vec<_> = guests.iter().map(|g| g.net.counters()).collect();
    assert!(
        counters.iter().all(|c| c.malformed == 0 && c.dropped == 0),
        "counters: {counters:?}"
    );
    // Instance 2 took no part: the ARP request went to its target only.
    assert_eq!(counters[1].rx_frames, 0, "counters: {counters:?}");
    assert!(counters[2].rx_frames > 0 && counters[2].tx_frames > 0);
    assert_eq!(switch.dropped(), 0);
}

#[test]
fn published_connections_go_round_robin_and_skip_stopped_instances() {
    let switch = published();
    let mut guests: Vec<Guest> = (1..=3).map(|id| Guest::new(&switch, id)).collect();
    // Attached but still booting: skipped until it says it serves.
    let _booting = NetDevice::attach(switch.port(4).expect("port")).expect("device");
    let got = greetings(&switch, &mut guests, 6);
    assert_eq!(got, ["1", "2", "3", "1", "2", "3"]);

    switch.instance_stopped(2);
    let got = greetings(&switch, &mut guests, 4);
    assert_eq!(got, ["1", "3", "1", "3"]);

    // Instance 2 comes back as a new guest on its old port.
    guests.remove(1);
    guests.insert(1, Guest::new(&switch, 2));
    let got = greetings(&switch, &mut guests, 3);
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(sorted, ["1", "2", "3"], "got {got:?}");
    let settle = Instant::now() + Duration::from_secs(5);
    run_until(&mut guests, |_| {
        switch.connections() == 0 || Instant::now() > settle
    });
    assert_eq!(switch.connections(), 0);
}

#[test]
fn with_every_instance_stopped_clients_are_reset() {
    let switch = published();
    let mut guests = vec![Guest::new(&switch, 5)];
    switch.instance_stopped(5);
    let host = switch.listening_addrs()[0];
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(host).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
    });
    run_until(&mut guests, |_| client.is_finished());
    let result = client.join().expect("client");
    assert!(result.is_err(), "expected a reset, got {result:?}");
}

#[test]
fn connections_to_an_instance_that_stops_are_reset() {
    let switch = published();
    // An instance that never answers: its port exists, nobody steps it.
    let _silent = NetDevice::attach(switch.port(9).expect("port")).expect("device");
    switch.instance_started(9);
    let host = switch.listening_addrs()[0];
    let mut s = TcpStream::connect(host).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let give_up = Instant::now() + Duration::from_secs(5);
    while switch.connections() == 0 {
        assert!(Instant::now() < give_up, "the connection was never taken");
        std::thread::sleep(Duration::from_millis(1));
    }
    switch.instance_stopped(9);
    let mut buf = Vec::new();
    let result = s.read_to_end(&mut buf);
    assert!(result.is_err(), "expected a reset, got {result:?}");
}

/// An Ethernet frame carrying an ARP reply from `from` to `to`.
fn arp_reply(from: u64, to: [u8; 6]) -> Vec<u8> {
    super::thread::arp_reply(from, EthernetAddress(to))
}

#[test]
fn a_flood_is_bounded_and_counted_where_it_lands() {
    let switch = Switch::start(&[], MTU).expect("switch");
    let mut flooder = NetDevice::attach(switch.port(1).expect("port")).expect("device");
    let mut victim = NetDevice::attach(switch.port(2).expect("port")).expect("device");
    let frame = arp_reply(1, instance_mac(2).0);
    let sent = 10 * TO_GUEST_MAX;
    for _ in 0..sent {
        flooder.send(&frame);
    }
    let waiting = switch.shared.ports.read().expect("lock")[&2].waiting();
    assert_eq!(waiting, TO_GUEST_MAX);
    // The victim's POLL is ready, and it reads what fits and counts the rest.
    victim.wait(Some(Instant::now())).expect("wait");
    let mut delivered = 0;
    while let Received::Delivered(_) = victim.receive(2048, |_| true) {
        delivered += 1;
    }
    assert_eq!(delivered, TO_GUEST_MAX);
    assert_eq!(victim.counters().dropped, (sent - TO_GUEST_MAX) as u64);
    assert!(!victim.frame_waiting());

    // Towards the gateway, each port has its share of the queue.
    let port = switch.shared.ports.read().expect("lock")[&1].clone();
    for _ in 0..TO_GATEWAY_PER_PORT {
        assert!(port.reserve_to_gateway());
    }
    assert!(!port.reserve_to_gateway());
    port.taken_to_gateway();
    assert!(port.reserve_to_gateway());
}

#[test]
fn a_guest_cannot_spoof_or_send_garbage() {
    let switch = Switch::start(&[], MTU).expect("switch");
    let mut one = NetDevice::attach(switch.port(1).expect("port")).expect("device");
    let _two = NetDevice::attach(switch.port(2).expect("port")).expect("device");
    // From instance 3's MAC, on port 1.
    one.send(&arp_reply(3, instance_mac(2).0));
    assert_eq!(one.counters().dropped, 1);
    // From its own MAC but instance 3's address.
    let mut spoofed = arp_reply(1, instance_mac(2).0);
    spoofed[28..32].copy_from_slice(&instance_ip(3).octets());
    one.send(&spoofed);
    assert_eq!(one.counters().dropped, 2);
    let mut garbage = arp_reply(1, instance_mac(2).0);
    garbage.truncate(30);
    one.send(&garbage);
    assert_eq!(one.counters().malformed, 1);
    // To an instance that has no port: dropped by the switch.
    one.send(&arp_reply(1, instance_mac(4).0));
    assert_eq!(one.counters().dropped, 3);
    assert_eq!(switch.shared.ports.read().expect("lock")[&2].waiting(), 0);
}

#[test]
fn frames_to_a_stopped_instance_are_dropped_until_it_comes_back() {
    let switch = Switch::start(&[], MTU).expect("switch");
    let mut one = NetDevice::attach(switch.port(1).expect("port")).expect("device");
    let two = NetDevice::attach(switch.port(2).expect("port")).expect("device");
    let frame = arp_reply(1, instance_mac(2).0);
    one.send(&frame);
    switch.instance_stopped(2);
    let waiting = || switch.shared.ports.read().expect("lock")[&2].waiting();
    assert_eq!(waiting(), 0, "a stopped port's queue is emptied");
    one.send(&frame);
    assert_eq!(waiting(), 0);
    assert_eq!(one.counters().dropped, 1);
    drop(two);
    let mut two = NetDevice::attach(switch.port(2).expect("port")).expect("device");
    one.send(&frame);
    assert!(two.frame_waiting());
}

#[test]
fn the_switch_is_shared_and_ports_move_to_vcpu_threads() {
    fn shared<T: Send + Sync>() {}
    fn movable<T: Send>() {}
    shared::<Switch>();
    movable::<SwitchPort>();
    movable::<NetDevice>();
}

/// A broadcast ARP request from instance `from` for the gateway.
fn arp_request_for_gateway(from: u64) -> Vec<u8> {
    let mut frame = arp_reply(from, [0xff; 6]);
    let mut packet = EthernetFrame::new_unchecked(&mut frame[..]);
    let mut arp = ArpPacket::new_unchecked(packet.payload_mut());
    arp.set_operation(ArpOperation::Request);
    arp.set_target_hardware_addr(&[0; 6]);
    frame
}

#[test]
fn a_guest_flooding_the_gateway_does_not_starve_the_others() {
    let switch = published();
    let mut guests: Vec<Guest> = (1..=2).map(|id| Guest::new(&switch, id)).collect();
    let flood = arp_request_for_gateway(1);
    let host = switch.listening_addrs()[0];
    // Round-robin: the first goes to the flooder, the second to instance 2.
    let client = std::thread::spawn(move || {
        (0..2)
            .map(|_| {
                let mut s = TcpStream::connect(host).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(3)))
                    .expect("timeout");
                let mut got = String::new();
                s.read_to_string(&mut got).map(|_| got)
            })
            .collect::<Vec<_>>()
    });
    run_until(&mut guests, |g| {
        for _ in 0..500 {
            g[0].net.send(&flood);
        }
        client.is_finished()
    });
    let got = client.join().expect("client");
    // The flooder may well lose its own connection; instance 2 must not.
    assert_eq!(got[1].as_deref().ok(), Some("2"), "got {got:?}");
    let waiting = switch.shared.ports.read().expect("lock")[&1].waiting();
    assert!(waiting <= TO_GUEST_MAX);
    let counters = guests[0].net.counters();
    assert!(counters.dropped > 0, "the flood cost nothing? {counters:?}");
    assert_eq!(guests[1].net.counters().dropped, 0);
    // Once the flood ends, the flooder is served again.
    assert_eq!(greetings(&switch, &mut guests, 2), ["1", "2"]);
}

#[test]
fn one_connection_to_each_of_many_instances_waits_for_no_arp() {
    let switch = published();
    let n = 12;
    let mut guests: Vec<Guest> = (1..=n).map(|id| Guest::new(&switch, id)).collect();
    let start = Instant::now();
    let got = greetings(&switch, &mut guests, n as usize);
    let expect: Vec<String> = (1..=n).map(|id| id.to_string()).collect();
    assert_eq!(got, expect);
    // smoltcp asks for one neighbour a second: had the gateway ARPed for
    // each instance, this would take more than 10 s.
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}
