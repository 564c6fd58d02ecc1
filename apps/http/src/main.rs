//! An HTTP/1.1 server: `GET /` returns a small page, `GET /health`
//! returns `ok`, other paths 404, malformed requests 400 (then close).
//! Keep-alive, pipelining, HEAD and `Connection: close` are supported.
//!
//! One event loop serves every connection over non-blocking sockets, so
//! a slow client (a request trickling in) never holds up the others, and
//! a client that vanishes is dropped after [`IDLE_NS`] of silence.
//!
//! Usage: `http [PORT]` (default 80). Prints `http: listening on
//! ADDR:PORT` once it accepts connections.
#![cfg_attr(target_os = "none", no_std)]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;

use guest_kernel::net::{self, TcpBuffers, TcpListener, TcpStream};
use guest_kernel::{println, time, Args};
use http::{date, parse, respond, Parse, Response};

guest_kernel::entry!(main);

/// Connections that may wait to be accepted.
const BACKLOG: usize = 64;
/// Connections served at once; more wait in the backlog.
const MAX_CONNS: usize = 512;
/// A connection with no bytes in or out for this long is closed.
const IDLE_NS: u64 = 30_000_000_000;
/// Per-connection socket buffers: requests and responses are small.
const BUFFERS: TcpBuffers = TcpBuffers { rx: 4096, tx: 4096 };
/// Bytes read per call.
const CHUNK: usize = 2048;
/// Stop parsing pipelined requests while this much output waits.
const OUT_HIGH: usize = 16 << 10;

fn main(args: Args) -> i32 {
    let port = match args.get(0).map(str::parse::<u16>) {
        None => 80,
        Some(Ok(port)) if port != 0 => port,
        Some(_) => {
            println!("http: usage: http [PORT], with PORT from 1 to 65535");
            return 2;
        }
    };
    let listener = match TcpListener::bind_with(port, BACKLOG, BUFFERS) {
        Ok(listener) => listener,
        Err(e) => {
            println!("http: cannot listen on port {port}: {e}");
            return 1;
        }
    };
    let addr = net::local_addr().unwrap_or(net::Ipv4Addr::UNSPECIFIED);
    println!("http: listening on {addr}:{port}");

    let mut conns: Vec<Conn> = Vec::new();
    let mut clock = Clock::default();
    loop {
        let now = time::monotonic_ns();
        while conns.len() < MAX_CONNS {
            let Some(stream) = listener.try_accept() else {
                break;
            };
            conns.push(Conn::new(stream, now));
        }
        conns.retain_mut(|conn| conn.step(now, &mut clock));
        // Every connection is blocked: sleep until the network moves or
        // the first connection's idle time runs out.
        let idle_deadline = conns.iter().map(|c| c.last_active + IDLE_NS).min();
        net::wait(idle_deadline);
    }
}

/// The `Date` header's value, formatted once per second.
#[derive(Default)]
struct Clock {
    secs: u64,
    text: [u8; date::LEN],
}

impl Clock {
    fn date(&mut self) -> &[u8] {
        let secs = time::wall_ns() / 1_000_000_000;
        if secs != self.secs || self.text[0] == 0 {
            self.secs = secs;
            self.text = date::imf_fixdate(secs);
        }
        &self.text
    }
}

/// One client connection.
struct Conn {
    stream: TcpStream,
    /// Bytes received and not yet parsed.
    input: Vec<u8>,
    /// Response bytes not yet taken by the socket: `output[sent..]`.
    output: Vec<u8>,
    sent: usize,
    /// Request body bytes still to be skipped.
    skip: usize,
    /// Close once `output` is sent.
    closing: bool,
    /// The client has closed its side.
    eof: bool,
    last_active: u64,
}

impl Conn {
    fn new(stream: TcpStream, now: u64) -> Conn {
        Conn {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            sent: 0,
            skip: 0,
            closing: false,
            eof: false,
            last_active: now,
        }
    }

    /// Reads, answers and writes until the connection would block.
    /// Returns false when it is done; dropping it then closes it (queued
    /// responses still go out before the FIN).
    fn step(&mut self, now: u64, clock: &mut Clock) -> bool {
        loop {
            if self.sent < self.output.len() {
                match self.stream.try_write(&self.output[self.sent..]) {
                    Ok(0) => break,
                    Ok(n) => {
                        self.sent += n;
                        self.last_active = now;
                        continue;
                    }
                    Err(_) => return false,
                }
            }
            self.output.clear();
            self.sent = 0;
            if self.closing {
                return false;
            }
            if self.answer(clock) {
                continue;
            }
            if self.eof {
                // Everything the client sent before closing is answered.
                return false;
            }
            if !self.receive() {
                break;
            }
            self.last_active = now;
        }
        now.saturating_sub(self.last_active) < IDLE_NS
    }

    /// Answers requests waiting in `input` (while `output` is not too
    /// full). Returns true if it made progress.
    fn answer(&mut self, clock: &mut Clock) -> bool {
        let mut progress = false;
        while !self.closing && self.output.len() < OUT_HIGH {
            if self.skip > 0 {
                let n = self.skip.min(self.input.len());
                self.input.drain(..n);
                self.skip -= n;
                progress |= n > 0;
                if self.skip > 0 {
                    break;
                }
            }
            if self.input.is_empty() {
                break;
            }
            let (response, used, body) = match parse(&self.input) {
                Parse::Incomplete => break,
                Parse::Invalid => (Response::BAD_REQUEST, self.input.len(), 0),
                Parse::Complete(request, used) => (respond(&request), used, request.content_length),
            };
            let instance = guest_kernel::boot_info().instance_id;
            response.write_to(&mut self.output, clock.date(), instance);
            self.input.drain(..used);
            self.skip = body;
            self.closing = response.close;
            progress = true;
        }
        progress
    }

    /// Reads what has arrived into `input` (which [`parse`] keeps below
    /// [`http::request::HEAD_MAX`] plus one read: a longer head is a bad
    /// request).
    /// Returns false if nothing happened: no bytes, no close, no reset.
    fn receive(&mut self) -> bool {
        let start = self.input.len();
        self.input.resize(start + CHUNK, 0);
        let result = self.stream.try_read(&mut self.input[start..]);
        let n = match result {
            Ok(Some(0)) => {
                self.eof = true;
                0
            }
            Ok(Some(n)) => n,
            Ok(None) => 0,
            Err(_) => {
                // Reset: nothing more can be sent either.
                self.closing = true;
                self.output.clear();
                0
            }
        };
        self.input.truncate(start + n);
        n > 0 || self.eof || self.closing
    }
}
