//! Building the host monitor, `flint`.

use std::path::PathBuf;

use crate::{cmd, target_dir, Error, Result};

/// Environment variable naming a `flint` binary to use instead of building.
pub const FLINT_BIN: &str = "FLINT_BIN";

/// Returns the `flint` binary: `$FLINT_BIN` if set, else the result of
/// `cargo build --release -p host-monitor` (`target/release/flint`).
pub fn build() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os(FLINT_BIN) {
        return Ok(PathBuf::from(bin));
    }
    cmd::run(
        cmd::cargo()
            .args(["build", "--quiet", "--release", "--package", "host-monitor"])
            .arg("--target-dir")
            .arg(target_dir())
            // Guest flags must never leak into the host build.
            .env_remove("CARGO_ENCODED_RUSTFLAGS"),
    )?;
    let bin = target_dir().join("release").join("flint");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(Error::MissingArtifact(bin))
    }
}
