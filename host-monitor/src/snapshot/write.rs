//! Writing a snapshot: the header, then every non-zero page of guest RAM
//! above the monitor's low structures at its offset in a sparse file.

use super::format::{Header, NetKind, Regs};
use super::{image_sha256, SnapshotError};
use crate::guest_memory::GuestRam;
use crate::image::Image;
use crate::instance::Config;
use crate::layout::low;
use crate::net::spec::NetSetup;
use hypercall_abi::{BootInfo, IMAGE_BASE_MIN, PAGE_SIZE};
use std::fs::File;
use std::mem::offset_of;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// How much RAM is read at once while looking for non-zero pages.
const CHUNK: u64 = 64 * PAGE_SIZE;

/// A snapshot to be written the first time the guest blocks in POLL.
pub struct Recorder {
    path: PathBuf,
    header: Header,
    armed: bool,
}

impl Recorder {
    /// Will write to `path` a snapshot of an instance of `image` run with
    /// `config`.
    pub fn new(path: &Path, image: &Image, config: &Config) -> Recorder {
        // Absolute, so a restore from another directory finds the image.
        let image_path = std::fs::canonicalize(image.path()).unwrap_or(image.path().to_owned());
        let net = match config.net {
            NetSetup::None => NetKind::None,
            NetSetup::User { .. } => NetKind::User,
            NetSetup::Tap { .. } => NetKind::Tap,
        };
        Recorder {
            path: path.to_owned(),
            header: Header {
                net,
                mem_size: config.mem_size,
                stack_size: config.stack_size,
                generation: 0,
                clock_ns: 0,
                guest_tsc: 0,
                tsc_hz: 0,
                regs: Regs::default(),
                image_sha256: image_sha256(image.bytes()),
                image_path: image_path.to_string_lossy().into_owned(),
                cmdline: config.cmdline.clone(),
                monitor_version: env!("CARGO_PKG_VERSION").to_owned(),
            },
            armed: false,
        }
    }

    /// Records the vCPU as it is at a POLL exit (RIP already past the
    /// store), with the guest TSC and instance clock then.
    pub fn arm(
        &mut self,
        regs: &kvm_bindings::kvm_regs,
        guest_tsc: u64,
        tsc_hz: u64,
        clock_ns: u64,
    ) {
        self.header.regs = Regs::from_kvm(regs);
        self.header.guest_tsc = guest_tsc;
        self.header.tsc_hz = tsc_hz;
        self.header.clock_ns = clock_ns;
        self.armed = true;
    }

    /// True once [`Recorder::arm`] was called.
    pub fn is_armed(&self) -> bool {
        self.armed
    }

    /// Writes the snapshot of `ram` (POLL's outputs already in it) to a
    /// temporary file renamed over the target, so a reader never sees half
    /// a snapshot and a snapshot being restored is never changed under it.
    pub fn write(mut self, ram: &GuestRam) -> Result<(), SnapshotError> {
        let fail = |source| SnapshotError::Write {
            path: self.path.clone(),
            source,
        };
        let generation = ram
            .peek(low::BOOT_INFO + offset_of!(BootInfo, generation) as u64, 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0);
        self.header.generation = generation;
        let header = self.header.encode();
        let data_offset = header.len() as u64;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(format!(".tmp-{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let written = (|| {
            let file = File::create(&tmp)?;
            file.set_len(data_offset + self.header.mem_size)?;
            file.write_all_at(&header, 0)?;
            let mut gpa = IMAGE_BASE_MIN;
            while gpa < self.header.mem_size {
                let len = CHUNK.min(self.header.mem_size - gpa);
                let bytes = ram.peek(gpa, len as usize).unwrap_or_default();
                write_nonzero_runs(&file, data_offset + gpa, &bytes)?;
                gpa += len;
            }
            std::fs::rename(&tmp, &self.path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(fail)
    }
}

/// Writes the runs of non-zero pages of `bytes` at `offset`; zero pages
/// stay holes.
fn write_nonzero_runs(file: &File, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
    let page = PAGE_SIZE as usize;
    let mut run_start = None;
    for (i, chunk) in bytes.chunks(page).enumerate() {
        let zero = chunk.iter().all(|&b| b == 0);
        match (zero, run_start) {
            (false, None) => run_start = Some(i),
            (true, Some(start)) => {
                file.write_all_at(
                    &bytes[start * page..i * page],
                    offset + (start * page) as u64,
                )?;
                run_start = None;
            }
            _ => {}
        }
    }
    if let Some(start) = run_start {
        file.write_all_at(&bytes[start * page..], offset + (start * page) as u64)?;
    }
    Ok(())
}
