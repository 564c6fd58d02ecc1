//! `cargo xtask fuzz [TARGET] [--time SECS]`: the coverage-guided fuzz
//! targets in `fuzz/` (cargo-fuzz, libFuzzer, AddressSanitizer), built with
//! the installed nightly toolchain, and the short bounded run of each that
//! `cargo xtask test` does.
//!
//! Each target starts from its committed seeds (`fuzz/corpus/TARGET/`,
//! only read) and the corpus it has grown so far
//! (`target/fuzz/corpus/TARGET/`, where new inputs go), so runs add up. A
//! crash leaves its input in `target/fuzz/artifacts/TARGET/` and fails the
//! run; libFuzzer's output is in `target/fuzz/TARGET.log`, and
//! `target/fuzz/TARGET.total` counts the executions of every run so far.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::{cmd, Error, Result};

/// Every fuzz target, as named in `fuzz/Cargo.toml`.
pub const TARGETS: [&str; 4] = [
    "elf_loader",
    "hypercall_dispatch",
    "net_frames",
    "snapshot_parse",
];

/// The triple the targets are built for: Flint's host is x86-64 Linux
/// (KVM), and cargo-fuzz puts the binaries under it.
const HOST: &str = "x86_64-unknown-linux-gnu";

/// Seconds per target in `cargo xtask test`.
pub const SMOKE_SECS: u64 = 5;

/// What one run of a target reached.
#[derive(Debug)]
pub struct Reached {
    /// The target.
    pub target: &'static str,
    /// Inputs run.
    pub execs: u64,
    /// Inputs run per second, on average.
    pub per_sec: u64,
    /// Executions of every run so far, this one included.
    pub total: u64,
}

/// Builds the targets and fuzzes `target` (all of them, one after the
/// other, if `None`) for `secs` seconds each.
pub fn run(target: Option<&str>, secs: u64) -> Result<()> {
    let targets: Vec<&'static str> = match target {
        None => TARGETS.to_vec(),
        Some(name) => vec![TARGETS
            .into_iter()
            .find(|t| *t == name)
            .ok_or_else(|| Error::UnknownFuzzTarget(name.to_owned()))?],
    };
    ensure_tools().map_err(Error::FuzzTools)?;
    build()?;
    for target in targets {
        eprintln!(
            "xtask: fuzzing {target} for {secs} s (libFuzzer's output: {})",
            log(target).display()
        );
        report(&fuzz(target, secs, None)?);
    }
    Ok(())
}

/// The seed of `cargo xtask test`'s runs: CI explores the same inputs each
/// time, so a crash it finds is reproducible and not a roll of the dice.
const SMOKE_SEED: u64 = 1;

/// `cargo xtask test`'s bounded run: every target for [`SMOKE_SECS`]. If
/// nightly or cargo-fuzz cannot be had, says so loudly and passes.
pub fn smoke() -> Result<()> {
    if let Err(why) = ensure_tools() {
        eprintln!("xtask: WARNING: the fuzz targets were NOT run: {why}");
        return Ok(());
    }
    build()?;
    for target in TARGETS {
        report(&fuzz(target, SMOKE_SECS, Some(SMOKE_SEED))?);
    }
    Ok(())
}

fn report(r: &Reached) {
    eprintln!(
        "xtask: fuzz {:<20} {:>12} runs ({:>7}/s), {:>14} in all runs so far",
        r.target, r.execs, r.per_sec, r.total
    );
}

/// `cargo` of the installed nightly toolchain, whatever toolchain runs us.
fn nightly_cargo() -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", "nightly", "cargo"])
        .current_dir(crate::root());
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO",
    ] {
        c.env_remove(var);
    }
    c
}

/// Makes sure nightly and cargo-fuzz are there, installing cargo-fuzz
/// with `cargo install` if it is missing; says why not if they cannot be.
fn ensure_tools() -> Result<(), String> {
    if !cmd::succeeds(nightly_cargo().arg("--version")) {
        return Err("no nightly toolchain is installed (rustup toolchain install nightly)".into());
    }
    if cmd::succeeds(nightly_cargo().args(["fuzz", "--version"])) {
        return Ok(());
    }
    eprintln!("xtask: cargo-fuzz is missing; installing it with `cargo install cargo-fuzz`");
    cmd::run(nightly_cargo().args(["install", "--locked", "cargo-fuzz"]))
        .map_err(|e| format!("cargo-fuzz could not be installed: {e}"))
}

fn target_dir() -> PathBuf {
    crate::target_dir().join("fuzz")
}

fn log(target: &str) -> PathBuf {
    target_dir().join(format!("{target}.log"))
}

/// Builds every target: optimised, with debug assertions (so an integer
/// overflow on guest data is a crash) and AddressSanitizer.
fn build() -> Result<()> {
    eprintln!("xtask: building the fuzz targets (nightly, cargo-fuzz)");
    let dir = target_dir();
    cmd::run(
        nightly_cargo()
            .args([
                "fuzz",
                "build",
                "-O",
                "-a",
                "--target",
                HOST,
                "--target-dir",
            ])
            .arg(&dir),
    )
}

/// Runs `target` for `secs` seconds on its corpora, from libFuzzer's
/// `seed` if given (else a random one).
fn fuzz(target: &'static str, secs: u64, seed: Option<u64>) -> Result<Reached> {
    let dir = target_dir();
    let binary = dir.join(HOST).join("release").join(target);
    let corpus = dir.join("corpus").join(target);
    let artifacts = dir.join("artifacts").join(target);
    let seeds = crate::root().join("fuzz/corpus").join(target);
    for d in [&corpus, &artifacts] {
        fs::create_dir_all(d).map_err(Error::io(d))?;
    }
    // One run of a target at a time: runs share the log, the corpus and the
    // running total, and two at once would count each other's executions.
    let lock_path = dir.join(format!("{target}.lock"));
    let lock = fs::File::create(&lock_path).map_err(Error::io(&lock_path))?;
    if lock.try_lock().is_err() {
        eprintln!("xtask: another run of {target} is fuzzing; waiting for it to end");
        lock.lock().map_err(Error::io(&lock_path))?;
    }
    let log_path = log(target);
    let log_file = fs::File::create(&log_path).map_err(Error::io(&log_path))?;
    let mut c = Command::new(&binary);
    c.arg(&corpus)
        .arg(&seeds)
        .arg(format!("-max_total_time={secs}"))
        .args(seed.map(|s| format!("-seed={s}")))
        .arg("-print_final_stats=1")
        .arg("-timeout=10")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        // cargo-fuzz's own setting: Rust's std trips the ODR check.
        .env("ASAN_OPTIONS", "detect_odr_violation=0")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().map_err(Error::io(&log_path))?)
        .stderr(log_file);
    let outcome = cmd::run(&mut c);
    let text = fs::read_to_string(&log_path).map_err(Error::io(&log_path))?;
    if let Err(e) = outcome {
        let lines: Vec<&str> = text.lines().collect();
        for line in &lines[lines.len().saturating_sub(40)..] {
            eprintln!("  | {line}");
        }
        eprintln!(
            "xtask: fuzz target {target} FAILED; the input is in {}, the whole output in {}",
            artifacts.display(),
            log_path.display()
        );
        return Err(e);
    }
    let stat = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let execs = stat("stat::number_of_executed_units:");
    let per_sec = stat("stat::average_exec_per_sec:");
    let total_path = dir.join(format!("{target}.total"));
    let before = fs::read_to_string(&total_path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let total = before + execs;
    fs::write(&total_path, format!("{total}\n")).map_err(Error::io(&total_path))?;
    Ok(Reached {
        target,
        execs,
        per_sec,
        total,
    })
}
