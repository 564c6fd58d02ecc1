//! Snapshot and restore as a user sees them: `flint run --snapshot-on-idle
//! FILE` of a server, then `flint run --restore FILE` twice at once. Each
//! restored instance must serve, and must be its own instance: its own
//! RNG stream, network identity and instance id, `generation` 1, a clock
//! that did not go backward (ABI.md section 3).

#[path = "snapshot_support/mod.rs"]
mod snap;
mod support;

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::net::free_port;
use support::tool::{curl, tool_or_skip};
use support::{kvm_or_skip, Outcome, Server};

/// How long a restored server may take to answer its first request.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

/// `curl` of `path` on `127.0.0.1:port` until it answers (the restored
/// instance has no `listening on` line to wait for); the last attempt's
/// result if it never does.
fn curl_until_answered(server: &Server, port: u16, path: &str) -> support::tool::Curl {
    let url = format!("http://127.0.0.1:{port}{path}");
    let start = Instant::now();
    loop {
        let got = curl(&[], &["-i"], &url);
        if got.status != 0 || start.elapsed() > ANSWER_WITHIN || !server.running() {
            return got;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The `X-Flint-Instance` header in curl's `-i` output.
fn instance_header(body: &str) -> Option<String> {
    body.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("x-flint-instance")
            .then(|| value.trim().to_owned())
    })
}

#[test]
fn two_restores_of_one_http_snapshot_serve_as_different_instances() {
    if !kvm_or_skip() || !tool_or_skip("curl", "curl") {
        return;
    }
    let first = free_port();
    let file = snap::take(
        "http",
        &["--publish", &format!("127.0.0.1:{first}:80")],
        &[],
    );
    let (a, b) = (free_port(), free_port());
    let restore =
        |port: u16| snap::restore(&file, &["--publish", &format!("127.0.0.1:{port}:80")]).serve();
    // Both at once, from one file.
    let (server_a, server_b) = (restore(a), restore(b));
    let mut ids = Vec::new();
    for (server, port) in [(&server_a, a), (&server_b, b)] {
        let got = curl_until_answered(server, port, "/");
        if got.status != 200 {
            server.fail(format_args!(
                "the restored http server on port {port} did not answer 200: {}",
                got.out
            ));
        }
        match instance_header(&got.body) {
            Some(id) => ids.push(id),
            None => server.fail(format_args!("no X-Flint-Instance header in\n{}", got.body)),
        }
        // And it goes on serving.
        let health = curl(&[], &[], &format!("http://127.0.0.1:{port}/health"));
        if health.status != 200 || health.body.trim_end() != "ok" {
            server.fail(format_args!("/health after restore: {}", health.out));
        }
    }
    assert_ne!(
        ids[0], ids[1],
        "two instances restored from one snapshot answered with one X-Flint-Instance"
    );
}

/// The `after key=value ...` report of a restored `probe
/// snapshot-identity`.
fn after_report(out: &Outcome) -> HashMap<String, String> {
    let mut report = HashMap::new();
    for line in out.stdout_str().lines() {
        let Some(rest) = line.strip_prefix("after ") else {
            continue;
        };
        for pair in rest.split(' ') {
            if let Some((k, v)) = pair.split_once('=') {
                report.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    if !report.contains_key("generation") {
        out.fail("expected the restored probe's `after generation=...` report");
    }
    report
}

fn number(out: &Outcome, report: &HashMap<String, String>, key: &str) -> u64 {
    match report.get(key).map(|v| v.parse()) {
        Some(Ok(n)) => n,
        _ => out.fail(format_args!("no number `{key}` in the after report")),
    }
}

#[test]
fn restored_instances_reseed_and_take_new_identities_and_sane_clocks() {
    if !kvm_or_skip() {
        return;
    }
    let publish = |port: u16| format!("127.0.0.1:{port}:80");
    let file = snap::take(
        "probe",
        &["--publish", &publish(free_port())],
        &["snapshot-identity"],
    );
    let before_restore = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let run = snap::restore(&file, &["--publish", &publish(free_port())]);
            thread::spawn(move || run.go())
        })
        .collect();
    let outs: Vec<Outcome> = runs.into_iter().map(|t| t.join().unwrap()).collect();
    let after_restore = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut reports = Vec::new();
    for out in &outs {
        out.status(0).no_stderr();
        let r = after_report(out);
        if number(out, &r, "generation") != 1 || number(out, &r, "seen") != 1 {
            out.fail("a restored instance must see generation 1");
        }
        if r.get("went_back").map(String::as_str) != Some("0")
            || number(out, &r, "mono_after_ns") < number(out, &r, "mono_before_ns")
        {
            out.fail("the instance clock went backward across the restore");
        }
        // The guest's TSC clock agrees with the monitor's CLOCK (within 1 s).
        let (mono, monitor) = (
            number(out, &r, "mono_ns"),
            number(out, &r, "monitor_mono_ns"),
        );
        if mono.abs_diff(monitor) > 1_000_000_000 {
            out.fail(format_args!(
                "guest clock {mono} ns vs monitor's {monitor} ns"
            ));
        }
        // The wall clock is the host's now, not the snapshot's.
        let wall = number(out, &r, "wall_ns");
        if wall + 1_000_000_000 < before_restore || wall > after_restore + 1_000_000_000 {
            out.fail(format_args!(
                "wall clock {wall} outside the restore window [{before_restore}, {after_restore}]"
            ));
        }
        reports.push(r);
    }
    let (a, b) = (&reports[0], &reports[1]);
    let both = format!("{}\n{}", outs[0], outs[1]);
    assert_ne!(
        a["random"], b["random"],
        "one RNG stream in two restored instances:\n{both}"
    );
    assert_ne!(
        a["instance_id"], b["instance_id"],
        "one instance id for two restored instances:\n{both}"
    );
    assert!(
        a["mac"] != b["mac"] || a["ipv4"] != b["ipv4"],
        "two restored instances share MAC and IP:\n{both}"
    );
    assert_ne!(
        a["mac"], "none",
        "the restored probe has no network device:\n{both}"
    );
}
