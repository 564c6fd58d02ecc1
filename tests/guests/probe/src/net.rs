//! `probe net CASE`: the network hypercalls with a device attached (ABI.md
//! section 4), spoken raw, without smoltcp, to the monitor's user-mode
//! gateway:
//!
//! | case | what it does |
//! |---|---|
//! | `config` | reports `BootInfo.net` |
//! | `errors` | NET_WRITE / NET_READ error answers with a device |
//! | `arp` | asks the gateway's MAC with ARP; POLL, level triggering, EFAULT and EMSGSIZE on a waiting frame |
//! | `ping` | ICMP echo to the gateway; reports the reply |
//! | `garbage` | sends malformed frames, then checks the gateway still answers ARP |
//! | `flood N` | sends N frames as fast as it can, drains what comes back, checks ARP |
//!
//! Reports are `key=value` lines; `probe: net done` ends a case that
//! finished.

use alloc::vec;
use alloc::vec::Vec;

use guest_kernel::{boot_info, hypercall, println};
use hypercall_abi::POLL_READY_NET;

use crate::buffers::{net_read as net_read_raw, net_write as net_write_raw};

const ETH_ARP: [u8; 2] = [0x08, 0x06];
const ETH_IPV4: [u8; 2] = [0x08, 0x00];
const BROADCAST: [u8; 6] = [0xff; 6];

/// How long the probe waits for an answer from the gateway.
const ANSWER_WITHIN_NS: u64 = 2_000_000_000;

pub fn run(case: &str, arg: &str) -> i32 {
    let net = boot_info().net;
    if case != "config" && net.present != 1 {
        println!("probe: net {case} needs a network device (--net user)");
        return 2;
    }
    match case {
        "config" => {
            println!("net_present={}", net.present);
            println!("net_mac={}", Mac(&net.mac));
            println!("net_ipv4={}", Ip(&net.ipv4));
            println!("net_prefix_len={}", net.prefix_len);
            println!("net_gateway={}", Ip(&net.gateway));
            println!("net_mtu={}", net.mtu);
        }
        "errors" => errors(net.mtu as usize),
        "arp" => arp(),
        "ping" => ping(),
        "garbage" => garbage(),
        "flood" => flood(arg.parse().unwrap_or(1000)),
        other => {
            println!("probe: unknown net case {other:?}");
            return 2;
        }
    }
    println!("probe: net done");
    0
}

/// Error answers that need no frame from the host.
fn errors(mtu: usize) {
    let frame = vec![0u8; mtu + 15];
    let at = frame.as_ptr() as u64;
    println!("write_13_ret={}", net_write_raw(at, 13));
    println!(
        "write_mtu_plus_15_ret={}",
        net_write_raw(at, mtu as u64 + 15)
    );
    println!("write_badbuf_ret={}", net_write_raw(0x10, 64));
    println!("write_len0_ret={}", net_write_raw(0x10, 0));
    let buf = vec![0u8; mtu + 14];
    println!(
        "read_empty_ret={}",
        net_read_raw(buf.as_ptr() as u64, buf.len() as u64).0
    );
    println!("read_badbuf_ret={}", net_read_raw(0x10, 1514).0);
}

/// An ARP request from us for `target`.
fn arp_request(target: [u8; 4]) -> Vec<u8> {
    let net = boot_info().net;
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&BROADCAST);
    f.extend_from_slice(&net.mac);
    f.extend_from_slice(&ETH_ARP);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]); // Ethernet, IPv4, request
    f.extend_from_slice(&net.mac);
    f.extend_from_slice(&net.ipv4);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f
}

/// POLLs until a frame waits or [`ANSWER_WITHIN_NS`] pass; true if one
/// does.
fn wait_frame() -> bool {
    let deadline = hypercall::clock().monotonic_ns + ANSWER_WITHIN_NS;
    for _ in 0..10_000 {
        let p = hypercall::poll(deadline);
        if p.ready & POLL_READY_NET != 0 {
            return true;
        }
        if hypercall::clock().monotonic_ns >= deadline {
            return false;
        }
    }
    false
}

/// Reads frames until one is an ARP reply to us; returns it.
fn arp_reply() -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 2048];
    while wait_frame() {
        let (ret, len) = hypercall::net_read(&mut buf);
        if ret == 0 && len >= 42 && buf[12..14] == ETH_ARP && buf[20..22] == [0, 2] {
            return Some(buf[..len as usize].to_vec());
        }
    }
    None
}

/// ARP with the gateway, reporting each step the ABI promises.
fn arp() {
    let net = boot_info().net;
    let req = arp_request(net.gateway);
    println!("arp_write_ret={}", hypercall::net_write(&req));
    println!("arp_ready={}", u8::from(wait_frame()));
    // Level-triggered: still ready while the frame waits.
    println!("arp_poll_again_ready={}", hypercall::poll(0).ready);
    // A bad buffer is EFAULT and leaves the frame waiting.
    println!("arp_read_badbuf_ret={}", net_read_raw(0x10, 1514).0);
    println!("arp_after_efault_ready={}", hypercall::poll(0).ready);
    // Too small a buffer: EMSGSIZE, `len` = the frame's size, frame dropped.
    let small = [0u8; 10];
    let (ret, len) = net_read_raw(small.as_ptr() as u64, 10);
    println!("arp_read_small_ret={ret}");
    println!("arp_read_small_len={len}");
    let mut buf = vec![0u8; 2048];
    println!(
        "arp_read_after_drop_ret={}",
        hypercall::net_read(&mut buf).0
    );
    // Once more, read properly.
    hypercall::net_write(&req);
    match arp_reply() {
        Some(f) => {
            println!("arp_reply_len={}", f.len());
            println!("arp_reply_dst={}", Mac(&f[0..6]));
            println!("arp_reply_sender_mac={}", Mac(&f[22..28]));
            println!("arp_reply_sender_ip={}", Ip(&f[28..32]));
            println!("arp_reply_target_mac={}", Mac(&f[32..38]));
            println!("arp_reply_target_ip={}", Ip(&f[38..42]));
        }
        None => println!("arp_reply=none"),
    }
}

/// The gateway's MAC, learned by ARP (broadcast if it never answers).
fn gateway_mac() -> [u8; 6] {
    hypercall::net_write(&arp_request(boot_info().net.gateway));
    let mut mac = BROADCAST;
    if let Some(f) = arp_reply() {
        mac.copy_from_slice(&f[22..28]);
    }
    mac
}

/// An Ethernet frame from us to `dst` of `ethertype` carrying `payload`.
fn frame(dst: [u8; 6], ethertype: [u8; 2], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&boot_info().net.mac);
    f.extend_from_slice(&ethertype);
    f.extend_from_slice(payload);
    f
}

/// A 20-byte IPv4 header from us to the gateway (checksum filled in).
fn ipv4_header(protocol: u8, total_len: u16) -> [u8; 20] {
    let net = boot_info().net;
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&total_len.to_be_bytes());
    h[8] = 64;
    h[9] = protocol;
    h[12..16].copy_from_slice(&net.ipv4);
    h[16..20].copy_from_slice(&net.gateway);
    let sum = checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// ICMP echo request to the gateway, and what came back.
fn ping() {
    let gw = gateway_mac();
    let payload: Vec<u8> = (0..32u8).collect();
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1];
    icmp.extend_from_slice(&payload);
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let h = ipv4_header(1, (20 + icmp.len()) as u16);
    let req = frame(gw, ETH_IPV4, &[&h[..], &icmp[..]].concat());
    println!("ping_write_ret={}", hypercall::net_write(&req));
    let mut buf = vec![0u8; 2048];
    while wait_frame() {
        let (ret, len) = hypercall::net_read(&mut buf);
        let f = &buf[..len as usize];
        if ret != 0 || len < 42 || f[12..14] != ETH_IPV4 || f[23] != 1 {
            continue;
        }
        let ihl = usize::from(f[14] & 0x0f) * 4;
        let reply = &f[14 + ihl..];
        println!("ping_reply_from={}", Ip(&f[26..30]));
        println!("ping_reply_type={}", reply[0]);
        println!(
            "ping_reply_id_seq={}",
            u8::from(reply[4..8] == [0x12, 0x34, 0, 1])
        );
        println!(
            "ping_reply_payload_same={}",
            u8::from(reply[8..] == payload[..])
        );
        println!("ping_reply_checksum_ok={}", u8::from(checksum(reply) == 0));
        return;
    }
    println!("ping_reply=none");
}

/// Malformed frames a buggy or hostile guest might send.
fn malformed(gw: [u8; 6]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    // IPv4 cut inside its header.
    out.push(frame(gw, ETH_IPV4, &[0x45, 0, 0]));
    // IHL 3 (less than the 5 words of a header).
    let mut h = ipv4_header(17, 28);
    h[0] = 0x43;
    out.push(frame(gw, ETH_IPV4, &[&h[..], &[0; 8]].concat()));
    // Total length far beyond the frame.
    let h = ipv4_header(17, 1400);
    out.push(frame(gw, ETH_IPV4, &[&h[..], &[0; 8]].concat()));
    // Bad header checksum.
    let mut h = ipv4_header(17, 28);
    h[10] ^= 0xff;
    out.push(frame(gw, ETH_IPV4, &[&h[..], &[0; 8]].concat()));
    // TCP with a data offset of 15 words in a 20-byte segment.
    let h = ipv4_header(6, 40);
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&4000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[12] = 0xf0;
    tcp[13] = 0x02; // SYN
    out.push(frame(gw, ETH_IPV4, &[&h[..], &tcp[..]].concat()));
    // TCP cut after 6 bytes of its header.
    let h = ipv4_header(6, 26);
    out.push(frame(gw, ETH_IPV4, &[&h[..], &tcp[..6]].concat()));
    // ARP with impossible lengths.
    out.push(frame(
        BROADCAST,
        ETH_ARP,
        &[0, 1, 8, 0, 60, 60, 0, 1, 1, 2, 3],
    ));
    // An unknown ethertype, and a runt of only a header.
    out.push(frame(gw, [0x88, 0xb5], &[0xaa; 32]));
    out.push(frame(gw, ETH_IPV4, &[]));
    out
}

fn garbage() {
    let gw = gateway_mac();
    let frames = malformed(gw);
    let mut accepted = 0;
    for f in &frames {
        accepted += u32::from(hypercall::net_write(f) == f.len() as i64);
    }
    println!("garbage_sent={}", frames.len());
    println!("garbage_accepted={accepted}");
    println!("garbage_then_arp={}", u8::from(arp_reply_after_request()));
}

fn arp_reply_after_request() -> bool {
    hypercall::net_write(&arp_request(boot_info().net.gateway));
    arp_reply().is_some()
}

/// `n` frames back to back: UDP to the gateway's discard port, malformed
/// frames, broadcast junk; then reads whatever the host queued for us.
fn flood(n: u32) {
    let gw = gateway_mac();
    let mtu = boot_info().net.mtu as usize;
    let mut udp = ipv4_header(17, (mtu) as u16).to_vec();
    udp.extend_from_slice(&[0x10, 0x00, 0x00, 0x09]); // ports 4096 → 9
    udp.extend_from_slice(&((mtu - 20) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]); // no UDP checksum
    udp.resize(mtu, 0x5a);
    let big = frame(gw, ETH_IPV4, &udp);
    let junk = malformed(gw);
    let mut bad_ret = 0;
    for i in 0..n {
        let f = match i % 4 {
            0 | 1 => &big,
            _ => &junk[i as usize % junk.len()],
        };
        if hypercall::net_write(f) != f.len() as i64 {
            bad_ret += 1;
        }
    }
    println!("flood_sent={n}");
    println!("flood_bad_ret={bad_ret}");
    let mut buf = vec![0u8; 2048];
    let mut drained = 0u32;
    while hypercall::poll(0).ready & POLL_READY_NET != 0 && drained < 100_000 {
        if hypercall::net_read(&mut buf).0 == 0 {
            drained += 1;
        }
    }
    println!("flood_drained={drained}");
    println!("flood_then_arp={}", u8::from(arp_reply_after_request()));
}

/// A MAC address as `aa:bb:cc:dd:ee:ff`.
struct Mac<'a>(&'a [u8]);

impl core::fmt::Display for Mac<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { ":" };
            write!(f, "{sep}{b:02x}")?;
        }
        Ok(())
    }
}

/// An IPv4 address, dotted.
struct Ip<'a>(&'a [u8]);

impl core::fmt::Display for Ip<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{}.{}.{}", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}
