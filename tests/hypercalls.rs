//! Hypercalls as a guest sees them (ABI.md section 4): bad buffers get an
//! errno and the guest goes on; CLOCK, POLL and RANDOM give sane answers.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use hypercall_abi::errno::{EFAULT, EINVAL, ENODEV};
use support::{kvm_or_skip, probe, Outcome};

/// Runs `probe buf CASE`: status 0, nothing on stderr, the guest went on
/// after the hypercall. Returns the report line's fields after `CASE `.
fn buffer_case(case: &str) -> Option<(Outcome, String)> {
    if !kvm_or_skip() {
        return None;
    }
    let out = probe(&["buf", case]).go();
    out.status(0).no_stderr();
    out.stdout_line("probe: still running");
    let prefix = format!("{case} ");
    let Some(report) = out
        .stdout_str()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
    else {
        out.fail(format_args!("expected a report line `{case} ret=...`"))
    };
    Some((out, report))
}

/// The case's `ret` is `expected` (and, if reported, the bytes unchanged).
fn buffer_gets(case: &str, expected: i64) {
    let Some((out, report)) = buffer_case(case) else {
        return;
    };
    if !report.split(' ').any(|f| f == format!("ret={expected}")) {
        out.fail(format_args!("{case}: expected ret={expected}"));
    }
    if report.contains("unchanged=") && !report.contains("unchanged=yes") {
        out.fail(format_args!(
            "{case}: the monitor wrote a buffer it had to refuse"
        ));
    }
}

#[test]
fn efault_for_console_buffer_in_page_0() {
    buffer_gets("console-page0", EFAULT);
}

#[test]
fn efault_for_console_buffer_running_past_end_of_ram() {
    buffer_gets("console-past-ram", EFAULT);
}

#[test]
fn efault_for_console_buffer_beyond_end_of_ram() {
    buffer_gets("console-beyond-ram", EFAULT);
}

#[test]
fn efault_for_console_buffer_whose_address_plus_length_overflows() {
    buffer_gets("console-overflow", EFAULT);
}

#[test]
fn efault_for_console_buffer_of_length_u64_max() {
    buffer_gets("console-huge-len", EFAULT);
}

#[test]
fn efault_for_console_buffer_in_the_guard_page() {
    buffer_gets("console-guard", EFAULT);
}

#[test]
fn efault_for_console_buffer_running_into_the_guard_page() {
    buffer_gets("console-guard-straddle", EFAULT);
}

#[test]
fn efault_for_console_buffer_in_the_hypercall_page() {
    buffer_gets("console-hypercall-page", EFAULT);
}

#[test]
fn efault_for_console_buffer_in_any_monitor_page_below_1_mib() {
    let Some((out, report)) = buffer_case("console-monitor-pages") else {
        return;
    };
    if !report.ends_with("not_efault=0") {
        out.fail("every page below 1 MiB but BootInfo's and the command line's must be EFAULT");
    }
}

#[test]
fn console_buffer_of_length_0_is_never_checked() {
    buffer_gets("console-len0", 0);
}

#[test]
fn efault_for_random_into_text_and_text_unchanged() {
    buffer_gets("random-text", EFAULT);
}

#[test]
fn efault_for_random_into_rodata_and_rodata_unchanged() {
    buffer_gets("random-rodata", EFAULT);
}

#[test]
fn efault_for_random_into_boot_info_and_boot_info_unchanged() {
    buffer_gets("random-bootinfo", EFAULT);
}

#[test]
fn efault_for_random_into_boot_info_seed_and_seed_unchanged() {
    buffer_gets("random-bootinfo-seed", EFAULT);
}

#[test]
fn efault_for_random_into_the_command_line_and_it_is_unchanged() {
    buffer_gets("random-cmdline", EFAULT);
}

#[test]
fn efault_for_random_running_past_end_of_ram_and_nothing_written() {
    buffer_gets("random-straddle-ram-end", EFAULT);
}

#[test]
fn efault_for_random_running_into_the_guard_page_and_nothing_written() {
    buffer_gets("random-straddle-guard", EFAULT);
}

#[test]
fn efault_for_random_into_the_guard_page() {
    buffer_gets("random-guard", EFAULT);
}

#[test]
fn einval_for_random_longer_than_4096_and_nothing_written() {
    buffer_gets("random-too-long", EINVAL);
}

#[test]
fn random_of_4096_bytes_fills_them() {
    let Some((out, report)) = buffer_case("random-ok") else {
        return;
    };
    let zeros: usize = report
        .strip_prefix("ret=4096 zero_bytes=")
        .and_then(|z| z.parse().ok())
        .unwrap_or_else(|| out.fail("expected `random-ok ret=4096 zero_bytes=N`"));
    // About 16 of 4096 random bytes are zero; 100 would be absurd.
    if zeros > 100 {
        out.fail("RANDOM left the buffer mostly zero");
    }
}

#[test]
fn random_of_length_0_is_never_checked() {
    buffer_gets("random-len0", 0);
}

#[test]
fn enodev_for_net_write_without_network() {
    buffer_gets("net-write-nodev", ENODEV);
}

#[test]
fn enodev_before_efault_for_net_write_without_network() {
    buffer_gets("net-write-nodev-badbuf", ENODEV);
}

#[test]
fn enodev_for_net_read_without_network() {
    buffer_gets("net-read-nodev", ENODEV);
}

#[test]
fn enodev_before_efault_for_net_read_without_network() {
    buffer_gets("net-read-nodev-badbuf", ENODEV);
}

fn host_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn clock_wall_is_host_time_and_monotonic_never_decreases() {
    if !kvm_or_skip() {
        return;
    }
    let before = host_now_ns();
    let out = probe(&["clock"]).go();
    let after = host_now_ns();
    out.status(0).no_stderr();
    let wall = out.number("wall_ns");
    if wall + 2_000_000_000 < before || wall > after + 2_000_000_000 {
        out.fail(format_args!(
            "CLOCK wall_ns must be host time (host: {before}..{after})"
        ));
    }
    if out.number("mono_ns") > 5_000_000_000 {
        out.fail("the instance clock counts from the first instruction: expected < 5 s");
    }
    if out.number("mono_decreases") != 0 {
        out.fail("CLOCK monotonic_ns went backwards");
    }
}

#[test]
fn tsc_clock_agrees_with_clock_hypercall() {
    if !kvm_or_skip() {
        return;
    }
    let out = probe(&["clock"]).go();
    out.status(0).no_stderr();
    // BootInfo's tsc_hz and tsc_at_boot make the guest's clock the same
    // as the monitor's; allow generous slack for slow hosts.
    if out.number("tsc_clock_skew_ns") > 100_000_000 {
        out.fail("the TSC instance clock is more than 100 ms off CLOCK's");
    }
    if out.number("tsc_wall_skew_ns") > 1_000_000_000 {
        out.fail("the TSC wall clock is more than 1 s off CLOCK's");
    }
}

#[test]
fn poll_without_device_waits_for_its_deadline() {
    if !kvm_or_skip() {
        return;
    }
    let out = probe(&["clock"]).go();
    out.status(0).no_stderr();
    out.stdout_line("poll_ret=0").stdout_line("poll_ready=0");
    if out.number("poll_waited_ns") < 50_000_000 {
        out.fail("the guest's POLL loop ended before its 50 ms deadline");
    }
    // POLL may return early (ready = 0), but a monitor that waits does so
    // a handful of times at most; hundreds of calls mean it spins.
    if out.number("poll_calls") > 10 {
        out.fail("POLL with a 50 ms deadline returned early again and again");
    }
    if out.elapsed.as_millis() < 50 {
        out.fail("the whole run took less than the 50 ms POLL deadline");
    }
    out.stdout_line("poll_past_ret=0 poll_past_ready=0");
    if out.number("poll_past_ns") > 20_000_000 {
        out.fail("POLL with a deadline already past must return at once");
    }
}

#[test]
fn random_differs_between_runs() {
    if !kvm_or_skip() {
        return;
    }
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| probe(&["random"]).go());
        let b = probe(&["random"]).go();
        (a.join().unwrap(), b)
    });
    for out in [&a, &b] {
        out.status(0).no_stderr().stdout_line("random_ret=32");
    }
    let zero = "0".repeat(64);
    for key in ["host", "seed"] {
        if a.value(key) == b.value(key) {
            a.fail(format_args!(
                "{key} is the same in two runs; the other run:\n{b}"
            ));
        }
        if a.value(key) == zero {
            a.fail(format_args!("{key} is all zero"));
        }
    }
    if a.value("prng") == b.value("prng") {
        a.fail(format_args!(
            "the guest PRNG gives the same value in two runs:\n{b}"
        ));
    }
}

#[test]
fn console_buffers_at_the_edges_of_readable_memory_are_taken() {
    let Some((out, _)) = buffer_case("console-edges") else {
        return;
    };
    for edge in [
        "ram-end",
        "heap-end",
        "stack-bottom",
        "bootinfo",
        "cmdline",
        "text",
        "rodata",
    ] {
        let prefix = format!("console-edges {edge} ");
        let line = out
            .stdout_str()
            .lines()
            .find(|l| l.starts_with(&prefix))
            .map(str::to_owned);
        match line {
            Some(l) if l.ends_with(" ret=4") => {}
            _ => out.fail(format_args!(
                "expected CONSOLE_WRITE of 4 readable bytes at {edge} to take 4"
            )),
        }
    }
}

#[test]
fn random_into_the_last_bytes_of_the_heap_is_taken() {
    buffer_gets("random-edges", 16);
}

#[test]
fn console_passes_every_byte_value_through() {
    if !kvm_or_skip() {
        return;
    }
    let out = probe(&["console-bytes"]).go();
    out.status(0).no_stderr();
    let all: Vec<u8> = (0..=255).collect();
    if out.stdout != all {
        out.fail("expected stdout to be the bytes 0 to 255, byte for byte");
    }
}

#[test]
fn console_carries_256_kib_byte_for_byte() {
    if !kvm_or_skip() {
        return;
    }
    let out = probe(&["console-big"]).go();
    out.status(0).no_stderr();
    let expected: Vec<u8> = (0..256u32 << 10).map(|i| (i * 7 % 251) as u8).collect();
    if out.stdout != expected {
        let at = out.stdout.iter().zip(&expected).position(|(a, b)| a != b);
        out.fail(format_args!(
            "expected 256 KiB of pattern; got {} bytes, first difference at {at:?}",
            out.stdout.len()
        ));
    }
}
