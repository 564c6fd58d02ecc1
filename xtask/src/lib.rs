//! Flint's build tool, as a library: the one place that knows how to build
//! a guest image, the monitor, and the whole test run. The `xtask` binary
//! (`cargo xtask ...`) is a thin CLI over it; the integration tests use
//! [`guest::build`] and [`monitor::build`] to get fresh images and monitor.

#![warn(missing_docs)]

pub mod bench;
mod cmd;
pub mod error;
pub mod fuzz;
pub mod guest;
pub mod monitor;
pub mod oci;
pub mod packages;
pub mod test;
pub mod toolchain;

use std::path::{Path, PathBuf};

pub use error::Error;

/// The result type of every xtask operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The workspace root (the folder with the root `Cargo.toml`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one folder below the workspace root")
        .to_path_buf()
}

/// `target/` under the workspace root: host builds and images go there.
pub fn target_dir() -> PathBuf {
    root().join("target")
}
