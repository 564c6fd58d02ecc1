//! The echo app through `flint run --publish 127.0.0.1:<port>:7`: bytes
//! come back exactly, in both directions at once, with half-close, on
//! several connections at once.

mod support;

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use support::kvm_or_skip;
use support::net::{client_failures, publish, Conn, Published};

/// The echo app, published; None if the test is skipped.
fn echo() -> Option<Published> {
    if !kvm_or_skip() {
        return None;
    }
    Some(publish("echo", 7, &[], &[]))
}

/// `len` bytes that differ per `seed` and do not repeat with a short
/// period (xorshift), so a lost, doubled or reordered segment shows.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Where `got` first differs from `want`, for the failure message.
fn first_difference(want: &[u8], got: &[u8]) -> String {
    match want.iter().zip(got).position(|(a, b)| a != b) {
        Some(i) => format!(
            "first difference at byte {i} of {} (got {} bytes)",
            want.len(),
            got.len()
        ),
        None => format!(
            "the {} bytes received match, but {} were sent",
            got.len(),
            want.len()
        ),
    }
}

/// Sends `data` on `c` from another thread while this one reads `data.len()`
/// bytes back (or, with `half_close`, shuts down writing after sending and
/// reads until EOF). Returns what came back, or why it failed.
fn round_trip(
    c: &mut Conn,
    data: &[u8],
    half_close: bool,
    limit: Duration,
) -> Result<Vec<u8>, String> {
    round_trip_reading_after(c, data, half_close, limit, Duration::ZERO)
}

/// [`round_trip`], but the reading starts only `read_after` after the
/// writing: the data backs up in every buffer on the way meanwhile.
fn round_trip_reading_after(
    c: &mut Conn,
    data: &[u8],
    half_close: bool,
    limit: Duration,
    read_after: Duration,
) -> Result<Vec<u8>, String> {
    let mut writer = c.stream.try_clone().map_err(|e| e.to_string())?;
    let to_send = data.to_vec();
    let sender = thread::spawn(move || -> Result<(), String> {
        for chunk in to_send.chunks(16 * 1024) {
            writer.write_all(chunk).map_err(|e| format!("write: {e}"))?;
        }
        if half_close {
            writer
                .shutdown(std::net::Shutdown::Write)
                .map_err(|e| format!("shutdown(Write): {e}"))?;
        }
        Ok(())
    });
    thread::sleep(read_after);
    let start = Instant::now();
    let got = if half_close {
        c.read_to_eof(limit)
    } else {
        let mut got = Vec::with_capacity(data.len());
        let mut err = None;
        while got.len() < data.len() {
            if start.elapsed() > limit {
                err = Some(format!(
                    "only {} of {} bytes back within {limit:?}",
                    got.len(),
                    data.len()
                ));
                break;
            }
            let mut buf = vec![0u8; 64 * 1024];
            match std::io::Read::read(&mut c.stream, &mut buf) {
                Ok(0) => {
                    err = Some(format!("EOF after {} of {} bytes", got.len(), data.len()));
                    break;
                }
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => {
                    err = Some(format!("read after {} bytes: {e}", got.len()));
                    break;
                }
            }
        }
        match err {
            Some(e) => Err(e),
            None => Ok(got),
        }
    };
    let sent = sender
        .join()
        .unwrap_or_else(|_| Err("the writer thread panicked".into()));
    let got = got?;
    sent?;
    Ok(got)
}

#[test]
fn echo_says_where_it_listens() {
    let Some(p) = echo() else { return };
    if p.listening != "echo: listening on 10.0.2.15:7" {
        p.server.fail(format_args!(
            "expected the line \"echo: listening on 10.0.2.15:7\" (user-mode default address), got {:?}",
            p.listening
        ));
    }
}

#[test]
fn echo_round_trips_1_mib_byte_exact() {
    let Some(p) = echo() else { return };
    let data = pattern(1, 1 << 20);
    let mut c = p.connect();
    let start = Instant::now();
    match round_trip(&mut c, &data, false, Duration::from_secs(60)) {
        Ok(got) if got == data => {}
        Ok(got) => p.server.fail(format_args!(
            "1 MiB echo is not byte-exact: {}",
            first_difference(&data, &got)
        )),
        Err(e) => p.server.fail(format_args!("1 MiB echo: {e}")),
    }
    let took = start.elapsed();
    let _ = writeln!(
        std::io::stderr(),
        "echo_round_trips_1_mib_byte_exact: 1 MiB each way in {took:?}"
    );
}

#[test]
fn half_close_still_gets_everything_back_then_eof() {
    let Some(p) = echo() else { return };
    for len in [5, 100 * 1024] {
        let data = pattern(len as u64, len);
        let mut c = p.connect();
        match round_trip(&mut c, &data, true, Duration::from_secs(30)) {
            Ok(got) if got == data => {}
            Ok(got) => p.server.fail(format_args!(
                "after shutting down its write side, the client got back something else: {}",
                first_difference(&data, &got)
            )),
            Err(e) => p
                .server
                .fail(format_args!("{len} bytes then shutdown(Write): {e}")),
        }
    }
}

#[test]
fn concurrent_echo_connections_are_kept_apart() {
    const N: u64 = 8;
    let Some(p) = echo() else { return };
    let addr = p.addr();
    let clients: Vec<_> = (0..N)
        .map(|i| {
            thread::spawn(move || -> Result<(), String> {
                let data = pattern(100 + i, 64 * 1024);
                let mut c = Conn::open(addr).map_err(|e| format!("client {i}: connect: {e}"))?;
                let got = round_trip(&mut c, &data, true, Duration::from_secs(60))
                    .map_err(|e| format!("client {i}: {e}"))?;
                if got != data {
                    return Err(format!("client {i}: {}", first_difference(&data, &got)));
                }
                Ok(())
            })
        })
        .collect();
    let failures = client_failures(clients);
    if !failures.is_empty() {
        p.server.fail(format_args!(
            "{} of {N} concurrent echo clients failed:\n{}",
            failures.len(),
            failures.join("\n")
        ));
    }
}

#[test]
fn echo_survives_a_client_reset_mid_stream() {
    let Some(p) = echo() else { return };
    let mut c = p.connect();
    let _ = c.send(&pattern(7, 200 * 1024));
    c.set_linger_zero();
    drop(c);
    let data = pattern(8, 4096);
    let mut c = p.connect();
    match round_trip(&mut c, &data, true, Duration::from_secs(30)) {
        Ok(got) if got == data => {}
        Ok(got) => p.server.fail(format_args!(
            "after a reset client, echo is wrong: {}",
            first_difference(&data, &got)
        )),
        Err(e) => p.server.fail(format_args!("after a reset client: {e}")),
    }
}

#[test]
fn echo_takes_its_port_as_an_argument() {
    if !kvm_or_skip() {
        return;
    }
    let p = publish("echo", 7007, &["7007"], &[]);
    if !p.listening.ends_with(":7007") {
        p.server.fail(format_args!(
            "expected it to listen on port 7007, said {:?}",
            p.listening
        ));
    }
    let mut c = p.connect();
    match round_trip(&mut c, b"ping", true, Duration::from_secs(20)) {
        Ok(got) if got == b"ping" => {}
        other => p.server.fail(format_args!("echo on port 7007: {other:?}")),
    }
}

#[test]
fn echo_holds_everything_for_a_client_that_reads_late() {
    let Some(p) = echo() else { return };
    let data = pattern(9, 2 << 20);
    let mut c = p.connect();
    let late = Duration::from_millis(1500);
    match round_trip_reading_after(&mut c, &data, true, Duration::from_secs(60), late) {
        Ok(got) if got == data => {}
        Ok(got) => p.server.fail(format_args!(
            "2 MiB echoed to a client that started reading {late:?} late: {}",
            first_difference(&data, &got)
        )),
        Err(e) => p.server.fail(format_args!(
            "2 MiB to a client that reads {late:?} late: {e}"
        )),
    }
}
