//! The interface's identity, read from `BootInfo.net` (ABI.md section 3),
//! and the socket buffer sizes.

use core::net::Ipv4Addr;

use hypercall_abi::{NetConfig, ETH_HEADER_LEN};

use super::{Error, Result};

/// The smallest IP MTU every IPv4 host must accept (RFC 791).
const MTU_MIN: u16 = 576;

/// The network identity the monitor gave this instance, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The guest's own MAC address (unicast).
    pub mac: [u8; 6],
    /// The guest's static IPv4 address.
    pub ipv4: Ipv4Addr,
    /// Its prefix length (1 to 32).
    pub prefix_len: u8,
    /// The default gateway, if any.
    pub gateway: Option<Ipv4Addr>,
    /// The IP MTU; Ethernet frames are at most `mtu + 14` bytes.
    pub mtu: u16,
}

impl Config {
    /// Checks what the monitor wrote. Fails with [`Error::NoDevice`] when
    /// no device is attached, or when the configuration is unusable (no
    /// address, a multicast MAC, an MTU below 576, a prefix above 32).
    pub fn from_boot(net: &NetConfig) -> Result<Config> {
        let ipv4 = Ipv4Addr::from(net.ipv4);
        let gateway = Ipv4Addr::from(net.gateway);
        let unicast_mac = net.mac[0] & 1 == 0 && net.mac != [0; 6];
        if net.present != 1
            || !unicast_mac
            || ipv4.is_unspecified()
            || !(1..=32).contains(&net.prefix_len)
            || net.mtu < MTU_MIN
        {
            return Err(Error::NoDevice);
        }
        Ok(Config {
            mac: net.mac,
            ipv4,
            prefix_len: net.prefix_len,
            gateway: (!gateway.is_unspecified()).then_some(gateway),
            mtu: net.mtu,
        })
    }

    /// The largest Ethernet frame, header included: `mtu + 14`.
    pub fn frame_max(&self) -> usize {
        usize::from(self.mtu) + ETH_HEADER_LEN as usize
    }
}

/// Sizes of a TCP socket's receive and send buffers, in bytes.
///
/// Each connection (and each listening socket waiting for one) holds both
/// buffers for its whole life, and they are zeroed when it is made, so
/// their sum is the memory (and the guest pages touched) per connection.
/// The receive buffer is also the window offered to the peer, so it
/// bounds how much a peer can send per round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpBuffers {
    /// Receive buffer (the advertised window), at least 1024 bytes.
    pub rx: usize,
    /// Send buffer, at least 1024 bytes.
    pub tx: usize,
}

impl TcpBuffers {
    /// 8 KiB each: 16 KiB (4 pages) per connection, enough for five
    /// full-size segments in flight each way.
    pub const DEFAULT: TcpBuffers = TcpBuffers {
        rx: 8 << 10,
        tx: 8 << 10,
    };
    /// The smallest buffer accepted; smaller sizes are raised to it.
    pub const MIN: usize = 1024;

    /// The sizes with both raised to at least [`TcpBuffers::MIN`]. (Above
    /// 64 KiB the window is scaled, RFC 7323.)
    pub fn clamped(self) -> TcpBuffers {
        TcpBuffers {
            rx: self.rx.max(TcpBuffers::MIN),
            tx: self.tx.max(TcpBuffers::MIN),
        }
    }
}

impl Default for TcpBuffers {
    fn default() -> TcpBuffers {
        TcpBuffers::DEFAULT
    }
}

/// Sizes of a UDP socket's queues: each direction holds up to `packets`
/// datagrams with `bytes` of payload between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpBuffers {
    /// Datagrams queued per direction.
    pub packets: usize,
    /// Payload bytes queued per direction; also the largest datagram.
    pub bytes: usize,
}

impl UdpBuffers {
    /// 8 datagrams and 4 KiB per direction: 8 KiB (2 pages) per socket.
    pub const DEFAULT: UdpBuffers = UdpBuffers {
        packets: 8,
        bytes: 4 << 10,
    };
}

impl Default for UdpBuffers {
    fn default() -> UdpBuffers {
        UdpBuffers::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_mode() -> NetConfig {
        NetConfig {
            present: 1,
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            prefix_len: 24,
            ipv4: [10, 0, 2, 15],
            gateway: [10, 0, 2, 2],
            mtu: 1500,
            _pad: [0; 6],
        }
    }

    #[test]
    fn user_mode_defaults_are_accepted() {
        let config = Config::from_boot(&user_mode()).unwrap();
        assert_eq!(config.ipv4, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(config.gateway, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(config.frame_max(), 1514);
    }

    #[test]
    fn no_gateway_is_none() {
        let mut net = user_mode();
        net.gateway = [0; 4];
        assert_eq!(Config::from_boot(&net).unwrap().gateway, None);
    }

    #[test]
    fn absent_or_unusable_configs_are_no_device() {
        let cases: [fn(&mut NetConfig); 6] = [
            |n| n.present = 0,
            |n| n.ipv4 = [0; 4],
            |n| n.prefix_len = 33,
            |n| n.mtu = 100,
            |n| n.mac[0] = 1,
            |n| n.mac = [0; 6],
        ];
        for break_it in cases {
            let mut net = user_mode();
            break_it(&mut net);
            assert_eq!(Config::from_boot(&net), Err(Error::NoDevice), "{net:?}");
        }
    }

    #[test]
    fn buffer_sizes_are_clamped() {
        let b = TcpBuffers { rx: 1, tx: 1 << 20 }.clamped();
        assert_eq!((b.rx, b.tx), (1024, 1 << 20));
    }
}
