//! Prints `Hello, <arguments>!`, or `Hello, world!` without arguments, and
//! exits with status 0.
#![cfg_attr(target_os = "none", no_std)]
#![no_main]

use guest_kernel::{println, Args};

guest_kernel::entry!(main);

fn main(args: Args) -> i32 {
    let who = if args.is_empty() {
        "world"
    } else {
        args.as_str()
    };
    println!("Hello, {who}!");
    0
}
