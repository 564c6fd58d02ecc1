//! TCP connections.
//!
//! The `try_*` calls only move bytes between the app and the socket
//! buffers; frames go out and come in while the app is in
//! [`super::wait`], a blocking call, [`super::poll`] or
//! [`TcpStream::flush`]. An event loop's writes to many connections thus
//! leave together, with as few NET_WRITE exits as the segments need.

use core::net::Ipv4Addr;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::IpAddress;

use super::config::TcpBuffers;
use super::device::Link;
use super::global::{block_on, with_stack};
use super::listener::new_tcp_socket;
use super::stack::Stack;
use super::{Error, Result};

/// The IPv4 address in a smoltcp address (IPv4 is the only kind built).
fn ipv4(addr: IpAddress) -> Ipv4Addr {
    match addr {
        IpAddress::Ipv4(a) => a,
    }
}

impl<L: Link> Stack<L> {
    fn tcp(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(handle)
    }

    /// Starts connecting to `addr:port` from a free local port.
    pub(crate) fn tcp_connect(
        &mut self,
        addr: Ipv4Addr,
        port: u16,
        buffers: TcpBuffers,
    ) -> Result<SocketHandle> {
        if port == 0 || addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() {
            return Err(Error::InvalidInput);
        }
        let local = self.ephemeral_port(true)?;
        let mut socket = new_tcp_socket(buffers);
        socket
            .connect(self.iface.context(), (IpAddress::Ipv4(addr), port), local)
            .map_err(|_| Error::Unreachable)?;
        Ok(self.sockets.add(socket))
    }

    /// Whether a connection started by [`Stack::tcp_connect`] is up.
    pub(crate) fn tcp_connected(&mut self, handle: SocketHandle) -> Result<bool> {
        match self.tcp(handle).state() {
            tcp::State::SynSent | tcp::State::SynReceived => Ok(false),
            tcp::State::Closed => Err(Error::ConnectionRefused),
            _ => Ok(true),
        }
    }

    /// Reads what has arrived: `Some(n)` bytes, `Some(0)` once the peer
    /// has closed its side and everything was read, `None` if nothing is
    /// there yet.
    pub(crate) fn tcp_recv(
        &mut self,
        handle: SocketHandle,
        buf: &mut [u8],
    ) -> Result<Option<usize>> {
        let socket = self.tcp(handle);
        match socket.recv_slice(buf) {
            Ok(0) if !buf.is_empty() => Ok(None),
            Ok(n) => Ok(Some(n)),
            Err(tcp::RecvError::Finished) => Ok(Some(0)),
            Err(tcp::RecvError::InvalidState) => match socket.state() {
                tcp::State::SynSent | tcp::State::SynReceived => Ok(None),
                _ => Err(Error::ConnectionReset),
            },
        }
    }

    /// Queues as much of `data` as fits; 0 if the send buffer is full.
    pub(crate) fn tcp_send(&mut self, handle: SocketHandle, data: &[u8]) -> Result<usize> {
        let socket = self.tcp(handle);
        match socket.send_slice(data) {
            Ok(n) => Ok(n),
            Err(tcp::SendError::InvalidState) => Err(match socket.state() {
                tcp::State::Closed => Error::ConnectionReset,
                _ => Error::Closed,
            }),
        }
    }

    /// Bytes queued but not yet acknowledged by the peer.
    pub(crate) fn tcp_unacked(&mut self, handle: SocketHandle) -> usize {
        let socket = self.tcp(handle);
        if socket.state() == tcp::State::Closed {
            0
        } else {
            socket.send_queue()
        }
    }
}

/// A TCP connection, from [`super::TcpListener::accept`] or
/// [`TcpStream::connect`].
///
/// Dropping it is [`close`](Self::close): queued data still goes out,
/// then a FIN, and the stack keeps the socket until the peer has
/// answered (or for at most 30 s), so the app can forget it at once.
#[derive(Debug)]
pub struct TcpStream {
    handle: Option<SocketHandle>,
    peer: (Ipv4Addr, u16),
}

impl TcpStream {
    /// Wraps an established socket of `stack`.
    pub(crate) fn adopt<L: Link>(stack: &mut Stack<L>, handle: SocketHandle) -> TcpStream {
        let peer = stack
            .tcp(handle)
            .remote_endpoint()
            .map_or((Ipv4Addr::UNSPECIFIED, 0), |e| (ipv4(e.addr), e.port));
        TcpStream {
            handle: Some(handle),
            peer,
        }
    }

    /// Connects to `addr:port`, waiting until `deadline` (instance-clock
    /// ns; `None`: forever) for the handshake.
    pub fn connect(addr: Ipv4Addr, port: u16, deadline: Option<u64>) -> Result<TcpStream> {
        TcpStream::connect_with(addr, port, TcpBuffers::DEFAULT, deadline)
    }

    /// [`connect`](Self::connect) with the given buffer sizes.
    pub fn connect_with(
        addr: Ipv4Addr,
        port: u16,
        buffers: TcpBuffers,
        deadline: Option<u64>,
    ) -> Result<TcpStream> {
        let handle = with_stack(|stack| stack.tcp_connect(addr, port, buffers))??;
        // From here the stream owns the socket: an error drops (closes) it.
        let stream = TcpStream {
            handle: Some(handle),
            peer: (addr, port),
        };
        block_on(deadline, || {
            with_stack(|stack| stack.tcp_connected(handle))?.map(|up| up.then_some(()))
        })?;
        Ok(stream)
    }

    /// Runs `f` on the stack with this stream's socket.
    fn with<R>(
        &self,
        f: impl FnOnce(&mut Stack<super::global::VmLink>, SocketHandle) -> Result<R>,
    ) -> Result<R> {
        let handle = self.handle.ok_or(Error::Closed)?;
        with_stack(|stack| f(stack, handle))?
    }

    /// The peer's address and port.
    pub fn peer(&self) -> (Ipv4Addr, u16) {
        self.peer
    }

    /// Reads what has arrived into `buf`, without waiting: `Some(n)`
    /// bytes, `Some(0)` when the peer has closed its side and everything
    /// was read (or `buf` is empty), `None` if nothing is there yet. Fails
    /// with [`Error::ConnectionReset`] if the connection was reset.
    pub fn try_read(&mut self, buf: &mut [u8]) -> Result<Option<usize>> {
        self.with(|stack, h| stack.tcp_recv(h, buf))
    }

    /// Reads into `buf`, waiting until `deadline` for data: the number of
    /// bytes read, 0 once the peer has closed its side.
    pub fn read(&mut self, buf: &mut [u8], deadline: Option<u64>) -> Result<usize> {
        block_on(deadline, || self.try_read(buf))
    }

    /// Queues as much of `data` as the send buffer takes, without waiting;
    /// returns how much (0: the buffer is full, try after a wait). It goes
    /// out at the next [`super::wait`], blocking call or flush.
    pub fn try_write(&mut self, data: &[u8]) -> Result<usize> {
        self.with(|stack, h| stack.tcp_send(h, data))
    }

    /// Queues all of `data`, waiting until `deadline` whenever the send
    /// buffer is full, then sends what it can now.
    pub fn write_all(&mut self, mut data: &[u8], deadline: Option<u64>) -> Result<()> {
        while !data.is_empty() {
            let n = block_on(deadline, || {
                self.try_write(data).map(|n| (n > 0).then_some(n))
            })?;
            data = &data[n..];
        }
        super::poll();
        Ok(())
    }

    /// Sends everything queued and waits until `deadline` for the peer to
    /// acknowledge it.
    pub fn flush(&mut self, deadline: Option<u64>) -> Result<()> {
        block_on(deadline, || {
            self.with(|stack, h| Ok((stack.tcp_unacked(h) == 0).then_some(())))
        })
    }

    /// Closes the sending side: a FIN follows the queued data. Reading
    /// goes on until the peer closes its side.
    pub fn shutdown_write(&mut self) {
        let _ = self.with(|stack, h| {
            stack.tcp(h).close();
            Ok(())
        });
    }

    /// True once the connection is over: reset, timed out, or closed by
    /// both sides.
    pub fn is_closed(&self) -> bool {
        self.with(|stack, h| {
            let socket = stack.tcp(h);
            Ok(
                matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait)
                    || (!socket.may_recv() && !socket.may_send()),
            )
        })
        .unwrap_or(true)
    }

    /// Closes the connection gracefully (queued data, then FIN); the stack
    /// finishes the close on its own. Same as dropping it.
    pub fn close(self) {}

    /// Resets the connection at once (RST), dropping queued data: for a
    /// peer that is not worth a graceful close.
    pub fn abort(mut self) {
        if let Some(handle) = self.handle {
            let _ = with_stack(|stack| stack.tcp(handle).abort());
        }
        self.release();
    }

    /// Hands the socket to the stack to finish closing.
    fn release(&mut self) {
        if let Some(handle) = self.handle.take() {
            let now = crate::time::monotonic_ns();
            let _ = with_stack(|stack| stack.orphan(handle, now));
        }
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        self.release();
    }
}
