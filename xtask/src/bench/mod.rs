//! Benchmarks: `cargo xtask bench <what> [options]`.
//!
//! - `coldstart [-n N]`: whole-process cold start of `flint run hello.elf`
//!   against a static native hello ([`coldstart`]).

pub mod coldstart;
mod stats;

use crate::{Error, Result};

/// Runs bench `what` with the options that followed it on the command line.
pub fn run(what: &str, rest: &[String]) -> Result<()> {
    match what {
        "coldstart" => coldstart::run(&coldstart::Options::parse(rest)?),
        other => Err(Error::Bench(format!(
            "no bench named `{other}`; try `coldstart`"
        ))),
    }
}
