//! The `flint` command line: a bad option or argument is status 125 with
//! one line on stderr (not clap's status 2), before any guest runs.

mod support;

use support::{image, kvm_or_skip, Run};

/// `flint ARGS` exits 125 with one stderr line and no guest output.
fn refused(args: &[&str]) {
    if !kvm_or_skip() {
        return;
    }
    let out = Run::raw(args).go();
    out.status(125);
    out.one_stderr_line();
    if !out.stdout.is_empty() {
        out.fail("no guest may run for a bad command line");
    }
    let err = out.stderr_str();
    if err.contains("panicked") || err.contains("RUST_BACKTRACE") {
        out.fail("the monitor panicked");
    }
}

fn hello() -> String {
    image("hello").to_string_lossy().into_owned()
}

#[test]
fn unknown_flag_is_refused_with_125() {
    refused(&["run", "--bogus", &hello()]);
}

#[test]
fn mem_0_is_refused_with_125() {
    refused(&["run", "--mem", "0", &hello()]);
}

#[test]
fn mem_over_3_gib_is_refused_with_125() {
    refused(&["run", "--mem", "5G", &hello()]);
}

#[test]
fn mem_just_over_3_gib_is_refused_with_125() {
    refused(&["run", "--mem", "3073M", &hello()]);
}

#[test]
fn mem_that_is_not_a_size_is_refused_with_125() {
    refused(&["run", "--mem", "abc", &hello()]);
}

#[test]
fn mem_with_overflowing_size_is_refused_with_125() {
    refused(&["run", "--mem", "99999999999999999999G", &hello()]);
}

#[test]
fn stack_near_2_pow_64_is_refused_with_125() {
    // 2^64 - 4 KiB: adding the guard page used to wrap to 0 (found by
    // fuzz/snapshot_parse through a snapshot's stack size).
    refused(&["run", "--stack", "18446744073709547520", &hello()]);
}

#[test]
fn stack_below_16_kib_is_refused_with_125() {
    refused(&["run", "--stack", "1K", &hello()]);
}

#[test]
fn stack_too_big_for_mem_is_refused_with_125() {
    refused(&["run", "--mem", "16M", "--stack", "16M", &hello()]);
}

#[test]
fn timeout_that_is_not_a_number_is_refused_with_125() {
    refused(&["run", "--timeout", "soon", &hello()]);
}

#[test]
fn missing_image_is_refused_with_125() {
    refused(&["run"]);
}

#[test]
fn nonexistent_image_file_is_refused_with_125() {
    refused(&["run", "/nonexistent/flint-test-image.elf"]);
}

#[test]
fn directory_as_image_is_refused_with_125() {
    refused(&["run", "/"]);
}

#[test]
fn unknown_subcommand_is_refused_with_125() {
    refused(&["frobnicate"]);
}

#[test]
fn no_arguments_at_all_is_refused_with_125() {
    refused(&[]);
}
