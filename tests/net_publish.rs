//! `--publish` itself: several at once, host addresses within 127.0.0.0/8,
//! the 127.0.0.1 default, and a published guest port nobody listens on.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::net::{free_port, Conn};
use support::{image, kvm_or_skip, Run, Server};

/// The http app with these `--publish` values, once it listens.
fn http_published(specs: &[String]) -> Server {
    let mut run = Run::image(&image("http"));
    for spec in specs {
        run = run.opts(&["--publish", spec]);
    }
    let server = run.serve();
    server.wait_listening();
    server
}

/// `GET /health` at `addr`: Ok if it answered 200 `ok`.
fn health_at(addr: SocketAddr) -> Result<(), String> {
    let mut c = Conn::open(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    c.send(b"GET /health HTTP/1.1\r\nHost: flint\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    match c.response(false)? {
        r if r.status == 200 && r.body_str().trim_end() == "ok" => Ok(()),
        r => Err(c.saw(format_args!("{addr}: status {}", r.status))),
    }
}

fn loopback(last: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, last], port))
}

#[test]
fn two_publish_options_both_forward() {
    if !kvm_or_skip() {
        return;
    }
    let (a, b) = (free_port(), free_port());
    let server = http_published(&[format!("127.0.0.1:{a}:80"), format!("127.0.0.1:{b}:80")]);
    for port in [a, b, a] {
        if let Err(e) = health_at(loopback(1, port)) {
            server.fail(format_args!("through --publish port {port}: {e}"));
        }
    }
}

#[test]
fn publish_without_a_host_address_listens_on_127_0_0_1_only() {
    if !kvm_or_skip() {
        return;
    }
    let port = free_port();
    let server = http_published(&[format!("{port}:80")]);
    if let Err(e) = health_at(loopback(1, port)) {
        server.fail(format_args!(
            "HOST_PORT:GUEST_PORT should listen on 127.0.0.1: {e}"
        ));
    }
    // Bound to 0.0.0.0, it would answer on 127.0.0.2 too (and on every
    // other address of the host).
    if TcpStream::connect_timeout(&loopback(2, port), Duration::from_secs(5)).is_ok() {
        server.fail(format_args!(
            "127.0.0.2:{port} accepted a connection: the default host address must be 127.0.0.1, not 0.0.0.0"
        ));
    }
}

#[test]
fn publish_on_another_loopback_address_listens_there() {
    if !kvm_or_skip() {
        return;
    }
    let port = free_port();
    let server = http_published(&[format!("127.0.0.2:{port}:80")]);
    if let Err(e) = health_at(loopback(2, port)) {
        server.fail(format_args!("--publish 127.0.0.2:{port}:80: {e}"));
    }
}

#[test]
fn a_published_port_nobody_listens_on_resets_the_client() {
    if !kvm_or_skip() {
        return;
    }
    let (good, dead) = (free_port(), free_port());
    let server = http_published(&[
        format!("127.0.0.1:{good}:80"),
        format!("127.0.0.1:{dead}:81"),
    ]);
    for round in 0..3 {
        // The host accepts; the guest refuses port 81; the client must then
        // see its connection end (reset or EOF) with no data, not hang.
        let mut c = match Conn::open(loopback(1, dead)) {
            Ok(c) => c,
            Err(_) => continue, // refusing at once is fine too
        };
        let _ = c.send(b"GET /health HTTP/1.1\r\nHost: flint\r\n\r\n");
        match c.read_to_eof(Duration::from_secs(12)) {
            Ok(rest) if rest.is_empty() => {}
            Ok(rest) => server.fail(format_args!(
                "round {round}: guest port 81 has no listener, yet the client got {:?}",
                String::from_utf8_lossy(&rest)
            )),
            Err(e) if e.contains("reset") => {}
            Err(e) => server.fail(format_args!(
                "round {round}: a connection to a guest port nobody listens on must end: {e}"
            )),
        }
    }
    if let Err(e) = health_at(loopback(1, good)) {
        server.fail(format_args!(
            "after refused connections on port 81, port 80: {e}"
        ));
    }
}
