//! UDP sockets.

use alloc::vec;
use core::net::Ipv4Addr;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;
use smoltcp::wire::IpAddress;

use super::config::UdpBuffers;
use super::device::Link;
use super::global::{block_on, with_stack};
use super::stack::Stack;
use super::{Error, Result};

/// A datagram's payload length and sender.
type Received = (usize, Ipv4Addr, u16);

impl<L: Link> Stack<L> {
    /// Opens a UDP socket on `port` (0: a free ephemeral port); returns
    /// its handle and port.
    pub(crate) fn udp_bind(
        &mut self,
        port: u16,
        buffers: UdpBuffers,
    ) -> Result<(SocketHandle, u16)> {
        let port = match port {
            0 => self.ephemeral_port(false)?,
            port if self.udp_port_in_use(port) => return Err(Error::AddrInUse),
            port => port,
        };
        let packets = buffers.packets.max(1);
        let bytes = buffers.bytes.max(1);
        let buffer =
            || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; packets], vec![0; bytes]);
        let mut socket = udp::Socket::new(buffer(), buffer());
        socket.bind(port).map_err(|_| Error::InvalidInput)?;
        Ok((self.sockets.add(socket), port))
    }

    /// Queues one datagram; `Ok(false)` if the queue is full.
    pub(crate) fn udp_send(
        &mut self,
        handle: SocketHandle,
        data: &[u8],
        addr: Ipv4Addr,
        port: u16,
    ) -> Result<bool> {
        if port == 0 || addr.is_unspecified() {
            return Err(Error::InvalidInput);
        }
        let socket = self.sockets.get_mut::<udp::Socket>(handle);
        if data.len() > socket.payload_send_capacity() {
            return Err(Error::InvalidInput);
        }
        match socket.send_slice(data, (IpAddress::Ipv4(addr), port)) {
            Ok(()) => Ok(true),
            Err(udp::SendError::BufferFull) => Ok(false),
            Err(udp::SendError::Unaddressable) => Err(Error::Unreachable),
        }
    }

    /// Takes one datagram into `buf` (cut to its length), if one came.
    pub(crate) fn udp_recv(&mut self, handle: SocketHandle, buf: &mut [u8]) -> Option<Received> {
        let socket = self.sockets.get_mut::<udp::Socket>(handle);
        let (payload, meta) = socket.recv().ok()?;
        let n = payload.len().min(buf.len());
        buf[..n].copy_from_slice(&payload[..n]);
        let IpAddress::Ipv4(addr) = meta.endpoint.addr;
        Some((n, addr, meta.endpoint.port))
    }
}

/// A UDP socket bound to one local port.
///
/// Dropping it closes it; datagrams still queued are lost.
#[derive(Debug)]
pub struct UdpSocket {
    handle: SocketHandle,
    port: u16,
}

impl UdpSocket {
    /// Binds `port` (0: a free ephemeral port) with
    /// [`UdpBuffers::DEFAULT`] queues.
    pub fn bind(port: u16) -> Result<UdpSocket> {
        UdpSocket::bind_with(port, UdpBuffers::DEFAULT)
    }

    /// Binds `port` with the given queue sizes.
    pub fn bind_with(port: u16, buffers: UdpBuffers) -> Result<UdpSocket> {
        let (handle, port) = with_stack(|stack| stack.udp_bind(port, buffers))??;
        Ok(UdpSocket { handle, port })
    }

    /// The local port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Queues one datagram for `addr:port` without waiting; `Ok(false)` if
    /// the send queue is full. It goes out at the next [`super::wait`] or
    /// blocking call. Fails with [`Error::InvalidInput`] if it is larger
    /// than the queue.
    pub fn try_send_to(&self, data: &[u8], addr: Ipv4Addr, port: u16) -> Result<bool> {
        with_stack(|stack| stack.udp_send(self.handle, data, addr, port))?
    }

    /// Sends one datagram to `addr:port`, waiting while the send queue is
    /// full; returns its length.
    pub fn send_to(&self, data: &[u8], addr: Ipv4Addr, port: u16) -> Result<usize> {
        block_on(None, || {
            Ok(self.try_send_to(data, addr, port)?.then_some(data.len()))
        })?;
        super::poll();
        Ok(data.len())
    }

    /// Takes one received datagram into `buf` without waiting: its length
    /// (cut to `buf`'s) and sender, or `None`.
    pub fn try_recv_from(&self, buf: &mut [u8]) -> Result<Option<Received>> {
        with_stack(|stack| stack.udp_recv(self.handle, buf))
    }

    /// Waits until `deadline` for a datagram and takes it into `buf`: its
    /// length (cut to `buf`'s) and sender.
    pub fn recv_from(&self, buf: &mut [u8], deadline: Option<u64>) -> Result<Received> {
        block_on(deadline, || self.try_recv_from(buf))
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        let _ = with_stack(|stack| stack.sockets.remove(self.handle));
    }
}
