//! Benchmarks: `cargo xtask bench <what> [options]`.
//!
//! Placeholder: the `coldstart` bench (see the issue) replaces this file.

use crate::{Error, Result};

/// Runs bench `what` with the options that followed it on the command line.
pub fn run(what: &str, rest: &[String]) -> Result<()> {
    let _ = rest;
    Err(Error::Bench(format!("no bench named `{what}` yet")))
}
