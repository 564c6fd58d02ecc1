//! Building the host monitor, `flint`.

use std::path::PathBuf;

use crate::{cmd, target_dir, Error, Result};

/// Environment variable naming a `flint` binary to use instead of building.
pub const FLINT_BIN: &str = "FLINT_BIN";

/// The host triple the monitor is built for.
pub const HOST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Returns the `flint` binary: `$FLINT_BIN` if set, else a release build of
/// `host-monitor`, statically linked, at
/// `target/x86_64-unknown-linux-gnu/release/flint`.
///
/// Static, because the dynamic loader costs ~90 µs of every `flint run` on
/// these machines, a fifth of a cold start. The explicit `--target` keeps
/// `+crt-static` away from proc-macro crates, which cannot be built with it;
/// a plain `cargo build --release -p host-monitor` still gives a working,
/// dynamically linked `target/release/flint`.
pub fn build() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os(FLINT_BIN) {
        return Ok(PathBuf::from(bin));
    }
    cmd::run(
        cmd::cargo()
            .args(["build", "--quiet", "--release", "--package", "host-monitor"])
            .args(["--target", HOST_TARGET])
            .arg("--target-dir")
            .arg(target_dir())
            // Guest flags must never leak into the host build.
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env("RUSTFLAGS", "-C target-feature=+crt-static"),
    )?;
    let bin = target_dir().join(HOST_TARGET).join("release").join("flint");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(Error::MissingArtifact(bin))
    }
}

/// Returns `flint-oci`, the OCI runtime, built statically beside `flint`
/// by [`build`] (`$FLINT_OCI_BIN` if set).
pub fn build_oci() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("FLINT_OCI_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let flint = build()?;
    let bin = flint.with_file_name("flint-oci");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(Error::MissingArtifact(bin))
    }
}
