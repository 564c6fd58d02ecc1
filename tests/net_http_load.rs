//! Many clients of the http app through `--publish`: 50 at once, and
//! hundreds one after another (sockets and forwarding state must be freed).

mod support;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use support::kvm_or_skip;
use support::net::{client_failures, publish, request, still_healthy, Conn, Published};

fn http() -> Option<Published> {
    if !kvm_or_skip() {
        return None;
    }
    Some(publish("http", 80, &[], &[]))
}

#[test]
fn fifty_concurrent_connections_all_complete() {
    const N: usize = 50;
    let Some(p) = http() else { return };
    let addr = p.addr();
    let start = Instant::now();
    // All N connect first, then all send at once: the guest holds N open
    // connections together.
    let barrier = Arc::new(Barrier::new(N));
    let clients: Vec<_> = (0..N)
        .map(|i| {
            let barrier = barrier.clone();
            thread::spawn(move || -> Result<(), String> {
                let conn = Conn::open(addr);
                barrier.wait();
                let mut c = conn.map_err(|e| format!("client {i}: connect: {e}"))?;
                let path = if i % 2 == 0 { "/" } else { "/health" };
                let req =
                    format!("GET {path} HTTP/1.1\r\nHost: flint\r\nConnection: close\r\n\r\n");
                c.send(req.as_bytes())
                    .map_err(|e| c.saw(format_args!("client {i}: send: {e}")))?;
                let r = c
                    .response(false)
                    .map_err(|e| format!("client {i} (GET {path}): {e}"))?;
                if r.status != 200 {
                    return Err(c.saw(format_args!("client {i} (GET {path}): status {}", r.status)));
                }
                Ok(())
            })
        })
        .collect();
    let failures = client_failures(clients);
    if !failures.is_empty() {
        p.server.fail(format_args!(
            "{} of {N} concurrent clients failed after {:?}:\n{}",
            failures.len(),
            start.elapsed(),
            failures.join("\n")
        ));
    }
    still_healthy(&p, "50 concurrent clients");
}

#[test]
fn hundreds_of_connections_one_after_another_all_succeed() {
    const N: usize = 300;
    let Some(p) = http() else { return };
    let start = Instant::now();
    for i in 0..N {
        match request(&p, "GET", "/health") {
            Ok(r) if r.status == 200 => {}
            other => p.server.fail(format_args!(
                "connection {i} of {N} (after {:?}) got {other:?}",
                start.elapsed()
            )),
        }
        if start.elapsed() > Duration::from_secs(90) {
            p.server
                .fail(format_args!("only {i} of {N} connections within 90 s"));
        }
    }
    let _ = std::io::Write::write_fmt(
        &mut std::io::stderr(),
        format_args!("{N} sequential connections in {:?}\n", start.elapsed()),
    );
}
