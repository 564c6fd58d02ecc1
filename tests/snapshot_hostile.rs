//! Hostile snapshot files: `flint run --restore` of a file that is
//! truncated, edited, the wrong size, taken from another image, or not a
//! snapshot at all must be refused before anything runs: status 125, one
//! line on stderr, never a panic.

#[path = "snapshot_support/mod.rs"]
mod snap;
mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use support::{image, kvm_or_skip, Outcome};

/// One good snapshot of `probe snapshot-identity` (no network device),
/// taken once per test process.
fn good_snapshot() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| snap::take("probe", &[], &["snapshot-identity"]))
}

/// A copy of the good snapshot with `edit` applied to its bytes.
fn edited(name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(good_snapshot()).expect("reading the good snapshot");
    edit(&mut bytes);
    let path = snap::snapshot_path(name);
    std::fs::write(&path, bytes).expect("writing an edited snapshot");
    path
}

/// Status 125 and exactly one stderr line with no panic in it; returns
/// the line.
#[track_caller]
fn refused(out: &Outcome) -> String {
    out.status(125);
    let line = out.one_stderr_line();
    if line.contains("panicked") || line.contains("RUST_BACKTRACE") {
        out.fail("the monitor panicked on a hostile snapshot");
    }
    if !out.stdout_str().is_empty() {
        out.fail("a refused snapshot must not run the guest");
    }
    line
}

#[track_caller]
fn restore_refused(path: &Path, opts: &[&str]) -> String {
    refused(&snap::restore(path, opts).go())
}

#[test]
fn the_good_snapshot_restores() {
    if !kvm_or_skip() {
        return;
    }
    // The baseline for every case below: unedited, it runs and exits 0.
    let out = snap::restore(good_snapshot(), &[]).go();
    out.status(0).no_stderr();
    if !out.stdout_str().contains("after generation=1") {
        out.fail("expected the restored probe's report with generation=1");
    }
}

#[test]
fn truncated_snapshots_are_refused() {
    if !kvm_or_skip() {
        return;
    }
    let len = std::fs::metadata(good_snapshot()).unwrap().len() as usize;
    for keep in [
        0,
        1,
        7,
        8,
        64,
        200,
        4095,
        4096,
        len / 2,
        len - 4096,
        len - 1,
    ] {
        let path = edited(&format!("truncated-{keep}"), |b| b.truncate(keep));
        restore_refused(&path, &[]);
    }
}

#[test]
fn every_header_byte_flipped_is_refused() {
    if !kvm_or_skip() {
        return;
    }
    // The header (its length is the u32 at offset 16) and the SHA-256
    // after it: flipping any of these bytes must be caught, by the magic,
    // a version, a field check or the checksum.
    let bytes = std::fs::read(good_snapshot()).unwrap();
    let header_len = u32::from_le_bytes(bytes[16..20].try_into().unwrap()) as usize + 32;
    assert!(
        (268..4096).contains(&header_len),
        "header length {header_len}: has the format changed?"
    );
    for at in (0..header_len).step_by(3).chain([header_len - 1]) {
        let path = edited(&format!("flip-{at}"), |b| b[at] ^= 0x5a);
        let line = restore_refused(&path, &[]);
        if at < 8 && !line.contains("not a Flint snapshot") {
            panic!("a flip in the magic should say it is not a snapshot: {line}");
        }
        let _ = std::fs::remove_file(&path);
    }
}

#[test]
fn snapshots_of_the_wrong_size_are_refused() {
    if !kvm_or_skip() {
        return;
    }
    let longer = edited("longer", |b| b.extend_from_slice(&[0; 4096]));
    restore_refused(&longer, &[]);
    let one_more = edited("one-more", |b| b.push(0));
    restore_refused(&one_more, &[]);
}

#[test]
fn a_snapshot_restored_against_another_image_is_refused() {
    if !kvm_or_skip() {
        return;
    }
    let hello = image("hello");
    let line = restore_refused(good_snapshot(), &[hello.to_str().unwrap()]);
    assert!(
        line.contains("image") || line.contains("SHA"),
        "the error should say the image differs: {line}"
    );
}

#[test]
fn files_that_are_not_snapshots_are_refused() {
    if !kvm_or_skip() {
        return;
    }
    let probe = image("probe");
    let empty = edited("empty", Vec::clear);
    let text = edited("text", |b| *b = b"hello, I am not a snapshot\n".repeat(500));
    let dir = support::scratch_dir("snapshots");
    let missing = dir.join("no-such.snap");
    for path in [
        probe.as_path(),
        &empty,
        &text,
        Path::new("/dev/null"),
        &dir,
        &missing,
    ] {
        restore_refused(path, &[]);
    }
}

#[test]
fn a_snapshot_with_a_network_device_is_refused_without_one() {
    if !kvm_or_skip() {
        return;
    }
    let port = support::net::free_port();
    let with_net = snap::take(
        "probe",
        &["--publish", &format!("127.0.0.1:{port}:80")],
        &["snapshot-identity"],
    );
    restore_refused(&with_net, &[]);
}
