//! Arbitrary frames from the guest through the frame gate and the
//! user-mode gateway (`NetDevice::send`, then NET_READ's `receive` until
//! the gateway has nothing more to say), without KVM. Asserts no panic,
//! that the gate's verdict does not depend on anything but the frame, and
//! that every frame the gateway sends the guest is Ethernet no longer than
//! the device's largest frame.
//!
//! With flags bit 1, the input drives forwarded host connections instead
//! (`--publish`, real loopback clients, a pretend guest): see
//! `forward_rig.rs` for its operations.
//!
//! Input: `flags` (bit 0: fill in the IPv4 and TCP/UDP/ICMP checksums, so
//! the fuzzer gets past the gate to the stack; bit 1: forwarded
//! connections), then frames, each a u16 LE length and that many bytes
//! (the last one takes what is left).

#![no_main]

mod common;
mod forward_rig;

use common::user_net;
use host_monitor::net::frame::{check, Policy};
use host_monitor::net::Received;
use libfuzzer_sys::fuzz_target;
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, Icmpv4Packet, IpAddress, IpProtocol, Ipv4Packet, TcpPacket,
    UdpPacket,
};

/// Makes the frame's checksums right where its headers can be parsed.
fn fill_checksums(frame: &mut [u8]) {
    let Ok(mut eth) = EthernetFrame::new_checked(frame) else {
        return;
    };
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return;
    }
    let Ok(mut ip) = Ipv4Packet::new_checked(eth.payload_mut()) else {
        return;
    };
    ip.fill_checksum();
    let (src, dst) = (
        IpAddress::Ipv4(ip.src_addr()),
        IpAddress::Ipv4(ip.dst_addr()),
    );
    let protocol = ip.next_header();
    let body = ip.payload_mut();
    match protocol {
        IpProtocol::Tcp => {
            if let Ok(mut tcp) = TcpPacket::new_checked(body) {
                tcp.fill_checksum(&src, &dst);
            }
        }
        IpProtocol::Udp => {
            if let Ok(mut udp) = UdpPacket::new_checked(body) {
                udp.fill_checksum(&src, &dst);
            }
        }
        IpProtocol::Icmp => {
            if let Ok(mut icmp) = Icmpv4Packet::new_checked(body) {
                icmp.fill_checksum();
            }
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let [flags, rest @ ..] = data else {
        return;
    };
    if flags & 2 != 0 {
        if let Some(mut rig) = forward_rig::Rig::new(flags & 1 != 0) {
            rig.run(rest);
        }
        return;
    }
    let mut rest: &[u8] = rest;
    let mut net = user_net();
    let max_frame = net.max_frame();
    while !rest.is_empty() {
        let (len, body) = match rest {
            [a, b, tail @ ..] => (
                usize::from(u16::from_le_bytes([*a, *b])).min(tail.len()),
                tail,
            ),
            _ => (rest.len(), rest),
        };
        let (frame, tail) = body.split_at(len);
        rest = tail;
        let mut frame = frame.to_vec();
        if flags & 1 != 0 {
            fill_checksums(&mut frame);
        }
        let user = check(&frame, Policy::UserMode);
        let tap = check(&frame, Policy::PassUnknown);
        // What the monitor's own stack accepts, a TAP device accepts too.
        assert!(user.is_err() || tap.is_ok(), "{user:?} but {tap:?}");
        // NET_WRITE refuses what is shorter than a header or longer than
        // the largest frame before the device sees it.
        if frame.len() < 14 || frame.len() as u64 > max_frame {
            continue;
        }
        net.send(&frame);
        loop {
            let mut out = None;
            match net.receive(max_frame, |f| {
                out = Some(f.to_vec());
                true
            }) {
                Received::Delivered(_) => {}
                Received::Nothing => break,
                other => panic!("NET_READ with room for the largest frame: {other:?}"),
            }
            let out = out.expect("delivered");
            assert!(out.len() as u64 <= max_frame, "{} bytes", out.len());
            assert!(EthernetFrame::new_checked(&out[..]).is_ok(), "{out:02x?}");
        }
    }
});
