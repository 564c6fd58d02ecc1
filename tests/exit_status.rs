//! The exit status of `flint run` (ABI.md section 5): the guest's own EXIT
//! code, a guest panic (101) and a timeout (124).

mod support;

use std::time::Duration;

use support::{kvm_or_skip, probe};

/// EXIT with `code` gives status `expected`, and the monitor says nothing.
fn exits_with(code: &str, expected: i32) {
    if !kvm_or_skip() {
        return;
    }
    probe(&["exit", code])
        .go()
        .status(expected)
        .no_stderr()
        .stdout_is("");
}

#[test]
fn exit_0_gives_status_0() {
    exits_with("0", 0);
}

#[test]
fn exit_7_gives_status_7() {
    exits_with("7", 7);
}

#[test]
fn exit_255_gives_status_255() {
    exits_with("255", 255);
}

#[test]
fn exit_256_gives_status_0() {
    exits_with("256", 0);
}

#[test]
fn exit_300_gives_status_44() {
    exits_with("300", 44);
}

#[test]
fn exit_u64_max_gives_status_255() {
    exits_with("18446744073709551615", 255);
}

#[test]
fn returning_from_main_exits_with_its_value() {
    if !kvm_or_skip() {
        return;
    }
    probe(&["return", "9"]).go().status(9).no_stderr();
}

#[test]
fn exit_flushes_a_partial_console_line() {
    if !kvm_or_skip() {
        return;
    }
    probe(&["print-exit"])
        .go()
        .status(3)
        .no_stderr()
        .stdout_is("partial line");
}

#[test]
fn panic_gives_101_with_message_and_location_on_one_line() {
    if !kvm_or_skip() {
        return;
    }
    let out = probe(&["panic"]).go();
    out.status(101);
    let line = out.one_stderr_line();
    if !line.contains("probe panic 42") {
        out.fail("expected the panic message `probe panic 42` on the stderr line");
    }
    if !line.contains("main.rs:") {
        out.fail("expected the panic location (`src/main.rs:LINE`) on the stderr line");
    }
    // The console is flushed at panic.
    out.stdout_is("unfinished");
}

#[test]
fn panic_message_escapes_invalid_utf8_and_control_characters() {
    if !kvm_or_skip() {
        return;
    }
    let out = probe(&["panic-bytes"]).go();
    out.status(101);
    let line = out.one_stderr_line();
    // Sent: b"bad\xff\x01\x1b[31m\nend \xc3\xa9 ok".
    let lower = line.to_ascii_lowercase();
    if !lower.contains(r"bad\xff\x01\x1b[31m\x0aend") {
        out.fail(r"expected `bad\xff\x01\x1b[31m\x0aend` (each bad byte as \xNN) on the line");
    }
    if !line.contains("é ok") {
        out.fail("expected valid UTF-8 (`é ok`) to pass through unescaped");
    }
}

#[test]
fn panic_message_is_cut_at_4_kib() {
    if !kvm_or_skip() {
        return;
    }
    let out = probe(&["panic-long"]).go();
    out.status(101);
    let line = out.one_stderr_line();
    // The longest run of `a`s is the message as the monitor kept it.
    let a = line.split(|c| c != 'a').map(str::len).max().unwrap_or(0);
    if a != 4096 {
        out.fail(format_args!(
            "a 5000-byte message must be cut to 4096 bytes; saw {a}"
        ));
    }
}

#[test]
fn panic_with_unreadable_message_says_unreadable() {
    if !kvm_or_skip() {
        return;
    }
    let out = probe(&["panic-unreadable"]).go();
    out.status(101);
    if !out.one_stderr_line().contains("<unreadable>") {
        out.fail("expected `<unreadable>` for a message in page 0");
    }
}

#[test]
fn panic_with_message_running_past_ram_says_unreadable() {
    if !kvm_or_skip() {
        return;
    }
    let out = probe(&["panic-straddle"]).go();
    out.status(101);
    if !out.one_stderr_line().contains("<unreadable>") {
        out.fail("expected `<unreadable>` for a message that runs past the end of RAM");
    }
}

#[test]
fn runaway_loop_is_stopped_by_timeout_with_124() {
    if !kvm_or_skip() {
        return;
    }
    let out = probe(&["fault", "loop"])
        .opts(&["--timeout", "1"])
        .limit(Duration::from_secs(20))
        .go();
    out.status(124);
    out.one_stderr_line();
    out.stdout_is("spinning\n");
    if out.elapsed < Duration::from_millis(900) || out.elapsed > Duration::from_secs(5) {
        out.fail("--timeout 1 must stop the guest after about one second");
    }
}

#[test]
fn empty_panic_message_still_gives_101_and_one_line() {
    if !kvm_or_skip() {
        return;
    }
    let out = probe(&["panic-empty"]).go();
    out.status(101);
    out.one_stderr_line();
}

#[test]
fn running_out_of_heap_is_a_panic_with_101() {
    if !kvm_or_skip() {
        return;
    }
    let out = probe(&["oom"]).go();
    out.status(101);
    out.one_stderr_line();
}

#[test]
fn guest_idle_in_poll_is_stopped_by_timeout_with_124() {
    if !kvm_or_skip() {
        return;
    }
    let out = probe(&["poll-forever"])
        .opts(&["--timeout", "1"])
        .limit(Duration::from_secs(20))
        .go();
    out.status(124);
    out.one_stderr_line();
    if out.elapsed > Duration::from_secs(5) {
        out.fail("--timeout 1 must stop a guest blocked in POLL after about one second");
    }
}

#[test]
fn a_guest_that_finishes_in_time_keeps_its_status() {
    if !kvm_or_skip() {
        return;
    }
    probe(&["exit", "5"])
        .opts(&["--timeout", "10"])
        .go()
        .status(5)
        .no_stderr();
}
