//! What `--net`, `--publish`, `--ip`, `--gateway` and `--mac` say: each
//! value parsed on its own (for clap), then [`resolve`]d together into one
//! [`NetSetup`] before anything starts, so a bad combination is a one-line
//! refusal (status 125), never a half-started instance.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// User mode: the guest's address when `--ip` is not given.
pub const USER_GUEST_IP: Cidr = Cidr {
    addr: Ipv4Addr::new(10, 0, 2, 15),
    prefix: 24,
};
/// User mode: the monitor's own address, the guest's gateway.
pub const USER_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The guest's MAC address when `--mac` is not given.
pub const DEFAULT_MAC: Mac = Mac([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
/// User mode: the IP MTU of the monitor's network.
pub const USER_MTU: u16 = 1500;
/// `--publish` without a host address listens here only.
pub const DEFAULT_HOST_IP: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Linux interface names are at most 15 bytes (IFNAMSIZ with its NUL).
const IFNAME_MAX: usize = 15;

/// `--net`: which backend, as the user wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetMode {
    /// No network device.
    None,
    /// The monitor's rootless user-mode network.
    User,
    /// The TAP device with this name.
    Tap(String),
}

/// A MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// An IPv4 address with its prefix length, e.g. `10.0.2.15/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    /// True if `other` is on this address's subnet.
    pub fn contains(&self, other: Ipv4Addr) -> bool {
        let mask = prefix_mask(self.prefix);
        u32::from(self.addr) & mask == u32::from(other) & mask
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn prefix_mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// One `--publish`: a host TCP address whose connections are carried to
/// the guest's `guest_port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Publish {
    pub host: SocketAddr,
    pub guest_port: u16,
}

/// The network an instance gets, every value checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NetSetup {
    /// No device: `BootInfo.net.present` is 0 and NET_* answer ENODEV.
    #[default]
    None,
    /// The monitor is the gateway; `publish` lists the forwarded ports.
    User {
        guest: Identity,
        gateway: Ipv4Addr,
        publish: Vec<Publish>,
    },
    /// A TAP device; its MTU is read from the device when it is opened.
    Tap { name: String, guest: Identity },
}

/// The guest's own network identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub mac: Mac,
    pub ip: Cidr,
    pub gateway: Option<Ipv4Addr>,
}

/// A combination of network options that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("--publish needs the monitor's user-mode network; it cannot be used with --net {0}")]
    PublishWithoutUser(String),
    #[error("{0} needs a network device; add --net user or --net tap:NAME")]
    NoDevice(&'static str),
    #[error("--net tap:{0} needs the guest's address: add --ip ADDR/PREFIX")]
    TapWithoutIp(String),
    #[error("--gateway {gateway} is not on the guest's subnet {ip}")]
    GatewayOffSubnet { gateway: Ipv4Addr, ip: Cidr },
    #[error("--gateway {0} is the guest's own address")]
    GatewayIsGuest(Ipv4Addr),
    #[error("--mac {0} is the user-mode gateway's own MAC address")]
    MacIsGateway(Mac),
    #[error("--publish {0} is given twice")]
    DuplicatePublish(SocketAddr),
}

/// Parses `--net`: `none`, `user` or `tap:NAME`.
pub fn parse_net_mode(text: &str) -> Result<NetMode, String> {
    match text {
        "none" => Ok(NetMode::None),
        "user" => Ok(NetMode::User),
        _ => match text.strip_prefix("tap:") {
            Some(name) => check_ifname(name).map(|()| NetMode::Tap(name.to_owned())),
            None => Err(format!("'{text}' is not none, user or tap:NAME")),
        },
    }
}

/// A name the kernel would take for a network interface.
fn check_ifname(name: &str) -> Result<(), String> {
    let bad_char = name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if name.is_empty() || name.len() > IFNAME_MAX || bad_char || name == "." || name == ".." {
        return Err(format!(
            "'{name}' is not an interface name (1 to {IFNAME_MAX} bytes, no '/', ':' or spaces)"
        ));
    }
    Ok(())
}

/// Parses `--publish [HOST_IP:]HOST_PORT:GUEST_PORT`; `HOST_IP` is IPv4 or
/// `[IPv6]` and defaults to 127.0.0.1.
pub fn parse_publish(text: &str) -> Result<Publish, String> {
    let bad = |why: &str| format!("'{text}' is not [HOST_IP:]HOST_PORT:GUEST_PORT: {why}");
    let (host, guest) = text
        .rsplit_once(':')
        .ok_or_else(|| bad("it needs at least HOST_PORT:GUEST_PORT"))?;
    let guest_port = parse_port(guest).map_err(|why| bad(&why))?;
    let (ip, host_port) = match host.rsplit_once(':') {
        // An IPv6 address has colons of its own, so it must be bracketed.
        Some((ip, port)) if !ip.contains(':') || (ip.starts_with('[') && ip.ends_with(']')) => {
            (parse_host_ip(ip).map_err(|why| bad(&why))?, port)
        }
        Some(_) => return Err(bad("write an IPv6 host address in brackets, e.g. [::1]")),
        None => (IpAddr::V4(DEFAULT_HOST_IP), host),
    };
    let host_port = parse_port(host_port).map_err(|why| bad(&why))?;
    Ok(Publish {
        host: SocketAddr::new(ip, host_port),
        guest_port,
    })
}

fn parse_host_ip(text: &str) -> Result<IpAddr, String> {
    let parsed = match text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        Some(v6) => v6.parse().map(IpAddr::V6),
        None => text.parse().map(IpAddr::V4),
    };
    parsed.map_err(|_| format!("'{text}' is not an IP address"))
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("'{text}' is not a port from 1 to 65535")),
        Ok(port) => Ok(port),
    }
}

/// Parses `--ip ADDR/PREFIX`: a unicast IPv4 address that is not its
/// subnet's network or broadcast address, prefix 1 to 32.
pub fn parse_cidr(text: &str) -> Result<Cidr, String> {
    let bad = |why: &str| format!("'{text}' is not an address such as 10.0.2.15/24: {why}");
    let (addr, prefix) = text
        .split_once('/')
        .ok_or_else(|| bad("the /PREFIX is missing"))?;
    let addr = parse_unicast(addr).map_err(|why| bad(&why))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (1..=32).contains(p))
        .ok_or_else(|| bad("the prefix must be 1 to 32"))?;
    let host_bits = u32::from(addr) & !prefix_mask(prefix);
    if prefix <= 30 && (host_bits == 0 || host_bits == !prefix_mask(prefix)) {
        return Err(bad("that is the subnet's network or broadcast address"));
    }
    Ok(Cidr { addr, prefix })
}

/// Parses `--gateway ADDR`: a unicast IPv4 address.
pub fn parse_gateway(text: &str) -> Result<Ipv4Addr, String> {
    parse_unicast(text)
}

fn parse_unicast(text: &str) -> Result<Ipv4Addr, String> {
    let addr: Ipv4Addr = text
        .parse()
        .map_err(|_| format!("'{text}' is not an IPv4 address"))?;
    if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() || addr.is_loopback() {
        return Err(format!("{addr} cannot be a host's address"));
    }
    Ok(addr)
}

/// Parses `--mac`: six hex bytes separated by `:` or `-`, unicast, not zero.
pub fn parse_mac(text: &str) -> Result<Mac, String> {
    let bad = || format!("'{text}' is not a MAC address such as 52:54:00:12:34:56");
    let mut mac = [0u8; 6];
    let mut parts = text.split([':', '-']);
    for byte in &mut mac {
        let part = parts.next().filter(|p| p.len() == 2).ok_or_else(bad)?;
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    if mac[0] & 1 != 0 {
        return Err(format!("{} is a multicast MAC address", Mac(mac)));
    }
    if mac == [0; 6] {
        return Err("00:00:00:00:00:00 is not a MAC address a device can have".to_owned());
    }
    Ok(Mac(mac))
}

/// The user-mode gateway's MAC: locally administered, derived from its
/// address as QEMU's user network does (`52:55:0a:00:02:02`).
pub fn gateway_mac(gateway: Ipv4Addr) -> Mac {
    let [a, b, c, d] = gateway.octets();
    Mac([0x52, 0x55, a, b, c, d])
}

/// The network options of `flint run`, as given.
#[derive(Clone, Debug, Default)]
pub struct NetArgs {
    pub mode: Option<NetMode>,
    pub publish: Vec<Publish>,
    pub ip: Option<Cidr>,
    pub gateway: Option<Ipv4Addr>,
    pub mac: Option<Mac>,
}

/// Checks the options together and fills in the defaults.
pub fn resolve(args: NetArgs) -> Result<NetSetup, SpecError> {
    let mode = match args.mode {
        Some(mode) => mode,
        None if !args.publish.is_empty() => NetMode::User,
        None => NetMode::None,
    };
    match &mode {
        NetMode::User => {}
        NetMode::None if !args.publish.is_empty() => {
            return Err(SpecError::PublishWithoutUser("none".into()))
        }
        NetMode::Tap(name) if !args.publish.is_empty() => {
            return Err(SpecError::PublishWithoutUser(format!("tap:{name}")))
        }
        NetMode::None => {
            let given = [
                (args.ip.is_some(), "--ip"),
                (args.gateway.is_some(), "--gateway"),
                (args.mac.is_some(), "--mac"),
            ];
            if let Some((_, option)) = given.iter().find(|(given, _)| *given) {
                return Err(SpecError::NoDevice(option));
            }
            return Ok(NetSetup::None);
        }
        NetMode::Tap(_) => {}
    }
    for (i, publish) in args.publish.iter().enumerate() {
        if args.publish[..i].iter().any(|p| p.host == publish.host) {
            return Err(SpecError::DuplicatePublish(publish.host));
        }
    }
    let mac = args.mac.unwrap_or(DEFAULT_MAC);
    match mode {
        NetMode::Tap(name) => {
            let ip = args
                .ip
                .ok_or_else(|| SpecError::TapWithoutIp(name.clone()))?;
            if let Some(gateway) = args.gateway {
                check_gateway(ip, gateway)?;
            }
            let guest = Identity {
                mac,
                ip,
                gateway: args.gateway,
            };
            Ok(NetSetup::Tap { name, guest })
        }
        _ => {
            let ip = args.ip.unwrap_or(USER_GUEST_IP);
            let gateway = args.gateway.unwrap_or(USER_GATEWAY);
            check_gateway(ip, gateway)?;
            if mac == gateway_mac(gateway) {
                return Err(SpecError::MacIsGateway(mac));
            }
            let guest = Identity {
                mac,
                ip,
                gateway: Some(gateway),
            };
            Ok(NetSetup::User {
                guest,
                gateway,
                publish: args.publish,
            })
        }
    }
}

fn check_gateway(ip: Cidr, gateway: Ipv4Addr) -> Result<(), SpecError> {
    if gateway == ip.addr {
        return Err(SpecError::GatewayIsGuest(gateway));
    }
    if !ip.contains(gateway) {
        return Err(SpecError::GatewayOffSubnet { gateway, ip });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(text: &str) -> Publish {
        parse_publish(text).unwrap_or_else(|e| panic!("{text:?} refused: {e}"))
    }

    #[test]
    fn publish_specs_default_to_loopback() {
        assert_eq!(publish("8080:80").host, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(publish("8080:80").guest_port, 80);
        assert_eq!(publish("127.0.0.2:1:65535").host.to_string(), "127.0.0.2:1");
        assert_eq!(publish("0.0.0.0:8080:80").host.to_string(), "0.0.0.0:8080");
        assert_eq!(publish("[::1]:8080:7").host.to_string(), "[::1]:8080");
        assert_eq!(publish("[::1]:8080:7").guest_port, 7);
    }

    #[test]
    fn bad_publish_specs_are_refused() {
        for bad in [
            "",
            "80",
            ":80",
            "8080:",
            "8080:0",
            "0:80",
            "65536:80",
            "8080:80:",
            "x:8080:80",
            "::1:8080:80",
            "[::1:8080:80",
            "1.2.3:8080:80",
            "8080:80:90:100",
            "-1:80",
            "127.0.0.1:8080:80:1",
            " 8080:80",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn net_modes() {
        assert_eq!(parse_net_mode("none"), Ok(NetMode::None));
        assert_eq!(parse_net_mode("user"), Ok(NetMode::User));
        assert_eq!(parse_net_mode("tap:tap0"), Ok(NetMode::Tap("tap0".into())));
        for bad in [
            "",
            "tap",
            "tap:",
            "tap:a/b",
            "tap:sixteen-bytes-xy",
            "tap:a b",
            "TAP:x",
            "slirp",
        ] {
            assert!(parse_net_mode(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn addresses_and_macs() {
        assert_eq!(parse_cidr("10.0.2.15/24"), Ok(USER_GUEST_IP));
        assert_eq!(parse_cidr("192.0.2.1/32").map(|c| c.prefix), Ok(32));
        for bad in [
            "10.0.2.15",
            "10.0.2.15/0",
            "10.0.2.15/33",
            "10.0.2.0/24",
            "10.0.2.255/24",
            "0.0.0.0/8",
            "224.0.0.1/4",
            "127.0.0.1/8",
            "10.0.2/24",
            "10.0.2.15/x",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(parse_mac("52:54:00:12:34:56"), Ok(DEFAULT_MAC));
        assert_eq!(parse_mac("52-54-00-12-34-56"), Ok(DEFAULT_MAC));
        assert_eq!(DEFAULT_MAC.to_string(), "52:54:00:12:34:56");
        for bad in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "5:54:00:12:34:56",
            "zz:54:00:12:34:56",
            "525400123456",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(gateway_mac(USER_GATEWAY).to_string(), "52:55:0a:00:02:02");
    }

    fn args() -> NetArgs {
        NetArgs::default()
    }

    #[test]
    fn publish_implies_user_mode_with_documented_defaults() {
        let p = publish("8080:80");
        let setup = resolve(NetArgs {
            publish: vec![p],
            ..args()
        });
        let Ok(NetSetup::User {
            guest,
            gateway,
            publish,
        }) = setup
        else {
            panic!("{setup:?}");
        };
        assert_eq!(guest.ip, USER_GUEST_IP);
        assert_eq!(guest.mac, DEFAULT_MAC);
        assert_eq!(gateway, USER_GATEWAY);
        assert_eq!(publish, vec![p]);
        assert_eq!(resolve(args()), Ok(NetSetup::None));
    }

    #[test]
    fn impossible_combinations_are_refused() {
        let p = publish("8080:80");
        let tap = Some(NetMode::Tap("tap0".into()));
        let ip = parse_cidr("192.0.2.2/24").ok();
        let cases = [
            NetArgs {
                mode: Some(NetMode::None),
                publish: vec![p],
                ..args()
            },
            NetArgs {
                mode: tap.clone(),
                publish: vec![p],
                ip,
                ..args()
            },
            NetArgs {
                mode: tap.clone(),
                ..args()
            },
            NetArgs { ip, ..args() },
            NetArgs {
                mac: Some(DEFAULT_MAC),
                ..args()
            },
            NetArgs {
                mode: Some(NetMode::User),
                gateway: parse_gateway("10.0.3.2").ok(),
                ..args()
            },
            NetArgs {
                mode: Some(NetMode::User),
                gateway: parse_gateway("10.0.2.15").ok(),
                ..args()
            },
            NetArgs {
                mode: Some(NetMode::User),
                mac: Some(gateway_mac(USER_GATEWAY)),
                ..args()
            },
            NetArgs {
                publish: vec![p, publish("127.0.0.1:8080:81")],
                ..args()
            },
            NetArgs {
                mode: tap,
                ip,
                gateway: parse_gateway("192.0.3.1").ok(),
                ..args()
            },
        ];
        for case in cases {
            assert!(resolve(case.clone()).is_err(), "{case:?} was accepted");
        }
    }

    #[test]
    fn tap_takes_the_given_address() {
        let setup = resolve(NetArgs {
            mode: Some(NetMode::Tap("tap0".into())),
            ip: parse_cidr("192.0.2.2/24").ok(),
            ..args()
        });
        let Ok(NetSetup::Tap { name, guest }) = setup else {
            panic!("{setup:?}")
        };
        assert_eq!(name, "tap0");
        assert_eq!(guest.gateway, None);
        assert_eq!(guest.ip.to_string(), "192.0.2.2/24");
    }
}
