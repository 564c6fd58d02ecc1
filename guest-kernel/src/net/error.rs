//! The error type of every fallible network call.

use core::fmt;

/// What went wrong in a network call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The instance has no network device (`flint run` without `--net` or
    /// `--publish`), or its configuration is unusable.
    NoDevice,
    /// The deadline passed before the call could complete.
    TimedOut,
    /// The remote host answered a connection attempt with a reset.
    ConnectionRefused,
    /// The connection was reset by the peer, or given up after the peer
    /// stopped acknowledging data.
    ConnectionReset,
    /// The port is already bound by another listener or socket.
    AddrInUse,
    /// This side already shut the connection (or socket) down.
    Closed,
    /// An argument is unusable: port 0 where one is needed, an unspecified
    /// address, a datagram larger than the socket's buffer.
    InvalidInput,
    /// No route to the address (no gateway configured for it).
    Unreachable,
    /// No free local port is left for an outgoing connection.
    Exhausted,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::NoDevice => "no network device",
            Error::TimedOut => "timed out",
            Error::ConnectionRefused => "connection refused",
            Error::ConnectionReset => "connection reset",
            Error::AddrInUse => "address in use",
            Error::Closed => "socket closed",
            Error::InvalidInput => "invalid argument",
            Error::Unreachable => "network unreachable",
            Error::Exhausted => "no free local port",
        })
    }
}

impl core::error::Error for Error {}

/// The result of a network call.
pub type Result<T> = core::result::Result<T, Error>;
