//! Arbitrary bytes as a snapshot header (`Header::decode`, which checks it
//! field by field). Asserts no panic, that what is accepted puts RAM at a
//! page-aligned offset no further than three pages, and that an
//! accepted header encodes and decodes back to itself.
//!
//! With flags bit 1, a header that decodes is then written to a sparse
//! file of the length it names and opened with `Snapshot::open` against
//! the `hello` image (whose SHA-256 the harness writes into the header
//! first): the layout its sizes make and the registers are checked too.
//!
//! With flags bit 2, the file also carries guest RAM: input bytes written
//! at a guest-physical address the input names, after the data offset.
//! A snapshot that opens is then mapped as an instance's RAM would be, and
//! what the monitor does to that RAM is run on it: the RAM must read
//! exactly as the file does; the page tables and GDT a restore writes over
//! it must fit; `BootInfo` is continued from whatever bytes the file left
//! there (`Resumed::continue_boot_info`), and must then carry the bumped
//! generation; and a pooled instance's reset (`GuestRam::reset_from`, the
//! written-pages path) must make the RAM read as the file again.
//!
//! Input: `flags` (bit 0: write the right SHA-256 after the header, so the
//! fuzzer gets past the checksum to the fields; bit 1: open as above; bit
//! 2: with RAM, opened as above), the file length the header is checked
//! against (u64 LE), then the header bytes. With bit 2, the header is
//! preceded by its length (u16 LE) and followed by the RAM part: its
//! guest-physical address (u32 LE, modulo the RAM size) and its bytes.

#![no_main]

use host_monitor::gdt;
use host_monitor::guest_memory::GuestRam;
use host_monitor::hypercall::InstanceClock;
use host_monitor::layout::low;
use host_monitor::paging::PageTables;
use host_monitor::snapshot::{Header, Resumed, Snapshot};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The image `Snapshot::open` checks against: `elf_loader`'s seed.
const HELLO: &[u8] = include_bytes!("../corpus/elf_loader/hello.elf");
/// Where the header records the image's SHA-256.
const IMAGE_SHA_AT: usize = 224;

/// Where the header records its own length (snapshot/format.rs).
const HEADER_LEN_AT: usize = 16;
/// The furthest RAM may start (format.rs's `DATA_OFFSET_MAX`).
const DATA_OFFSET_MAX: u64 = 3 * 4096;
/// Where `BootInfo.generation` is (ABI.md section 3).
const GENERATION_AT: u64 = 160;
/// The most RAM bytes one input writes.
const RAM_MAX: usize = 64 << 10;

/// The RAM part of an input: bytes for the guest-physical address `gpa`
/// (before it is taken modulo the RAM size).
struct RamPart<'a> {
    gpa: u32,
    bytes: &'a [u8],
}

/// `HELLO` written to a file, once; then the path this process writes
/// each snapshot to (and removes).
fn files() -> &'static (PathBuf, PathBuf) {
    static FILES: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = std::env::temp_dir();
        let pid = std::process::id();
        // One name for every run (same bytes), so runs leave one file.
        let image = dir.join("flint-fuzz-hello.elf");
        std::fs::write(&image, HELLO).expect("write the image");
        (image, dir.join(format!("flint-fuzz-{pid}.snapshot")))
    })
}

/// Opens `bytes` as a snapshot file of `file_len` bytes (sparse past them),
/// with `ram` written into its RAM part, whose offset is `data_offset`.
fn open(bytes: &[u8], file_len: u64, ram: Option<(RamPart, &Header, u64)>) {
    let (image, path) = files();
    let created = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path);
    let written = created.and_then(|file| {
        std::io::Write::write_all(&mut &file, bytes)?;
        file.set_len(file_len)?;
        let mut expected = None;
        if let Some((part, header, data_offset)) = ram {
            let gpa = u64::from(part.gpa) % header.mem_size;
            let len = part.bytes.len().min(RAM_MAX);
            let len = len.min((header.mem_size - gpa) as usize);
            file.write_all_at(&part.bytes[..len], data_offset + gpa)?;
            // What the guest must see there: the file, whatever overlaps.
            let mut want = vec![0; len];
            file.read_exact_at(&mut want, data_offset + gpa)?;
            expected = Some((gpa, want));
        }
        Ok(expected)
    });
    if let Ok(expected) = written {
        let opened = Snapshot::open(path, Some(image));
        if let (Ok((snapshot, _)), Some((gpa, want))) = (opened, expected) {
            check_ram(&snapshot, gpa, &want);
        }
    }
    let _ = std::fs::remove_file(path);
}

/// Maps the snapshot's RAM as an instance's and does to it what a restore
/// and a pooled reset do; `want` is what the file holds at `gpa`.
fn check_ram(snapshot: &Snapshot, gpa: u64, want: &[u8]) {
    let template = snapshot.template();
    // Address space can run out for a 3 GiB RAM under ASan: not a bug.
    let Ok(mut ram) = GuestRam::from_template(template) else {
        return;
    };
    let seen = ram.peek(gpa, want.len());
    assert!(
        seen.as_deref() == Some(want),
        "RAM at {gpa:#x} is not the file's"
    );

    // Snapshot::resume's writes over the restored RAM (it needs a vCPU for
    // the rest): the monitor's page tables and GDT must fit.
    let tables = PageTables::build(ram.layout()).expect("the layout was accepted");
    ram.setup_write(tables.root(), &tables.bytes(), "page tables")
        .expect("page tables fit below 1 MiB");
    ram.setup_write(low::GDT, &gdt::segments().1, "the GDT")
        .expect("the GDT fits");
    // BootInfo continued from what the file left there (a real restore
    // writes a fresh one first; hostile bytes must do no harm either).
    let header = snapshot.header();
    let resumed = Resumed {
        generation: header.generation + 1,
        clock_ns: header.clock_ns,
    };
    resumed
        .continue_boot_info(&ram, header.tsc_hz, InstanceClock::start())
        .expect("BootInfo is in RAM");
    let generation = ram.peek(low::BOOT_INFO + GENERATION_AT, 8).expect("in RAM");
    assert_eq!(
        u64::from_le_bytes(generation.try_into().expect("8 bytes")),
        header.generation + 1
    );

    // A pooled instance's reset: the RAM reads as the file again.
    ram.reset_from(template)
        .expect("the template is this RAM's");
    let seen = ram.peek(gpa, want.len());
    assert!(
        seen.as_deref() == Some(want),
        "RAM at {gpa:#x} after a reset is not the file's"
    );
}

fn fix_checksum(bytes: &mut [u8]) {
    let Some(len) = bytes.get(HEADER_LEN_AT..HEADER_LEN_AT + 4) else {
        return;
    };
    let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    if bytes.len() >= len.saturating_add(32) {
        let sum = Sha256::digest(&bytes[..len]);
        bytes[len..len + 32].copy_from_slice(&sum);
    }
}

fuzz_target!(|data: &[u8]| {
    let [flags, rest @ ..] = data else {
        return;
    };
    let Some((file_len, rest)) = rest.split_first_chunk::<8>() else {
        return;
    };
    let file_len = u64::from_le_bytes(*file_len);
    let (header, ram) = if flags & 4 != 0 {
        let Some((len, rest)) = rest.split_first_chunk::<2>() else {
            return;
        };
        let (header, rest) = rest.split_at(usize::from(u16::from_le_bytes(*len)).min(rest.len()));
        let Some((gpa, bytes)) = rest.split_first_chunk::<4>() else {
            return;
        };
        let gpa = u32::from_le_bytes(*gpa);
        (header, Some(RamPart { gpa, bytes }))
    } else {
        (rest, None)
    };
    let mut bytes = header.to_vec();
    if flags & 6 != 0 && bytes.len() >= IMAGE_SHA_AT + 32 {
        let sum = Sha256::digest(HELLO);
        bytes[IMAGE_SHA_AT..IMAGE_SHA_AT + 32].copy_from_slice(&sum);
    }
    if flags & 1 != 0 {
        fix_checksum(&mut bytes);
    }
    let Ok((header, data_offset)) = Header::decode(&bytes, file_len) else {
        return;
    };
    assert!(
        data_offset % 4096 == 0 && data_offset <= DATA_OFFSET_MAX,
        "{data_offset:#x}"
    );
    let encoded = header.encode();
    assert_eq!(encoded.len() as u64 % 4096, 0);
    let (again, _) = Header::decode(&encoded, file_len)
        .unwrap_or_else(|e| panic!("{header:?} does not decode after encoding: {e}"));
    assert_eq!(again, header);
    match ram {
        Some(part) => open(&bytes, file_len, Some((part, &header, data_offset))),
        None if flags & 2 != 0 => open(&bytes, file_len, None),
        None => {}
    }
});
