//! The guest tests/gdb.rs debugs: `main` calls `compute`, keeps its answer
//! (42) in a local, prints it and exits with status 3. Built with debug
//! info by `xtask::guest::build_debug` (the test's breakpoints and
//! variables need it).
#![cfg_attr(target_os = "none", no_std)]
#![no_main]

use guest_kernel::{println, Args};

guest_kernel::entry!(main);

fn main(_args: Args) -> i32 {
    let answer = compute(6);
    println!("debuggee: the answer is {answer}");
    exit_status(answer)
}

/// 0² + 1² + ... + (n-1)², less 13: 42 for 6.
#[inline(never)]
fn compute(n: u64) -> u64 {
    let mut total = 0;
    for i in 0..n {
        total += i * i;
    }
    total - 13
}

#[inline(never)]
fn exit_status(answer: u64) -> i32 {
    answer as i32 - 39
}
