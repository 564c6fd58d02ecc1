//! seccomp in `flint fleet`: every thread of the parent and of each worker
//! (vCPU, watchdog, switch, stop-signal threads) runs filtered once set
//! up, fleets with networking, `--publish`, `--console-dir`, `--timeout`
//! and restarts work under the filters, and a forbidden system call from a
//! worker's vCPU thread kills that worker by SIGSYS, which the fleet
//! reports while the other workers' instances go on.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::{Duration, Instant};

use support::fleet::{children, Fleet};
use support::net::free_port;
use support::{hooked_flint, image, kvm_or_skip, scratch_dir, Run};

const WITHIN: Duration = Duration::from_secs(30);

/// Name and `Seccomp:` mode of every thread of `pid`.
fn thread_modes(pid: u32) -> Vec<(String, String)> {
    let mut modes = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return modes;
    };
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        modes.push((field("Name:"), field("Seccomp:")));
    }
    modes
}

/// Every thread of the fleet `parent` and its workers, as `(pid, name,
/// mode)`, once every one shows mode 2 and the workers have at least
/// `names` among their threads (or after 10 s: as they are then).
fn fleet_threads(parent: u32, names: &[&str]) -> Vec<(u32, String, String)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut all = Vec::new();
        for pid in std::iter::once(parent).chain(children(parent).iter().map(|p| p.pid)) {
            for (name, mode) in thread_modes(pid) {
                all.push((pid, name, mode));
            }
        }
        let filtered = all.iter().all(|(_, _, mode)| mode == "2");
        let complete = names
            .iter()
            .all(|want| all.iter().any(|(_, name, _)| name.starts_with(want)));
        if (filtered && complete) || Instant::now() > deadline {
            return all;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[track_caller]
fn assert_all_filtered(fleet: &Fleet, threads: &[(u32, String, String)], names: &[&str]) {
    if let Some((pid, name, mode)) = threads.iter().find(|(_, _, mode)| mode != "2") {
        fleet.server.fail(format_args!(
            "thread {name} of process {pid} has Seccomp: {mode}, not 2: {threads:?}"
        ));
    }
    for want in names {
        if !threads.iter().any(|(_, name, _)| name.starts_with(want)) {
            fleet
                .server
                .fail(format_args!("no {want} thread among {threads:?}"));
        }
    }
}

/// One HTTP GET of `/` through the published port; the status line.
fn get(port: u16) -> Result<String, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    c.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut got = Vec::new();
    c.read_to_end(&mut got).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&got);
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

#[test]
fn a_networked_fleet_runs_with_every_thread_filtered() {
    if !kvm_or_skip() {
        return;
    }
    let port = free_port();
    let dir = scratch_dir("seccomp-fleet-http");
    let _ = std::fs::remove_dir_all(&dir);
    let mut fleet = Fleet::start(
        &Run::fleet(&image("http"), 3)
            .opts(&["--per-worker", "2", "--net", "user", "--timeout", "120"])
            .opts(&["--restart", "on-failure"])
            .opts(&["--publish", &format!("127.0.0.1:{port}:80")])
            .opts(&["--console-dir", &dir.to_string_lossy()]),
    );
    fleet.wait_stderr("idle CPU", WITHIN);
    for i in 0..6 {
        match get(port) {
            Ok(status) if status.starts_with("HTTP/1.") && status.contains(" 200") => {}
            Ok(status) => fleet
                .server
                .fail(format_args!("request {i}: status line {status:?}")),
            Err(e) => fleet.server.fail(format_args!("request {i}: {e}")),
        }
    }
    let names = [
        "flint-switch",
        "flint-signals",
        "flint-watchdog",
        "vcpu-1",
        "vcpu-2",
        "vcpu-3",
    ];
    let threads = fleet_threads(fleet.server.pid(), &names);
    assert_all_filtered(&fleet, &threads, &names);
    if fleet.workers().len() != 2 {
        fleet.server.fail("expected 2 workers");
    }
    for id in 1..=3 {
        let log = std::fs::read_to_string(dir.join(format!("{id}.log"))).unwrap_or_default();
        if !log.contains("listening on") {
            fleet
                .server
                .fail(format_args!("{id}.log has no `listening on` line: {log:?}"));
        }
    }
    fleet.server.signal(libc::SIGTERM);
    let out = fleet.server.wait_exit(WITHIN);
    if out.signal != Some(libc::SIGTERM) {
        out.fail("flint fleet should die by SIGTERM under the filters");
    }
    if out.stderr_str().contains("SIGSYS") {
        out.fail("nothing may be killed by the filters");
    }
}

/// How many times instance 2 booted (`[2] id=2 up` lines).
fn boots_of_2(fleet: &Fleet) -> usize {
    fleet
        .server
        .snapshot()
        .stdout_str()
        .lines()
        .filter(|l| *l == "[2] id=2 up")
        .count()
}

#[test]
fn restarts_and_echo_work_under_the_filters() {
    if !kvm_or_skip() {
        return;
    }
    // Instance 2 faults at once and is started again, each time on a new
    // vCPU thread (a filtered thread cannot create a VM).
    let fleet = Fleet::start(
        &Run::fleet(&image("probe"), 3)
            .opts(&["--per-worker", "3", "--restart", "on-failure"])
            .guest(&["id-fault", "2"]),
    );
    let deadline = Instant::now() + WITHIN;
    while boots_of_2(&fleet) < 3 {
        if Instant::now() > deadline || !fleet.server.running() {
            fleet.server.fail("expected instance 2 to boot 3 times");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let threads = fleet_threads(fleet.server.pid(), &["vcpu-1", "vcpu-3"]);
    assert_all_filtered(&fleet, &threads, &["vcpu-1", "vcpu-3"]);
    fleet.server.signal(libc::SIGTERM);
    let out = fleet.server.wait_exit(WITHIN);
    if out.signal != Some(libc::SIGTERM) || out.stderr_str().contains("SIGSYS") {
        out.fail("expected death by SIGTERM and nothing killed by a filter");
    }

    // echo with --publish: bytes through the switch thread and back.
    let port = free_port();
    let fleet = Fleet::start(
        &Run::fleet(&image("echo"), 2)
            .opts(&["--net", "user"])
            .opts(&["--publish", &format!("127.0.0.1:{port}:7")]),
    );
    fleet.wait_stderr("idle CPU", WITHIN);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| fleet.server.fail(format_args!("connect: {e}")));
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"under the filter\n").unwrap();
    let mut got = [0u8; 17];
    if let Err(e) = c.read_exact(&mut got) {
        fleet.server.fail(format_args!("echo read: {e}"));
    }
    if &got != b"under the filter\n" {
        fleet.server.fail(format_args!("echoed {got:?}"));
    }
    let threads = fleet_threads(fleet.server.pid(), &["flint-switch"]);
    assert_all_filtered(&fleet, &threads, &["flint-switch"]);
}

#[test]
fn no_seccomp_leaves_a_fleet_unfiltered_and_says_so() {
    if !kvm_or_skip() {
        return;
    }
    let out = Run::fleet(&image("hello"), 2)
        .opts(&["--no-seccomp"])
        .limit(WITHIN)
        .go();
    out.status(0);
    let warnings = out
        .stderr_str()
        .lines()
        .filter(|l| l.contains("WARNING") && l.contains("seccomp"))
        .count();
    if warnings != 1 {
        out.fail(format_args!(
            "expected one loud --no-seccomp warning, saw {warnings}"
        ));
    }
}

#[test]
fn a_forbidden_syscall_from_a_worker_vcpu_thread_kills_that_worker() {
    if !kvm_or_skip() {
        return;
    }
    let flint = hooked_flint();
    let hello = image("hello");
    for which in ["open", "kvm-run-other-fd", "kvm-other-request", "mmap-exec"] {
        // Instance 3 (worker 2) makes the call once its filter is on.
        let out = Command::new("timeout")
            .arg("60")
            .arg(&flint)
            .args(["fleet", "-n", "4", "--per-worker", "2"])
            .arg(&hello)
            .env("FLINT_TEST_FORBIDDEN_SYSCALL", which)
            .env("FLINT_TEST_FORBIDDEN_INSTANCE", "3")
            .output()
            .expect("running the hooked flint");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let show = format!(
            "{which}: status {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
        assert_eq!(out.status.code(), Some(1), "{show}");
        assert!(
            stderr.contains("worker 2 (instances 3-4) was killed by its seccomp filter (SIGSYS)"),
            "the fleet must report the SIGSYS: {show}"
        );
        assert!(
            !stderr.contains("the forbidden call"),
            "the call was allowed: {show}"
        );
        // Worker 1's instances ran to their end; instance 3 never ran.
        for id in [1, 2] {
            assert!(
                stdout.contains(&format!("[{id}] Hello, world!")),
                "instance {id} must be untouched: {show}"
            );
        }
        assert!(
            !stdout.contains("[3] "),
            "instance 3 must not have run: {show}"
        );
        assert!(out.status.signal().is_none(), "{show}");
    }
}
