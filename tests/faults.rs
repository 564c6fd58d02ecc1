//! Guest faults (ABI.md section 5): CPU exceptions and broken hypercalls
//! stop the instance with status 139 and one `guest fault: ` line that names
//! what happened, the address, and RIP with its function symbol.

mod support;

use support::{hex_after, hex_numbers, kvm_or_skip, probe, Outcome};

/// Runs `probe fault CASE` and returns the outcome, its fault line and the
/// `target=` address the guest printed before faulting.
fn fault(case: &str) -> Option<(Outcome, String, u64)> {
    if !kvm_or_skip() {
        return None;
    }
    let out = probe(&["fault", case]).go();
    let line = out.guest_fault();
    let target = if case == "stack-overflow" {
        out.number("guard")
    } else {
        out.number("target")
    };
    Some((out, line, target))
}

/// Checks that the line reports a page fault at exactly `addr`.
fn page_fault_at(out: &Outcome, line: &str, addr: u64) {
    if hex_after(line, "page fault at ") != Some(addr) {
        out.fail(format_args!("expected `page fault at {addr:#x}`"));
    }
}

/// Checks that the line names RIP inside function `symbol`.
fn in_function(out: &Outcome, line: &str, symbol: &str) {
    if !line.contains("rip 0x") || !line.contains(&format!("({symbol}+0x")) {
        out.fail(format_args!(
            "expected `rip 0x... ({symbol}+0x...)` on the fault line"
        ));
    }
}

#[test]
fn null_dereference_is_a_guest_fault_naming_address_and_function() {
    let Some((out, line, _)) = fault("null") else {
        return;
    };
    page_fault_at(&out, &line, 0);
    in_function(&out, &line, "probe_null_deref");
}

#[test]
fn write_to_text_is_a_guest_fault() {
    let Some((out, line, target)) = fault("write-text") else {
        return;
    };
    page_fault_at(&out, &line, target);
    in_function(&out, &line, "probe_write");
}

#[test]
fn write_to_rodata_is_a_guest_fault() {
    let Some((out, line, target)) = fault("write-rodata") else {
        return;
    };
    page_fault_at(&out, &line, target);
    in_function(&out, &line, "probe_write");
}

#[test]
fn write_to_boot_info_is_a_guest_fault() {
    let Some((out, line, target)) = fault("write-bootinfo") else {
        return;
    };
    page_fault_at(&out, &line, target);
    in_function(&out, &line, "probe_write");
}

#[test]
fn execute_from_stack_is_a_guest_fault() {
    let Some((out, line, target)) = fault("exec-stack") else {
        return;
    };
    page_fault_at(&out, &line, target);
    if hex_after(&line, "rip ") != Some(target) {
        out.fail(format_args!(
            "expected `rip {target:#x}` (the stack buffer)"
        ));
    }
}

#[test]
fn execute_from_heap_is_a_guest_fault() {
    let Some((out, line, target)) = fault("exec-heap") else {
        return;
    };
    page_fault_at(&out, &line, target);
    if hex_after(&line, "rip ") != Some(target) {
        out.fail(format_args!("expected `rip {target:#x}` (the heap buffer)"));
    }
}

#[test]
fn execute_from_rodata_is_a_guest_fault() {
    let Some((out, line, target)) = fault("exec-rodata") else {
        return;
    };
    page_fault_at(&out, &line, target);
}

#[test]
fn stack_overflow_into_the_guard_page_is_a_guest_fault() {
    let Some((out, line, guard)) = fault("stack-overflow") else {
        return;
    };
    match hex_after(&line, "page fault at ") {
        Some(addr) if (guard..guard + 4096).contains(&addr) => {}
        _ => out.fail(format_args!(
            "expected a page fault in the guard page {guard:#x}"
        )),
    }
    in_function(&out, &line, "probe_recurse");
}

#[test]
fn read_from_the_guard_page_is_a_guest_fault() {
    let Some((out, line, target)) = fault("read-guard") else {
        return;
    };
    page_fault_at(&out, &line, target);
    in_function(&out, &line, "probe_read");
}

/// A fault that is not a page fault: still 139 with a diagnosis, and RIP
/// in the function that did it.
fn instruction_fault(case: &str) {
    if !kvm_or_skip() {
        return;
    }
    let out = probe(&["fault", case]).go();
    let line = out.guest_fault();
    if !line.contains("rip 0x") {
        out.fail("expected the fault line to give RIP");
    }
}

#[test]
fn hlt_at_cpl3_is_a_guest_fault() {
    instruction_fault("hlt");
}

#[test]
fn syscall_is_a_guest_fault() {
    instruction_fault("syscall");
}

#[test]
fn ud2_is_a_guest_fault() {
    instruction_fault("ud2");
}

#[test]
fn int3_is_a_guest_fault() {
    instruction_fault("int3");
}

/// `probe block CASE`: a broken hypercall stops the instance with 139 and a
/// one-line diagnosis, after the guest got as far as the hypercall.
fn broken_hypercall(case: &str) -> Option<(Outcome, String)> {
    if !kvm_or_skip() {
        return None;
    }
    let out = probe(&["block", case]).go();
    let line = out.guest_fault();
    if !out.stdout_str().starts_with(&format!("about to {case}")) {
        out.fail("expected the guest to run up to the broken hypercall");
    }
    if line.len() <= "guest fault: ".len() + 4 {
        out.fail("expected a diagnosis after `guest fault: `");
    }
    Some((out, line))
}

/// [`broken_hypercall`] with a bad block: the diagnosis names its address.
fn broken_block(case: &str) {
    let Some((out, line)) = broken_hypercall(case) else {
        return;
    };
    let first = out.stdout_str().lines().next().unwrap_or("").to_owned();
    let block = hex_after(&first, "block=").unwrap_or_else(|| out.fail("no `block=` report"));
    if !hex_numbers(&line).contains(&block) {
        out.fail(format_args!(
            "expected the diagnosis to name the block address {block:#x}"
        ));
    }
}

#[test]
fn unaligned_argument_block_is_a_guest_fault() {
    broken_block("unaligned");
}

#[test]
fn argument_block_in_text_is_a_guest_fault() {
    broken_block("text");
}

#[test]
fn argument_block_in_rodata_is_a_guest_fault() {
    broken_block("rodata");
}

#[test]
fn argument_block_in_boot_info_is_a_guest_fault() {
    broken_block("bootinfo");
}

#[test]
fn argument_block_in_the_command_line_is_a_guest_fault() {
    broken_block("cmdline");
}

#[test]
fn argument_block_in_page_0_is_a_guest_fault() {
    broken_block("page0");
}

#[test]
fn argument_block_outside_ram_is_a_guest_fault() {
    broken_block("outside-ram");
}

#[test]
fn argument_block_running_past_ram_is_a_guest_fault() {
    broken_block("straddle-ram-end");
}

#[test]
fn argument_block_in_the_guard_page_is_a_guest_fault() {
    broken_block("guard");
}

#[test]
fn argument_block_in_the_hypercall_page_is_a_guest_fault() {
    broken_block("hypercall-page");
}

#[test]
fn hypercall_number_0_is_a_guest_fault() {
    broken_hypercall("nr0");
}

#[test]
fn reserved_hypercall_number_9_is_a_guest_fault() {
    broken_hypercall("nr9");
}

#[test]
fn reserved_hypercall_number_63_is_a_guest_fault() {
    broken_hypercall("nr63");
}

#[test]
fn hypercall_number_64_is_a_guest_fault() {
    broken_hypercall("nr64");
}

#[test]
fn hypercall_number_511_is_a_guest_fault() {
    broken_hypercall("nr511");
}

#[test]
fn load_from_the_hypercall_page_is_a_guest_fault() {
    broken_hypercall("load");
}

#[test]
fn four_byte_store_to_the_hypercall_page_is_a_guest_fault() {
    broken_hypercall("store32");
}

#[test]
fn one_byte_store_to_the_hypercall_page_is_a_guest_fault() {
    broken_hypercall("store8");
}

#[test]
fn store_at_an_offset_not_a_multiple_of_8_is_a_guest_fault() {
    broken_hypercall("store-misaligned");
}

#[test]
fn store_past_the_hypercall_page_is_a_guest_fault() {
    let Some((out, line)) = broken_hypercall("store-next-page") else {
        return;
    };
    if !hex_numbers(&line).contains(&0xC000_1000) {
        out.fail("expected the diagnosis to name address 0xc0001000");
    }
}

#[test]
fn store_to_an_address_without_ram_is_a_guest_fault() {
    let Some((out, line)) = broken_hypercall("store-no-ram") else {
        return;
    };
    if !hex_numbers(&line).contains(&0x8000_0000) {
        out.fail("expected the diagnosis to name address 0x80000000");
    }
}
