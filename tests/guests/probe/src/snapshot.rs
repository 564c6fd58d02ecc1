//! `probe snapshot-identity`: for snapshot tests. Prints what it is
//! before, sleeps in POLL until a restore bumps `BootInfo.generation`,
//! then prints what it is after and exits 0. Taken with
//! `--snapshot-on-idle`, the snapshot holds an instance asleep in that
//! POLL; each restore of it prints one `after` report.
//!
//! Every report line is `phase key=value ...`, `phase` being `before` or
//! `after`.

use guest_kernel::{boot_info, generation, net, println, random, time};

use crate::Hex;

pub fn identity() -> i32 {
    report("before");
    let before = time::monotonic_ns();
    let start = generation::current();
    // Sleep until restored: with no deadline, only a restore (or a frame)
    // ends a POLL.
    while generation::current() == start {
        if net::is_present() {
            net::wait(None);
        } else {
            time::poll(u64::MAX);
        }
    }
    let after = time::monotonic_ns();
    report("after");
    println!(
        "after mono_before_ns={before} mono_after_ns={after} went_back={}",
        u8::from(after < before)
    );
    0
}

fn report(phase: &str) {
    let info = boot_info();
    let mut bytes = [0u8; 16];
    random::fill(&mut bytes);
    // SAFETY: the live BootInfo; volatile as the monitor rewrote it.
    let (instance_id, generation) = unsafe {
        (
            core::ptr::read_volatile(&info.instance_id),
            core::ptr::read_volatile(&info.generation),
        )
    };
    println!(
        "{phase} generation={generation} seen={}",
        generation::current()
    );
    println!("{phase} instance_id={instance_id}");
    println!("{phase} random={}", Hex(&bytes));
    match net::config() {
        Ok(c) => println!(
            "{phase} mac={} ipv4={} gateway={:?}",
            Hex(&c.mac),
            c.ipv4,
            c.gateway
        ),
        Err(_) => println!("{phase} mac=none ipv4=none"),
    }
    let (monitor_ns, monitor_wall) = time::clock();
    println!(
        "{phase} mono_ns={} wall_ns={} monitor_mono_ns={monitor_ns} monitor_wall_ns={monitor_wall}",
        time::monotonic_ns(),
        time::wall_ns()
    );
}
