//! Failure isolation in a fleet: an instance that faults or exits is
//! reported, restarted or left stopped per `--restart`, and the others go
//! on; stop signals end every instance and every worker process.

mod support;

use std::time::Duration;

use support::fleet::{wait_gone, Fleet};
use support::{image, kvm_or_skip, scratch_dir, Run};

const WITHIN: Duration = Duration::from_secs(30);

#[test]
fn a_faulting_instance_does_not_stop_the_others() {
    if !kvm_or_skip() {
        return;
    }
    let json = scratch_dir("fleet-fault").join("summary.json");
    let _ = std::fs::remove_file(&json);
    let mut fleet = Fleet::start(
        &Run::fleet(&image("probe"), 12)
            .opts(&[
                "--per-worker",
                "5",
                "--summary-json",
                &json.to_string_lossy(),
            ])
            .guest(&["id-fault", "7"]),
    );
    fleet.wait_lines("up", 12, WITHIN);
    let line = fleet.wait_stderr("instance 7 stopped", WITHIN);
    if !line.starts_with("flint: instance 7 stopped: guest fault: page fault at 0x0") {
        fleet
            .server
            .fail(format_args!("unexpected report {line:?}"));
    }
    fleet.wait_stderr("idle CPU", WITHIN);
    let summary = std::fs::read_to_string(&json).unwrap_or_default();
    if !summary.contains("\"running\": 11") || !summary.contains("\"stopped\": 1") {
        fleet.server.fail(format_args!(
            "expected 11 running and 1 stopped:\n{summary}"
        ));
    }
    // The other eleven still run: every worker is alive until told to stop.
    let workers = fleet.workers();
    if workers.len() != 3 || !workers.iter().all(|w| w.alive()) {
        fleet
            .server
            .fail(format_args!("expected 3 live workers, found {workers:?}"));
    }
    fleet.server.signal(libc::SIGTERM);
    let out = fleet.server.wait_exit(WITHIN);
    if out.signal != Some(libc::SIGTERM) {
        out.fail("flint fleet should die by SIGTERM");
    }
    if out
        .stderr_str()
        .lines()
        .any(|l| l.contains("instance") && l.contains("stopped") && !l.contains("instance 7"))
    {
        out.fail("instances stopped by the signal must not be reported as failures");
    }
}

/// How many times instance 4 booted (`[4] id=4 up` lines).
fn boots_of_4(fleet: &Fleet) -> usize {
    fleet
        .server
        .snapshot()
        .stdout_str()
        .lines()
        .filter(|l| *l == "[4] id=4 up")
        .count()
}

#[test]
fn restart_on_failure_boots_a_failed_instance_again() {
    if !kvm_or_skip() {
        return;
    }
    let fleet = Fleet::start(
        &Run::fleet(&image("probe"), 6)
            .opts(&["--per-worker", "3", "--restart", "on-failure"])
            .guest(&["id-exit", "4", "3"]),
    );
    fleet.wait_lines("[4] id=4 up", 3, WITHIN);
    fleet.wait_stderr("instance 4 restarting", WITHIN);
    let others = fleet.server.snapshot().stdout_str();
    for id in [1, 2, 3, 5, 6] {
        let up = format!("[{id}] id={id} up");
        if others.lines().filter(|l| *l == up).count() != 1 {
            fleet.server.fail(format_args!(
                "instance {id} should have booted exactly once"
            ));
        }
    }
}

#[test]
fn restart_never_leaves_a_failed_instance_stopped() {
    if !kvm_or_skip() {
        return;
    }
    let fleet = Fleet::start(
        &Run::fleet(&image("probe"), 6)
            .opts(&["--per-worker", "3", "--restart", "never"])
            .guest(&["id-exit", "4", "3"]),
    );
    fleet.wait_lines("up", 6, WITHIN);
    let line = fleet.wait_stderr("instance 4 stopped", WITHIN);
    if line != "flint: instance 4 stopped: exited with status 3" {
        fleet
            .server
            .fail(format_args!("unexpected report {line:?}"));
    }
    std::thread::sleep(Duration::from_millis(1500));
    if boots_of_4(&fleet) != 1 {
        fleet
            .server
            .fail("with --restart never, instance 4 must boot once");
    }
    if !fleet.server.running() {
        fleet.server.fail("the other instances should still run");
    }
}

#[test]
fn sigterm_stops_every_instance_and_leaves_no_process() {
    if !kvm_or_skip() {
        return;
    }
    let mut fleet = Fleet::start(
        &Run::fleet(&image("probe"), 12)
            .opts(&["--per-worker", "4"])
            .guest(&["id-exit", "0", "0"]),
    );
    fleet.wait_lines("up", 12, WITHIN);
    let workers = fleet.workers();
    if workers.len() != 3 {
        fleet
            .server
            .fail(format_args!("expected 3 workers, found {workers:?}"));
    }
    fleet.server.signal(libc::SIGTERM);
    let out = fleet.server.wait_exit(WITHIN);
    if out.signal != Some(libc::SIGTERM) {
        out.fail("flint fleet should die by SIGTERM");
    }
    let left = wait_gone(&workers, Duration::from_secs(5));
    if !left.is_empty() {
        out.fail(format_args!(
            "workers still running after the parent ended: {left:?}"
        ));
    }
}

#[test]
fn workers_end_when_the_parent_is_killed() {
    if !kvm_or_skip() {
        return;
    }
    let mut fleet = Fleet::start(
        &Run::fleet(&image("probe"), 6)
            .opts(&["--per-worker", "2"])
            .guest(&["id-exit", "0", "0"]),
    );
    fleet.wait_lines("up", 6, WITHIN);
    let workers = fleet.workers();
    fleet.server.signal(libc::SIGKILL);
    let left = wait_gone(&workers, Duration::from_secs(10));
    if !left.is_empty() {
        fleet.server.fail(format_args!(
            "workers outlived their killed parent: {left:?}"
        ));
    }
}

#[test]
fn a_limit_that_binds_is_explained_in_one_line_before_anything_starts() {
    if !kvm_or_skip() {
        return;
    }
    // 100 instances in one worker need far more than 256 descriptors.
    let out = Run::fleet(&image("probe"), 100)
        .opts(&["--per-worker", "100"])
        .prefix(&["prlimit", "--nofile=256:256", "--"])
        .guest(&["exit", "0"])
        .go();
    out.status(125);
    let line = out.one_stderr_line();
    if !line.contains("RLIMIT_NOFILE is 256") || !line.contains("--per-worker") {
        out.fail("expected the line to name RLIMIT_NOFILE and a --per-worker that fits");
    }
}

#[test]
fn instances_that_cannot_start_are_counted_and_the_others_run() {
    if !kvm_or_skip() {
        return;
    }
    // Each worker may map 3.5 GiB: room for some 1 GiB guests, not five.
    let fleet = Fleet::start(
        &Run::fleet(&image("probe"), 10)
            .opts(&["--per-worker", "5", "--mem", "1G"])
            .prefix(&["prlimit", &format!("--as={}", 3584u64 << 20), "--"])
            .guest(&["id-exit", "0", "0"]),
    );
    let line = fleet.wait_stderr("instances started;", WITHIN);
    let numbers: Vec<u32> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    match numbers[..] {
        [started, 10, failed, ..] if started >= 2 && failed >= 2 && started + failed == 10 => {}
        _ => fleet.server.fail(format_args!(
            "expected `flint: K of 10 instances started; M could not start: ...`, got {line:?}"
        )),
    }
    if !line.contains("could not start: ") || !fleet.server.running() {
        fleet
            .server
            .fail("the instances that started should keep running");
    }
}
