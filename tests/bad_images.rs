//! Malformed images (ABI.md section 1): each breaks one rule of a freshly
//! built `hello.elf`, and the monitor must refuse it before the guest runs:
//! status 125, one line on stderr, no panic.

mod support;

use std::path::PathBuf;

use support::elf::{
    ehdr, Elf, Phdr, PF_R, PF_W, PF_X, PT_DYNAMIC, PT_INTERP, PT_LOAD, PT_NOTE, PT_NULL, PT_TLS,
};
use support::{image, kvm_or_skip, scratch_dir, Run};

/// Default `--mem`: 16 MiB.
const MEM: u64 = 16 << 20;

fn hello() -> Elf {
    Elf::read(&image("hello"))
}

/// Writes `elf` as `<name>.elf` in the scratch directory.
fn save(name: &str, elf: &Elf) -> PathBuf {
    let path = scratch_dir("bad-images").join(format!("{name}.elf"));
    elf.write(&path);
    path
}

/// Edits hello.elf with `edit` and checks that `flint run` refuses it.
fn refused(name: &str, edit: impl FnOnce(&mut Elf)) {
    if !kvm_or_skip() {
        return;
    }
    let mut elf = hello();
    edit(&mut elf);
    let out = Run::image(&save(name, &elf)).go();
    let err = out.stderr_str();
    if err.contains("panicked") || err.contains("RUST_BACKTRACE") || err.contains("backtrace") {
        out.fail("the monitor panicked on a bad image");
    }
    out.status(125);
    out.one_stderr_line();
    if !out.stdout.is_empty() {
        out.fail("the guest ran from a bad image");
    }
}

/// Edits hello.elf with `edit` and checks that it still boots.
fn still_boots(name: &str, edit: impl FnOnce(&mut Elf)) {
    if !kvm_or_skip() {
        return;
    }
    let mut elf = hello();
    edit(&mut elf);
    Run::image(&save(name, &elf))
        .go()
        .status(0)
        .stdout_is("Hello, world!\n")
        .no_stderr();
}

/// One `#[test]` per malformed image: `bad_image!(name, |elf| edit)`.
macro_rules! bad_image {
    ($($name:ident => $edit:expr;)*) => {$(
        #[test]
        fn $name() {
            refused(stringify!($name), $edit);
        }
    )*};
}

/// A read-only `PT_LOAD` at `vaddr`, a page from file offset 0.
fn extra_load(vaddr: u64) -> Phdr {
    Phdr::load(vaddr, vaddr % 4096, 0x100, 0x1000, PF_R)
}

fn other(p_type: u32) -> Phdr {
    Phdr {
        p_type,
        p_flags: PF_R,
        p_offset: 0,
        p_filesz: 8,
        p_memsz: 8,
        p_align: 8,
        ..Phdr::default()
    }
}

/// The highest `PT_LOAD` with a size.
fn last_load(elf: &Elf) -> Phdr {
    let end = elf.image_end();
    elf.phdrs()
        .into_iter()
        .find(|p| p.p_type == PT_LOAD && p.p_memsz > 0 && p.end() == end)
        .unwrap()
}

bad_image! {
    empty_file => |elf: &mut Elf| elf.bytes.clear();
    not_an_elf => |elf: &mut Elf| elf.bytes = b"#!/bin/sh\necho hello\n".to_vec();
    truncated_elf_header => |elf: &mut Elf| elf.bytes.truncate(40);
    truncated_program_headers => |elf: &mut Elf| {
        let end = elf.phoff() + elf.phnum() * 56;
        elf.bytes.truncate(end - 20);
    };
    bad_magic => |elf: &mut Elf| elf.bytes[1] = b'X';
    elfclass32 => |elf: &mut Elf| elf.bytes[ehdr::CLASS] = 1;
    big_endian => |elf: &mut Elf| elf.bytes[ehdr::DATA] = 2;
    wrong_machine_aarch64 => |elf: &mut Elf| elf.set_u16(ehdr::MACHINE, 183);
    et_dyn => |elf: &mut Elf| elf.set_u16(ehdr::TYPE, 3);
    et_rel => |elf: &mut Elf| elf.set_u16(ehdr::TYPE, 1);
    pt_interp_added => |elf: &mut Elf| elf.push_phdr(other(PT_INTERP));
    pt_dynamic_added => |elf: &mut Elf| elf.push_phdr(other(PT_DYNAMIC));
    pt_tls_added => |elf: &mut Elf| elf.push_phdr(other(PT_TLS));
    writable_and_executable_segment => |elf: &mut Elf| {
        elf.edit(|p| p.p_type == PT_LOAD && p.p_flags & PF_X != 0, |p| p.p_flags |= PF_W);
    };
    segment_below_1_mib => |elf: &mut Elf| elf.push_phdr(extra_load(0x8_0000));
    segment_in_page_0 => |elf: &mut Elf| elf.push_phdr(extra_load(0));
    segment_past_mem_size => |elf: &mut Elf| elf.push_phdr(extra_load(0x2000_0000));
    segment_crossing_mem_size => |elf: &mut Elf| {
        elf.push_phdr(Phdr::load(MEM - 0x1000, 0, 0x100, 0x2000, PF_R));
    };
    segment_at_the_hypercall_page => |elf: &mut Elf| elf.push_phdr(extra_load(0xC000_0000));
    segment_address_overflows => |elf: &mut Elf| {
        elf.push_phdr(Phdr::load(0xffff_ffff_ffff_f000, 0, 0x100, 0x2000, PF_R));
    };
    vaddr_not_equal_to_paddr => |elf: &mut Elf| {
        elf.edit(|p| p.p_type == PT_LOAD && p.p_flags & PF_X != 0, |p| p.p_paddr += 0x1000);
    };
    unaligned_vaddr => |elf: &mut Elf| {
        elf.push_phdr(Phdr::load(0x80_0010, 0x10, 0x10, 0x10, PF_R));
    };
    offset_not_congruent_to_vaddr => |elf: &mut Elf| {
        elf.push_phdr(Phdr::load(0x80_0000, 0x10, 0x10, 0x10, PF_R));
    };
    filesz_greater_than_memsz => |elf: &mut Elf| {
        elf.edit(|p| p.p_type == PT_LOAD && p.p_filesz > 1, |p| p.p_memsz = p.p_filesz - 1);
    };
    segment_data_past_end_of_file => |elf: &mut Elf| {
        let len = (elf.bytes.len() as u64).next_multiple_of(4096) + 0x1000;
        elf.push_phdr(Phdr::load(0x80_0000, 0, len, len, PF_R));
    };
    segment_offset_plus_filesz_overflows => |elf: &mut Elf| {
        elf.push_phdr(Phdr::load(0x80_0000, 0xffff_ffff_ffff_f000, 0x2000, 0x2000, PF_R));
    };
    two_loads_share_a_page => |elf: &mut Elf| {
        let last = last_load(elf);
        let page = (last.end() - 1) & !0xfff;
        elf.push_phdr(Phdr::load(page, 0, 0x10, 0x10, PF_R));
    };
    entry_outside_any_segment => |elf: &mut Elf| {
        let beyond = elf.image_end().next_multiple_of(4096) + 0x100;
        elf.set_entry(beyond);
    };
    entry_in_a_non_executable_segment => |elf: &mut Elf| {
        let data = elf.phdrs().into_iter().find(|p| p.p_type == PT_LOAD && p.p_flags & PF_X == 0 && p.p_memsz > 0);
        match data {
            Some(p) => elf.set_entry(p.p_vaddr),
            None => {
                // The image has only a text segment: add a data page.
                let vaddr = elf.image_end().next_multiple_of(4096);
                elf.push_phdr(Phdr::load(vaddr, 0, 0x100, 0x1000, PF_R | PF_W));
                elf.set_entry(vaddr);
            }
        }
    };
    entry_zero => |elf: &mut Elf| elf.set_entry(0);
    no_load_segments => |elf: &mut Elf| {
        for i in 0..elf.phnum() {
            let mut p = elf.phdr(i);
            if p.p_type == PT_LOAD {
                p.p_type = PT_NULL;
                elf.set_phdr(i, p);
            }
        }
    };
    missing_flint_note => |elf: &mut Elf| {
        elf.edit(|p| p.p_type == PT_NOTE, |p| p.p_type = PT_NULL);
    };
    flint_note_with_another_name => |elf: &mut Elf| {
        let (desc, _) = elf.flint_note().expect("hello.elf has a FLINT note");
        // Name "FLINT\0" padded to 8 bytes sits just before the descriptor.
        elf.bytes[desc - 4] = b'X';
    };
    flint_note_with_another_type => |elf: &mut Elf| {
        let (_, note_type) = elf.flint_note().expect("hello.elf has a FLINT note");
        elf.set_u32(note_type, 2);
    };
    flint_note_abi_version_2 => |elf: &mut Elf| {
        let (desc, _) = elf.flint_note().expect("hello.elf has a FLINT note");
        elf.set_u32(desc, 2);
    };
    flint_note_abi_version_0 => |elf: &mut Elf| {
        let (desc, _) = elf.flint_note().expect("hello.elf has a FLINT note");
        elf.set_u32(desc, 0);
    };
    flint_note_descriptor_size_huge => |elf: &mut Elf| {
        let (_, note_type) = elf.flint_note().expect("hello.elf has a FLINT note");
        elf.set_u32(note_type - 4, 0xffff_fff0);
    };
    note_segment_past_end_of_file => |elf: &mut Elf| {
        elf.edit(|p| p.p_type == PT_NOTE, |p| p.p_filesz = 0x7fff_ffff_ffff);
    };
    phnum_huge => |elf: &mut Elf| elf.set_u16(ehdr::PHNUM, 0xffff);
    phentsize_wrong => |elf: &mut Elf| elf.set_u16(ehdr::PHENTSIZE, 32);
    phoff_past_end_of_file => |elf: &mut Elf| {
        let past = elf.bytes.len() as u64 + 0x100;
        elf.set_u64(ehdr::PHOFF, past);
    };
    phoff_overflows => |elf: &mut Elf| elf.set_u64(ehdr::PHOFF, u64::MAX - 16);
}

#[test]
fn an_image_edited_harmlessly_still_boots() {
    // The editor's own check: moving the program headers to the end of the
    // file and adding a PT_NULL keeps the image valid, so the failures
    // above are the rule each test breaks, not the editing.
    still_boots("harmless_edit", |elf| elf.push_phdr(other(PT_NULL)));
}

#[test]
fn pt_load_with_memsz_0_is_ignored() {
    still_boots("empty_load", |elf| {
        elf.push_phdr(Phdr::load(0x80_0000, 0, 0, 0, PF_R))
    });
}
