//! Guest-reachable error paths of ABI.md that `faults.rs`, `hypercalls.rs`,
//! `exit_status.rs` and `net_abi.rs` leave out (the audit in SECURITY.md,
//! "Guest-reachable error paths", lists which test holds each path):
//!
//! - every other kind of CPU exception and privileged instruction a CPL 3
//!   guest can try (#DE, #DB, #GP of many kinds, #SS, #XM, #MF, port I/O,
//!   MSRs, control registers, descriptor tables, segment loads, IRET to
//!   CPL 0, non-canonical addresses, execution from the hypercall page and
//!   BootInfo): status 139 and one `guest fault: ` line with RIP;
//! - a broken argument block for each of the eight hypercalls;
//! - bad buffers not covered elsewhere (RANDOM, NET_WRITE, NET_READ, PANIC
//!   and CONSOLE_WRITE variants, and the errno order between them): the
//!   errno, and the guest goes on;
//! - POLL with deadlines at the edges of u64 (no overflow, no hang);
//! - console output to a stdout nobody reads.
//!
//! Every check also makes sure the monitor never printed a Rust panic.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use hypercall_abi::errno::{EAGAIN, EFAULT};
use support::{flint_bin, hex_numbers, image, kvm_or_skip, probe, Outcome};

/// The monitor never shows a Rust panic, nor dies of one (`panic =
/// "abort"` would make it SIGABRT, status 134).
#[track_caller]
fn no_rust_panic(out: &Outcome) {
    let err = out.stderr_str();
    if err.contains("panicked at") || err.contains("RUST_BACKTRACE") {
        out.fail("the monitor printed a Rust panic");
    }
    if out.signal == Some(libc::SIGABRT) || out.code == Some(134) {
        out.fail("the monitor aborted");
    }
}

/// `probe edge CASE` must be stopped as a guest fault after the guest got
/// as far as the case; returns the fault line, which also names RIP.
fn edge_fault(case: &str, opts: &[&str]) -> Option<(Outcome, String)> {
    if !kvm_or_skip() {
        return None;
    }
    let out = probe(&["edge", case]).opts(opts).go();
    no_rust_panic(&out);
    let line = out.guest_fault();
    if !out.stdout_str().starts_with(&format!("about to {case}\n")) {
        out.fail("expected the guest to run up to the case");
    }
    if out.stdout_str().contains("probe: survived") {
        out.fail("the guest went on after the fault");
    }
    if !line.contains(" rip 0x") && !line.contains("from rip 0x") {
        out.fail("expected the fault line to give RIP");
    }
    Some((out, line))
}

/// [`edge_fault`], and the line contains `what`.
fn edge_fault_says(case: &str, what: &str) {
    let Some((out, line)) = edge_fault(case, &[]) else {
        return;
    };
    if !line.contains(what) {
        out.fail(format_args!("expected the fault line to say `{what}`"));
    }
}

/// [`edge_fault`] for an exception raised by code in the probe's own text:
/// RIP is named with the function that did it.
fn edge_fault_in_probe(case: &str) {
    let Some((out, line)) = edge_fault(case, &[]) else {
        return;
    };
    if !line.contains("(probe::edges::run+0x") {
        out.fail("expected RIP inside probe::edges::run");
    }
}

// ---- CPU exceptions and privileged instructions ----

#[test]
fn divide_by_zero_is_a_guest_fault() {
    edge_fault_in_probe("div0");
}

#[test]
fn int_0x80_is_a_guest_fault_naming_the_software_interrupt() {
    edge_fault_says("int80", "software interrupt");
}

#[test]
fn icebp_debug_trap_is_a_guest_fault() {
    edge_fault_in_probe("int1");
}

#[test]
fn into_is_a_guest_fault() {
    edge_fault_in_probe("into");
}

#[test]
fn sysenter_is_a_guest_fault_naming_sysenter() {
    edge_fault_says("sysenter", "sysenter");
}

#[test]
fn cli_is_a_guest_fault_naming_it_privileged() {
    edge_fault_says("cli", "privileged instruction (cli/sti)");
}

#[test]
fn sti_is_a_guest_fault_naming_it_privileged() {
    edge_fault_says("sti", "privileged instruction (cli/sti)");
}

#[test]
fn port_input_is_a_guest_fault() {
    edge_fault_says("port-in", "port I/O");
}

#[test]
fn port_output_is_a_guest_fault() {
    edge_fault_says("port-out", "port I/O");
}

#[test]
fn port_input_through_dx_is_a_guest_fault() {
    edge_fault_says("port-in-dx", "port I/O");
}

#[test]
fn raising_iopl_with_popf_does_not_allow_port_io() {
    edge_fault_says("raise-iopl", "port I/O");
}

#[test]
fn rdmsr_is_a_guest_fault() {
    edge_fault_in_probe("rdmsr");
}

#[test]
fn wrmsr_of_lstar_is_a_guest_fault() {
    edge_fault_in_probe("wrmsr");
}

#[test]
fn reading_cr3_is_a_guest_fault() {
    edge_fault_says("read-cr3", "control/debug register");
}

#[test]
fn writing_cr0_is_a_guest_fault() {
    edge_fault_says("write-cr0", "control/debug register");
}

#[test]
fn lidt_is_a_guest_fault() {
    edge_fault_in_probe("lidt");
}

#[test]
fn invlpg_is_a_guest_fault() {
    edge_fault_in_probe("invlpg");
}

#[test]
fn wbinvd_is_a_guest_fault() {
    edge_fault_in_probe("wbinvd");
}

#[test]
fn rdpmc_is_a_guest_fault() {
    edge_fault_in_probe("rdpmc");
}

#[test]
fn xsetbv_is_a_guest_fault() {
    edge_fault_in_probe("xsetbv");
}

#[test]
fn loading_the_tss_selector_into_ds_is_a_guest_fault() {
    // The GDT is not mapped for the guest, so the descriptor read itself
    // faults; either way the guest never gets another segment.
    edge_fault_in_probe("load-tss-selector");
}

#[test]
fn iret_to_cpl_0_is_a_guest_fault() {
    edge_fault_in_probe("iret-to-cpl0");
}

#[test]
fn non_canonical_load_is_a_guest_fault() {
    edge_fault_in_probe("noncanonical-load");
}

#[test]
fn jump_to_a_non_canonical_address_is_a_guest_fault() {
    edge_fault("noncanonical-jump", &[]);
}

#[test]
fn push_with_a_non_canonical_stack_pointer_is_a_guest_fault() {
    edge_fault_in_probe("noncanonical-stack");
}

#[test]
fn unmasked_sse_exception_is_a_guest_fault() {
    edge_fault_in_probe("sse-exception");
}

#[test]
fn unmasked_x87_exception_is_a_guest_fault() {
    edge_fault_in_probe("x87-exception");
}

// ---- execution and access where the guest has no business ----

#[test]
fn executing_the_hypercall_page_is_a_page_fault_there() {
    let Some((out, line)) = edge_fault("exec-hypercall-page", &[]) else {
        return;
    };
    if !line.starts_with("guest fault: page fault at 0xc0000000 ") {
        out.fail("expected `page fault at 0xc0000000`");
    }
}

#[test]
fn executing_boot_info_is_a_page_fault_naming_boot_info() {
    edge_fault_says(
        "exec-bootinfo",
        "execute from BootInfo, which is not executable",
    );
}

#[test]
fn calling_address_0_is_a_page_fault_naming_a_null_function_pointer() {
    edge_fault_says("exec-null", "null function pointer");
}

#[test]
fn reading_a_monitor_page_below_1_mib_is_a_guest_fault() {
    edge_fault_says("read-monitor-page", "page fault at 0x");
}

#[test]
fn writing_the_command_line_is_a_guest_fault() {
    let Some((out, line)) = edge_fault("write-cmdline", &[]) else {
        return;
    };
    if !line.contains("read-only") {
        out.fail("expected the fault line to say the command line is read-only");
    }
}

#[test]
fn load_from_an_address_without_ram_is_a_guest_fault() {
    let Some((out, line)) = edge_fault("load-no-ram", &[]) else {
        return;
    };
    if !hex_numbers(&line).contains(&0x8000_0000) {
        out.fail("expected the diagnosis to name address 0x80000000");
    }
}

// ---- odd accesses to the hypercall page ----

#[test]
fn two_byte_store_to_the_hypercall_page_is_a_guest_fault() {
    edge_fault_says("store16", "2-byte store to the hypercall page");
}

#[test]
fn locked_exchange_with_the_hypercall_page_is_a_guest_fault() {
    edge_fault_says("xchg-hypercall-page", "load from the hypercall page");
}

#[test]
fn sixteen_byte_store_of_a_bad_block_is_a_guest_fault() {
    edge_fault("store-sse16", &[]);
}

/// ABI.md section 4: "a store of another width ... stops the instance".
/// KVM hands a 16-byte store to MMIO to the monitor as two 8-byte exits
/// that each look like a hypercall (here CLOCK, then POLL); the monitor
/// asks KVM for the next piece before serving the first.
#[test]
fn sixteen_byte_store_of_two_valid_blocks_is_a_guest_fault() {
    edge_fault_says(
        "store-sse16-valid",
        "store of more than 8 bytes to the hypercall page",
    );
}

// ---- a broken argument block for each hypercall ----

/// `probe badblock NR PLACE` stops with 139 and a line naming the
/// hypercall and the block's address.
fn broken_block(nr: u8, name: &str, places: &[&str]) {
    if !kvm_or_skip() {
        return;
    }
    for place in places {
        let out = probe(&["badblock", &nr.to_string(), place])
            .opts(&["--net", "user"])
            .go();
        no_rust_panic(&out);
        let line = out.guest_fault();
        let first = out.stdout_str().lines().next().unwrap_or("").to_owned();
        let Some(block) = support::hex_after(&first, "block=") else {
            out.fail("no `block=` report");
        };
        if !line.contains(&format!("{name} argument block at {block:#x}")) {
            out.fail(format_args!(
                "expected `{name} argument block at {block:#x}` ({place})"
            ));
        }
    }
}

const EVERY_PLACE: &[&str] = &["rodata", "unaligned", "straddle-guard"];

#[test]
fn broken_console_write_block_is_a_guest_fault() {
    broken_block(1, "CONSOLE_WRITE", EVERY_PLACE);
}

#[test]
fn broken_exit_block_is_a_guest_fault() {
    // EXIT's block is 8 bytes: aligned, it cannot straddle into the guard.
    broken_block(2, "EXIT", &["rodata", "unaligned"]);
}

#[test]
fn broken_panic_block_is_a_guest_fault() {
    broken_block(3, "PANIC", EVERY_PLACE);
}

#[test]
fn broken_clock_block_is_a_guest_fault() {
    broken_block(4, "CLOCK", EVERY_PLACE);
}

#[test]
fn broken_poll_block_is_a_guest_fault() {
    broken_block(5, "POLL", EVERY_PLACE);
}

#[test]
fn broken_net_write_block_is_a_guest_fault() {
    broken_block(6, "NET_WRITE", EVERY_PLACE);
}

#[test]
fn broken_net_read_block_is_a_guest_fault() {
    broken_block(7, "NET_READ", EVERY_PLACE);
}

#[test]
fn broken_random_block_is_a_guest_fault() {
    broken_block(8, "RANDOM", EVERY_PLACE);
}

// ---- bad buffers: an errno and the guest goes on ----

/// `probe edge CASE` answers `ret=expected`, the guest goes on, and the
/// monitor says nothing.
fn edge_errno(case: &str, opts: &[&str], expected: i64) {
    if !kvm_or_skip() {
        return;
    }
    let out = probe(&["edge", case]).opts(opts).go();
    no_rust_panic(&out);
    out.status(0).no_stderr();
    out.stdout_line("probe: still running");
    let want = format!("{case} ret={expected}");
    if !out.stdout_str().lines().any(|l| l.ends_with(&want)) {
        out.fail(format_args!("expected the line `{want}`"));
    }
}

const NET: &[&str] = &["--net", "user"];

#[test]
fn efault_for_random_into_page_0() {
    edge_errno("random-page0", &[], EFAULT);
}

#[test]
fn efault_for_random_beyond_end_of_ram() {
    edge_errno("random-beyond-ram", &[], EFAULT);
}

#[test]
fn efault_for_random_whose_address_plus_length_overflows() {
    edge_errno("random-overflow", &[], EFAULT);
}

#[test]
fn efault_for_random_of_length_u64_max() {
    edge_errno("random-huge-len", &[], EFAULT);
}

#[test]
fn efault_for_random_into_the_hypercall_page() {
    edge_errno("random-hypercall-page", &[], EFAULT);
}

#[test]
fn efault_for_random_into_a_monitor_page() {
    edge_errno("random-monitor-page", &[], EFAULT);
}

#[test]
fn efault_before_einval_for_random_too_long_into_a_bad_buffer() {
    edge_errno("random-too-long-badbuf", &[], EFAULT);
}

#[test]
fn efault_for_a_short_console_buffer_whose_end_overflows() {
    edge_errno("console-overflow-small", &[], EFAULT);
}

#[test]
fn console_buffer_at_the_top_of_the_stack_is_taken() {
    edge_errno("console-stack-top", &[], 8);
}

#[test]
fn efault_for_net_write_whose_address_plus_length_overflows() {
    edge_errno("net-write-overflow", NET, EFAULT);
}

#[test]
fn efault_before_einval_for_a_short_net_write_from_a_bad_buffer() {
    edge_errno("net-write-badbuf-short", NET, EFAULT);
}

#[test]
fn efault_before_emsgsize_for_a_long_net_write_from_a_bad_buffer() {
    edge_errno("net-write-badbuf-long", NET, EFAULT);
}

#[test]
fn efault_for_net_write_of_length_u64_max() {
    edge_errno("net-write-huge-len", NET, EFAULT);
}

#[test]
fn net_write_from_readable_text_is_sent() {
    edge_errno("net-write-from-text", NET, 64);
}

#[test]
fn net_write_of_a_bare_14_byte_header_is_taken() {
    edge_errno("net-write-14", NET, 14);
}

#[test]
fn net_write_of_exactly_mtu_plus_14_bytes_is_taken() {
    edge_errno("net-write-max", NET, 1514);
}

#[test]
fn efault_for_net_read_into_text() {
    edge_errno("net-read-text", NET, EFAULT);
}

#[test]
fn efault_for_net_read_into_rodata() {
    edge_errno("net-read-rodata", NET, EFAULT);
}

#[test]
fn efault_for_net_read_into_boot_info() {
    edge_errno("net-read-bootinfo", NET, EFAULT);
}

#[test]
fn efault_for_net_read_whose_address_plus_capacity_overflows() {
    edge_errno("net-read-overflow", NET, EFAULT);
}

#[test]
fn efault_for_net_read_of_capacity_u64_max() {
    edge_errno("net-read-huge-cap", NET, EFAULT);
}

#[test]
fn net_read_of_capacity_0_is_never_checked_and_gets_eagain() {
    edge_errno("net-read-cap0", NET, EAGAIN);
}

// ---- PANIC with odd messages: always 101 and one line ----

/// `probe edge CASE` panics: 101, one stderr line containing `what`.
fn edge_panic(case: &str, what: &str) -> Option<(Outcome, String)> {
    if !kvm_or_skip() {
        return None;
    }
    let out = probe(&["edge", case]).go();
    no_rust_panic(&out);
    out.status(101);
    let line = out.one_stderr_line();
    if !line.contains(what) {
        out.fail(format_args!("expected `{what}` on the panic line"));
    }
    Some((out, line))
}

#[test]
fn panic_with_message_address_overflowing_says_unreadable() {
    edge_panic("panic-overflow", "<unreadable>");
}

#[test]
fn panic_with_message_in_the_guard_page_says_unreadable() {
    edge_panic("panic-guard", "<unreadable>");
}

#[test]
fn panic_with_message_in_a_monitor_page_says_unreadable() {
    edge_panic("panic-monitor-page", "<unreadable>");
}

#[test]
fn panic_with_length_u64_max_reads_only_4_kib() {
    let Some((out, line)) = edge_panic("panic-huge-len", "mmmm") else {
        return;
    };
    let run = line.split(|c| c != 'm').map(str::len).max().unwrap_or(0);
    if run != 4096 {
        out.fail(format_args!(
            "expected the first 4096 bytes of the message, saw {run}"
        ));
    }
}

// ---- POLL deadlines at the edges ----

/// `probe poll-deadline DEADLINE` under `--timeout 1`, with and without a
/// network device: returns at once with ret 0 if `returns`, else is ended
/// by the timeout (124), never a hang or a panic.
fn poll_deadline(deadline: &str, returns: bool) {
    if !kvm_or_skip() {
        return;
    }
    for net in [&[][..], NET] {
        let mut opts = vec!["--timeout", "1"];
        opts.extend(net);
        let out = probe(&["poll-deadline", deadline])
            .opts(&opts)
            .limit(Duration::from_secs(20))
            .go();
        no_rust_panic(&out);
        if returns {
            out.status(0).no_stderr();
            out.stdout_line("poll ret=0 ready=0");
            out.stdout_line("probe: still running");
        } else {
            out.status(124);
            out.one_stderr_line();
            if out.stdout_str().contains("poll ret=") {
                out.fail("POLL with a deadline beyond the timeout returned");
            }
        }
    }
}

#[test]
fn poll_with_deadline_0_returns_at_once() {
    poll_deadline("0", true);
}

#[test]
fn poll_with_deadline_1_ns_returns() {
    poll_deadline("1", true);
}

#[test]
fn poll_with_deadline_1_ns_from_now_returns() {
    poll_deadline("now+1", true);
}

#[test]
fn poll_with_deadline_i64_max_sleeps_until_the_timeout() {
    poll_deadline("9223372036854775807", false);
}

#[test]
fn poll_with_deadline_2_pow_63_sleeps_until_the_timeout() {
    poll_deadline("9223372036854775808", false);
}

#[test]
fn poll_with_deadline_u64_max_minus_1_sleeps_until_the_timeout() {
    poll_deadline("18446744073709551614", false);
}

// ---- console output nobody reads ----

#[test]
fn console_to_a_closed_stdout_is_dropped_and_the_guest_goes_on() {
    if !kvm_or_skip() {
        return;
    }
    // A pipe whose read end is closed: every write gets EPIPE.
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fds[0] is ours and closed once.
    unsafe { libc::close(fds[0]) };
    // SAFETY: fds[1] is ours; the Stdio owns and closes it.
    let stdout = unsafe { <Stdio as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
    let out = Command::new(flint_bin())
        .arg("run")
        .arg(image("probe"))
        .args(["--", "console-big"])
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .expect("run flint");
    let err = String::from_utf8_lossy(&out.stderr);
    let show = format!("status {:?}, stderr:\n{err}", out.status);
    assert!(!err.contains("panicked at"), "a Rust panic: {show}");
    // The guest wrote all of its 256 KiB (the writes were taken) and
    // exited 0 on its own.
    assert_eq!(out.status.code(), Some(0), "{show}");
}
