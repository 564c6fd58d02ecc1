//! Benchmarks: `cargo xtask bench <what> [options]`.
//!
//! - `coldstart [-n N]`: cold start every way Flint starts an instance
//!   (`flint run`, `flint run --restore`, in-process fresh / pooled / reset)
//!   against a static native hello ([`coldstart`]).
//! - `net [-d SECS] [-t THREADS] [-c CONNS] [--path PATH]`: `wrk` against
//!   the http app through `--publish` and against a native server with the
//!   same responses; req/s, latency, VM exits per request ([`net`]).
//! - `density [--sizes 1000,5000,10000] [--idle SECS] [--per-worker K]`:
//!   N idle echo instances in one `flint fleet`: start rate, memory and
//!   idle CPU per instance, teardown, answers ([`density`]).
//! - `oci [-n N]`: `ctr run --rm` of hello through flint-oci against runc
//!   with a static native hello, p50 over N runs each ([`oci`]).
//! - `api [-n N]`: `flint daemon`'s API: create+start → first hypercall,
//!   pause/resume, delete, against `flint run` ([`api`]).

pub mod api;
pub mod coldstart;
mod coldstart_cases;
mod coldstart_plot;
mod coldstart_report;
pub mod density;
mod density_plot;
pub mod native_http;
pub mod net;
pub mod oci;
mod serve;
mod stats;
pub mod wrk;

use crate::{packages, Error, Result};

/// Runs bench `what` with the options that followed it on the command line.
pub fn run(what: &str, rest: &[String]) -> Result<()> {
    match what {
        "coldstart" => coldstart::run(&coldstart::Options::parse(rest)?),
        "net" => {
            let options = net::Options::parse(rest)?;
            packages::ensure(packages::BENCH_PACKAGES)?;
            net::run(&options)
        }
        "density" => density::run(&density::Options::parse(rest)?),
        "oci" => oci::run(oci::parse(rest)?),
        "api" => api::run(api::parse(rest)?),
        other => Err(Error::Bench(format!(
            "no bench named `{other}`; try `coldstart`, `net`, `density`, `oci` or `api`"
        ))),
    }
}

/// Parses a bench's only option, `[-n N]` (or `--runs N`): how many
/// measured runs, `default` without it.
fn runs_option(bench: &str, args: &[String], default: usize) -> Result<usize> {
    let usage = |why: &str| Error::Bench(format!("{why}; usage: cargo xtask bench {bench} [-n N]"));
    match args {
        [] => Ok(default),
        [flag, n] if flag == "-n" || flag == "--runs" => n
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| usage(&format!("`{n}` is not a positive number of runs"))),
        _ => Err(usage("unknown options")),
    }
}
