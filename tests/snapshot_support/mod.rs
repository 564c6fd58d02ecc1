//! Taking a snapshot for the snapshot tests: `flint run --snapshot-on-idle
//! FILE` of a guest, waiting for FILE, then killing that first instance.
//! Included by `tests/snapshot_*.rs` with `#[path]`; not every one uses
//! all of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{image, scratch_dir, Run, Server};

/// How long the first instance may take to reach POLL and write its
/// snapshot.
pub const SNAPSHOT_WITHIN: Duration = Duration::from_secs(20);

/// A path for a new snapshot file, unique in this test process.
pub fn snapshot_path(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = scratch_dir("snapshots").join(format!("{name}-{}-{n}.snap", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// Boots `app` with `--snapshot-on-idle PATH` plus `opts` (and `-- args`
/// if any), waits for the snapshot file, kills the instance and returns
/// the file.
#[track_caller]
pub fn take(app: &str, opts: &[&str], args: &[&str]) -> PathBuf {
    let path = snapshot_path(app);
    let mut run = Run::image(&image(app)).opts(opts).opts(&[
        "--snapshot-on-idle",
        path.to_str().expect("UTF-8 scratch path"),
    ]);
    if !args.is_empty() {
        run = run.guest(args);
    }
    let server = run.serve();
    wait_for_file(&server, &path);
    // The first instance goes on serving; the tests need only the file.
    drop(server);
    path
}

/// Waits until the monitor renamed the finished snapshot to `path`.
#[track_caller]
fn wait_for_file(server: &Server, path: &Path) {
    let start = Instant::now();
    while !path.is_file() {
        if !server.running() {
            server.fail(format_args!(
                "flint ended before it wrote the snapshot {}",
                path.display()
            ));
        }
        if start.elapsed() > SNAPSHOT_WITHIN {
            server.fail(format_args!(
                "no snapshot at {} after {SNAPSHOT_WITHIN:?}",
                path.display()
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// `flint run --restore PATH` plus `opts`.
pub fn restore(path: &Path, opts: &[&str]) -> Run {
    let mut args = vec!["run", "--restore", path.to_str().expect("UTF-8 path")];
    args.extend(opts);
    Run::raw(&args)
}
