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
//! Input: `flags` (bit 0: write the right SHA-256 after the header, so the
//! fuzzer gets past the checksum to the fields; bit 1: open as above), the
//! file length the header is checked against (u64 LE), then the header
//! bytes.

#![no_main]

use host_monitor::snapshot::{Header, Snapshot};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
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

/// Opens `bytes` as a snapshot file of `file_len` bytes (sparse past them).
fn open(bytes: &[u8], file_len: u64) {
    let (image, path) = files();
    let written = std::fs::File::create(path).and_then(|file| {
        std::io::Write::write_all(&mut &file, bytes)?;
        file.set_len(file_len)
    });
    if written.is_ok() {
        let _ = Snapshot::open(path, Some(image));
    }
    let _ = std::fs::remove_file(path);
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
    let Some((file_len, header)) = rest.split_first_chunk::<8>() else {
        return;
    };
    let file_len = u64::from_le_bytes(*file_len);
    let mut bytes = header.to_vec();
    if flags & 2 != 0 && bytes.len() >= IMAGE_SHA_AT + 32 {
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
    if flags & 2 != 0 {
        open(&bytes, file_len);
    }
});
