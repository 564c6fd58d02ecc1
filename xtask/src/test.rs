//! `cargo xtask test`: everything from a fresh machine to a green suite.
//!
//! Installs what is missing (the guest target, clippy and rustfmt, Debian
//! packages), builds the monitor and every guest image, then runs
//! `cargo fmt --check`, `cargo clippy -D warnings` and `cargo test` over
//! the workspace with `FLINT_BIN` and `FLINT_IMAGE_DIR` pointing at what it
//! built, and last runs each fuzz target for a few seconds
//! ([`crate::fuzz::smoke`]).

use std::process::Command;

use crate::{cmd, guest, monitor, packages, toolchain, Error, Result};

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

    // Every check runs even when an earlier one fails, so one run shows
    // everything that is wrong; the tests go last, so their summary ends
    // the output.
    let checks: [(&str, Command); 3] = [
        ("cargo fmt --check", {
            let mut c = cmd::cargo();
            c.args(["fmt", "--all", "--check"]);
            c
        }),
        ("cargo clippy", {
            let mut c = cmd::cargo();
            c.args([
                "clippy",
                "--quiet",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]);
            c
        }),
        ("cargo test", {
            let mut c = cmd::cargo();
            c.args(["test", "--workspace"])
                .env(monitor::FLINT_BIN, &flint)
                .env("FLINT_IMAGE_DIR", guest::image_dir());
            c
        }),
    ];
    let mut failed = Vec::new();
    for (name, mut check) in checks {
        step(name);
        // Guest flags must never reach host builds.
        check.env_remove("CARGO_ENCODED_RUSTFLAGS");
        if let Err(e) = cmd::run(&mut check) {
            eprintln!("xtask: {e}");
            failed.push(name);
        }
    }
    // Last, briefly: a guard against targets that no longer build or
    // crash on their seeds, not a fuzzing campaign (`cargo xtask fuzz`).
    step(&format!(
        "fuzzing each target for {} s",
        crate::fuzz::SMOKE_SECS
    ));
    if let Err(e) = crate::fuzz::smoke() {
        eprintln!("xtask: {e}");
        failed.push("fuzz");
    }
    if failed.is_empty() {
        eprintln!("xtask: all checks passed");
        Ok(())
    } else {
        Err(Error::ChecksFailed(failed.join(", ")))
    }
}

fn step(what: &str) {
    eprintln!("xtask: {what}");
}
