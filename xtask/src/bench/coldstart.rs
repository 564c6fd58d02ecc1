//! `cargo xtask bench coldstart [-n N]`: how long a Flint instance takes
//! to start, every way Flint can start one, in one run.
//!
//! | case | endpoints |
//! |---|---|
//! | native | posix_spawn of a static hello (`hello.c`) → its first byte |
//! | flint run | exec of `flint run hello.elf` → first console byte |
//! | flint run --restore | exec of `flint run --restore` of an http snapshot → first byte of an HTTP response through `--publish` |
//! | in-process fresh VM, template + pool, reset | API call → first hypercall (`host-monitor/examples/coldstart_inprocess.rs`) |
//! | QEMU microvm | only if `qemu-system-x86_64` is installed |
//!
//! Each of N rounds runs the process cases one after the other, so all see
//! the same machine state; the in-process example runs once, halfway
//! through, interleaving its own three cases. A case that cannot run here
//! (no snapshot support, no example, no QEMU) is listed as "not available"
//! with the reason, and the rest still runs. The table gives p50, p90,
//! p99, the target and each case's phase breakdown;
//! `target/bench/coldstart.json` holds the same and every sample,
//! `target/bench/coldstart.svg` a histogram per case.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::coldstart_cases::{build_inprocess, run_inprocess, InProcess, Restore};
use super::coldstart_report::{json, table, Measured, Row, Target};
use crate::{guest, monitor, packages, root, target_dir, Error, Result};

/// What both hello programs must print.
const HELLO: &[u8] = b"Hello, world!\n";

/// Rounds not counted, to warm the page cache and the host's KVM paths.
pub(super) const WARMUP: usize = 5;

/// The target for the CLI cases: p50 within this factor of the
/// native baseline's.
const TARGET_RATIO: f64 = 1.3;

/// The bench's options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Measured rounds (`-n`, default 200).
    pub runs: usize,
}

impl Options {
    /// Parses `[-n N | --runs N | -nN | --runs=N]`.
    pub fn parse(args: &[String]) -> Result<Options> {
        let usage =
            |why: String| Error::Bench(format!("{why}; usage: cargo xtask bench coldstart [-n N]"));
        let mut runs = 200;
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let value = match arg.as_str() {
                "-n" | "--runs" => args
                    .next()
                    .cloned()
                    .ok_or_else(|| usage(format!("{arg} needs a number")))?,
                a if a.starts_with("--runs=") => a["--runs=".len()..].to_owned(),
                a if a.starts_with("-n") => a[2..].to_owned(),
                a => return Err(usage(format!("unknown option `{a}`"))),
            };
            runs = value
                .parse()
                .map_err(|_| usage(format!("`{value}` is not a number of runs")))?;
        }
        if runs == 0 {
            return Err(usage("-n must be at least 1".into()));
        }
        Ok(Options { runs })
    }
}

/// A process case's samples, exec → first byte.
struct Spawned {
    command: Vec<String>,
    first_byte: Vec<Duration>,
}

impl Spawned {
    fn new(program: &Path, args: &[&Path]) -> Spawned {
        let mut command = vec![program.display().to_string()];
        command.extend(args.iter().map(|a| a.display().to_string()));
        Spawned {
            command,
            first_byte: Vec::new(),
        }
    }

    fn run_once(&mut self, record: bool) -> Result<()> {
        let first_byte = spawn_and_time(&self.command)?;
        if record {
            self.first_byte.push(first_byte);
        }
        Ok(())
    }
}

/// The in-process cases the example reports, in table order.
const INPROCESS: [(&str, &str, u64); 3] = [
    ("inprocess-fresh", "in-process fresh VM", 500),
    ("inprocess-template-pool", "in-process template + pool", 150),
    ("inprocess-reset", "in-process restore / reset", 50),
];

/// Runs the bench and prints its report.
pub fn run(options: &Options) -> Result<()> {
    eprintln!("coldstart: building hello.elf, http.elf, the monitor and the native baseline...");
    let hello = guest::build("hello")?;
    let http = guest::build("http")?;
    let flint = monitor::build()?;
    let native = build_native()?;
    let restore = Restore::prepare(&flint, &http);
    if let Err(why) = &restore {
        eprintln!("coldstart: flint run --restore: not available: {why}");
    }
    let inprocess_bin = build_inprocess();
    if let Err(why) = &inprocess_bin {
        eprintln!("coldstart: in-process cases: not available: {why}");
    }

    let mut native_case = Spawned::new(&native, &[]);
    let mut flint_case = Spawned::new(&flint, &[Path::new("run"), &hello]);
    let mut restored: std::result::Result<Vec<Duration>, String> =
        restore.as_ref().map(|_| Vec::new()).map_err(Clone::clone);
    let mut inprocess: std::result::Result<Vec<InProcess>, String> = Err("not run".into());
    eprintln!(
        "coldstart: {WARMUP} warm-up and {} measured rounds, interleaved...",
        options.runs
    );
    for round in 0..WARMUP + options.runs {
        let record = round >= WARMUP;
        native_case.run_once(record)?;
        flint_case.run_once(record)?;
        if let (Ok(r), Ok(samples)) = (&restore, &mut restored) {
            match r.run_once() {
                Ok(d) if record => samples.push(d),
                Ok(_) => {}
                Err(why) => restored = Err(format!("failed: {why}")),
            }
        }
        if round == WARMUP + options.runs / 2 {
            inprocess = match &inprocess_bin {
                Ok(bin) => run_inprocess(bin, &hello, options.runs),
                Err(why) => Err(why.clone()),
            };
        }
    }

    let native_phases = Vec::new();
    let mut rows = vec![
        Row {
            name: "native".into(),
            endpoints: "posix_spawn of a static hello -> its first byte",
            result: Ok(Measured::from_samples(
                native_case.first_byte,
                native_phases,
            )),
            target: None,
        },
        Row {
            name: "flint run hello.elf".into(),
            endpoints: "exec -> first console byte",
            result: Ok(Measured::from_samples(
                flint_case.first_byte,
                flint_timings(&flint, &hello)?,
            )),
            target: Some(Target::RatioToNative(TARGET_RATIO)),
        },
        Row {
            name: "flint run --restore (http)".into(),
            endpoints: "exec -> first byte of an HTTP response via --publish",
            result: match (restored, &restore) {
                (Ok(s), Ok(r)) if !s.is_empty() => Ok(Measured::from_samples(s, r.timings())),
                (Ok(_), _) => Err("no samples".into()),
                (Err(why), _) => Err(why),
            },
            target: Some(Target::RatioToNative(TARGET_RATIO)),
        },
    ];
    for (case, name, target_us) in INPROCESS {
        let result = match &inprocess {
            Ok(all) => all
                .iter()
                .find(|c| c.case == case)
                .cloned()
                .map(Measured::from_inprocess)
                .ok_or_else(|| format!("the example printed no `{case}` line")),
            Err(why) => Err(why.clone()),
        };
        rows.push(Row {
            name: name.into(),
            endpoints: "API call -> first hypercall",
            result,
            target: Some(Target::Within(Duration::from_micros(target_us))),
        });
    }
    rows.push(Row {
        name: "QEMU microvm".into(),
        endpoints: "spawn -> first serial byte of a minimal PVH guest",
        result: Err(if packages::on_path("qemu-system-x86_64") {
            "the bench ships no PVH guest yet".into()
        } else {
            "qemu-system-x86_64 is not installed".into()
        }),
        target: None,
    });

    println!("{}", table(&rows, options.runs));
    let dir = target_dir().join("bench");
    fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    let json_path = dir.join("coldstart.json");
    fs::write(&json_path, json(&rows, options.runs)).map_err(Error::io(&json_path))?;
    let svg_path = dir.join("coldstart.svg");
    fs::write(&svg_path, super::coldstart_plot::svg(&rows)).map_err(Error::io(&svg_path))?;
    println!("wrote {} and {}", json_path.display(), svg_path.display());
    Ok(())
}

/// Starts `command`, timing exec → first stdout byte, and checks it
/// printed exactly `Hello, world!\n` and exited 0.
fn spawn_and_time(command: &[String]) -> Result<Duration> {
    let fail = |why: String| Error::Bench(format!("`{}`: {why}", command.join(" ")));
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot start it: {e}")))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut out = vec![0u8; 64];
    let n = stdout
        .read(&mut out)
        .map_err(|e| fail(format!("reading stdout: {e}")))?;
    let first_byte = start.elapsed();
    out.truncate(n);
    stdout
        .read_to_end(&mut out)
        .map_err(|e| fail(format!("reading stdout: {e}")))?;
    let status = child.wait().map_err(|e| fail(format!("waiting: {e}")))?;
    if !status.success() || out != HELLO {
        return Err(fail(format!(
            "expected {:?} and status 0, got {:?} and {status}",
            String::from_utf8_lossy(HELLO),
            String::from_utf8_lossy(&out)
        )));
    }
    Ok(first_byte)
}

/// Builds `target/bench/hello-native` from `hello.c` with `gcc -static -O2`.
pub(crate) fn build_native() -> Result<PathBuf> {
    if !packages::on_path("gcc") {
        return Err(Error::Bench(
            "gcc is not installed, so there is no native baseline to compare with: \
             install it (apt-get install gcc, or `cargo xtask test` as root does it)"
                .into(),
        ));
    }
    let source = root().join("xtask/src/bench/hello.c");
    let dir = target_dir().join("bench");
    fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    let out = dir.join("hello-native");
    let status = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&source)
        .status()
        .map_err(|source| Error::Spawn {
            program: "gcc".into(),
            source,
        })?;
    if !status.success() {
        return Err(Error::Bench(format!(
            "gcc -static -O2 {} failed ({status}): a static build needs the C library's \
             static archive (apt-get install libc6-dev)",
            source.display()
        )));
    }
    Ok(out)
}

/// The monitor's own phase breakdown: stderr of one `FLINT_TIMINGS=1` run.
fn flint_timings(flint: &Path, image: &Path) -> Result<Vec<String>> {
    let out = Command::new(flint)
        .arg("run")
        .arg(image)
        .env("FLINT_TIMINGS", "1")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            program: flint.display().to_string(),
            source,
        })?;
    Ok(String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::Options;

    fn parse(args: &[&str]) -> Result<Options, crate::Error> {
        Options::parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn runs_default_to_200_and_take_n() {
        assert_eq!(parse(&[]).unwrap().runs, 200);
        assert_eq!(parse(&["-n", "20"]).unwrap().runs, 20);
        assert_eq!(parse(&["-n7"]).unwrap().runs, 7);
        assert_eq!(parse(&["--runs=9"]).unwrap().runs, 9);
    }

    #[test]
    fn bad_options_are_refused() {
        assert!(parse(&["-n"]).is_err());
        assert!(parse(&["-n", "x"]).is_err());
        assert!(parse(&["-n", "0"]).is_err());
        assert!(parse(&["--fast"]).is_err());
    }
}
