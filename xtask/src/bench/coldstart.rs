//! `cargo xtask bench coldstart [-n N]`: how long a Flint micro-VM takes to
//! start, as a user sees it, next to a native process.
//!
//! Each of N rounds runs, one after the other, `flint run hello.elf` and a
//! static native hello (`hello.c`, built with `gcc -static -O2`), each as a
//! whole new process started with `std::process::Command` (posix_spawn). For
//! each it measures exec → first byte on stdout and exec → exit. Interleaving
//! the two makes both see the same machine state. The table gives p50, p90
//! and p99 and the ratio flint/native; `target/bench/coldstart.json` holds
//! the same and every sample. Beneath the table, one `FLINT_TIMINGS=1` run
//! shows where the monitor's own time goes.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::stats::{json_ns, json_str, ms, Samples};
use crate::{guest, monitor, packages, root, target_dir, Error, Result};

/// What both programs must print.
const HELLO: &[u8] = b"Hello, world!\n";

/// Rounds not counted, to warm the page cache and the host's KVM paths.
const WARMUP: usize = 5;

/// The target: flint's p50 exec → first byte within this factor of
/// the native baseline's.
const TARGET_RATIO: f64 = 1.5;

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

/// One process start.
struct Sample {
    first_byte: Duration,
    exit: Duration,
}

/// The samples of one program.
struct Case {
    name: &'static str,
    command: Vec<String>,
    first_byte: Vec<Duration>,
    exit: Vec<Duration>,
}

impl Case {
    fn new(name: &'static str, program: &Path, args: &[&Path]) -> Case {
        let mut command = vec![program.display().to_string()];
        command.extend(args.iter().map(|a| a.display().to_string()));
        Case {
            name,
            command,
            first_byte: Vec::new(),
            exit: Vec::new(),
        }
    }

    fn run_once(&mut self, record: bool) -> Result<()> {
        let sample = spawn_and_time(&self.command)?;
        if record {
            self.first_byte.push(sample.first_byte);
            self.exit.push(sample.exit);
        }
        Ok(())
    }
}

/// Runs the bench and prints its report.
pub fn run(options: &Options) -> Result<()> {
    eprintln!("coldstart: building hello.elf, the monitor and the native baseline...");
    let image = guest::build("hello")?;
    let flint = monitor::build()?;
    let native = build_native()?;

    let mut cases = [
        Case::new("flint", &flint, &[Path::new("run"), &image]),
        Case::new("native", &native, &[]),
    ];
    eprintln!(
        "coldstart: {} warm-up and {} measured rounds, interleaved...",
        WARMUP, options.runs
    );
    for round in 0..WARMUP + options.runs {
        for case in &mut cases {
            case.run_once(round >= WARMUP)?;
        }
    }
    let timings = flint_timings(&flint, &image)?;
    let report = Report::new(&cases, timings);
    println!("{}", report.table());
    let json_path = target_dir().join("bench").join("coldstart.json");
    fs::write(&json_path, report.json(&cases)).map_err(Error::io(&json_path))?;
    println!("wrote {}", json_path.display());
    Ok(())
}

/// Starts `command`, timing exec → first stdout byte and exec → exit, and
/// checks it printed exactly `Hello, world!\n` and exited 0.
fn spawn_and_time(command: &[String]) -> Result<Sample> {
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
    let exit = start.elapsed();
    if !status.success() || out != HELLO {
        return Err(fail(format!(
            "expected {:?} and status 0, got {:?} and {status}",
            String::from_utf8_lossy(HELLO),
            String::from_utf8_lossy(&out)
        )));
    }
    Ok(Sample { first_byte, exit })
}

/// Builds `target/bench/hello-native` from `hello.c` with `gcc -static -O2`.
fn build_native() -> Result<PathBuf> {
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

/// What the bench found.
struct Report {
    runs: usize,
    rows: Vec<(String, Samples)>,
    first_byte: [Samples; 2],
    exit: [Samples; 2],
    timings: Vec<String>,
}

impl Report {
    fn new(cases: &[Case; 2], timings: Vec<String>) -> Report {
        let mut rows = Vec::new();
        for case in cases {
            rows.push((
                format!("{} exec -> first byte", case.name),
                Samples::new(case.first_byte.clone()),
            ));
            rows.push((
                format!("{} exec -> exit", case.name),
                Samples::new(case.exit.clone()),
            ));
        }
        Report {
            runs: cases[0].first_byte.len(),
            rows,
            first_byte: cases.clone_samples(|c| &c.first_byte),
            exit: cases.clone_samples(|c| &c.exit),
            timings,
        }
    }

    fn table(&self) -> String {
        let mut t = format!(
            "\ncoldstart: {} runs each, flint and native interleaved (after {WARMUP} warm-up rounds)\n\n",
            self.runs
        );
        t += &format!("{:<30} {:>12} {:>12} {:>12}\n", "case", "p50", "p90", "p99");
        for (name, s) in &self.rows {
            t += &format!(
                "{name:<30} {:>12} {:>12} {:>12}\n",
                ms(s.p50()),
                ms(s.p90()),
                ms(s.p99())
            );
        }
        for (name, [f, n]) in [("first byte", &self.first_byte), ("exit", &self.exit)] {
            let r = |q: fn(&Samples) -> Duration| format!("{:.2}x", ratio(q(f), q(n)));
            t += &format!(
                "{:<30} {:>12} {:>12} {:>12}\n",
                format!("ratio flint/native {name}"),
                r(Samples::p50),
                r(Samples::p90),
                r(Samples::p99)
            );
        }
        let p50 = ratio(self.first_byte[0].p50(), self.first_byte[1].p50());
        let verdict = if p50 <= TARGET_RATIO {
            "met"
        } else {
            "NOT met"
        };
        t +=
            &format!("\ntarget: first byte p50 <= {TARGET_RATIO}x native: {verdict} ({p50:.2}x)\n");
        t += "\nflint phase breakdown (one run with FLINT_TIMINGS=1):\n";
        if self.timings.is_empty() {
            t += "  (the monitor printed nothing: does it support FLINT_TIMINGS?)\n";
        }
        for line in &self.timings {
            t += &format!("  {line}\n");
        }
        t
    }

    fn json(&self, cases: &[Case; 2]) -> String {
        let case = |c: &Case, first: &Samples, exit: &Samples| {
            let command: Vec<String> = c.command.iter().map(|a| json_str(a)).collect();
            format!(
                "{{\n    \"command\": [{}],\n    \"first_byte\": {},\n    \"exit\": {},\n    \"first_byte_samples_ns\": {},\n    \"exit_samples_ns\": {}\n  }}",
                command.join(", "),
                first.json(),
                exit.json(),
                json_ns(&c.first_byte),
                json_ns(&c.exit)
            )
        };
        let ratios = |s: &[Samples; 2]| {
            format!(
                "{{\"p50\": {:.4}, \"p90\": {:.4}, \"p99\": {:.4}}}",
                ratio(s[0].p50(), s[1].p50()),
                ratio(s[0].p90(), s[1].p90()),
                ratio(s[0].p99(), s[1].p99())
            )
        };
        let timings: Vec<String> = self.timings.iter().map(|l| json_str(l)).collect();
        format!(
            "{{\n  \"bench\": \"coldstart\",\n  \"runs\": {},\n  \"warmup_runs\": {WARMUP},\n  \"flint\": {},\n  \"native\": {},\n  \"ratio_first_byte\": {},\n  \"ratio_exit\": {},\n  \"target_first_byte_p50_ratio\": {TARGET_RATIO},\n  \"flint_timings\": [{}]\n}}\n",
            self.runs,
            case(&cases[0], &self.first_byte[0], &self.exit[0]),
            case(&cases[1], &self.first_byte[1], &self.exit[1]),
            ratios(&self.first_byte),
            ratios(&self.exit),
            timings.join(", ")
        )
    }
}

/// Both cases' samples of one measurement.
trait CloneSamples {
    fn clone_samples(&self, pick: fn(&Case) -> &Vec<Duration>) -> [Samples; 2];
}

impl CloneSamples for [Case; 2] {
    fn clone_samples(&self, pick: fn(&Case) -> &Vec<Duration>) -> [Samples; 2] {
        [
            Samples::new(pick(&self[0]).clone()),
            Samples::new(pick(&self[1]).clone()),
        ]
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
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
