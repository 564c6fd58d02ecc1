//! Booting: `hello` as a user sees it, the app's arguments, and the
//! `BootInfo` a guest starts with (ABI.md sections 2 and 3).

mod support;

use support::{elf::Elf, image, kvm_or_skip, probe, Run};

const MIB: u64 = 1 << 20;

#[test]
fn hello_prints_hello_world_and_exits_0() {
    if !kvm_or_skip() {
        return;
    }
    Run::image(&image("hello"))
        .go()
        .status(0)
        .stdout_is("Hello, world!\n")
        .no_stderr();
}

#[test]
fn hello_greets_its_arguments() {
    if !kvm_or_skip() {
        return;
    }
    Run::image(&image("hello"))
        .guest(&["a", "b"])
        .go()
        .status(0)
        .stdout_is("Hello, a b!\n")
        .no_stderr();
}

#[test]
fn arguments_reach_the_guest_joined_by_single_spaces() {
    if !kvm_or_skip() {
        return;
    }
    let out = probe(&["args", "one", "two words", "héllo✓"]).go();
    out.status(0).no_stderr();
    out.stdout_line("argc=4")
        .stdout_line("arg=one")
        .stdout_line("arg=two")
        .stdout_line("arg=words")
        .stdout_line("arg=héllo✓")
        .stdout_line("cmdline=args one two words héllo✓");
    assert_eq!(
        out.number("cmdline_len"),
        "args one two words héllo✓".len() as u64,
        "{out}"
    );
}

#[test]
fn no_arguments_means_an_empty_command_line_at_address_0() {
    if !kvm_or_skip() {
        return;
    }
    let out = Run::image(&image("probe")).go();
    out.status(0).no_stderr();
    out.stdout_line("cmdline_addr=0x0")
        .stdout_line("cmdline_len=0")
        .stdout_line("argc=0");
}

#[test]
fn arguments_of_exactly_4096_bytes_are_accepted() {
    if !kvm_or_skip() {
        return;
    }
    // "args " + 4091 bytes = 4096, the ABI's limit.
    let long = "x".repeat(4091);
    let out = probe(&["args", &long]).go();
    out.status(0).no_stderr();
    assert_eq!(out.number("cmdline_len"), 4096, "{out}");
    out.stdout_line("argc=1");
}

#[test]
fn arguments_over_4096_bytes_are_refused_with_125() {
    if !kvm_or_skip() {
        return;
    }
    let long = "x".repeat(4092);
    let out = probe(&["args", &long]).go();
    out.status(125);
    out.one_stderr_line();
    if !out.stdout.is_empty() {
        out.fail("the guest must not run");
    }
}

#[test]
fn boot_info_fields_are_sane_with_defaults() {
    if !kvm_or_skip() {
        return;
    }
    let image = image("probe");
    let out = Run::image(&image).guest(&["bootinfo"]).go();
    out.status(0).no_stderr();
    check_boot_info(&out, &Elf::read(&image), 16 * MIB, 256 << 10);
}

#[test]
fn boot_info_reflects_mem_and_stack_options() {
    if !kvm_or_skip() {
        return;
    }
    let image = image("probe");
    let out = Run::image(&image)
        .opts(&["--mem", "32M", "--stack", "64K"])
        .guest(&["bootinfo"])
        .go();
    out.status(0).no_stderr();
    check_boot_info(&out, &Elf::read(&image), 32 * MIB, 64 << 10);
}

#[test]
fn mem_accepts_k_m_and_g_suffixes() {
    if !kvm_or_skip() {
        return;
    }
    for (arg, bytes) in [("20480K", 20 * MIB), ("24M", 24 * MIB), ("1G", 1024 * MIB)] {
        let out = probe(&["bootinfo"]).opts(&["--mem", arg]).go();
        out.status(0).no_stderr();
        if out.number("mem_size") != bytes {
            out.fail(format_args!("--mem {arg} must give mem_size {bytes:#x}"));
        }
        if out.number("stack_top") != bytes {
            out.fail("stack_top must equal mem_size");
        }
    }
}

#[test]
fn an_image_that_does_not_fit_in_mem_is_refused_with_125() {
    if !kvm_or_skip() {
        return;
    }
    // The image is linked at 2 MiB: with 2 MiB of RAM it cannot load.
    let out = Run::image(&image("hello")).opts(&["--mem", "2M"]).go();
    out.status(125);
    out.one_stderr_line();
}

#[test]
fn many_instances_at_once_all_say_hello() {
    if !kvm_or_skip() {
        return;
    }
    let hello = image("hello");
    let outs: Vec<_> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..32)
            .map(|_| s.spawn(|| Run::image(&hello).go()))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for out in outs {
        out.status(0).stdout_is("Hello, world!\n").no_stderr();
    }
}

#[test]
fn timings_print_the_phase_breakdown_on_stderr_and_keep_the_output() {
    if !kvm_or_skip() {
        return;
    }
    let hello = image("hello");
    let flag = Run::image(&hello).opts(&["--timings"]).go();
    let env = Run::image(&hello).env("FLINT_TIMINGS", "1").go();
    for out in [&flag, &env] {
        out.status(0).stdout_is("Hello, world!\n");
        if out.stderr_str().lines().count() < 3 {
            out.fail("expected a phase breakdown (several lines) on stderr");
        }
    }
    // Same phases, whichever way they were asked for: compare each line
    // up to its first digit (the numbers differ from run to run).
    let phase_names = |out: &support::Outcome| -> Vec<String> {
        let err = out.stderr_str();
        err.lines()
            .map(|l| {
                l.split(|c: char| c.is_ascii_digit())
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned()
            })
            .collect()
    };
    if phase_names(&flag) != phase_names(&env) {
        flag.fail(format_args!(
            "--timings and FLINT_TIMINGS=1 must print the same phases; with the variable:\n{env}"
        ));
    }
}

/// Checks a `probe bootinfo` report against ABI.md sections 2 and 3.
fn check_boot_info(out: &support::Outcome, elf: &Elf, mem: u64, stack: u64) {
    let n = |key| out.number(key);
    let expect = |ok: bool, what: &str| {
        if !ok {
            out.fail(format_args!("BootInfo: expected {what}"));
        }
    };
    expect(
        n("magic") == hypercall_abi::BOOTINFO_MAGIC,
        "magic \"FLINTI1\\0\"",
    );
    expect(n("abi_version") == 1, "abi_version 1");
    expect(n("size") >= 176, "size >= 176");
    expect(n("mem_size") == mem, &format!("mem_size {mem:#x}"));
    expect(n("stack_top") == n("mem_size"), "stack_top == mem_size");
    expect(n("stack_top") % 16 == 0, "stack_top 16-byte aligned");
    expect(n("stack_size") == stack, &format!("stack_size {stack:#x}"));
    let heap_start = n("heap_start");
    let heap_end = n("heap_end");
    let image_end = elf.image_end().next_multiple_of(4096);
    expect(
        heap_start == image_end,
        &format!("heap_start == image end rounded up ({image_end:#x})"),
    );
    expect(heap_end % 4096 == 0, "heap_end page aligned");
    expect(
        heap_end >= heap_start + (64 << 10),
        "a heap of at least 64 KiB",
    );
    expect(
        heap_end + 4096 == n("stack_top") - n("stack_size"),
        "guard page between heap and stack",
    );
    let hypercalls = n("hypercalls");
    expect(hypercalls & 0x1fe == 0x1fe, "hypercalls bits 1 to 8 set");
    expect(
        hypercalls & 1 == 0,
        "hypercalls bit 0 clear (no hypercall 0)",
    );
    expect(
        (100_000_000..20_000_000_000).contains(&n("tsc_hz")),
        "a plausible tsc_hz",
    );
    expect(n("generation") == 0, "generation 0 at first boot");
    expect(n("net_present") == 0, "no network device by default");
    expect(
        n("cmdline_len") == "bootinfo".len() as u64,
        "cmdline_len of \"bootinfo\"",
    );
    let info = n("bootinfo_addr");
    expect(
        info >= 4096 && info + 176 <= 0x10_0000,
        "BootInfo below 1 MiB, not in page 0",
    );
    let cmdline = n("cmdline");
    expect(
        cmdline >= 4096 && cmdline + 8 <= 0x10_0000,
        "the command line below 1 MiB",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let boot = n("wall_ns_at_boot");
    expect(
        boot.abs_diff(now.as_nanos() as u64) < 30_000_000_000,
        "wall_ns_at_boot within 30 s of the host's clock",
    );
    let local = n("stack_local");
    expect(
        local < n("stack_top") && local >= n("stack_top") - n("stack_size"),
        "main's stack in the stack",
    );
    let boxed = n("heap_box");
    expect(boxed >= heap_start && boxed < heap_end, "a Box on the heap");
    let text = elf.text();
    expect(
        n("main") >= text.p_vaddr && n("main") < text.end(),
        "main in the text segment",
    );
}
