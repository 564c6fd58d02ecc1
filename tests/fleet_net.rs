//! `--publish` in a fleet: connections to the one host port are spread
//! over the instances (SO_REUSEPORT across workers, round-robin within
//! one).

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::fleet::Fleet;
use support::net::{free_port, Conn};
use support::{image, kvm_or_skip, Run};

const WITHIN: Duration = Duration::from_secs(30);

/// One connection: what the instance answered (`id=N`).
fn ask(port: u16) -> Result<u64, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut got = String::new();
    c.read_to_string(&mut got)
        .map_err(|e| format!("read: {e} after {got:?}"))?;
    got.trim()
        .strip_prefix("id=")
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| format!("answer {got:?}"))
}

#[test]
fn publish_spreads_connections_over_many_instances() {
    if !kvm_or_skip() {
        return;
    }
    let n = 12;
    let port = free_port();
    let fleet = Fleet::start(
        &Run::fleet(&image("probe"), n)
            .opts(&["--per-worker", "4"])
            .opts(&["--publish", &format!("127.0.0.1:{port}:7000")])
            .guest(&["id-serve", "7000"]),
    );
    fleet.wait_lines("listening on 7000", n as usize, WITHIN);
    let mut answers: BTreeMap<u64, u32> = BTreeMap::new();
    for i in 0..4 * n {
        match ask(port) {
            Ok(id) => *answers.entry(id).or_insert(0) += 1,
            Err(e) => fleet.server.fail(format_args!("connection {i}: {e}")),
        }
    }
    if answers.keys().any(|id| !(1..=u64::from(n)).contains(id)) {
        fleet
            .server
            .fail(format_args!("answers from unknown ids: {answers:?}"));
    }
    // Round-robin inside each worker: every worker that got k connections
    // spread them over min(k, 4) instances; over three workers and 48
    // connections that is most of the fleet.
    if answers.len() < 8 {
        fleet.server.fail(format_args!(
            "48 connections reached only {} instances: {answers:?}",
            answers.len()
        ));
    }
}

#[test]
fn publish_skips_an_instance_that_ended() {
    if !kvm_or_skip() {
        return;
    }
    // Three instances in one worker; instance 2 exits at once, so every
    // connection must reach 1 or 3, and both of them.
    let port = free_port();
    let fleet = Fleet::start(
        &Run::fleet(&image("probe"), 3)
            .opts(&["--publish", &format!("127.0.0.1:{port}:7000")])
            .guest(&["id-serve", "7000", "2"]),
    );
    fleet.wait_lines("listening on 7000", 2, WITHIN);
    fleet.wait_lines("[2] id=2 leaving", 1, WITHIN);
    std::thread::sleep(Duration::from_millis(200));
    let mut seen = BTreeMap::new();
    for i in 0..9 {
        match ask(port) {
            Ok(id @ (1 | 3)) => *seen.entry(id).or_insert(0) += 1,
            Ok(id) => fleet
                .server
                .fail(format_args!("connection {i} reached id {id}")),
            Err(e) => fleet.server.fail(format_args!("connection {i}: {e}")),
        }
    }
    if seen.len() != 2 {
        fleet.server.fail(format_args!(
            "round-robin should reach both 1 and 3: {seen:?}"
        ));
    }
}

/// `GET /` on a new connection: the `X-Flint-Instance` header the http app
/// sends.
fn http_instance(port: u16) -> Result<u64, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut c = Conn::open(addr).map_err(|e| format!("connect: {e}"))?;
    c.send(b"GET / HTTP/1.1\r\nHost: flint\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let r = c.response(false)?;
    r.header("x-flint-instance")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            format!(
                "status {} without X-Flint-Instance: {:?}",
                r.status, r.headers
            )
        })
}

#[test]
fn http_fleet_answers_from_many_instances() {
    if !kvm_or_skip() {
        return;
    }
    let n = 12;
    let port = free_port();
    let fleet = Fleet::start(
        &Run::fleet(&image("http"), n)
            .opts(&["--per-worker", "4"])
            .opts(&["--publish", &format!("127.0.0.1:{port}:80")]),
    );
    fleet.wait_lines("listening on", n as usize, WITHIN);
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    for i in 0..4 * n {
        match http_instance(port) {
            Ok(id) if (1..=u64::from(n)).contains(&id) => *seen.entry(id).or_insert(0) += 1,
            Ok(id) => fleet
                .server
                .fail(format_args!("request {i}: unknown instance {id}")),
            Err(e) => fleet.server.fail(format_args!("request {i}: {e}")),
        }
    }
    if seen.len() < 8 {
        fleet.server.fail(format_args!(
            "48 requests reached only {} instances: {seen:?}",
            seen.len()
        ));
    }
}
