//! The gate every frame from the guest passes before a backend sees it.
//! The guest is hostile: each header it wrote is parsed with smoltcp's
//! checked `wire` types and its checksums verified, so what reaches the
//! host-side stack (or the host's TAP device) is at least well-formed.

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, Icmpv4Packet, Icmpv4Repr, IpAddress,
    IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket, TcpRepr, UdpPacket, UdpRepr,
};

/// What the gate lets through besides well-formed ARP and IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// The monitor's own stack speaks only ARP and unfragmented IPv4 with
    /// TCP, UDP or ICMP: anything else could never be answered.
    UserMode,
    /// A TAP device carries any protocol to the host; the gate checks the
    /// ones it knows and passes the rest (IPv6, fragments, ...) unparsed.
    PassUnknown,
}

/// Why a frame was not let through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// A header or checksum is wrong: counted as `malformed`.
    Malformed(&'static str),
    /// Well-formed, but nothing on this backend could take it: `dropped`.
    Unsupported(&'static str),
}

/// Checks one frame the guest sent.
pub fn check(frame: &[u8], policy: Policy) -> Result<(), Reject> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| Reject::Malformed("ethernet"))?;
    if eth.src_addr().is_multicast() {
        return Err(Reject::Malformed("multicast source MAC"));
    }
    match eth.ethertype() {
        EthernetProtocol::Arp => check_arp(eth.payload()),
        EthernetProtocol::Ipv4 => check_ipv4(eth.payload(), policy),
        // ABI.md: frames carry no 802.1Q tag.
        EthernetProtocol::Unknown(0x8100 | 0x88a8) => Err(Reject::Malformed("VLAN tag")),
        _ if policy == Policy::PassUnknown => Ok(()),
        _ => Err(Reject::Unsupported("ethertype")),
    }
}

fn check_arp(payload: &[u8]) -> Result<(), Reject> {
    let packet = ArpPacket::new_checked(payload).map_err(|_| Reject::Malformed("arp"))?;
    ArpRepr::parse(&packet).map_err(|_| Reject::Malformed("arp"))?;
    Ok(())
}

fn check_ipv4(payload: &[u8], policy: Policy) -> Result<(), Reject> {
    let packet = Ipv4Packet::new_checked(payload).map_err(|_| Reject::Malformed("ipv4"))?;
    let checksums = ChecksumCapabilities::default();
    // Parses version, header and total length, and verifies the checksum.
    let ip = Ipv4Repr::parse(&packet, &checksums).map_err(|_| Reject::Malformed("ipv4"))?;
    if packet.more_frags() || packet.frag_offset() != 0 {
        // A fragment's transport header cannot be checked on its own.
        return match policy {
            Policy::PassUnknown => Ok(()),
            Policy::UserMode => Err(Reject::Unsupported("ipv4 fragment")),
        };
    }
    let (src, dst) = (IpAddress::Ipv4(ip.src_addr), IpAddress::Ipv4(ip.dst_addr));
    // `new_checked` made sure total_len covers the header and fits the frame.
    let body = packet.payload();
    match ip.next_header {
        IpProtocol::Tcp => {
            let tcp = TcpPacket::new_checked(body).map_err(|_| Reject::Malformed("tcp"))?;
            TcpRepr::parse(&tcp, &src, &dst, &checksums).map_err(|_| Reject::Malformed("tcp"))?;
        }
        IpProtocol::Udp => {
            let udp = UdpPacket::new_checked(body).map_err(|_| Reject::Malformed("udp"))?;
            UdpRepr::parse(&udp, &src, &dst, &checksums).map_err(|_| Reject::Malformed("udp"))?;
        }
        IpProtocol::Icmp => {
            let icmp = Icmpv4Packet::new_checked(body).map_err(|_| Reject::Malformed("icmp"))?;
            Icmpv4Repr::parse(&icmp, &checksums).map_err(|_| Reject::Malformed("icmp"))?;
        }
        _ if policy == Policy::PassUnknown => {}
        _ => return Err(Reject::Unsupported("ip protocol")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{
        ArpOperation, EthernetAddress, EthernetRepr, Ipv4Address, TcpControl, TcpSeqNumber,
    };

    const GUEST: EthernetAddress = EthernetAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    const GW: EthernetAddress = EthernetAddress([0x52, 0x55, 10, 0, 2, 2]);
    const GUEST_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
    const GW_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);

    fn ethernet(ethertype: EthernetProtocol, payload_len: usize) -> (Vec<u8>, usize) {
        let repr = EthernetRepr {
            src_addr: GUEST,
            dst_addr: GW,
            ethertype,
        };
        let mut frame = vec![0u8; repr.buffer_len() + payload_len];
        repr.emit(&mut EthernetFrame::new_unchecked(&mut frame[..]));
        (frame, repr.buffer_len())
    }

    fn arp() -> Vec<u8> {
        let repr = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: GUEST,
            source_protocol_addr: GUEST_IP,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: GW_IP,
        };
        let (mut frame, at) = ethernet(EthernetProtocol::Arp, repr.buffer_len());
        repr.emit(&mut ArpPacket::new_unchecked(&mut frame[at..]));
        frame
    }

    fn ipv4(protocol: IpProtocol, body: &[u8]) -> Vec<u8> {
        let ip = Ipv4Repr {
            src_addr: GUEST_IP,
            dst_addr: GW_IP,
            next_header: protocol,
            payload_len: body.len(),
            hop_limit: 64,
        };
        let (mut frame, at) = ethernet(EthernetProtocol::Ipv4, ip.buffer_len() + body.len());
        ip.emit(
            &mut Ipv4Packet::new_unchecked(&mut frame[at..]),
            &ChecksumCapabilities::default(),
        );
        frame[at + ip.buffer_len()..].copy_from_slice(body);
        frame
    }

    fn tcp_syn() -> Vec<u8> {
        let repr = TcpRepr {
            src_port: 7,
            dst_port: 49152,
            control: TcpControl::Syn,
            seq_number: TcpSeqNumber(1),
            ack_number: None,
            window_len: 1024,
            window_scale: None,
            max_seg_size: Some(1460),
            sack_permitted: false,
            sack_ranges: [None, None, None],
            timestamp: None,
            payload: b"",
        };
        let mut body = vec![0u8; repr.buffer_len()];
        repr.emit(
            &mut TcpPacket::new_unchecked(&mut body[..]),
            &IpAddress::Ipv4(GUEST_IP),
            &IpAddress::Ipv4(GW_IP),
            &ChecksumCapabilities::default(),
        );
        ipv4(IpProtocol::Tcp, &body)
    }

    fn icmp_echo() -> Vec<u8> {
        let repr = Icmpv4Repr::EchoRequest {
            ident: 1,
            seq_no: 2,
            data: b"ping",
        };
        let mut body = vec![0u8; repr.buffer_len()];
        repr.emit(
            &mut Icmpv4Packet::new_unchecked(&mut body[..]),
            &ChecksumCapabilities::default(),
        );
        ipv4(IpProtocol::Icmp, &body)
    }

    const IP_AT: usize = 14;
    const TCP_AT: usize = 34;

    #[test]
    fn well_formed_frames_pass() {
        for frame in [arp(), tcp_syn(), icmp_echo()] {
            assert_eq!(check(&frame, Policy::UserMode), Ok(()));
            assert_eq!(check(&frame, Policy::PassUnknown), Ok(()));
        }
        // Ethernet padding after the IP packet is fine.
        let mut padded = arp();
        padded.resize(60, 0);
        assert_eq!(check(&padded, Policy::UserMode), Ok(()));
    }

    #[test]
    fn every_truncation_is_malformed_never_a_panic() {
        for frame in [arp(), tcp_syn(), icmp_echo()] {
            for len in 0..frame.len() {
                let verdict = check(&frame[..len], Policy::UserMode);
                assert!(
                    matches!(verdict, Err(Reject::Malformed(_))),
                    "{len} bytes: {verdict:?}"
                );
            }
        }
    }

    #[test]
    fn every_single_bit_flip_is_caught_or_harmless() {
        // Flipping any bit of the IP or TCP header must be caught by a
        // length check or a checksum: none may panic, and none may pass
        // unless it landed in a field no checksum covers (MACs).
        for frame in [tcp_syn(), icmp_echo()] {
            for byte in IP_AT..frame.len() {
                for bit in 0..8 {
                    let mut bad = frame.clone();
                    bad[byte] ^= 1 << bit;
                    let verdict = check(&bad, Policy::UserMode);
                    assert!(verdict.is_err(), "flip {byte}.{bit} passed");
                }
            }
        }
    }

    #[test]
    fn bad_checksums_and_lengths_are_malformed() {
        let mut frame = tcp_syn();
        frame[TCP_AT + 16] ^= 0xff; // TCP checksum
        assert_eq!(
            check(&frame, Policy::UserMode),
            Err(Reject::Malformed("tcp"))
        );
        let mut frame = tcp_syn();
        frame[IP_AT + 10] ^= 0xff; // IP checksum
        assert_eq!(
            check(&frame, Policy::PassUnknown),
            Err(Reject::Malformed("ipv4"))
        );
        let mut frame = tcp_syn();
        frame[IP_AT + 3] = 0xff; // total length beyond the frame
        assert!(check(&frame, Policy::UserMode).is_err());
        let mut frame = tcp_syn();
        frame[IP_AT] = 0x41; // header length 4 words
        assert!(check(&frame, Policy::UserMode).is_err());
        let mut frame = tcp_syn();
        frame[6] |= 1; // multicast source MAC
        assert!(check(&frame, Policy::PassUnknown).is_err());
    }

    #[test]
    fn unknown_protocols_depend_on_the_backend() {
        let (v6, _) = ethernet(EthernetProtocol::Ipv6, 40);
        assert_eq!(
            check(&v6, Policy::UserMode),
            Err(Reject::Unsupported("ethertype"))
        );
        assert_eq!(check(&v6, Policy::PassUnknown), Ok(()));
        let (vlan, _) = ethernet(EthernetProtocol::Unknown(0x8100), 40);
        assert!(matches!(
            check(&vlan, Policy::PassUnknown),
            Err(Reject::Malformed(_))
        ));
        let gre = ipv4(IpProtocol::Unknown(47), &[0; 8]);
        assert_eq!(
            check(&gre, Policy::UserMode),
            Err(Reject::Unsupported("ip protocol"))
        );
        assert_eq!(check(&gre, Policy::PassUnknown), Ok(()));
    }
}
