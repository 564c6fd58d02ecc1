//! What can go wrong in xtask, as sentences for the user.

use std::path::PathBuf;
use std::process::ExitStatus;

/// An xtask failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No crate directory for a guest name.
    #[error("no guest named `{0}`: expected a crate in apps/{0}/ or tests/guests/{0}/")]
    UnknownGuest(String),
    /// A crate manifest without a readable package name.
    #[error("{0}: no `name = \"...\"` in its [package] section")]
    NoPackageName(PathBuf),
    /// A program could not be started at all.
    #[error("could not start `{program}`: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// A program ran and failed.
    #[error("`{command}` failed ({status})")]
    Failed {
        /// The command line, for the user to rerun.
        command: String,
        /// How it ended.
        status: ExitStatus,
    },
    /// A build reported success but its output is missing.
    #[error("the build succeeded but {0} does not exist")]
    MissingArtifact(PathBuf),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The `x86_64-unknown-none` target is missing and rustup cannot add it.
    #[error("the Rust target {target} is not installed and rustup could not add it: {why}")]
    Toolchain {
        /// The target triple.
        target: &'static str,
        /// Why.
        why: String,
    },
    /// Some of the checks of `cargo xtask test` failed.
    #[error("these checks failed: {0}")]
    ChecksFailed(String),
    /// `cargo xtask fuzz` was given a target that does not exist.
    #[error("no fuzz target named `{0}`; the targets are {targets}", targets = crate::fuzz::TARGETS.join(", "))]
    UnknownFuzzTarget(String),
    /// Nightly or cargo-fuzz is missing and could not be had.
    #[error("cannot fuzz: {0}")]
    FuzzTools(String),
    /// A benchmark failed.
    #[error("bench: {0}")]
    Bench(String),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
