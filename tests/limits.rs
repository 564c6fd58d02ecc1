//! Per-instance limits (`--console-limit BYTES[/RATE]`, `--net-rate PPS`):
//! output or frames past a limit are dropped, the guest goes on, the first
//! hit of each limit prints one `flint: limit: ` line on stderr, and
//! `--stats` counts the drops on its `limits` line.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::net::stats_line;
use support::{kvm_or_skip, probe, Outcome};

/// `console-big` writes this many bytes of a pattern.
const BIG: usize = 256 << 10;

fn pattern() -> Vec<u8> {
    (0..BIG as u32).map(|i| (i * 7 % 251) as u8).collect()
}

#[track_caller]
fn limits_stats(out: &Outcome) -> HashMap<String, u64> {
    stats_line(&out.stderr_str(), "limits")
        .unwrap_or_else(|| out.fail("expected a `flint: stats: limits ...` line with --stats"))
}

/// The `flint: limit: ` lines on stderr.
fn limit_lines(out: &Outcome) -> Vec<String> {
    out.stderr_str()
        .lines()
        .filter(|l| l.starts_with("flint: limit: "))
        .map(str::to_owned)
        .collect()
}

#[track_caller]
fn one_limit_line(out: &Outcome, containing: &str) {
    let lines = limit_lines(out);
    if lines.len() != 1 || !lines[0].contains(containing) {
        out.fail(format_args!(
            "expected exactly one `flint: limit: ` line containing {containing:?}, got {lines:?}"
        ));
    }
}

#[test]
fn console_output_past_the_total_is_dropped_and_the_guest_goes_on() {
    if !kvm_or_skip() {
        return;
    }
    let out = probe(&["console-big"])
        .opts(&["--console-limit", "1K", "--stats"])
        .go();
    // The guest exits on its own with 0: the limit does not stop it.
    out.status(0);
    if out.stdout != pattern()[..1024] {
        out.fail("expected exactly the first 1024 bytes of the pattern on stdout");
    }
    one_limit_line(&out, "console limit of 1024 bytes reached");
    let limits = limits_stats(&out);
    if limits["console_total_dropped"] != (BIG - 1024) as u64 || limits["console_rate_dropped"] != 0
    {
        out.fail(format_args!(
            "expected console_total_dropped={} console_rate_dropped=0",
            BIG - 1024
        ));
    }
}

#[test]
fn console_output_faster_than_the_rate_is_dropped() {
    if !kvm_or_skip() {
        return;
    }
    let out = probe(&["console-big"])
        .opts(&["--console-limit", "1M/16K", "--stats"])
        .go();
    out.status(0);
    // 256 KiB written within a few milliseconds: the first second's 16 KiB
    // goes out, little more.
    let got = out.stdout.len();
    if !(16 << 10..64 << 10).contains(&got) || out.stdout[..16 << 10] != pattern()[..16 << 10] {
        out.fail(format_args!(
            "expected the first 16 KiB of the pattern and not much more, got {got} bytes"
        ));
    }
    one_limit_line(&out, "console rate limit of 16384 bytes/s reached");
    let limits = limits_stats(&out);
    if limits["console_rate_dropped"] != (BIG - got) as u64 || limits["console_total_dropped"] != 0
    {
        out.fail(format_args!(
            "expected console_rate_dropped={} console_total_dropped=0",
            BIG - got
        ));
    }
}

#[test]
fn output_within_the_limits_is_untouched_and_stderr_stays_empty() {
    if !kvm_or_skip() {
        return;
    }
    let out = probe(&["console-big"])
        .opts(&["--console-limit", "1M/1M", "--net-rate", "10"])
        .go();
    out.status(0).no_stderr();
    if out.stdout != pattern() {
        out.fail("expected all 256 KiB of the pattern");
    }
}

#[test]
fn frames_faster_than_the_net_rate_are_dropped_and_counted() {
    if !kvm_or_skip() {
        return;
    }
    let out = probe(&["net", "flood", "600"])
        .opts(&["--net", "user", "--net-rate", "100", "--stats"])
        .limit(Duration::from_secs(30))
        .go();
    out.status(0).stdout_line("probe: net done");
    // The guest is told every frame went out, as a NIC would.
    if out.value("flood_bad_ret") != "0" {
        out.fail("expected NET_WRITE to return len for dropped frames too");
    }
    one_limit_line(&out, "network rate limit of 100 frames/s reached");
    let dropped = limits_stats(&out)["net_rate_dropped"];
    // 600 frames in a burst against a bucket of 100 (plus a few refilled).
    if !(400..=510).contains(&dropped) {
        out.fail(format_args!("expected ~500 frames dropped, got {dropped}"));
    }
    let net = stats_line(&out.stderr_str(), "net").unwrap_or_else(|| out.fail("no net stats"));
    if net["dropped"] < dropped {
        out.fail("expected the net `dropped` counter to include the rate-limited frames");
    }
}

#[test]
fn bad_limit_values_are_refused() {
    for (option, value) in [
        ("--console-limit", "0"),
        ("--console-limit", "1M/"),
        ("--console-limit", "lots"),
        ("--net-rate", "0"),
        ("--net-rate", "fast"),
    ] {
        let out = probe(&[]).opts(&[option, value]).go();
        out.status(125);
        if !out.stderr_str().contains(value) {
            out.fail(format_args!("expected the error to name {value:?}"));
        }
    }
}

// Limits in fleets (each instance held, each hit reported by the parent):
// tests/fleet_limits.rs.
