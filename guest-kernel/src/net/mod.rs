//! Networking: TCP and UDP over the instance's network device, with
//! smoltcp as the TCP/IP stack.
//!
//! The device is the NET_READ / NET_WRITE hypercalls (ABI.md section 4);
//! the interface's MAC, IPv4 address, prefix, default gateway and MTU come
//! from `BootInfo.net`. There are no interrupts: the stack runs only
//! inside calls into this module. Every blocking call, and [`wait`], runs
//! it and, when nothing is to be done, sleeps in the POLL hypercall until
//! a frame arrives or smoltcp's next timer (or the caller's deadline) is
//! due, so an idle guest costs the host no CPU.
//!
//! Deadlines are instance-clock nanoseconds ([`crate::time::monotonic_ns`]);
//! `None` waits forever. [`deadline_in`] makes one.
//!
//! Two ways to use it:
//!
//! - **Blocking**, one connection at a time: [`TcpListener::accept`],
//!   [`TcpStream::read`], [`TcpStream::write_all`],
//!   [`UdpSocket::recv_from`].
//! - **Event loop**, many connections: call the `try_*` methods of every
//!   socket until all would block, then [`wait`] and go round again.
//!
//! ```ignore
//! let listener = TcpListener::bind_with_backlog(7, 64)?;
//! let mut conns = Vec::new();
//! loop {
//!     while let Some(stream) = listener.try_accept() {
//!         conns.push(stream);
//!     }
//!     // ... try_read / try_write on each connection ...
//!     net::wait(None);
//! }
//! ```
//!
//! Exits are expensive, so the stack reads frames only after POLL said one
//! is waiting, drains all of them per wake, and sends queued data only
//! when the app waits (or a blocking call returns), so writes to many
//! connections go out together.
//!
//! Memory: each TCP connection holds its two buffers ([`TcpBuffers`], 16
//! KiB by default) and a listener holds one idle listening socket, plus
//! one per connection waiting to be accepted.

mod config;
mod device;
mod error;
mod global;
mod listener;
mod stack;
mod stream;
mod udp;

#[cfg(test)]
mod tests;

pub use core::net::Ipv4Addr;

pub use config::{Config, TcpBuffers, UdpBuffers};
pub use device::Stats;
pub use error::{Error, Result};
pub use listener::{TcpListener, DEFAULT_BACKLOG};
pub use stream::TcpStream;
pub use udp::UdpSocket;

/// True if the instance has a usable network device (`flint run` with
/// `--net` or `--publish`).
pub fn is_present() -> bool {
    config().is_ok()
}

/// The network identity the monitor gave this instance.
pub fn config() -> Result<Config> {
    Config::from_boot(&crate::boot_info().net)
}

/// The guest's own IPv4 address, if it has a network device.
pub fn local_addr() -> Option<Ipv4Addr> {
    config().ok().map(|c| c.ipv4)
}

/// The deadline `ns` nanoseconds from now, for the calls that take one.
pub fn deadline_in(ns: u64) -> Option<u64> {
    Some(crate::time::monotonic_ns().saturating_add(ns))
}

/// Runs the network until a socket may have changed or `deadline` passes:
/// takes in waiting frames, sends what the sockets queued, and if that
/// changed nothing, sleeps in POLL until a frame arrives, smoltcp's next
/// timer is due, or `deadline`. An event loop calls this when every
/// `try_*` call would block; it may return early (then look again).
/// Without a network device it only sleeps until `deadline`.
pub fn wait(deadline: Option<u64>) {
    global::wait(deadline);
}

/// Runs the network once without sleeping: takes in the frames POLL said
/// are waiting and sends what the sockets queued. Returns true if a
/// socket may have changed.
pub fn poll() -> bool {
    global::poll()
}

/// The device's frame counters (zero before the first network call).
pub fn stats() -> Stats {
    global::with_stack(|stack| stack.device.stats).unwrap_or_default()
}
