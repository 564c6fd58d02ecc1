//! Debian packages the tests and benches need. `cargo xtask test` installs
//! the missing ones with `apt-get` when it runs as root, and otherwise says
//! what to install and goes on.

use std::process::{Command, Stdio};

use crate::{cmd, Result};

/// What the tests need: `(program that must be on PATH, Debian package)`.
/// Add a line here when a test starts using a new tool.
pub const TEST_PACKAGES: &[(&str, &str)] = &[
    // The coldstart bench's native baseline is a static C hello.
    ("gcc", "gcc"),
];

/// True if `program` is an executable file on `PATH`.
pub fn on_path(program: &str) -> bool {
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
    fn finds_programs_on_path_only() {
        assert!(on_path("sh"));
        assert!(!on_path("no-such-program-for-flint"));
    }
}
