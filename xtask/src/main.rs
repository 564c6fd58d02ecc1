//! `cargo xtask`: build, run and test Flint. See README.md.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};
use xtask::{guest, monitor, Error};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run and test Flint")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build a guest image: target/flint/<NAME>.elf (NAME is a crate in apps/ or tests/guests/).
    Build {
        /// The guest's name.
        name: String,
        /// With full debug info and no optimisation, for `flint run --gdb`:
        /// target/flint/<NAME>-debug.elf.
        #[arg(long)]
        debug: bool,
    },
    /// Build an app and the monitor, then `flint run` the app.
    Run {
        /// The app's name.
        app: String,
        /// Arguments for the app (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Install what is missing, build everything, run fmt, clippy and all tests.
    Test,
    /// Fuzz TARGET (every target, one after the other, if none is named;
    /// see fuzz/README.md). Needs the nightly toolchain; installs cargo-fuzz.
    Fuzz {
        /// Which target (elf_loader, hypercall_dispatch, net_frames, snapshot_parse).
        target: Option<String>,
        /// Seconds per target.
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        time: u64,
    },
    /// Write an app as an OCI image archive, target/flint/<APP>.oci.tar
    /// (`ctr image import`; run it with flint-oci), or with --pause the
    /// pod sandbox image target/flint/pause.oci.tar.
    Oci {
        /// The app's name.
        #[arg(required_unless_present = "pause")]
        app: Option<String>,
        /// Write the pod sandbox (pause) image for the CRI's sandbox_image.
        #[arg(long, conflicts_with = "app")]
        pause: bool,
    },
    /// Run a benchmark (e.g. `coldstart`).
    Bench {
        /// Which benchmark.
        what: String,
        /// Its options.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Build { name, debug } => build(&name, debug),
        Task::Run { app, args } => run(&app, &args),
        Task::Test => xtask::test::run(),
        Task::Fuzz { target, time } => xtask::fuzz::run(target.as_deref(), time),
        Task::Bench { what, rest } => xtask::bench::run(&what, &rest),
        Task::Oci { app, pause } => oci(app.as_deref(), pause),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn build(name: &str, debug: bool) -> Result<(), Error> {
    let image = match debug {
        true => guest::build_debug(name)?,
        false => guest::build(name)?,
    };
    let size = std::fs::metadata(&image).map_err(Error::io(&image))?.len();
    println!("{} ({size} bytes)", image.display());
    Ok(())
}

fn oci(app: Option<&str>, pause: bool) -> Result<(), Error> {
    let (archive, name) = match app {
        Some(app) if !pause => (xtask::oci::build_app(app)?, xtask::oci::image_name(app)),
        _ => {
            let name = xtask::oci::PAUSE_IMAGE.to_owned();
            (xtask::oci::build_pause()?, name)
        }
    };
    println!("{} (image {name})", archive.display());
    Ok(())
}

/// Replaces this process with `flint run`, so the exit status (and any
/// signal) is the monitor's own.
fn run(app: &str, args: &[String]) -> Result<(), Error> {
    let image = guest::build(app)?;
    let flint = monitor::build()?;
    let mut cmd = Command::new(&flint);
    cmd.arg("run").arg(&image).arg("--").args(args);
    let source = cmd.exec();
    Err(Error::Spawn {
        program: flint.display().to_string(),
        source,
    })
}
