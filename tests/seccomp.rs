//! seccomp (`flint run`): every monitor thread runs filtered once setup is
//! done, `--no-seccomp` says so loudly, and a forbidden system call from the
//! vCPU thread kills the monitor with SIGSYS. That every app works under
//! the filter is what the rest of the suite shows: it runs with it on.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{flint_bin, hooked_flint, image, kvm_or_skip, Run};

/// `flint run hello` from the hooked binary, making forbidden call `which`.
fn hooked_hello(flint: &Path, which: Option<&str>) -> Output {
    let mut cmd = Command::new(flint);
    cmd.arg("run").arg(image("hello"));
    if let Some(which) = which {
        cmd.env("FLINT_TEST_FORBIDDEN_SYSCALL", which);
    }
    cmd.output().unwrap()
}

#[test]
fn forbidden_syscalls_from_vcpu_thread_kill_with_sigsys() {
    if !kvm_or_skip() {
        return;
    }
    let flint = hooked_flint();
    for which in ["open", "kvm-run-other-fd", "kvm-other-request", "mmap-exec"] {
        let out = hooked_hello(&flint, Some(which));
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGSYS),
            "{which}: expected death by SIGSYS, got {:?}; stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout.is_empty(),
            "{which}: the guest must not have run"
        );
    }
    // The same binary without the hook's variable runs the guest.
    let out = hooked_hello(&flint, None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"Hello, world!\n");
}

#[test]
fn no_seccomp_warns_with_one_line() {
    if !kvm_or_skip() {
        return;
    }
    let out = Run::image(&image("hello")).opts(&["--no-seccomp"]).go();
    out.status(0).stdout_is("Hello, world!\n");
    let line = out.one_stderr_line();
    if !line.contains("WARNING") || !line.contains("seccomp") {
        out.fail("expected one loud warning about --no-seccomp");
    }
}

/// The `Seccomp:` mode (0 off, 2 filter) of every thread of `pid`, once it
/// has `threads` threads, all filtered (0: as they are now).
fn seccomp_modes(pid: u32, threads: usize) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut modes = Vec::new();
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                let status =
                    std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
                let field = |name: &str| {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(|v| v.trim().to_owned())
                        .unwrap_or_default()
                };
                modes.push((field("Name:"), field("Seccomp:")));
            }
        }
        // The kernel's own KVM threads (kvm-nx-lpage-recovery) show up
        // too, and inherit the filter.
        let settled = (threads == 0 && !modes.is_empty())
            || (threads > 0 && modes.len() >= threads && modes.iter().all(|(_, m)| m == "2"));
        if settled || Instant::now() > deadline {
            return modes;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn running_probe(opts: &[&str]) -> std::process::Child {
    Command::new(flint_bin())
        .arg("run")
        .args(opts)
        .arg(image("probe"))
        .args(["--", "poll-forever"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn every_thread_is_filtered_by_default() {
    if !kvm_or_skip() {
        return;
    }
    // --timeout adds the watchdog thread.
    let mut child = running_probe(&["--timeout", "20"]);
    let modes = seccomp_modes(child.id(), 2);
    let _ = child.kill();
    let _ = child.wait();
    assert!(modes.len() >= 2, "vCPU and watchdog threads: {modes:?}");
    for (name, mode) in &modes {
        assert_eq!(mode, "2", "thread {name} is not filtered: {modes:?}");
    }
    assert!(
        modes.iter().any(|(n, _)| n == "flint-watchdog"),
        "{modes:?}"
    );
}

#[test]
fn no_seccomp_leaves_threads_unfiltered() {
    if !kvm_or_skip() {
        return;
    }
    let mut child = running_probe(&["--no-seccomp", "--timeout", "20"]);
    // Give it time to finish setup, then look.
    std::thread::sleep(Duration::from_millis(300));
    let modes = seccomp_modes(child.id(), 0);
    let _ = child.kill();
    let _ = child.wait();
    assert!(!modes.is_empty());
    for (name, mode) in &modes {
        assert_eq!(mode, "0", "thread {name} is filtered: {modes:?}");
    }
}

/// A stop signal still stops a filtered monitor by that signal.
#[test]
fn sigterm_under_the_filter() {
    if !kvm_or_skip() {
        return;
    }
    let mut child = running_probe(&[]);
    seccomp_modes(child.id(), 1);
    // SAFETY: kill with a valid pid and signal.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
}
