//! A TCP echo server: sends every byte back on the connection it came
//! from, for any number of connections at once. When a client closes its
//! side, the server finishes echoing and then closes too.
//!
//! Usage: `echo [PORT]` (default 7). Prints `echo: listening on ADDR:PORT`
//! once it accepts connections.
#![cfg_attr(target_os = "none", no_std)]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;

use guest_kernel::net::{self, TcpListener, TcpStream};
use guest_kernel::{println, Args};

guest_kernel::entry!(main);

/// Connections that may wait to be accepted.
const BACKLOG: usize = 64;
/// Bytes moved per read.
const CHUNK: usize = 4096;

fn main(args: Args) -> i32 {
    let port = match args.get(0).map(str::parse::<u16>) {
        None => 7,
        Some(Ok(port)) if port != 0 => port,
        Some(_) => {
            println!("echo: usage: echo [PORT], with PORT from 1 to 65535");
            return 2;
        }
    };
    let listener = match TcpListener::bind_with_backlog(port, BACKLOG) {
        Ok(listener) => listener,
        Err(e) => {
            println!("echo: cannot listen on port {port}: {e}");
            return 1;
        }
    };
    let addr = net::local_addr().unwrap_or(net::Ipv4Addr::UNSPECIFIED);
    println!("echo: listening on {addr}:{port}");

    let mut conns: Vec<Conn> = Vec::new();
    let mut buf = [0; CHUNK];
    loop {
        while let Some(stream) = listener.try_accept() {
            conns.push(Conn::new(stream));
        }
        conns.retain_mut(|conn| conn.step(&mut buf));
        // Every connection is blocked now: sleep until the network moves.
        net::wait(None);
    }
}

/// One client connection.
struct Conn {
    stream: TcpStream,
    /// Bytes read but not yet taken by the send buffer.
    pending: Vec<u8>,
    /// The client has closed its side.
    eof: bool,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            pending: Vec::new(),
            eof: false,
        }
    }

    /// Moves bytes until the connection would block. Returns false when
    /// it is done (echoed everything after the client's close, or
    /// failed); dropping it then closes it.
    fn step(&mut self, buf: &mut [u8]) -> bool {
        loop {
            if !self.pending.is_empty() {
                match self.stream.try_write(&self.pending) {
                    Ok(0) => return true,
                    Ok(n) => {
                        self.pending.drain(..n);
                        continue;
                    }
                    Err(_) => return false,
                }
            }
            if self.eof {
                return false;
            }
            match self.stream.try_read(buf) {
                Ok(Some(0)) => self.eof = true,
                Ok(Some(n)) => match self.stream.try_write(&buf[..n]) {
                    Ok(written) => self.pending.extend_from_slice(&buf[written..n]),
                    Err(_) => return false,
                },
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    }
}
