//! Snapshot and restore: `flint run --snapshot-on-idle FILE` saves an
//! instance the first time it blocks in POLL (initialised, ready to serve);
//! `flint run --restore FILE` starts a new instance from that point with
//! its guest RAM mapped from the file copy-on-write.
//!
//! A snapshot file is not trusted. Its header is checksummed and checked
//! field by field, the image it names must hash the same, and of the
//! vCPU's state only the general-purpose registers, RIP and RSP come from
//! it (RIP in an executable segment, RSP in the stack). Page tables, GDT,
//! control registers, segments and MSRs are the monitor's own, rebuilt for
//! the image and config, and the restored instance gets a fresh `BootInfo`
//! with `generation` bumped (ABI.md section 3).

mod format;
mod restore;
mod write;

pub use format::{Header, NetKind, Regs, FORMAT_VERSION, MAGIC};
pub use restore::{Resumed, Snapshot};
pub use write::Recorder;

use crate::image::ImageError;
use crate::layout::LayoutError;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// Why a snapshot could not be written or restored (status 125 at
/// restore).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read the snapshot: {0}")]
    Read(std::io::Error),
    #[error("cannot write the snapshot {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the snapshot is truncated")]
    Truncated,
    #[error("not a Flint snapshot (bad magic)")]
    NotASnapshot,
    #[error(
        "the snapshot has format version {0}; this monitor reads only version {FORMAT_VERSION}"
    )]
    FormatVersion(u32),
    #[error("the snapshot was taken for Flint ABI version {0}; this monitor speaks ABI version {abi}", abi = hypercall_abi::ABI_VERSION)]
    AbiVersion(u32),
    #[error("the snapshot header's checksum does not match (the file was edited or damaged)")]
    Checksum,
    #[error("the snapshot header is invalid: {0}")]
    BadHeader(&'static str),
    #[error("the snapshot is {len} bytes; its header says {expected}")]
    WrongSize { len: u64, expected: u64 },
    #[error("the image {} is not the one the snapshot was taken from (its SHA-256 differs)", path.display())]
    ImageMismatch { path: PathBuf },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("the snapshot's sizes do not fit its image: {0}")]
    Layout(#[from] LayoutError),
    #[error("the snapshot's vCPU state is invalid: {0}")]
    BadRegisters(&'static str),
    #[error("the snapshot was taken {}; the restore command line must {}", if *.snapshot { "with a network device" } else { "without a network device" }, if *.snapshot { "give one too (--publish or --net)" } else { "give none (no --publish or --net)" })]
    NetMismatch { snapshot: bool },
}

/// SHA-256 of an image's bytes.
pub fn image_sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}
