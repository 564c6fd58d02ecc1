//! `flint run --gdb`: real gdb, in batch mode, debugging real guests over
//! the GDB remote protocol: breakpoints, steps, variables, registers, a
//! real fault, Ctrl-C, detach and kill.
//!
//! The `debuggee` test guest is built with debug info
//! (`xtask::guest::build_debug`, the `guest-debug` profile); the normal
//! images carry symbols only, which is enough for the fault and Ctrl-C
//! tests on `probe`.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};
use support::{Run, Server};

/// How long one gdb session may take: far above what one takes (well
/// under a second), so only a hang reaches it.
const GDB_LIMIT: Duration = Duration::from_secs(60);

/// The debuggee's image with debug info.
fn debuggee() -> PathBuf {
    static IMAGE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| xtask::guest::build_debug("debuggee").map_err(|e| e.to_string()))
        .clone()
        .unwrap_or_else(|e| panic!("building the debuggee with debug info failed: {e}"))
}

/// True if KVM and gdb are both there; says loudly why a test is skipped.
fn ready() -> bool {
    if !support::kvm_or_skip() {
        return false;
    }
    if Command::new("gdb").arg("--version").output().is_err() {
        let name = thread::current().name().unwrap_or("<test>").to_owned();
        eprintln!(
            "!!!!!! SKIPPED, NOT PASSED: {name}: gdb is not installed (apt-get install gdb; \
             cargo xtask test installs it)"
        );
        return false;
    }
    true
}

/// `flint run --gdb 127.0.0.1:0 IMAGE -- ARGS` in the background, and the
/// address it waits for gdb on (from its stderr line).
fn flint_waiting(image: &Path, args: &[&str]) -> (Server, String) {
    let server = Run::image(image)
        .opts(&["--gdb", "127.0.0.1:0"])
        .guest(args)
        .serve();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = server.snapshot().stderr_str();
        if let Some(rest) = seen.split("waiting for gdb on ").nth(1) {
            let addr = rest.split_whitespace().next().unwrap_or_default();
            return (server, addr.to_owned());
        }
        if !server.running() || Instant::now() > deadline {
            server.fail("flint did not say it waits for gdb");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// gdb in batch mode on `image`, connected to `addr`, running `commands`.
fn gdb(image: &Path, addr: &str, commands: &[&str]) -> Child {
    let mut cmd = Command::new("gdb");
    cmd.args([
        "-batch",
        "-nx",
        "-ex",
        "set pagination off",
        "-ex",
        "set confirm off",
    ])
    .args(["-ex", &format!("target remote {addr}")]);
    for command in commands {
        cmd.args(["-ex", command]);
    }
    cmd.arg(image)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting gdb: {e}"))
}

/// Waits for gdb (killing it at [`GDB_LIMIT`]) and returns all it printed.
fn gdb_output(mut child: Child) -> String {
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out = thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    let err = thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + GDB_LIMIT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break format!("{status:?}"),
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break format!("killed by the test after {GDB_LIMIT:?}");
            }
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("waiting for gdb: {e}"),
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    format!("{out}{err}\n(gdb: {status})")
}

#[track_caller]
fn expect(gdb: &str, flint: &Server, needles: &[&str]) {
    for needle in needles {
        if !gdb.contains(needle) {
            flint.fail(format_args!(
                "gdb's output lacks {needle:?}:\n---- gdb ----\n{gdb}\n-------------"
            ));
        }
    }
}

#[test]
fn gdb_breaks_at_main_steps_reads_a_variable_and_runs_to_the_end() {
    if !ready() {
        return;
    }
    let image = debuggee();
    let (flint, addr) = flint_waiting(&image, &[]);
    let session = gdb(
        &image,
        &addr,
        &[
            // Stopped before the first instruction: at the entry point.
            "info registers rip",
            "break debuggee::main",
            "continue",
            // Over the line that calls compute(): steps and a breakpoint
            // at the return address.
            "next",
            "print answer",
            "stepi",
            "print $rip == $pc",
            "continue",
        ],
    );
    let out = gdb_output(session);
    expect(
        &out,
        &flint,
        &[
            "in _start",
            "Breakpoint 1, debuggee::main",
            "main.rs:13",
            "$1 = 42",
            "$2 = true",
            "exited with code 03",
        ],
    );
    let end = flint.wait_exit(Duration::from_secs(20));
    end.status(3);
    if end.stdout_str() != "debuggee: the answer is 42\n" {
        end.fail("expected the guest's one line on stdout");
    }
}

#[test]
fn gdb_breakpoint_in_a_loop_stops_every_time_and_registers_can_be_written() {
    if !ready() {
        return;
    }
    let image = debuggee();
    let (flint, addr) = flint_waiting(&image, &[]);
    let session = gdb(
        &image,
        &addr,
        &[
            "break main.rs:23",
            "continue",
            "continue",
            "continue",
            // Third time round: i = 2, total = 0 + 1.
            "print i",
            "print total",
            // The debug image has unwind tables: the whole stack.
            "bt",
            "delete",
            // total 11 instead of 1: the loop ends with 11 + 4 + 9 + 16 +
            // 25 = 65, the answer is 52 and the exit status 13.
            "set var total = 11",
            "continue",
        ],
    );
    let out = gdb_output(session);
    expect(
        &out,
        &flint,
        &[
            "$1 = 2",
            "$2 = 1",
            "in debuggee::main",
            "in guest_kernel::entry::start",
            "exited with code 015",
        ],
    );
    let end = flint.wait_exit(Duration::from_secs(20));
    end.status(13);
    if end.stdout_str() != "debuggee: the answer is 52\n" {
        end.fail("expected the answer gdb's write made");
    }
}

#[test]
fn gdb_steps_over_a_hypercall_one_instruction_at_a_time() {
    if !ready() {
        return;
    }
    let image = debuggee();
    let breaks: Vec<String> = hypercall_stores(&image)
        .iter()
        .map(|at| format!("break *{at:#x}"))
        .collect();
    let mut commands: Vec<&str> = breaks.iter().map(String::as_str).collect();
    // At the first hypercall's store, one instruction.
    commands.extend([
        "continue",
        "set $store = $pc",
        "stepi",
        "print $pc - $store",
    ]);
    commands.extend(["delete", "continue"]);
    let (flint, addr) = flint_waiting(&image, &[]);
    let out = gdb_output(gdb(&image, &addr, &commands));
    // `mov %rax,(%rcx,%rdx,8)` is 4 bytes: the step ends right after it,
    // not one instruction late.
    expect(&out, &flint, &["$1 = 4", "exited with code 03"]);
    flint.wait_exit(Duration::from_secs(20)).status(3);
}

/// The guest's hypercall stores (a `mov %rax,(%reg,%reg,8)` within a few
/// bytes after the hypercall page's address is loaded), found in the text
/// of `image`.
fn hypercall_stores(image: &Path) -> Vec<u64> {
    let elf = support::elf::Elf::read(image);
    let text = elf.text();
    let start = text.p_offset as usize;
    let bytes = &elf.bytes[start..start + text.p_filesz as usize];
    let mut stores = Vec::new();
    for (i, window) in bytes.windows(16).enumerate() {
        if window[..5] != [0xb9, 0x00, 0x00, 0x00, 0xc0] {
            continue;
        }
        if let Some(at) = window[5..].windows(3).position(|w| w == [0x48, 0x89, 0x04]) {
            stores.push(text.p_vaddr + (i + 5 + at) as u64);
        }
    }
    assert!(!stores.is_empty(), "no hypercall store found in {image:?}");
    stores
}

#[test]
fn gdb_sees_a_real_fault_as_sigsegv_and_the_instance_ends_with_it() {
    if !ready() {
        return;
    }
    let image = support::image("probe");
    let (flint, addr) = flint_waiting(&image, &["fault", "null"]);
    let session = gdb(
        &image,
        &addr,
        &["continue", "info registers rip", "continue"],
    );
    let out = gdb_output(session);
    expect(
        &out,
        &flint,
        &[
            "Program received signal SIGSEGV",
            "probe_null_deref",
            "Program terminated with signal SIGSEGV",
        ],
    );
    let end = flint.wait_exit(Duration::from_secs(20));
    end.status(139);
    if !end
        .stderr_str()
        .contains("guest fault: page fault at 0x0 from rip")
    {
        end.fail("expected the usual fault line");
    }
}

#[test]
fn gdb_ctrl_c_stops_a_spinning_guest_and_kill_ends_it() {
    if !ready() {
        return;
    }
    let image = support::image("probe");
    let (flint, addr) = flint_waiting(&image, &["fault", "loop"]);
    let session = gdb(
        &image,
        &addr,
        &["continue", "info registers rip", "stepi", "kill"],
    );
    // gdb's own Ctrl-C: SIGINT to gdb, which sends the interrupt byte.
    flint.wait_line("spinning", Duration::from_secs(20));
    thread::sleep(Duration::from_millis(200));
    // SAFETY: kill(2) on the gdb child we started and have not reaped.
    unsafe { libc::kill(session.id() as libc::pid_t, libc::SIGINT) };
    let out = gdb_output(session);
    expect(
        &out,
        &flint,
        &["Program received signal SIGINT", "in probe_spin"],
    );
    let end = flint.wait_exit(Duration::from_secs(20));
    if end.signal != Some(libc::SIGKILL) {
        end.fail("gdb's kill should end flint by SIGKILL");
    }
}

#[test]
fn gdb_detach_lets_the_guest_run_on_alone() {
    if !ready() {
        return;
    }
    let image = debuggee();
    let (flint, addr) = flint_waiting(&image, &[]);
    let session = gdb(
        &image,
        &addr,
        &["break debuggee::compute", "continue", "detach"],
    );
    let out = gdb_output(session);
    expect(
        &out,
        &flint,
        &["Breakpoint 1, debuggee::compute", "detached"],
    );
    let end = flint.wait_exit(Duration::from_secs(20));
    end.status(3);
    if end.stdout_str() != "debuggee: the answer is 42\n" {
        end.fail("expected the guest to finish on its own");
    }
}

#[test]
fn gdb_port_in_use_refuses_the_start() {
    if !support::kvm_or_skip() {
        return;
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = taken.local_addr().expect("its address").port();
    let end = support::probe(&[]).opts(&["--gdb", &port.to_string()]).go();
    end.status(125);
    if !end.stderr_str().contains("--gdb 127.0.0.1:") {
        end.fail("expected the port in the message");
    }
}

#[test]
fn a_stop_signal_ends_a_guest_that_gdb_holds_stopped() {
    if !ready() {
        return;
    }
    let image = debuggee();
    let marker = support::scratch_dir("gdb").join(format!("held-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let (flint, addr) = flint_waiting(&image, &[]);
    let touch = format!("shell touch {}", marker.display());
    let session = gdb(
        &image,
        &addr,
        &[
            "break debuggee::main",
            "continue",
            &touch,
            "shell sleep 2",
            "continue",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !marker.exists() {
        if Instant::now() > deadline {
            flint.fail("gdb never stopped at main");
        }
        thread::sleep(Duration::from_millis(10));
    }
    flint.signal(libc::SIGTERM);
    let end = flint.wait_exit(Duration::from_secs(20));
    if end.signal != Some(libc::SIGTERM) {
        end.fail("flint should die by SIGTERM while gdb holds the guest");
    }
    let out = gdb_output(session);
    expect(&out, &flint, &["Breakpoint 1, debuggee::main"]);
    if end.stdout_str().contains("answer") {
        end.fail("the guest must not have run on");
    }
}
