//! A networked guest over its life: it costs no CPU while idle, `--stats`
//! prints the documented counters, and SIGTERM / SIGINT stop it promptly
//! with flint dying by that signal.

mod support;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::net::{cpu_time, publish, request, stats_line, Conn, Published};
use support::{image, kvm_or_skip, Run};

/// How long the idle measurement runs.
const IDLE_FOR: Duration = Duration::from_secs(3);

/// The idle bound: a share of one core. Generous on purpose: a guest that
/// sleeps in POLL costs ~0; one that spins costs ~100%.
const IDLE_MAX_SHARE: f64 = 0.05;

/// How long flint may take to die after SIGTERM / SIGINT.
const STOP_WITHIN: Duration = Duration::from_secs(3);

/// Measures flint's CPU share over [`IDLE_FOR`] and fails above the bound.
#[track_caller]
fn assert_idle(p: &Published, what: &str) {
    let pid = p.server.pid();
    let (cpu0, t0) = (cpu_time(pid), Instant::now());
    thread::sleep(IDLE_FOR);
    let (cpu1, t1) = (cpu_time(pid), Instant::now());
    let share = (cpu1 - cpu0).as_secs_f64() / (t1 - t0).as_secs_f64();
    let _ = writeln!(
        std::io::stderr(),
        "{what}: flint used {:?} of CPU in {:?} ({:.2}% of one core)",
        cpu1 - cpu0,
        t1 - t0,
        share * 100.0
    );
    if share > IDLE_MAX_SHARE {
        p.server.fail(format_args!(
            "{what}: flint used {:.1}% of a core over {:?} while idle (bound {:.0}%); \
             an idle guest should sleep in POLL",
            share * 100.0,
            t1 - t0,
            IDLE_MAX_SHARE * 100.0
        ));
    }
}

#[test]
fn idle_published_http_guest_uses_almost_no_cpu() {
    if !kvm_or_skip() {
        return;
    }
    let p = publish("http", 80, &[], &[]);
    assert_idle(&p, "idle http");
}

#[test]
fn http_guest_idle_after_serving_uses_almost_no_cpu() {
    if !kvm_or_skip() {
        return;
    }
    let p = publish("http", 80, &[], &[]);
    for _ in 0..5 {
        request(&p, "GET", "/").unwrap_or_else(|e| p.server.fail(e));
    }
    // A kept-alive connection left open must not keep the guest busy.
    let mut open = p.connect();
    open.send(b"GET /health HTTP/1.1\r\nHost: flint\r\n\r\n")
        .unwrap_or_else(|e| p.server.fail(e));
    open.response(false).unwrap_or_else(|e| p.server.fail(e));
    assert_idle(&p, "http after serving, one connection open");
}

#[test]
fn idle_published_echo_guest_uses_almost_no_cpu() {
    if !kvm_or_skip() {
        return;
    }
    let p = publish("echo", 7, &[], &[]);
    assert_idle(&p, "idle echo");
}

/// Checks the two documented stats lines and returns (calls, net).
#[track_caller]
fn documented_stats(
    out: &support::Outcome,
) -> (
    std::collections::HashMap<String, u64>,
    std::collections::HashMap<String, u64>,
) {
    let err = out.stderr_str();
    let calls = stats_line(&err, "vm_exits")
        .unwrap_or_else(|| out.fail("expected a line `flint: stats: vm_exits=...`"));
    let net = stats_line(&err, "net")
        .unwrap_or_else(|| out.fail("expected a line `flint: stats: net rx_frames=...`"));
    for key in [
        "vm_exits",
        "hypercalls",
        "console_write",
        "exit",
        "panic",
        "clock",
        "poll",
        "net_write",
        "net_read",
        "random",
    ] {
        if !calls.contains_key(key) {
            out.fail(format_args!("the vm_exits stats line has no `{key}=<n>`"));
        }
    }
    for key in [
        "rx_frames",
        "tx_frames",
        "rx_bytes",
        "tx_bytes",
        "dropped",
        "malformed",
    ] {
        if !net.contains_key(key) {
            out.fail(format_args!("the net stats line has no `{key}=<n>`"));
        }
    }
    (calls, net)
}

/// Serves one request with `--stats` (or `FLINT_STATS=1`), stops flint with
/// SIGTERM and checks the stats it printed.
fn stats_after_serving(by_env: bool) {
    if !kvm_or_skip() {
        return;
    }
    let p = if by_env {
        publish_with_env("FLINT_STATS", "1")
    } else {
        publish("http", 80, &[], &["--stats"])
    };
    request(&p, "GET", "/health").unwrap_or_else(|e| p.server.fail(e));
    p.server.signal(libc::SIGTERM);
    let out = p.server.wait_exit(STOP_WITHIN);
    if out.signal != Some(libc::SIGTERM) {
        out.fail("expected flint to die by SIGTERM");
    }
    let (calls, net) = documented_stats(&out);
    let sum: u64 = [
        "console_write",
        "exit",
        "panic",
        "clock",
        "poll",
        "net_write",
        "net_read",
        "random",
    ]
    .iter()
    .map(|k| calls[*k])
    .sum();
    let checks = [
        (
            calls["hypercalls"] == sum,
            "hypercalls = the sum of the per-call counts",
        ),
        (
            calls["vm_exits"] >= calls["hypercalls"],
            "vm_exits >= hypercalls",
        ),
        (
            calls["console_write"] >= 1,
            "console_write >= 1 (the listening line)",
        ),
        (
            calls["net_write"] >= 1 && calls["net_read"] >= 1,
            "net_write and net_read >= 1 after a request",
        ),
        (
            net["rx_frames"] >= 1 && net["tx_frames"] >= 1,
            "rx_frames and tx_frames >= 1",
        ),
        (
            net["rx_bytes"] >= 14 * net["rx_frames"],
            "rx_bytes >= 14 per frame",
        ),
        (
            net["tx_bytes"] >= 14 * net["tx_frames"],
            "tx_bytes >= 14 per frame",
        ),
        (
            calls["panic"] == 0 && calls["exit"] == 0,
            "no panic or exit hypercall",
        ),
        (
            net["malformed"] == 0,
            "no malformed frames from a correct guest",
        ),
    ];
    for (ok, what) in checks {
        if !ok {
            out.fail(format_args!("stats: expected {what}"));
        }
    }
}

/// [`publish`] of the http app with one environment variable set.
fn publish_with_env(key: &str, value: &str) -> Published {
    let port = support::net::free_port();
    let spec = format!("127.0.0.1:{port}:80");
    let server = Run::image(&image("http"))
        .opts(&["--publish", &spec])
        .env(key, value)
        .serve();
    let listening = server.wait_listening();
    Published {
        server,
        port,
        listening,
    }
}

#[test]
fn stats_prints_the_documented_lines_after_sigterm() {
    stats_after_serving(false);
}

#[test]
fn flint_stats_env_prints_the_same_lines_as_the_flag() {
    stats_after_serving(true);
}

/// Sends `signal` to a serving http guest and checks flint dies by it
/// within [`STOP_WITHIN`].
fn stops_by(signal: i32, with_client: bool) {
    if !kvm_or_skip() {
        return;
    }
    let p = publish("http", 80, &[], &[]);
    // Optionally, a client in the middle of a request when the signal hits.
    let client = with_client.then(|| {
        let mut c = p.connect();
        c.send(b"GET /health HTTP/1.1\r\nHo")
            .unwrap_or_else(|e| p.server.fail(e));
        c
    });
    let sent = Instant::now();
    p.server.signal(signal);
    let out = p.server.wait_exit(STOP_WITHIN);
    let took = sent.elapsed();
    if out.signal != Some(signal) {
        out.fail(format_args!("expected flint to die by signal {signal}"));
    }
    if took > STOP_WITHIN {
        out.fail(format_args!("flint took {took:?} to stop"));
    }
    if let Some(mut c) = client {
        // The client must learn the server is gone (EOF or reset), not hang.
        let _ = c.read_to_eof(Duration::from_secs(5));
    }
}

#[test]
fn sigterm_stops_a_serving_guest_promptly_and_flint_dies_by_sigterm() {
    stops_by(libc::SIGTERM, false);
}

#[test]
fn sigint_stops_a_serving_guest_promptly_and_flint_dies_by_sigint() {
    stops_by(libc::SIGINT, false);
}

#[test]
fn sigterm_with_a_client_mid_request_still_stops_promptly() {
    stops_by(libc::SIGTERM, true);
}

#[test]
fn net_user_without_publish_boots_and_listens() {
    if !kvm_or_skip() {
        return;
    }
    let server = Run::image(&image("http")).opts(&["--net", "user"]).serve();
    server.wait_listening();
}

#[test]
fn sigterm_under_load_stops_promptly() {
    if !kvm_or_skip() {
        return;
    }
    let p = publish("http", 80, &[], &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (stop, served, addr) = (stop.clone(), served.clone(), p.addr());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut c) = Conn::open(addr) else { return };
                    while !stop.load(Ordering::Relaxed) {
                        let ok = c
                            .send(b"GET /health HTTP/1.1\r\nHost: flint\r\n\r\n")
                            .is_ok()
                            && c.response(false).is_ok();
                        if !ok {
                            return;
                        }
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(700));
    let before = served.load(Ordering::Relaxed);
    let sent = Instant::now();
    p.server.signal(libc::SIGTERM);
    let out = p.server.wait_exit(STOP_WITHIN);
    let took = sent.elapsed();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    if before == 0 {
        out.fail("the load never got an answer before SIGTERM");
    }
    if out.signal != Some(libc::SIGTERM) {
        out.fail(format_args!(
            "under load ({before} requests served), expected flint to die by SIGTERM"
        ));
    }
    let _ = writeln!(
        std::io::stderr(),
        "sigterm under load: {before} requests served, stopped {took:?} after SIGTERM"
    );
}

#[test]
fn timeout_stops_a_networked_guest_blocked_in_poll() {
    if !kvm_or_skip() {
        return;
    }
    let spec = format!("127.0.0.1:{}:80", support::net::free_port());
    let out = Run::image(&image("http"))
        .opts(&["--publish", &spec, "--timeout", "1"])
        .limit(Duration::from_secs(15))
        .go();
    out.status(124);
    out.one_stderr_line();
    out.stdout_line("http: listening on 10.0.2.15:80");
    if out.elapsed > Duration::from_secs(4) {
        out.fail("--timeout 1 should stop the guest within about a second");
    }
}
