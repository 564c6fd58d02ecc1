//! `cargo xtask test`: everything from a fresh machine to a green suite.
//!
//! Installs what is missing (the guest target, clippy and rustfmt, Debian
//! packages), builds the monitor and every guest image, then runs
//! `cargo fmt --check`, `cargo clippy -D warnings` and `cargo test` over
//! the workspace with `FLINT_BIN` and `FLINT_IMAGE_DIR` pointing at what it
//! built.

use crate::{cmd, guest, monitor, packages, toolchain, Result};

/// Runs the whole test suite.
pub fn run() -> Result<()> {
    toolchain::ensure_guest_target()?;
    toolchain::ensure_lint_tools()?;
    packages::ensure(packages::TEST_PACKAGES)?;

    step("building the monitor");
    let flint = monitor::build()?;
    for name in guest::all()? {
        step(&format!("building guest {name}"));
        let image = guest::build(&name)?;
        eprintln!("        {}", image.display());
    }

    step("cargo fmt --check");
    cmd::run(cmd::cargo().args(["fmt", "--all", "--check"]))?;
    step("cargo clippy");
    cmd::run(
        cmd::cargo()
            .args([
                "clippy",
                "--quiet",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
            .env_remove("CARGO_ENCODED_RUSTFLAGS"),
    )?;
    step("cargo test");
    cmd::run(
        cmd::cargo()
            .args(["test", "--workspace"])
            .env(monitor::FLINT_BIN, &flint)
            .env("FLINT_IMAGE_DIR", guest::image_dir())
            .env_remove("CARGO_ENCODED_RUSTFLAGS"),
    )
}

fn step(what: &str) {
    eprintln!("xtask: {what}");
}
