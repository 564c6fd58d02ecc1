//! `flint fleet`: console lines of many instances on one stdout, each
//! prefixed `[id]` and whole, or in one file per instance; the summary;
//! the exit status; bad options.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::{image, kvm_or_skip, scratch_dir, Run};

/// A fleet of quick probes may take this long, workers and all.
const FLEET_LIMIT: Duration = Duration::from_secs(60);

/// Lines each `probe id-lines` instance prints.
const LINES: u32 = 25;

/// The body of line `k` of instance `id` (`probe id-lines`).
fn expected_line(id: u64, k: u32) -> String {
    format!(
        "id={id} line={k} {}",
        "abcdefghijklmnopqrstuvwxyz0123456789".repeat(4)
    )
}

#[test]
fn console_lines_are_prefixed_with_the_id_and_never_interleaved() {
    if !kvm_or_skip() {
        return;
    }
    let n = 20;
    let out = Run::fleet(&image("probe"), n)
        .opts(&["--per-worker", "5"])
        .guest(&["id-lines", &LINES.to_string()])
        .limit(FLEET_LIMIT)
        .go();
    out.status(0);
    let mut next: BTreeMap<u64, u32> = BTreeMap::new();
    for line in out.stdout_str().lines() {
        let parsed = line
            .strip_prefix('[')
            .and_then(|l| l.split_once("] "))
            .and_then(|(id, rest)| Some((id.parse::<u64>().ok()?, rest)));
        let Some((id, rest)) = parsed else {
            out.fail(format_args!("stdout line without an [id] prefix: {line:?}"));
        };
        let k = next.entry(id).or_insert(0);
        if rest != expected_line(id, *k) {
            out.fail(format_args!(
                "line {k} of instance {id} is {rest:?}: interleaved or out of order"
            ));
        }
        *k += 1;
    }
    let ids: Vec<u64> = next.keys().copied().collect();
    if ids != (1..=u64::from(n)).collect::<Vec<_>>() {
        out.fail(format_args!("expected ids 1..={n} once each, saw {ids:?}"));
    }
    if let Some((id, k)) = next.iter().find(|(_, k)| **k != LINES) {
        out.fail(format_args!("instance {id} printed {k} lines, not {LINES}"));
    }
}

#[test]
fn console_dir_gets_one_file_per_instance_and_stdout_stays_quiet() {
    if !kvm_or_skip() {
        return;
    }
    let dir = scratch_dir("fleet-console-dir");
    let _ = std::fs::remove_dir_all(&dir);
    let n = 12;
    let out = Run::fleet(&image("probe"), n)
        .opts(&["--per-worker", "5", "--console-dir", &dir.to_string_lossy()])
        .guest(&["id-lines", "3"])
        .limit(FLEET_LIMIT)
        .go();
    out.status(0);
    if !out.stdout.is_empty() {
        out.fail("with --console-dir, the console must not reach stdout");
    }
    for id in 1..=u64::from(n) {
        let path = dir.join(format!("{id}.log"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| out.fail(format_args!("{}: {e}", path.display())));
        let expected: String = (0..3).map(|k| expected_line(id, k) + "\n").collect();
        if text != expected {
            out.fail(format_args!("{} holds {text:?}", path.display()));
        }
    }
    let extra = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    if extra != n as usize {
        out.fail(format_args!(
            "expected {n} files in {}, found {extra}",
            dir.display()
        ));
    }
}

#[test]
fn summary_counts_every_instance_and_json_says_the_same() {
    if !kvm_or_skip() {
        return;
    }
    let path = scratch_dir("fleet-summary").join("summary.json");
    let _ = std::fs::remove_file(&path);
    let out = Run::fleet(&image("probe"), 12)
        .opts(&[
            "--per-worker",
            "4",
            "--summary-json",
            &path.to_string_lossy(),
        ])
        .guest(&["exit", "0"])
        .limit(FLEET_LIMIT)
        .go();
    out.status(0);
    let err = out.stderr_str();
    for needle in [
        "fleet of 12 instances",
        "1st hypercall",
        "instances/s",
        "per instance",
    ] {
        if !err.contains(needle) {
            out.fail(format_args!("the summary on stderr lacks {needle:?}"));
        }
    }
    let json = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| out.fail(format_args!("{}: {e}", path.display())));
    for needle in [
        "\"instances\": 12",
        "\"workers\": 3",
        "\"started\": 12",
        "\"failed\": 0",
    ] {
        if !json.contains(needle) {
            out.fail(format_args!("{} lacks {needle:?}:\n{json}", path.display()));
        }
    }
}

#[test]
fn any_instance_ending_non_zero_makes_the_status_1() {
    if !kvm_or_skip() {
        return;
    }
    let out = Run::fleet(&image("probe"), 4)
        .opts(&["--per-worker", "2"])
        .guest(&["fault", "null"])
        .limit(FLEET_LIMIT)
        .go();
    out.status(1);
    let err = out.stderr_str();
    for id in 1..=4 {
        let prefix = format!("flint: instance {id} stopped: guest fault: page fault at 0x0");
        if err.lines().filter(|l| l.starts_with(&prefix)).count() != 1 {
            out.fail(format_args!("expected one stderr line starting {prefix:?}"));
        }
    }
}

/// `flint ARGS` exits 125 with one stderr line and runs nothing.
fn refused(args: &[&str]) {
    if !kvm_or_skip() {
        return;
    }
    let out = Run::raw(args).go();
    out.status(125);
    let line = out.one_stderr_line();
    if !line.starts_with("flint: ") || line.contains("panicked") {
        out.fail("expected one `flint: ` line");
    }
    if !out.stdout.is_empty() {
        out.fail("nothing may run for a bad command line");
    }
}

fn probe() -> String {
    image("probe").to_string_lossy().into_owned()
}

#[test]
fn bad_fleet_options_are_refused_with_125() {
    let p = probe();
    refused(&["fleet", &p]);
    refused(&["fleet", "-n", "0", &p]);
    refused(&["fleet", "-n", "65001", &p]);
    refused(&["fleet", "-n", "x", &p]);
    refused(&["fleet", "-n", "3", "--per-worker", "0", &p]);
    refused(&["fleet", "-n", "3", "--per-worker", "1001", &p]);
    refused(&["fleet", "-n", "3", "--restart", "sometimes", &p]);
    refused(&["fleet", "-n", "3", "--mem", "5G", &p]);
    refused(&["fleet", "-n", "3"]);
}

#[test]
fn run_options_that_name_one_instance_are_refused_in_a_fleet() {
    let p = probe();
    refused(&["fleet", "-n", "3", "--ip", "10.0.2.15/24", &p]);
    refused(&["fleet", "-n", "3", "--mac", "52:54:00:00:00:09", &p]);
    refused(&[
        "fleet",
        "-n",
        "3",
        "--net",
        "tap:fl0",
        "--ip",
        "10.9.0.2/24",
        &p,
    ]);
    refused(&["fleet", "-n", "3", "--timings", &p]);
    refused(&[
        "fleet",
        "-n",
        "3",
        "--net",
        "none",
        "--publish",
        "8080:80",
        &p,
    ]);
}

#[test]
fn a_bad_image_is_refused_once_with_125() {
    let dir = scratch_dir("fleet-bad-image");
    let bad = dir.join("not-an-elf");
    std::fs::write(&bad, b"not an ELF at all").expect("writing a bad image");
    refused(&["fleet", "-n", "3", &bad.to_string_lossy()]);
    refused(&[
        "fleet",
        "-n",
        "3",
        &dir.join("missing.elf").to_string_lossy(),
    ]);
}
