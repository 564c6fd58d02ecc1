//! `net_frames` with forwarded host connections (flags bit 1): a user-mode
//! device with one `--publish` (127.0.0.1, a port the kernel picks, to
//! guest port 80), real loopback clients on the host side, and a pretend
//! guest that the input drives segment by segment.
//!
//! The pretend guest answers the gateway's ARP requests for it by itself,
//! and remembers each connection the gateway opens to it (the gateway's
//! port and the next sequence number either way), so the input's TCP
//! segments can be written relative to a live connection and reach the
//! forwarding state machine (`net/user/forward.rs`) rather than being
//! dropped as strangers.
//!
//! Input after the flags byte: operations until the input ends, each a
//! byte whose low 3 bits choose what and whose high 5 bits pick a client
//! or a connection:
//!
//! | op | what | then |
//! |---|---|---|
//! | 0 | a new host client connects (at most 4) | |
//! | 1 | a client writes `17 * n` bytes | `n` (u8) |
//! | 2 | a client shuts down its write half (FIN) | |
//! | 3 | a client resets (SO_LINGER 0, close) | |
//! | 4 | a client reads what is there | |
//! | 5 | a guest TCP segment on a connection | TCP flags (u8), sequence and acknowledgment offsets (i8 each, from the next expected numbers), window (u16 LE), payload length (u8), payload |
//! | 6 | a raw guest frame, as without bit 1 | length (u16 LE), bytes |
//! | 7 | nothing (the host side runs once more) | |
//!
//! After each operation the host side runs (`NetDevice::wait` with a
//! deadline already past: no sleeping) and every frame for the guest is
//! taken and checked (Ethernet, no longer than the device's largest frame,
//! IPv4 only ever from the gateway's address to the guest's).

use host_monitor::net::spec::{
    gateway_mac, Identity, NetSetup, Publish, DEFAULT_MAC, USER_GATEWAY, USER_GUEST_IP,
};
use host_monitor::net::{NetDevice, Received};
use smoltcp::wire::{
    ArpOperation, ArpPacket, EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket,
};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Instant;

/// The published guest port.
const GUEST_PORT: u16 = 80;
/// The pretend guest's initial sequence number.
const GUEST_ISN: u32 = 0x1000_0000;
const MAX_CLIENTS: usize = 4;
const MAX_FLOWS: usize = 8;
/// Frames taken per run of the host side, so a chatty gateway cannot keep
/// one input going for long.
const MAX_FRAMES_PER_PUMP: usize = 64;

/// A connection the gateway opened to the guest.
struct Flow {
    gw_port: u16,
    /// The next sequence number the gateway will send.
    gw_next: u32,
    /// The guest's next sequence number.
    guest_next: u32,
}

/// The device, its clients and the pretend guest's connections.
pub struct Rig {
    net: NetDevice,
    addr: SocketAddr,
    clients: Vec<TcpStream>,
    flows: Vec<Flow>,
    max_frame: u64,
    fill: bool,
}

impl Rig {
    /// A device publishing a fresh loopback port; `None` if the host has
    /// no port or fd left (not a bug in the monitor).
    pub fn new(fill_checksums: bool) -> Option<Rig> {
        let setup = NetSetup::User {
            guest: Identity {
                mac: DEFAULT_MAC,
                ip: USER_GUEST_IP,
                gateway: Some(USER_GATEWAY),
            },
            gateway: USER_GATEWAY,
            publish: vec![Publish {
                host: SocketAddr::from(([127, 0, 0, 1], 0)),
                guest_port: GUEST_PORT,
            }],
        };
        let net = NetDevice::open(&setup).ok()??;
        let addr = *net.listening_addrs().first()?;
        let max_frame = net.max_frame();
        Some(Rig {
            net,
            addr,
            clients: Vec::new(),
            flows: Vec::new(),
            max_frame,
            fill: fill_checksums,
        })
    }

    /// Runs the operations in `ops` (see the module doc).
    pub fn run(&mut self, mut ops: &[u8]) {
        while let [op, rest @ ..] = ops {
            ops = rest;
            let pick = usize::from(op >> 3);
            match op & 7 {
                0 => self.connect(),
                1 => {
                    let [n, rest @ ..] = ops else { return };
                    ops = rest;
                    let bytes: Vec<u8> = (0..usize::from(*n) * 17).map(|i| i as u8).collect();
                    if let Some(c) = self.client(pick) {
                        let _ = c.write(&bytes);
                    }
                }
                2 => {
                    if let Some(c) = self.client(pick) {
                        let _ = c.shutdown(Shutdown::Write);
                    }
                }
                3 => {
                    if !self.clients.is_empty() {
                        let c = self.clients.remove(pick % self.clients.len());
                        reset(c);
                    }
                }
                4 => {
                    if let Some(c) = self.client(pick) {
                        let mut buf = [0u8; 4096];
                        let _ = c.read(&mut buf);
                    }
                }
                5 => {
                    let Some((head, rest)) = ops.split_first_chunk::<6>() else {
                        return;
                    };
                    let len = usize::from(head[5]).min(rest.len());
                    let (payload, rest) = rest.split_at(len);
                    ops = rest;
                    self.segment(pick, head, payload);
                }
                6 => {
                    let Some((len, rest)) = ops.split_first_chunk::<2>() else {
                        return;
                    };
                    let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
                    let (frame, rest) = rest.split_at(len);
                    ops = rest;
                    self.send(frame.to_vec());
                }
                _ => {}
            }
            self.pump();
        }
    }

    fn client(&mut self, pick: usize) -> Option<&mut TcpStream> {
        let n = self.clients.len();
        self.clients.get_mut(pick.checked_rem(n)?)
    }

    fn connect(&mut self) {
        if self.clients.len() >= MAX_CLIENTS {
            return;
        }
        // Loopback: the kernel completes the handshake at once.
        if let Ok(c) = TcpStream::connect(self.addr) {
            if c.set_nonblocking(true).is_ok() {
                self.clients.push(c);
            }
        }
    }

    /// A guest segment on flow `pick`: `head` is flags, sequence and
    /// acknowledgment offsets, window (LE), payload length.
    fn segment(&mut self, pick: usize, head: &[u8; 6], payload: &[u8]) {
        let n = self.flows.len();
        let Some(flow) = pick.checked_rem(n).and_then(|i| self.flows.get_mut(i)) else {
            return;
        };
        let flags = head[0] & 0x3f;
        let seq_off = head[1] as i8;
        let ack_off = head[2] as i8;
        let seq = flow.guest_next.wrapping_add(seq_off as i32 as u32);
        let ack = flow.gw_next.wrapping_add(ack_off as i32 as u32);
        if seq_off == 0 {
            let control = u32::from(flags & 0x01 != 0) + u32::from(flags & 0x02 != 0);
            flow.guest_next = seq.wrapping_add(payload.len() as u32).wrapping_add(control);
        }
        let frame = tcp_frame(
            flow.gw_port,
            seq,
            ack,
            flags,
            u16::from_le_bytes([head[3], head[4]]),
            payload,
        );
        // The checksums are what gets a segment past the gate: always.
        let mut frame = frame;
        super::fill_checksums(&mut frame);
        self.net.send(&frame);
    }

    fn send(&mut self, mut frame: Vec<u8>) {
        if self.fill {
            super::fill_checksums(&mut frame);
        }
        if frame.len() >= 14 && frame.len() as u64 <= self.max_frame {
            self.net.send(&frame);
        }
    }

    /// Runs the host side once (no sleeping) and takes every frame for
    /// the guest, answering ARP and noting connections as a guest would.
    fn pump(&mut self) {
        let _ = self.net.wait(Some(Instant::now()));
        for _ in 0..MAX_FRAMES_PER_PUMP {
            let mut out = None;
            match self.net.receive(self.max_frame, |f| {
                out = Some(f.to_vec());
                true
            }) {
                Received::Delivered(_) => {}
                Received::Nothing => break,
                other => panic!("NET_READ with room for the largest frame: {other:?}"),
            }
            let out = out.expect("delivered");
            assert!(out.len() as u64 <= self.max_frame, "{} bytes", out.len());
            self.guest_takes(&out);
            let _ = self.net.wait(Some(Instant::now()));
        }
    }

    /// What the pretend guest does with a frame from the gateway.
    fn guest_takes(&mut self, frame: &[u8]) {
        let eth = EthernetFrame::new_checked(frame)
            .unwrap_or_else(|_| panic!("not Ethernet: {frame:02x?}"));
        match eth.ethertype() {
            EthernetProtocol::Arp => {
                let Ok(arp) = ArpPacket::new_checked(eth.payload()) else {
                    return;
                };
                let for_us = arp.target_protocol_addr() == USER_GUEST_IP.addr.octets();
                if arp.operation() == ArpOperation::Request && for_us {
                    let reply = arp_reply(arp.source_hardware_addr(), arp.source_protocol_addr());
                    self.net.send(&reply);
                }
            }
            EthernetProtocol::Ipv4 => {
                let ip = Ipv4Packet::new_checked(eth.payload())
                    .unwrap_or_else(|_| panic!("bad IPv4 from the gateway: {frame:02x?}"));
                // The gateway speaks only for itself, and only to its guest.
                assert_eq!(ip.src_addr(), USER_GATEWAY, "{frame:02x?}");
                assert_eq!(ip.dst_addr(), USER_GUEST_IP.addr, "{frame:02x?}");
                if ip.next_header() != IpProtocol::Tcp {
                    return;
                }
                let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
                    return;
                };
                self.note(&tcp);
            }
            _ => {}
        }
    }

    /// Follows the gateway's side of a forwarded connection.
    fn note(&mut self, tcp: &TcpPacket<&[u8]>) {
        if trace() {
            eprintln!(
                "gateway -> guest: {}->{} seq {} ack {} syn {} ack {} fin {} rst {} len {}",
                tcp.src_port(),
                tcp.dst_port(),
                tcp.seq_number().0 as u32,
                tcp.ack_number().0 as u32,
                tcp.syn(),
                tcp.ack(),
                tcp.fin(),
                tcp.rst(),
                tcp.payload().len()
            );
        }
        if tcp.dst_port() != GUEST_PORT {
            return;
        }
        let gw_port = tcp.src_port();
        let seq = tcp.seq_number().0 as u32;
        let after = seq
            .wrapping_add(tcp.payload().len() as u32)
            .wrapping_add(u32::from(tcp.syn()) + u32::from(tcp.fin()));
        if tcp.syn() && !tcp.ack() {
            self.flows.retain(|f| f.gw_port != gw_port);
            if self.flows.len() >= MAX_FLOWS {
                self.flows.remove(0);
            }
            self.flows.push(Flow {
                gw_port,
                gw_next: after,
                guest_next: GUEST_ISN,
            });
        } else if let Some(flow) = self.flows.iter_mut().find(|f| f.gw_port == gw_port) {
            // Only forward: a retransmission does not move it back.
            if (after.wrapping_sub(flow.gw_next) as i32) > 0 {
                flow.gw_next = after;
            }
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // Reset, not close: no TIME_WAIT left behind per input.
        for c in self.clients.drain(..) {
            reset(c);
        }
    }
}

/// `FORWARD_RIG_TRACE=1`: print what the pretend guest sees (to check a
/// seed does what it should).
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("FORWARD_RIG_TRACE").is_some())
}

/// Closes `c` with an RST (SO_LINGER 0).
fn reset(c: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: SO_LINGER takes a `linger` of this size; the fd is open.
    unsafe {
        libc::setsockopt(
            c.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    drop(c);
}

/// An ARP reply from the guest to `(mac, ip)`.
fn arp_reply(to_mac: &[u8], to_ip: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(to_mac);
    f.extend_from_slice(&DEFAULT_MAC.0);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
    f.extend_from_slice(&DEFAULT_MAC.0);
    f.extend_from_slice(&USER_GUEST_IP.addr.octets());
    f.extend_from_slice(to_mac);
    f.extend_from_slice(to_ip);
    f
}

/// A TCP segment from the guest's port 80 to the gateway's `gw_port`
/// (checksums left to the caller).
fn tcp_frame(gw_port: u16, seq: u32, ack: u32, flags: u8, window: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(54 + payload.len());
    f.extend_from_slice(&gateway_mac(USER_GATEWAY).0);
    f.extend_from_slice(&DEFAULT_MAC.0);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (40 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&USER_GUEST_IP.addr.octets());
    f.extend_from_slice(&USER_GATEWAY.octets());
    f.extend_from_slice(&GUEST_PORT.to_be_bytes());
    f.extend_from_slice(&gw_port.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.to_be_bytes());
    f.extend_from_slice(&[5 << 4, flags]);
    f.extend_from_slice(&window.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}
