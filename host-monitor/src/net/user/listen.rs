//! The `--publish` listening sockets: bound alone for one instance, or
//! with SO_REUSEPORT for a fleet, whose worker processes then share each
//! address (which `std::net::TcpListener::bind` cannot do).

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The listening sockets' backlog, as `std` uses.
const BACKLOG: libc::c_int = 128;

/// How the listeners bind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bind {
    /// Alone: a second monitor on the same address fails to start.
    Exclusive,
    /// SO_REUSEPORT: every worker process of a fleet listens on the same
    /// address and the kernel spreads the connections among them.
    Shared,
}

/// A listening socket on `addr`.
pub fn listen(addr: SocketAddr, bind: Bind) -> std::io::Result<TcpListener> {
    if bind == Bind::Exclusive {
        return TcpListener::bind(addr);
    }
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket(2) has no memory preconditions; the result is checked
    // before it is owned.
    let raw = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    for option in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        let one: libc::c_int = 1;
        // SAFETY: the option takes a c_int of the given size; the fd is open.
        let ret = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if ret < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let ret = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sin` is a sockaddr_in of the given size, on the stack.
            unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sin as *const libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: `sin6` is a sockaddr_in6 of the given size, on the stack.
            unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sin6 as *const libc::sockaddr_in6).cast(),
                    size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: listen(2) on an open, bound socket.
    if unsafe { libc::listen(fd.as_raw_fd(), BACKLOG) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(TcpListener::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_listeners_share_an_address_and_exclusive_ones_do_not() {
        let first = listen("127.0.0.1:0".parse().expect("addr"), Bind::Shared).expect("bind");
        let addr = first.local_addr().expect("addr");
        let second = listen(addr, Bind::Shared).expect("a second shared bind");
        assert_eq!(second.local_addr().expect("addr"), addr);
        assert!(listen(addr, Bind::Exclusive).is_err());
        let v6 = listen("[::1]:0".parse().expect("addr"), Bind::Shared);
        // Hosts without IPv6 loopback cannot bind it at all.
        if let Ok(v6) = v6 {
            assert!(v6.local_addr().expect("addr").is_ipv6());
        }
    }
}
