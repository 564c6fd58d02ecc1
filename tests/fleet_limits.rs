//! Limits in a fleet (`--console-limit BYTES[/RATE]`, `--net-rate PPS`):
//! every instance is held to them, each instance's first hit of each limit
//! is reported by the parent as one `flint: limit: instance ID: ...` line
//! and counted in the summary, and the instances go on.

mod support;

use std::time::Duration;

use support::{image, kvm_or_skip, scratch_dir, Outcome, Run};

const WITHIN: Duration = Duration::from_secs(60);

/// The parent's `flint: limit: instance ID: ...` lines containing `what`.
fn limit_lines(out: &Outcome, what: &str) -> Vec<String> {
    out.stderr_str()
        .lines()
        .filter(|l| l.starts_with("flint: limit: instance ") && l.contains(what))
        .map(str::to_owned)
        .collect()
}

/// One limit line for each of instances `1..=n`, naming each.
#[track_caller]
fn one_line_per_instance(out: &Outcome, what: &str, n: u64) {
    let lines = limit_lines(out, what);
    if lines.len() as u64 != n {
        out.fail(format_args!(
            "expected {n} limit lines with {what:?}, one per instance, saw {lines:?}"
        ));
    }
    for id in 1..=n {
        let prefix = format!("flint: limit: instance {id}: ");
        if !lines.iter().any(|l| l.starts_with(&prefix)) {
            out.fail(format_args!("no limit line for instance {id}: {lines:?}"));
        }
    }
}

#[test]
fn console_limit_holds_every_instance_and_each_hit_is_reported() {
    if !kvm_or_skip() {
        return;
    }
    let dir = scratch_dir("fleet-console-limit");
    let _ = std::fs::remove_dir_all(&dir);
    // Each instance writes 256 KiB.
    let out = Run::fleet(&image("probe"), 3)
        .opts(&["--per-worker", "2", "--console-limit", "1K"])
        .opts(&["--console-dir", &dir.to_string_lossy()])
        .guest(&["console-big"])
        .limit(WITHIN)
        .go();
    // The limit drops output; it does not fail the instances.
    out.status(0);
    one_line_per_instance(&out, "console limit of 1024 bytes reached", 3);
    for id in 1..=3 {
        let log = std::fs::read(dir.join(format!("{id}.log"))).unwrap_or_default();
        if log.len() != 1024 {
            out.fail(format_args!(
                "{id}.log has {} bytes, expected the limit's 1024",
                log.len()
            ));
        }
    }
    if !out
        .stderr_str()
        .lines()
        .any(|l| l.starts_with("flint:   limits hit     3"))
    {
        out.fail("expected the summary to count 3 limit hits");
    }
}

#[test]
fn console_rate_limit_in_a_fleet_is_reported_per_instance() {
    if !kvm_or_skip() {
        return;
    }
    let out = Run::fleet(&image("probe"), 2)
        .opts(&["--console-limit", "1M/16K", "--stats"])
        .guest(&["console-big"])
        .limit(WITHIN)
        .go();
    out.status(0);
    one_line_per_instance(&out, "console rate limit of 16384 bytes/s reached", 2);
    // --stats: each instance's drops, by id.
    for id in 1..=2 {
        let prefix = format!("flint: stats: [{id}] limits ");
        let line = out
            .stderr_str()
            .lines()
            .find(|l| l.starts_with(&prefix))
            .map(str::to_owned)
            .unwrap_or_else(|| out.fail(format_args!("no limits stats for instance {id}")));
        if line.contains("console_rate_dropped=0 ") {
            out.fail(format_args!("instance {id} dropped nothing: {line}"));
        }
    }
}

#[test]
fn net_rate_holds_every_instance_and_each_hit_is_reported() {
    if !kvm_or_skip() {
        return;
    }
    let out = Run::fleet(&image("probe"), 2)
        .opts(&["--net", "user", "--net-rate", "100", "--stats"])
        .guest(&["net", "flood", "600"])
        .limit(WITHIN)
        .go();
    out.status(0);
    let done = out
        .stdout_str()
        .lines()
        .filter(|l| l.ends_with("] probe: net done"))
        .count();
    if done != 2 {
        out.fail("expected both instances to finish their flood");
    }
    one_line_per_instance(&out, "network rate limit of 100 frames/s reached", 2);
    for id in 1..=2 {
        let prefix = format!("flint: stats: [{id}] limits ");
        let line = out
            .stderr_str()
            .lines()
            .find(|l| l.starts_with(&prefix))
            .map(str::to_owned)
            .unwrap_or_else(|| out.fail(format_args!("no limits stats for instance {id}")));
        // 600 frames in a burst against a bucket of 100.
        let dropped: u64 = line
            .rsplit("net_rate_dropped=")
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        if !(400..=510).contains(&dropped) {
            out.fail(format_args!(
                "instance {id}: expected ~500 frames dropped: {line}"
            ));
        }
    }
}

#[test]
fn a_fleet_within_its_limits_reports_nothing() {
    if !kvm_or_skip() {
        return;
    }
    let out = Run::fleet(&image("hello"), 2)
        .opts(&["--console-limit", "1M/1M", "--net-rate", "10"])
        .limit(WITHIN)
        .go();
    out.status(0);
    if out.stderr_str().contains("limit") {
        out.fail("no limit was hit: nothing to report");
    }
}
