//! What every integration test needs: fresh images and monitor from the
//! xtask library, KVM detection, and a `flint` runner with a time limit that
//! prints everything it saw when a check fails; for the network tests, a
//! background `flint` ([`Server`]), real clients ([`tool`]), a raw HTTP
//! client ([`net`]) and private network namespaces ([`netns`]).
//!
//! Each test binary includes this with `mod support;` and uses only part of
//! it, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod elf;
pub mod fleet;
pub mod net;
pub mod netns;
mod run;
pub mod server;
pub mod tool;

// Not every test binary names them all.
#[allow(unused_imports)]
pub use run::{Outcome, Run};
#[allow(unused_imports)]
pub use server::Server;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::Duration;

/// How long any one `flint` process may run before the test kills it. Far
/// above what a healthy run takes (milliseconds), so only a hung monitor or
/// a broken `--timeout` ever reaches it.
pub const RUN_LIMIT: Duration = Duration::from_secs(20);

/// One lock for every build this process starts (parallel tests must not
/// run two cargo builds of one target directory at once), and what each
/// build gave: a failed build fails every test that needs it, but runs once.
static BUILDS: Mutex<Option<HashMap<String, Result<PathBuf, String>>>> = Mutex::new(None);

/// True if KVM is usable. If it is not, says loudly that the calling test is
/// skipped (never a silent pass) and returns false; the test then returns.
pub fn kvm_or_skip() -> bool {
    static KVM: OnceLock<Result<(), String>> = OnceLock::new();
    let kvm = KVM.get_or_init(|| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .map(drop)
            .map_err(|e| format!("cannot open /dev/kvm: {e}"))
    });
    match kvm {
        Ok(()) => true,
        Err(why) => {
            let name = thread::current().name().unwrap_or("<test>").to_owned();
            // Straight to the stderr handle: libtest captures `eprintln!`
            // and would hide the message of a test that "passes".
            let _ = writeln!(
                std::io::stderr(),
                "!!!!!! SKIPPED, NOT PASSED: {name}: {why}; this test boots a KVM guest"
            );
            false
        }
    }
}

/// The `flint` binary, built fresh by `xtask::monitor::build` (or `FLINT_BIN`
/// when the caller already built it, as `cargo xtask test` does).
pub fn flint_bin() -> PathBuf {
    cached_build("<monitor>", || {
        xtask::monitor::build().map_err(|e| format!("building the flint monitor failed: {e}"))
    })
}

/// The image of guest `name` (`apps/<name>` or `tests/guests/<name>`), built
/// fresh by `xtask::guest::build`: never a stale file.
pub fn image(name: &str) -> PathBuf {
    cached_build(name, || {
        xtask::guest::build(name).map_err(|e| format!("building guest image {name} failed: {e}"))
    })
}

fn cached_build(key: &str, build: impl FnOnce() -> Result<PathBuf, String>) -> PathBuf {
    let mut builds = BUILDS.lock().unwrap_or_else(|poison| poison.into_inner());
    let builds = builds.get_or_insert_with(HashMap::new);
    let built = builds.entry(key.to_owned()).or_insert_with(|| {
        let path = build()?;
        match path.is_file() {
            true => Ok(path),
            false => Err(format!(
                "{key}: the build reported {path:?}, which is not a file"
            )),
        }
    });
    match built {
        Ok(path) => path.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// `flint run [OPTIONS] IMAGE [-- ARGS]` for the `probe` test guest.
pub fn probe(args: &[&str]) -> Run {
    Run::image(&image("probe")).guest(args)
}

/// A directory for files a test writes (edited images), under the target
/// directory cargo gives integration tests.
pub fn scratch_dir(sub: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(sub);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {dir:?}: {e}"));
    dir
}

/// Every `0x...` number in `text`: fault lines name addresses in hex, padded
/// or not.
pub fn hex_numbers(text: &str) -> Vec<u64> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i + 2 <= bytes.len() {
        if bytes[i] == b'0' && matches!(bytes.get(i + 1), Some(b'x' | b'X')) {
            let digits: String = text[i + 2..]
                .chars()
                .take_while(|c| c.is_ascii_hexdigit())
                .collect();
            if let Ok(n) = u64::from_str_radix(&digits, 16) {
                out.push(n);
            }
            i += 2 + digits.len();
        } else {
            i += 1;
        }
    }
    out
}

/// The text after `prefix` in `line`, for checks that name the first
/// address after e.g. `page fault at `.
pub fn hex_after(line: &str, prefix: &str) -> Option<u64> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    hex_numbers(rest)
        .first()
        .copied()
        .filter(|_| rest.starts_with("0x"))
}

/// `flint` built with the `test-hooks` feature (tests/seccomp*.rs): a debug
/// build in a target directory of its own, so the release binary the other
/// tests use never has the hooks, and every test that wants it shares one.
pub fn hooked_flint() -> PathBuf {
    let target = scratch_dir("seccomp-hooks");
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../host-monitor/Cargo.toml");
    let status = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--features",
            "test-hooks",
            "--manifest-path",
        ])
        .arg(manifest)
        .arg("--target-dir")
        .arg(&target)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .status()
        .expect("running cargo build for the hooked flint");
    assert!(status.success(), "building flint with test-hooks failed");
    target.join("debug").join("flint")
}
