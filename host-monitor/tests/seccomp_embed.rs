//! The embedder API, `seccomp::confine_vcpu`: a program that runs an
//! instance through the library and confines the thread that runs it gets
//! a thread that can run its guest to the end, and whose forbidden calls
//! (opening a file, writing an fd that is not its instance's, another KVM
//! ioctl) kill the process with SIGSYS; `VcpuPolicy::extra_fds` lets a
//! named fd through.
//!
//! A filter kills the whole process, so each case runs in a child: this
//! test binary again, running only `confined_child` with the case in
//! FLINT_TEST_EMBED_CASE.

mod common;

use host_monitor::hypercall::{Console, ConsoleSink};
use host_monitor::image::Image;
use host_monitor::instance::{Config, Instance, Launch};
use host_monitor::seccomp::{self, VcpuPolicy};
use host_monitor::timings::Timings;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

const CASE: &str = "FLINT_TEST_EMBED_CASE";
const IMAGE: &str = "FLINT_TEST_EMBED_IMAGE";

/// The console in memory: the confined thread writes no fd for it.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl ConsoleSink for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(bytes);
        Ok(())
    }

    fn io_fds(&self) -> Option<Vec<std::os::fd::RawFd>> {
        Some(Vec::new())
    }
}

/// In the child: starts `hello`, confines this thread, then does what
/// `case` says, and exits 0 if it was allowed (and the guest printed its
/// line, for `run`).
fn child(case: &str, image: &str) -> ! {
    let config = Config {
        mem_size: 16 << 20,
        stack_size: 256 << 10,
        timeout: None,
        cmdline: String::new(),
        timings: false,
        net: Default::default(),
    };
    let image = Image::load(std::path::Path::new(image), config.mem_size).expect("image");
    seccomp::confine_service_threads().expect("service threads");
    // An fd of the embedder's own, not the instance's.
    let mut pipe = [0; 2];
    // SAFETY: pipe(2) writes two fds into the local array.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    let console = Buffer::default();
    let launch = Launch {
        console: Some(Console::new(Box::new(console.clone()))),
        idle_poller: true,
        ..Launch::default()
    };
    let mut instance =
        Instance::start_with(&image, &config, launch, Timings::new(false)).expect("start");
    let policy = VcpuPolicy {
        extra_fds: if case == "extra-fd" {
            vec![pipe[1]]
        } else {
            Vec::new()
        },
        ..VcpuPolicy::default()
    };
    seccomp::confine_vcpu(&instance, &policy).expect("confine");
    match case {
        "run" => {
            let outcome = instance.run();
            let text = console.0.lock().map(|b| b.clone()).unwrap_or_default();
            let ok = outcome.status() == 0 && text == b"Hello, world!\n";
            std::process::exit(if ok { 0 } else { 3 });
        }
        "open" => {
            let _ = std::fs::File::open("/etc/hostname");
        }
        "write-other-fd" | "extra-fd" => {
            // SAFETY: one byte from a static to a pipe we own.
            unsafe { libc::write(pipe[1], b"x".as_ptr().cast(), 1) };
        }
        "kvm-other-request" => {
            // KVM_GET_FPU on its own vCPU fd: not on the list.
            let mut fpu = [0u8; 416];
            let request = (2u64 << 30) | (416 << 16) | (0xAE << 8) | 0x8c;
            // SAFETY: the kernel writes at most 416 bytes into `fpu` (or
            // the filter kills us first).
            unsafe { libc::ioctl(instance.vcpu_fd(), request as _, fpu.as_mut_ptr()) };
        }
        other => panic!("unknown case {other}"),
    }
    std::process::exit(0)
}

/// Not a test of its own: the entry of the child processes.
#[test]
fn confined_child() {
    if let (Ok(case), Ok(image)) = (std::env::var(CASE), std::env::var(IMAGE)) {
        child(&case, &image);
    }
}

fn hello() -> PathBuf {
    xtask::guest::build("hello").unwrap_or_else(|e| panic!("building hello: {e}"))
}

/// Runs `case` in a child; its exit status.
fn run_case(case: &str, image: &PathBuf) -> std::process::ExitStatus {
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "confined_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CASE, case)
        .env(IMAGE, image)
        .output()
        .expect("running the child");
    eprintln!(
        "{case}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.status
}

#[test]
fn a_confined_embedder_thread_runs_its_guest() {
    if !common::kvm_or_skip("a_confined_embedder_thread_runs_its_guest") {
        return;
    }
    let image = hello();
    for case in ["run", "extra-fd"] {
        let status = run_case(case, &image);
        assert_eq!(status.code(), Some(0), "{case}: {status:?}");
    }
}

#[test]
fn forbidden_calls_from_a_confined_embedder_thread_kill_with_sigsys() {
    if !common::kvm_or_skip("forbidden_calls_from_a_confined_embedder_thread_kill_with_sigsys") {
        return;
    }
    let image = hello();
    for case in ["open", "write-other-fd", "kvm-other-request"] {
        let status = run_case(case, &image);
        assert_eq!(status.signal(), Some(libc::SIGSYS), "{case}: {status:?}");
    }
}
