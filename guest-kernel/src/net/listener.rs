//! TCP listeners.
//!
//! smoltcp has no listen queue: a listening socket *becomes* the
//! connection when a SYN arrives. A listener is therefore a list of
//! sockets on its port, `pending`: at least one idle socket in LISTEN (a
//! "spare"), plus connections being set up or waiting for `accept`, at
//! most `backlog` in all. After every incoming frame the stack puts a new
//! spare in place of one a SYN took ([`Stack::replenish_listeners`]), so a
//! burst of SYNs drained in one wake finds a socket for each, while an
//! idle listener holds only its one spare's buffers.

use alloc::vec;
use alloc::vec::Vec;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::{tcp, Socket};
use smoltcp::storage::RingBuffer;
use smoltcp::time::Duration;

use super::config::TcpBuffers;
use super::device::Link;
use super::global::{block_on, with_stack};
use super::stack::Stack;
use super::stream::TcpStream;
use super::{Error, Result};

/// Idle listening sockets kept per listener.
const SPARES: usize = 1;
/// The backlog of [`TcpListener::bind`].
pub const DEFAULT_BACKLOG: usize = 16;
/// A connection whose peer stops acknowledging data (or the handshake)
/// for this long is given up (reset).
const TIMEOUT: Duration = Duration::from_secs(60);

/// The stack's record of a listener.
pub(crate) struct Listener {
    port: u16,
    backlog: usize,
    buffers: TcpBuffers,
    /// Sockets on `port` not yet handed to the app, oldest first.
    pending: Vec<SocketHandle>,
}

impl Listener {
    /// The local port it listens on.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

/// A new TCP socket with `buffers`, Nagle off (the stack sends only when
/// the app waits or flushes, which batches small writes already) and the
/// connection timeout set.
pub(crate) fn new_tcp_socket(buffers: TcpBuffers) -> tcp::Socket<'static> {
    let buffers = buffers.clamped();
    let mut socket = tcp::Socket::new(
        RingBuffer::new(vec![0; buffers.rx]),
        RingBuffer::new(vec![0; buffers.tx]),
    );
    socket.set_nagle_enabled(false);
    socket.set_timeout(Some(TIMEOUT));
    socket
}

impl<L: Link> Stack<L> {
    /// Opens a listener on `port`; returns its index.
    pub(crate) fn tcp_listen(
        &mut self,
        port: u16,
        backlog: usize,
        buffers: TcpBuffers,
    ) -> Result<usize> {
        if port == 0 {
            return Err(Error::InvalidInput);
        }
        if self.tcp_port_in_use(port) {
            return Err(Error::AddrInUse);
        }
        let listener = Listener {
            port,
            backlog: backlog.max(SPARES + 1),
            buffers,
            pending: Vec::new(),
        };
        let id = match self.listeners.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.listeners.push(None);
                self.listeners.len() - 1
            }
        };
        self.listeners[id] = Some(listener);
        self.replenish(id);
        Ok(id)
    }

    /// Takes the oldest established connection of listener `id`, if any.
    pub(crate) fn tcp_accept(&mut self, id: usize) -> Option<SocketHandle> {
        let listener = self.listeners.get_mut(id)?.as_mut()?;
        let ready = listener.pending.iter().position(|&h| {
            let state = self.sockets.get::<tcp::Socket>(h).state();
            !matches!(
                state,
                tcp::State::Listen | tcp::State::SynReceived | tcp::State::Closed
            )
        });
        let handle = ready.map(|i| listener.pending.remove(i));
        self.replenish(id);
        handle
    }

    /// Closes listener `id`: idle sockets go, connections not accepted yet
    /// are reset.
    pub(crate) fn tcp_unlisten(&mut self, id: usize, now_ns: u64) {
        let Some(listener) = self.listeners.get_mut(id).and_then(Option::take) else {
            return;
        };
        for handle in listener.pending {
            let socket = self.sockets.get_mut::<tcp::Socket>(handle);
            if socket.state() == tcp::State::Listen {
                self.sockets.remove(handle);
            } else {
                socket.abort();
                self.orphan(handle, now_ns);
            }
        }
    }

    /// [`Stack::replenish`] for every listener.
    pub(crate) fn replenish_listeners(&mut self) {
        for id in 0..self.listeners.len() {
            self.replenish(id);
        }
    }

    /// Drops listener `id`'s connections that were reset before being
    /// accepted, drops duplicate half-open connections, and tops its
    /// spares up (within its backlog).
    fn replenish(&mut self, id: usize) {
        let Some(Some(listener)) = self.listeners.get_mut(id) else {
            return;
        };
        let sockets = &mut self.sockets;
        let mut spares = 0;
        let mut i = 0;
        while i < listener.pending.len() {
            let handle = listener.pending[i];
            let socket = sockets.get::<tcp::Socket>(handle);
            let state = socket.state();
            // A retransmitted SYN that a spare took although an older
            // socket (earlier in the socket set's order) already holds that
            // connection would make a second, confused one: forget the
            // newer socket before it answers.
            let duplicate = state == tcp::State::SynReceived
                && sockets.iter().any(|(other, any)| match any {
                    Socket::Tcp(s) => {
                        other != handle
                            && s.local_endpoint() == socket.local_endpoint()
                            && s.remote_endpoint() == socket.remote_endpoint()
                            // Older: accepted already, or before it in `pending`.
                            && !listener.pending[i..].contains(&other)
                    }
                    _ => false,
                });
            if state == tcp::State::Closed || duplicate {
                sockets.remove(handle);
                listener.pending.remove(i);
                continue;
            }
            spares += usize::from(state == tcp::State::Listen);
            i += 1;
        }
        while spares < SPARES && listener.pending.len() < listener.backlog {
            let mut socket = new_tcp_socket(listener.buffers);
            // Cannot fail: the port is not 0 and the socket is new.
            let _ = socket.listen(listener.port);
            listener.pending.push(sockets.add(socket));
            spares += 1;
        }
    }
}

/// A TCP socket listening for connections on one port of the guest's
/// address.
///
/// ```ignore
/// let listener = TcpListener::bind(7)?;
/// loop {
///     let mut stream = listener.accept(None)?;
///     // ...
/// }
/// ```
///
/// Dropping it stops listening; connections not yet accepted are reset.
#[derive(Debug)]
pub struct TcpListener {
    id: usize,
    port: u16,
}

impl TcpListener {
    /// Listens on `port` with a backlog of [`DEFAULT_BACKLOG`] and
    /// [`TcpBuffers::DEFAULT`] buffers.
    pub fn bind(port: u16) -> Result<TcpListener> {
        TcpListener::bind_with(port, DEFAULT_BACKLOG, TcpBuffers::DEFAULT)
    }

    /// Listens on `port`, holding up to `backlog` connections that are
    /// being set up or waiting for [`accept`](Self::accept) (at least 2).
    /// A SYN that finds the backlog full is answered with a reset.
    pub fn bind_with_backlog(port: u16, backlog: usize) -> Result<TcpListener> {
        TcpListener::bind_with(port, backlog, TcpBuffers::DEFAULT)
    }

    /// Listens on `port` with `backlog` and per-connection `buffers`.
    pub fn bind_with(port: u16, backlog: usize, buffers: TcpBuffers) -> Result<TcpListener> {
        let id = with_stack(|stack| stack.tcp_listen(port, backlog, buffers))??;
        Ok(TcpListener { id, port })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The next established connection, without waiting. The network
    /// only moves while the app is in [`super::wait`] (or a blocking
    /// call), so an event loop calls this after each wait.
    pub fn try_accept(&self) -> Option<TcpStream> {
        with_stack(|stack| {
            stack
                .tcp_accept(self.id)
                .map(|h| TcpStream::adopt(stack, h))
        })
        .ok()
        .flatten()
    }

    /// Waits for the next connection until `deadline` (instance-clock ns;
    /// `None`: forever). Fails with [`Error::TimedOut`] at the deadline.
    pub fn accept(&self, deadline: Option<u64>) -> Result<TcpStream> {
        block_on(deadline, || Ok(self.try_accept()))
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        let now = crate::time::monotonic_ns();
        let _ = with_stack(|stack| stack.tcp_unlisten(self.id, now));
    }
}
