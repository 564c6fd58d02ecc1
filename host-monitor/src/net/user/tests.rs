//! The user-mode network end to end without KVM: a guest-side smoltcp
//! stack in the test, real loopback clients on the host side, and the same
//! calls the hypercalls make (send, receive, ready, service).

use super::queues::Queues;
use crate::net::spec::{Identity, NetSetup, Publish, DEFAULT_MAC, USER_GATEWAY, USER_GUEST_IP};
use crate::net::{NetDevice, Received};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const GUEST_PORT: u16 = 7;

/// What the pretend guest does with its connections.
#[derive(Clone, Copy, PartialEq, Eq)]
enum App {
    /// Echo every byte; close after the peer's FIN once all is echoed.
    Echo,
    /// Start listening (as `Echo`) only at this instant.
    ListenAt(Instant),
    /// Never listen: every SYN is refused.
    Refuse,
    /// Abort (RST) as soon as a byte arrives.
    ResetOnData,
}

struct Guest {
    iface: Interface,
    wire: Queues,
    sockets: SocketSet<'static>,
    handles: Vec<SocketHandle>,
    app: App,
    listening: bool,
    epoch: Instant,
}

impl Guest {
    fn new(app: App) -> Guest {
        let mut wire = Queues::new(1514);
        let config = Config::new(HardwareAddress::Ethernet(EthernetAddress(DEFAULT_MAC.0)));
        let mut iface = Interface::new(config, &mut wire, smoltcp::time::Instant::ZERO);
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(USER_GUEST_IP.addr), 24));
        });
        let mut sockets = SocketSet::new(Vec::new());
        let handles = (0..4)
            .map(|_| {
                sockets.add(tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0; 8192]),
                    tcp::SocketBuffer::new(vec![0; 8192]),
                ))
            })
            .collect();
        Guest {
            iface,
            wire,
            sockets,
            handles,
            app,
            listening: false,
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    fn step(&mut self) {
        let listen = match self.app {
            App::Refuse => false,
            App::ListenAt(at) => Instant::now() >= at,
            App::Echo | App::ResetOnData => true,
        };
        for &h in &self.handles {
            let sock = self.sockets.get_mut::<tcp::Socket>(h);
            if listen && !sock.is_open() {
                sock.listen(GUEST_PORT).expect("listen");
                self.listening = true;
            }
            if self.app == App::ResetOnData && sock.can_recv() {
                sock.abort();
                continue;
            }
            // Echo: move what fits from the receive to the send buffer.
            while sock.can_recv() && sock.can_send() {
                let mut buf = [0u8; 2048];
                let room = (sock.send_capacity() - sock.send_queue()).min(buf.len());
                let n = sock.recv_slice(&mut buf[..room]).unwrap_or(0);
                if n == 0 {
                    break;
                }
                sock.send_slice(&buf[..n]).expect("room was checked");
            }
            if sock.state() == tcp::State::CloseWait && !sock.can_recv() && sock.send_queue() == 0 {
                sock.close();
            }
        }
    }
}

/// The device under test, its poller and the pretend guest, wired up.
struct Rig {
    net: NetDevice,
    guest: Guest,
    host: SocketAddr,
    /// Frames the guest sent, kept when set.
    captured: Option<Vec<Vec<u8>>>,
}

impl Rig {
    fn new(app: App) -> Rig {
        let setup = NetSetup::User {
            guest: Identity {
                mac: DEFAULT_MAC,
                ip: USER_GUEST_IP,
                gateway: Some(USER_GATEWAY),
            },
            gateway: USER_GATEWAY,
            publish: vec![Publish {
                host: "127.0.0.1:0".parse().expect("addr"),
                guest_port: GUEST_PORT,
            }],
        };
        let net = NetDevice::open(&setup).expect("open").expect("a device");
        let host = net.listening_addrs()[0];
        Rig {
            net,
            guest: Guest::new(app),
            host,
            captured: None,
        }
    }

    /// One round: what POLL and the guest's loop would do.
    fn step(&mut self) {
        let until = Instant::now() + Duration::from_millis(1);
        let until = self.net.next_wake().map_or(until, |w| w.min(until));
        self.net.wait(Some(until)).expect("wait");
        let wire = &mut self.guest.wire;
        while let Received::Delivered(_) = self.net.receive(1514, |f| wire.push_inbound(f)) {}
        let now = self.guest.now();
        self.guest
            .iface
            .poll(now, &mut self.guest.wire, &mut self.guest.sockets);
        self.guest.step();
        self.guest
            .iface
            .poll(now, &mut self.guest.wire, &mut self.guest.sockets);
        while let Some(frame) = self.guest.wire.front() {
            let frame = frame.to_vec();
            self.guest.wire.pop();
            self.net.send(&frame);
            if let Some(captured) = self.captured.as_mut() {
                captured.push(frame);
            }
        }
    }

    /// Steps until `client` (run on its own thread) is done.
    fn serve<T: Send + 'static>(
        &mut self,
        client: impl FnOnce(SocketAddr) -> T + Send + 'static,
    ) -> T {
        let host = self.host;
        let thread = std::thread::spawn(move || client(host));
        let give_up = Instant::now() + Duration::from_secs(20);
        while !thread.is_finished() {
            assert!(
                Instant::now() < give_up,
                "the client did not finish in 20 s"
            );
            self.step();
        }
        thread.join().expect("client thread")
    }

    /// Steps until the device carries no connection any more.
    fn settle(&mut self) {
        let give_up = Instant::now() + Duration::from_secs(5);
        while self.net.connections() > 0 {
            assert!(
                Instant::now() < give_up,
                "{} connections were never cleaned up",
                self.net.connections()
            );
            self.step();
        }
    }

    fn guest_sockets(&mut self) -> Vec<tcp::State> {
        let handles = self.guest.handles.clone();
        handles
            .iter()
            .map(|&h| self.guest.sockets.get::<tcp::Socket>(h).state())
            .collect()
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn connect(host: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(host).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    s
}

#[test]
fn echo_is_byte_exact_and_half_close_travels_both_ways() {
    let mut rig = Rig::new(App::Echo);
    let sent = pattern(300_000);
    let expect = sent.clone();
    let got = rig.serve(move |host| {
        let mut s = connect(host);
        let mut writer = s.try_clone().expect("clone");
        let w = std::thread::spawn(move || {
            writer.write_all(&sent).expect("write");
            // Host EOF must become a FIN to the guest, whose echo app then
            // closes: the guest's FIN must come back as our EOF.
            writer.shutdown(Shutdown::Write).expect("shutdown");
        });
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read to EOF");
        w.join().expect("writer");
        got
    });
    assert_eq!(got.len(), expect.len());
    assert!(got == expect, "echoed bytes differ");
    let counters = rig.net.counters();
    assert_eq!(counters.malformed, 0);
    assert!(counters.rx_frames > 0 && counters.tx_frames > 0);
    rig.settle();
}

#[test]
fn many_connections_at_once() {
    let mut rig = Rig::new(App::Echo);
    let results = rig.serve(|host| {
        let clients: Vec<_> = (0..12)
            .map(|i| {
                std::thread::spawn(move || {
                    let mut s = connect(host);
                    let msg = format!("hello {i}").into_bytes();
                    s.write_all(&msg).expect("write");
                    s.shutdown(Shutdown::Write).expect("shutdown");
                    let mut got = Vec::new();
                    s.read_to_end(&mut got).expect("read");
                    got == msg
                })
            })
            .collect();
        clients
            .into_iter()
            .map(|c| c.join().unwrap_or(false))
            .collect::<Vec<_>>()
    });
    assert!(results.iter().all(|ok| *ok), "{results:?}");
    rig.settle();
}

#[test]
fn a_refused_connection_is_retried_until_the_guest_listens() {
    let at = Instant::now() + Duration::from_millis(400);
    let mut rig = Rig::new(App::ListenAt(at));
    let got = rig.serve(|host| {
        let mut s = connect(host);
        s.write_all(b"early bird").expect("write");
        s.shutdown(Shutdown::Write).expect("shutdown");
        let mut got = Vec::new();
        s.read_to_end(&mut got).map(|_| got)
    });
    assert_eq!(got.expect("echo"), b"early bird");
    assert!(rig.guest.listening);
    rig.settle();
}

#[test]
fn a_guest_that_never_listens_resets_the_client_after_the_retries() {
    let mut rig = Rig::new(App::Refuse);
    let start = Instant::now();
    let got = rig.serve(|host| {
        let mut s = connect(host);
        let mut buf = [0u8; 16];
        s.read(&mut buf)
    });
    let took = start.elapsed();
    assert!(
        matches!(&got, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "client saw {got:?}"
    );
    assert!(
        took >= super::forward::REFUSED_RETRY_FOR && took < Duration::from_secs(8),
        "gave up after {took:?}"
    );
    rig.settle();
}

#[test]
fn a_guest_reset_resets_the_client() {
    let mut rig = Rig::new(App::ResetOnData);
    let got = rig.serve(|host| {
        let mut s = connect(host);
        s.write_all(b"x").expect("write");
        let mut buf = [0u8; 16];
        s.read(&mut buf)
    });
    assert!(
        matches!(&got, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "client saw {got:?}"
    );
    rig.settle();
}

#[test]
fn a_client_reset_resets_the_guest() {
    let mut rig = Rig::new(App::Echo);
    rig.serve(|host| {
        let mut s = connect(host);
        s.write_all(b"ping").expect("write");
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).expect("echo");
        super::forward::close_with_reset(s);
    });
    // The RST reaches the guest within a few rounds.
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        rig.step();
        let states = rig.guest_sockets();
        if states
            .iter()
            .all(|s| matches!(s, tcp::State::Listen | tcp::State::Closed))
        {
            break;
        }
        assert!(Instant::now() < give_up, "guest sockets stayed {states:?}");
    }
    rig.settle();
}

#[test]
fn garbage_from_the_guest_is_counted_never_fatal() {
    let mut rig = Rig::new(App::Echo);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // Random bytes behind a plausible Ethernet + IPv4 header, then random
    // mutations of real frames the guest stack produced.
    for _ in 0..2000 {
        let len = 14 + (next() % 1500) as usize;
        let mut frame: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        frame[6] &= 0xfe;
        frame[12] = 0x08;
        frame[13] = if next() % 2 == 0 { 0x00 } else { 0x06 };
        rig.net.send(&frame);
    }
    let before = rig.net.counters().malformed;
    assert!(
        before > 1900,
        "only {before} of 2000 random frames were caught"
    );
    rig.serve(|host| {
        let mut s = connect(host);
        s.write_all(b"still alive").expect("write");
        s.shutdown(Shutdown::Write).expect("shutdown");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read");
        assert_eq!(got, b"still alive");
    });
    rig.settle();
}

/// A small xorshift generator: reproducible chaos without a dependency.
struct Chaos(u64);

impl Chaos {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A variant of the guest's TCP frame `frame` with one or two fields
/// changed and both checksums made right again, so that it passes the gate
/// and reaches the host-side TCP state machine.
fn mutate(frame: &[u8], chaos: &mut Chaos) -> Option<Vec<u8>> {
    use smoltcp::wire::{Ipv4Packet, TcpPacket, TcpSeqNumber};
    let mut f = frame.to_vec();
    let ip = Ipv4Packet::new_checked(&f[14..]).ok()?;
    if ip.next_header() != smoltcp::wire::IpProtocol::Tcp {
        return None;
    }
    let (src, dst) = (
        IpAddress::Ipv4(ip.src_addr()),
        IpAddress::Ipv4(ip.dst_addr()),
    );
    let tcp_at = 14 + usize::from(ip.header_len());
    for _ in 0..1 + chaos.next() % 2 {
        let r = chaos.next();
        match r % 7 {
            0 => f[tcp_at + 4..tcp_at + 8].copy_from_slice(&(r >> 8).to_be_bytes()[..4]),
            1 => f[tcp_at + 8..tcp_at + 12].copy_from_slice(&(r >> 8).to_be_bytes()[..4]),
            2 => f[tcp_at + 13] = (r >> 8) as u8,
            3 => f[tcp_at + 14..tcp_at + 16].copy_from_slice(&(r >> 8).to_be_bytes()[..2]),
            4 => {
                // Options: a header of random length full of random bytes.
                let header = usize::from(TcpPacket::new_checked(&f[tcp_at..]).ok()?.header_len());
                let payload = f.split_off(tcp_at + header);
                f.truncate(tcp_at + 20);
                let words = 5 + (r >> 8) as usize % 11;
                f.extend((0..words * 4 - 20).map(|_| chaos.next() as u8));
                f.extend_from_slice(&payload);
                f[tcp_at + 12] = (words as u8) << 4;
            }
            5 => {
                // A payload of another length (up to what the MTU allows).
                let len = (r >> 8) as usize % 1400;
                let header = usize::from(TcpPacket::new_checked(&f[tcp_at..]).ok()?.header_len());
                f.truncate(tcp_at + header);
                f.extend((0..len).map(|_| chaos.next() as u8));
            }
            _ => {
                let seq = TcpSeqNumber((r >> 16) as i32);
                TcpPacket::new_unchecked(&mut f[tcp_at..]).set_seq_number(seq);
            }
        }
    }
    f.truncate(1514);
    let total = u16::try_from(f.len() - 14).ok()?;
    let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
    ip.set_total_len(total);
    ip.fill_checksum();
    let mut tcp = TcpPacket::new_unchecked(&mut f[tcp_at..]);
    tcp.fill_checksum(&src, &dst);
    Some(f)
}

#[test]
fn mutated_tcp_from_the_guest_never_breaks_the_host_side() {
    let mut rig = Rig::new(App::Echo);
    rig.captured = Some(Vec::new());
    // A real exchange to learn what the guest's segments look like.
    rig.serve(|host| {
        let mut s = connect(host);
        s.write_all(&pattern(20_000)).expect("write");
        let mut buf = vec![0u8; 20_000];
        s.read_exact(&mut buf).expect("echo");
    });
    let samples = rig.captured.take().unwrap_or_default();
    assert!(samples.len() > 5, "only {} frames captured", samples.len());
    // FLINT_CHAOS_SEED=N runs other chaos than the default.
    let seed = std::env::var("FLINT_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15u64);
    let mut chaos = Chaos(seed | 1);
    // Chaos while a client is in the middle of a transfer: it may be reset
    // (that is fine); the host side must neither panic nor stop working.
    let host = rig.host;
    let client = std::thread::spawn(move || {
        let mut s = connect(host);
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
        let mut reader = s.try_clone().expect("clone");
        let r = std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
        });
        let _ = s.write_all(&pattern(200_000));
        let _ = s.shutdown(Shutdown::Write);
        let _ = r.join();
    });
    let mut sent = 0;
    for round in 0..300 {
        for sample in &samples {
            if let Some(bad) = mutate(sample, &mut chaos) {
                rig.net.send(&bad);
                sent += 1;
            }
        }
        if round % 10 == 0 {
            rig.step();
        }
    }
    assert!(sent > 1000, "only {sent} mutants");
    let give_up = Instant::now() + Duration::from_secs(20);
    while !client.is_finished() {
        assert!(
            Instant::now() < give_up,
            "the client under chaos never finished"
        );
        rig.step();
    }
    let _ = client.join();
    // And a fresh connection is served as usual.
    let got = rig.serve(|host| {
        let mut s = connect(host);
        s.write_all(b"after the storm").expect("write");
        s.shutdown(Shutdown::Write).expect("shutdown");
        let mut got = Vec::new();
        s.read_to_end(&mut got).map(|_| got)
    });
    assert_eq!(got.expect("echo"), b"after the storm");
    rig.settle();
}
