//! Images the ABI does not forbid but a monitor could trip over: no
//! section headers (so no symbols), broken symbol tables, and a small fuzz of
//! the headers. Whatever happens, the monitor ends with a verdict of ABI.md
//! section 5: never a panic, a signal or a hang.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::elf::Elf;
use support::{hex_after, image, kvm_or_skip, scratch_dir, Outcome, Run};

/// Offsets of the section-header fields in the Elf64 file header, and in a
/// section header.
const E_SHOFF: usize = 40;
const E_SHNUM: usize = 60;
const E_SHSTRNDX: usize = 62;
const SHT_SYMTAB: u32 = 2;
const SH_TYPE: usize = 4;
const SH_OFFSET: usize = 24;
const SH_SIZE: usize = 32;
const SH_LINK: usize = 40;

fn save(name: &str, elf: &Elf) -> std::path::PathBuf {
    let path = scratch_dir("image-edits").join(format!("{name}.elf"));
    elf.write(&path);
    path
}

fn without_section_headers(mut elf: Elf) -> Elf {
    elf.set_u64(E_SHOFF, 0);
    elf.set_u16(E_SHNUM, 0);
    elf.set_u16(E_SHSTRNDX, 0);
    elf
}

/// File offset of the `.symtab` section header.
fn symtab_header(elf: &Elf) -> usize {
    let (shoff, shnum) = (elf.u64(E_SHOFF) as usize, elf.u16(E_SHNUM) as usize);
    (0..shnum)
        .map(|i| shoff + i * 64)
        .find(|&at| elf.u32(at + SH_TYPE) == SHT_SYMTAB)
        .expect("the probe image keeps its .symtab")
}

/// The outcome is a verdict of ABI.md section 5: a monitor status with its
/// one stderr line, or a guest status with a silent monitor.
fn is_a_verdict(out: &Outcome) -> Result<(), String> {
    let err = out.stderr_str();
    if err.contains("panicked") || err.contains("RUST_BACKTRACE") {
        return Err("the monitor panicked".into());
    }
    if out.killed_at_limit.is_some() {
        return Err("the monitor hung past its own --timeout".into());
    }
    match out.code {
        None => Err("the monitor died from a signal".into()),
        Some(101 | 124 | 125 | 139) if err.ends_with('\n') && err.matches('\n').count() == 1 => {
            Ok(())
        }
        Some(101 | 124 | 125 | 139) => {
            Err("expected one line on stderr with a monitor verdict".into())
        }
        Some(_) if err.is_empty() => Ok(()),
        Some(_) => Err("a guest status must come with nothing on stderr".into()),
    }
}

#[test]
fn image_without_section_headers_boots() {
    if !kvm_or_skip() {
        return;
    }
    let elf = without_section_headers(Elf::read(&image("hello")));
    Run::image(&save("hello_no_sections", &elf))
        .go()
        .status(0)
        .stdout_is("Hello, world!\n")
        .no_stderr();
}

#[test]
fn fault_in_image_without_symbols_still_names_address_and_rip() {
    if !kvm_or_skip() {
        return;
    }
    let elf = without_section_headers(Elf::read(&image("probe")));
    let out = Run::image(&save("probe_no_sections", &elf))
        .guest(&["fault", "null"])
        .go();
    let line = out.guest_fault();
    if hex_after(&line, "page fault at ") != Some(0) || !line.contains("rip 0x") {
        out.fail("expected `page fault at 0x0 from rip 0x...`");
    }
    if line.contains("probe_null_deref") {
        out.fail("an image without .symtab cannot give a symbol");
    }
}

/// Runs `probe fault null` from a probe image with `edit` applied to its
/// symbol table header: either refused (125) or the usual fault (139).
fn broken_symbols(name: &str, edit: impl FnOnce(&mut Elf, usize)) {
    if !kvm_or_skip() {
        return;
    }
    let mut elf = Elf::read(&image("probe"));
    let symtab = symtab_header(&elf);
    edit(&mut elf, symtab);
    let out = Run::image(&save(name, &elf)).guest(&["fault", "null"]).go();
    if let Err(why) = is_a_verdict(&out) {
        out.fail(why);
    }
    if !matches!(out.code, Some(125 | 139)) {
        out.fail("expected the image refused (125) or the null dereference reported (139)");
    }
}

#[test]
fn symbol_table_past_end_of_file_is_harmless() {
    broken_symbols("symtab_past_eof", |elf, sh| {
        elf.set_u64(sh + SH_OFFSET, 0x7fff_ffff_0000)
    });
}

#[test]
fn symbol_table_of_huge_size_is_harmless() {
    broken_symbols("symtab_huge", |elf, sh| {
        elf.set_u64(sh + SH_SIZE, u64::MAX - 63)
    });
}

#[test]
fn symbol_table_with_a_bad_string_table_link_is_harmless() {
    broken_symbols("symtab_bad_link", |elf, sh| {
        elf.set_u32(sh + SH_LINK, 0xffff)
    });
}

#[test]
fn section_header_offset_past_end_of_file_is_harmless() {
    broken_symbols("shoff_past_eof", |elf, _| {
        elf.set_u64(E_SHOFF, u64::MAX - 1000)
    });
}

/// A deterministic xorshift, so a failing mutation can be reproduced.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn mutated_headers_always_end_in_a_verdict() {
    if !kvm_or_skip() {
        return;
    }
    const CASES: usize = 240;
    let hello = Elf::read(&image("hello"));
    // The bytes the monitor parses before the guest runs: file header,
    // program headers, and the FLINT note.
    let mut targets: Vec<usize> = (0..64).collect();
    targets.extend(hello.phoff()..hello.phoff() + hello.phnum() * 56);
    if let Some((desc, note_type)) = hello.flint_note() {
        targets.extend(note_type - 8..desc + 4);
    }
    let next = AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| loop {
                let case = next.fetch_add(1, Ordering::Relaxed);
                if case >= CASES {
                    break;
                }
                let mut state =
                    0x9e37_79b9_7f4a_7c15 ^ (case as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
                let mut elf = hello.clone();
                for _ in 0..1 + xorshift(&mut state) % 3 {
                    let at = targets[(xorshift(&mut state) % targets.len() as u64) as usize];
                    elf.bytes[at] ^= 1 << (xorshift(&mut state) % 8);
                }
                let out = Run::image(&save(&format!("mutant_{case}"), &elf))
                    .opts(&["--timeout", "2"])
                    .limit(Duration::from_secs(20))
                    .go();
                if let Err(why) = is_a_verdict(&out) {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("mutant_{case}.elf: {why}\n{out}"));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {CASES} mutated images broke the monitor:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
