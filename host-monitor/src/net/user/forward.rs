//! One `--publish`ed connection: a host TCP stream on one side, a
//! host-side smoltcp socket connected to the guest on the other, and the
//! pump that carries bytes between them.
//!
//! - Backpressure: bytes are read from the host only into free room of the
//!   smoltcp send buffer (which empties as the guest ACKs), and taken from
//!   the smoltcp receive buffer only as fast as the host stream accepts
//!   them (so the window advertised to the guest closes when the host
//!   client stops reading).
//! - Half-close: host EOF → `close()` (FIN to the guest once the buffered
//!   bytes are sent); guest FIN → `shutdown(Write)` on the host stream once
//!   the guest's bytes are all written.
//! - Resets: guest RST (or the stack giving up) → the host stream is
//!   closed with SO_LINGER 0, so the client sees a reset too; host
//!   ECONNRESET/EPIPE → `abort()`, an RST to the guest.
//! - A guest that refuses the SYN (no listener yet, backlog full) is asked
//!   again for a short while before the client is reset.

use crate::poller::{Interest, Ready};
use smoltcp::socket::tcp::{self, RecvError, State};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// How long a refused connection is retried.
pub const REFUSED_RETRY_FOR: Duration = Duration::from_secs(2);
/// The first pause before a retry; it doubles up to [`RETRY_PAUSE_MAX`].
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(10);
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(200);
/// How long the guest may leave a SYN unanswered (no ARP reply, no
/// SYN-ACK, no RST) before the client is reset.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// SYN sent to the guest.
    Connecting,
    /// The guest refused; ask again at this instant.
    Retry(Instant),
    /// Carrying bytes.
    Open,
    /// The smoltcp socket was aborted: keep it until the stack has sent its
    /// RST, then remove.
    Dying,
}

/// What the owner must do with a connection after a pump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Connect the socket to the guest again, from a fresh port.
    Reconnect,
    Remove,
}

/// One forwarded connection.
pub struct Conn {
    pub stream: TcpStream,
    pub handle: smoltcp::iface::SocketHandle,
    pub local_port: u16,
    /// The guest it goes to.
    pub guest_ip: Ipv4Addr,
    pub guest_port: u16,
    phase: Phase,
    retry_until: Instant,
    connect_deadline: Instant,
    pause: Duration,
    /// The host sent FIN; the smoltcp socket was closed.
    host_eof: bool,
    /// The guest sent FIN; the host stream's write half was shut down.
    guest_fin: bool,
    /// epoll said the host stream has bytes (or EOF) to read.
    readable: bool,
    /// The last write to the host stream would have blocked.
    write_blocked: bool,
    /// An error or hang-up was seen where no read will tell of it.
    hangup: bool,
    /// The host stream failed (ECONNRESET and the like).
    failed: bool,
    /// Close the host stream with a reset rather than a FIN.
    pub reset_host: bool,
    /// What the stream is registered for in epoll (`None`: not at all).
    pub registered: Option<Interest>,
    /// The pump did something the stack must act on (bytes moved, a FIN
    /// or RST to send).
    pub stirred: bool,
}

impl Conn {
    /// A connection accepted `now`, whose socket has just been connected.
    pub fn new(
        stream: TcpStream,
        handle: smoltcp::iface::SocketHandle,
        local_port: u16,
        (guest_ip, guest_port): (Ipv4Addr, u16),
        now: Instant,
    ) -> Conn {
        Conn {
            stream,
            handle,
            local_port,
            guest_ip,
            guest_port,
            phase: Phase::Connecting,
            retry_until: now + REFUSED_RETRY_FOR,
            connect_deadline: now + CONNECT_TIMEOUT,
            pause: RETRY_PAUSE_MIN,
            host_eof: false,
            guest_fin: false,
            readable: false,
            write_blocked: false,
            hangup: false,
            failed: false,
            reset_host: false,
            registered: None,
            stirred: false,
        }
    }

    /// The socket was connected again after a refusal.
    pub fn reconnected(&mut self, local_port: u16) {
        self.local_port = local_port;
        self.phase = Phase::Connecting;
    }

    /// The guest is gone: the next pump resets both sides.
    pub fn fail(&mut self) {
        self.failed = true;
    }

    /// Notes what epoll said about the host stream. Nothing else happens
    /// here: the pump acts on it.
    pub fn on_ready(&mut self, ready: &Ready) {
        if ready.error {
            // The pending error (e.g. ECONNRESET) is what a read would say.
            if !matches!(self.stream.take_error(), Ok(None)) {
                self.failed = true;
            }
        }
        if ready.readable {
            self.readable = true;
        }
        if ready.writable {
            self.write_blocked = false;
        }
        if ready.hangup {
            // A hang-up stays reported for as long as the fd is watched;
            // the next read or write tells what it means (EOF or an
            // error), and `wanted` stops watching once neither is due.
            self.hangup = true;
            self.readable = true;
            self.write_blocked = false;
        }
    }

    /// When the pump must run again by itself.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Connecting => Some(self.connect_deadline),
            Phase::Retry(at) => Some(at),
            Phase::Open | Phase::Dying => None,
        }
    }

    /// True if the socket was aborted and is waiting for its RST to go.
    pub fn dying(&self) -> bool {
        self.phase == Phase::Dying
    }

    /// What the stream should be waited for now; `None`: nothing at all
    /// (after a hang-up, when neither a read nor a write is due).
    pub fn wanted(&self, sock: &tcp::Socket) -> Option<Interest> {
        let read = self.phase == Phase::Open && !self.host_eof && sock.can_send();
        let write = self.write_blocked;
        if self.hangup && !read && !write {
            return None;
        }
        Some(Interest { read, write })
    }

    /// Moves what can be moved and decides what happens next.
    pub fn pump(&mut self, sock: &mut tcp::Socket, now: Instant) -> Verdict {
        if self.phase == Phase::Dying {
            return Verdict::Remove;
        }
        if self.failed {
            return self.abort(sock);
        }
        match self.phase {
            Phase::Dying => return Verdict::Remove,
            Phase::Retry(at) => {
                return if now >= at {
                    Verdict::Reconnect
                } else {
                    Verdict::Keep
                };
            }
            Phase::Connecting => match sock.state() {
                State::Closed if now < self.retry_until => {
                    // Refused (RST to our SYN): the app may not listen yet.
                    self.phase = Phase::Retry(now + self.pause);
                    self.pause = (self.pause * 2).min(RETRY_PAUSE_MAX);
                    return Verdict::Keep;
                }
                // Refused for too long, the client left before the guest
                // answered, or the guest never answered: reset the client.
                State::Closed => return self.abort(sock),
                State::SynSent | State::SynReceived
                    if self.hangup || now >= self.connect_deadline =>
                {
                    return self.abort(sock);
                }
                State::SynSent | State::SynReceived => return Verdict::Keep,
                _ => {
                    self.phase = Phase::Open;
                    // Keep-alive's job from here on: a guest that stops
                    // ACKing data for this long is gone.
                    sock.set_timeout(Some(smoltcp::time::Duration::from_secs(60)));
                }
            },
            Phase::Open => {}
        }
        if self.guest_to_host(sock).is_err() || self.host_to_guest(sock).is_err() {
            return self.abort(sock);
        }
        self.settle(sock)
    }

    /// Guest → host: drains the socket's receive buffer into the stream.
    fn guest_to_host(&mut self, sock: &mut tcp::Socket) -> io::Result<()> {
        while !self.write_blocked && !self.guest_fin {
            let stream = &mut self.stream;
            let wrote = sock.recv(|data| {
                if data.is_empty() {
                    return (0, Ok(0));
                }
                match stream.write(data) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                }
            });
            match wrote {
                Ok(Ok(0)) => break,
                Ok(Ok(_)) => self.stirred = true,
                Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => self.write_blocked = true,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(RecvError::Finished) => {
                    // Every byte before the guest's FIN is written.
                    let _ = self.stream.shutdown(Shutdown::Write);
                    self.guest_fin = true;
                    self.stirred = true;
                }
                Err(RecvError::InvalidState) => break,
            }
        }
        Ok(())
    }

    /// Host → guest: reads the stream into the socket's free send room.
    fn host_to_guest(&mut self, sock: &mut tcp::Socket) -> io::Result<()> {
        enum Got {
            NoRoom,
            Bytes { filled: bool },
            Eof,
            Failed(io::Error),
        }
        while self.readable && !self.host_eof && sock.may_send() {
            let stream = &mut self.stream;
            let got = sock.send(|room| {
                if room.is_empty() {
                    return (0, Got::NoRoom);
                }
                match stream.read(room) {
                    Ok(0) => (0, Got::Eof),
                    Ok(n) => (
                        n,
                        Got::Bytes {
                            filled: n == room.len(),
                        },
                    ),
                    Err(e) => (0, Got::Failed(e)),
                }
            });
            match got {
                Ok(Got::NoRoom) | Err(_) => break,
                Ok(Got::Bytes { filled }) => {
                    self.stirred = true;
                    // A short read drained the stream; epoll says when
                    // there is more.
                    self.readable = filled;
                }
                Ok(Got::Eof) => {
                    self.host_eof = true;
                    self.readable = false;
                    sock.close();
                    self.stirred = true;
                }
                Ok(Got::Failed(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                }
                Ok(Got::Failed(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Got::Failed(e)) => return Err(e),
            }
        }
        Ok(())
    }

    /// After the bytes moved: is the connection over, and how?
    fn settle(&mut self, sock: &mut tcp::Socket) -> Verdict {
        match sock.state() {
            // Bytes the guest sent before closing are still on their way
            // to the host.
            State::Closed | State::TimeWait if sock.can_recv() => Verdict::Keep,
            State::Closed | State::TimeWait if self.host_eof && self.guest_fin => Verdict::Remove,
            State::TimeWait => Verdict::Keep,
            State::Closed => {
                // Neither side closed it cleanly: the guest reset it, or
                // stopped answering and the stack gave up.
                self.reset_host = true;
                Verdict::Remove
            }
            _ => Verdict::Keep,
        }
    }

    /// One side failed: reset the other.
    fn abort(&mut self, sock: &mut tcp::Socket) -> Verdict {
        sock.abort();
        self.reset_host = true;
        self.phase = Phase::Dying;
        self.stirred = true;
        Verdict::Keep
    }
}

/// Closes `stream` so that its peer sees a reset, not an orderly FIN.
pub fn close_with_reset(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: SO_LINGER takes a `linger` of the given size; the fd is open.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(stream);
}
