//! Debian packages the tests and benches need. `cargo xtask test` (and
//! `cargo xtask bench net`) installs the missing ones, and only those, with
//! `apt-get` when it runs as root, and otherwise says what to install and
//! goes on.

use std::process::{Command, Stdio};

use crate::{cmd, Result};

/// What the tests need: `(program that must be on PATH, or absolute path of
/// a file the package installs, Debian package)`.
/// Add a line here when a test starts using a new tool.
pub const TEST_PACKAGES: &[(&str, &str)] = &[
    // The coldstart bench's native baseline is a static C hello.
    ("gcc", "gcc"),
    // The network tests' real clients: curl against the http app, ip for
    // namespaces and TAP devices, ping through a TAP device.
    ("curl", "curl"),
    ("ip", "iproute2"),
    ("ping", "iputils-ping"),
    // tests/gdb.rs drives real gdb against `flint run --gdb`.
    ("gdb", "gdb"),
    // tests/oci_containerd.rs: a private containerd (with runc and the
    // runc v2 shim) driven by ctr, and its CRI client in Debian's Python
    // (an absolute path: a module the package installs, not a program).
    ("ctr", "containerd"),
    (
        "/usr/lib/python3/dist-packages/grpc/__init__.py",
        "python3-grpcio",
    ),
    (
        "/usr/lib/python3/dist-packages/grpc_tools/protoc.py",
        "python3-grpc-tools",
    ),
];

/// What the benches need besides [`TEST_PACKAGES`]; `cargo xtask bench`
/// installs the missing ones the same way.
pub const BENCH_PACKAGES: &[(&str, &str)] = &[
    // `bench net` drives both HTTP servers with wrk.
    ("wrk", "wrk"),
    ("gcc", "gcc"),
];

/// True if `program` is an executable file on `PATH`.
pub fn on_path(program: &str) -> bool {
    if program.starts_with('/') {
        // A file a package installs, e.g. a Python module.
        return std::path::Path::new(program).is_file();
    }
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        let file = dir.join(program);
        file.metadata().is_ok_and(|m| {
            m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
        })
    })
}

/// True if this process runs as root.
pub fn is_root() -> bool {
    // /proc/self/status has "Uid: real effective saved fs".
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
            .unwrap_or(false)
    })
}

/// Installs the packages of `wanted` whose program is missing. Without
/// root, or without apt-get, it only warns: the tests that need a missing
/// tool then say so themselves.
pub fn ensure(wanted: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(program, _)| !on_path(program))
        .map(|&(_, pkg)| pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_root() || !on_path("apt-get") {
        eprintln!("xtask: warning: missing packages: {list}; install them (apt-get install {list}) for the full test suite");
        return Ok(());
    }
    eprintln!("xtask: installing missing packages with apt-get: {list}");
    let apt = |args: &[&str]| {
        let mut c = Command::new("apt-get");
        c.args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null());
        c
    };
    cmd::run(&mut apt(&["update", "-q"]))?;
    cmd::run(apt(&["install", "-y", "-q", "--no-install-recommends"]).args(&missing))
}

#[cfg(test)]
mod tests {
    use super::on_path;

    #[test]
    fn each_program_is_listed_once() {
        for list in [super::TEST_PACKAGES, super::BENCH_PACKAGES] {
            let mut programs: Vec<&str> = list.iter().map(|(p, _)| *p).collect();
            programs.sort_unstable();
            programs.dedup();
            assert_eq!(programs.len(), list.len(), "{list:?}");
        }
    }

    #[test]
    fn finds_programs_on_path_only() {
        assert!(on_path("sh"));
        assert!(!on_path("no-such-program-for-flint"));
    }
}
