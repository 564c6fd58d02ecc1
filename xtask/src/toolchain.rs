//! The Rust pieces Flint needs beyond a default rustup install: the
//! `x86_64-unknown-none` target for guests, and `clippy`/`rustfmt` for the
//! checks in `cargo xtask test`. Missing pieces are added with rustup, and
//! xtask says so.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::cmd;
use crate::{Error, Result};

/// The target every guest image is built for.
pub const GUEST_TARGET: &str = "x86_64-unknown-none";

/// Makes sure the guest target's standard library is installed, adding it
/// with `rustup target add` when it is missing. Checked once per process.
pub fn ensure_guest_target() -> Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| install_target_if_missing().map_err(|e| e.to_string()))
        .clone()
        .map_err(|why| Error::Toolchain {
            target: GUEST_TARGET,
            why,
        })
}

fn install_target_if_missing() -> Result<()> {
    if let Some(sysroot) = sysroot() {
        if sysroot
            .join("lib/rustlib")
            .join(GUEST_TARGET)
            .join("lib")
            .is_dir()
        {
            return Ok(());
        }
    }
    eprintln!("xtask: the Rust target {GUEST_TARGET} is missing; installing it with rustup");
    cmd::run(Command::new("rustup").args(["target", "add", GUEST_TARGET]))
}

/// The active toolchain's sysroot.
fn sysroot() -> Option<PathBuf> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(PathBuf::from(String::from_utf8(out.stdout).ok()?.trim()))
}

/// Makes sure `cargo clippy` and `cargo fmt` work, adding the components
/// with rustup when they are missing.
pub fn ensure_lint_tools() -> Result<()> {
    for (sub, component) in [("clippy", "clippy"), ("fmt", "rustfmt")] {
        if !cmd::succeeds(cmd::cargo().args([sub, "--version"])) {
            eprintln!("xtask: `cargo {sub}` is missing; installing {component} with rustup");
            cmd::run(Command::new("rustup").args(["component", "add", component]))?;
        }
    }
    Ok(())
}
