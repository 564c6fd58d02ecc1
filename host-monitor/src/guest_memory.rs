//! Guest RAM, and the one gate through which a guest address becomes host
//! memory. Every hypercall handler reads and writes the guest only through
//! [`GuestRam::block`], [`GuestRam::read_buf`], [`GuestRam::write_buf`] and
//! [`GuestRam::set_field`], which check the address against guest RAM and
//! the guest's own page permissions (ABI.md section 4).
//!
//! RAM is either anonymous ([`GuestRam::new`]) or a copy-on-write mapping
//! of a [`MemoryTemplate`]: a sealed memfd that already holds the page
//! tables, GDT and image at their guest-physical addresses, prepared once
//! and shared by every instance mapped from it. Pages an instance only
//! reads (code, read-only data, page tables) stay shared; a page it writes
//! becomes its own.

mod restore;
pub(crate) use restore::{pagemap_fd, PAGEMAP_SCAN_REQUEST};

use crate::layout::{Layout, Perm};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestRegionMmap,
};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Guest RAM could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot reserve {size:#x} bytes of guest RAM: {reason}; lower --mem")]
    Reserve { size: u64, reason: String },
    #[error("cannot write {what} into guest RAM at {gpa:#x}")]
    Setup { what: &'static str, gpa: u64 },
    #[error("cannot prepare the guest memory template: {0}")]
    Template(std::io::Error),
}

impl MemoryError {
    /// True if the host ran out of memory or address space (so starting
    /// more instances would fail the same way).
    pub fn is_exhaustion(&self) -> bool {
        match self {
            MemoryError::Reserve { .. } => true,
            MemoryError::Template(e) => matches!(
                e.raw_os_error(),
                Some(libc::ENOMEM | libc::EMFILE | libc::ENFILE | libc::ENOSPC)
            ),
            MemoryError::Setup { .. } => false,
        }
    }
}

/// Guest RAM contents prepared once for one layout: a sealed memfd of
/// `mem_size` bytes (sparse: unwritten pages cost nothing) holding what the
/// monitor writes before boot that is the same for every instance.
pub struct MemoryTemplate {
    file: Arc<File>,
    /// Where guest-physical 0 is in the file.
    offset: u64,
    layout: Layout,
}

impl MemoryTemplate {
    /// A template for `layout` holding each `(gpa, bytes, what)` of
    /// `contents`; the rest reads as zero.
    pub fn build(
        layout: Layout,
        contents: &[(u64, &[u8], &'static str)],
    ) -> Result<MemoryTemplate, MemoryError> {
        let fail = |_| MemoryError::Template(std::io::Error::last_os_error());
        // SAFETY: a NUL-terminated name and flags; the result is checked.
        let fd = unsafe {
            libc::memfd_create(
                c"flint-template".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if fd < 0 {
            return Err(fail(()));
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(layout.mem_size)
            .map_err(MemoryError::Template)?;
        for &(gpa, bytes, what) in contents {
            let fits = gpa
                .checked_add(bytes.len() as u64)
                .is_some_and(|end| end <= layout.mem_size);
            if !fits {
                return Err(MemoryError::Setup { what, gpa });
            }
            file.write_all_at(bytes, gpa)
                .map_err(MemoryError::Template)?;
        }
        // Sealed: nothing can change the template under the instances that
        // map it (their private copies of written pages are their own).
        let seals =
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
        // SAFETY: fcntl on a descriptor we own, with an integer argument.
        if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) } < 0 {
            return Err(fail(()));
        }
        Ok(MemoryTemplate {
            file: Arc::new(file),
            offset: 0,
            layout,
        })
    }

    /// A template of guest RAM stored in `file` from `offset` (page-aligned,
    /// at least `layout.mem_size` bytes follow): a snapshot's RAM.
    pub fn from_file(file: File, offset: u64, layout: Layout) -> MemoryTemplate {
        MemoryTemplate {
            file: Arc::new(file),
            offset,
            layout,
        }
    }

    /// The layout the template was made for.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
}

/// A buffer that breaks its access rule: the hypercall answers `EFAULT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Efault;

/// An argument block that breaks its rule: the instance stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadBlock {
    #[error("is not 8-byte aligned")]
    Unaligned,
    #[error("is not in guest RAM the guest can write")]
    NotWritable,
}

/// Guest RAM `[0, mem_size)`, anonymous memory mapped lazily: untouched
/// pages cost the host nothing.
pub struct GuestRam {
    memory: GuestMemoryMmap,
    layout: Layout,
}

impl GuestRam {
    /// Reserves RAM for `layout`.
    pub fn new(layout: Layout) -> Result<GuestRam, MemoryError> {
        let size = layout.mem_size;
        let memory =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size as usize)]).map_err(|e| {
                MemoryError::Reserve {
                    size,
                    reason: e.to_string(),
                }
            })?;
        Ok(GuestRam { memory, layout })
    }

    /// RAM mapped copy-on-write from `template` (no copy is made; pages
    /// are shared until the guest or the monitor writes them).
    pub fn from_template(template: &MemoryTemplate) -> Result<GuestRam, MemoryError> {
        let size = template.layout.mem_size;
        let reserve = |reason: String| MemoryError::Reserve { size, reason };
        let region = MmapRegionBuilder::new(size as usize)
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_NORESERVE | libc::MAP_PRIVATE)
            .with_file_offset(FileOffset::from_arc(template.file.clone(), template.offset))
            .build()
            .map_err(|e| reserve(e.to_string()))?;
        let region = GuestRegionMmap::new(region, GuestAddress(0))
            .ok_or_else(|| reserve("the mapping does not fit the guest address space".into()))?;
        let memory =
            GuestMemoryMmap::from_regions(vec![region]).map_err(|e| reserve(e.to_string()))?;
        Ok(GuestRam {
            memory,
            layout: template.layout.clone(),
        })
    }

    /// Makes this RAM `template`'s contents again, as a fresh copy-on-write
    /// mapping of it laid over the old one (`MAP_FIXED`, same host address,
    /// so a KVM memory slot on it stays valid and KVM drops its stale
    /// translations through its MMU notifier). Everything the guest or the
    /// monitor wrote is gone. `template` must have this RAM's size. If the
    /// mapping fails, the RAM is left unmapped: the instance must not run.
    pub fn reset_from(&mut self, template: &MemoryTemplate) -> Result<(), MemoryError> {
        let size = self.layout.mem_size;
        if template.layout.mem_size != size {
            return Err(MemoryError::Reserve {
                size,
                reason: format!(
                    "the template is for {:#x} bytes of RAM, not {size:#x}",
                    template.layout.mem_size
                ),
            });
        }
        // Fast: copy back only the pages written since the RAM was mapped
        // from this template, leaving every page mapped (restore.rs).
        if self.maps(template) && self.restore_written_pages(template)? {
            self.layout = template.layout.clone();
            return Ok(());
        }
        let base = self.host_base();
        if base == 0 {
            return Err(MemoryError::Reserve {
                size,
                reason: "guest RAM is not mapped".into(),
            });
        }
        // SAFETY: `[base, base + size)` is exactly this RAM's own mapping
        // (one region of `size` bytes at `base`), which we replace in place
        // with a private mapping of the same size and protection; nothing
        // outside it is touched, and the `GuestMemoryMmap` still unmaps
        // exactly that range when dropped.
        let mapped = unsafe {
            libc::mmap(
                base as *mut libc::c_void,
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_NORESERVE | libc::MAP_FIXED,
                template.file.as_raw_fd(),
                template.offset as libc::off_t,
            )
        };
        if mapped == libc::MAP_FAILED {
            return Err(MemoryError::Reserve {
                size,
                reason: std::io::Error::last_os_error().to_string(),
            });
        }
        self.layout = template.layout.clone();
        Ok(())
    }

    /// The layout this RAM was made for.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Host address of guest-physical 0, for the KVM memory slot.
    pub fn host_base(&self) -> u64 {
        // The single region starts at 0 and was just created, so this is Some.
        self.memory
            .get_host_address(GuestAddress(0))
            .map(|p| p as u64)
            .unwrap_or(0)
    }

    /// Monitor-side write during setup, ignoring guest permissions.
    pub fn setup_write(
        &self,
        gpa: u64,
        bytes: &[u8],
        what: &'static str,
    ) -> Result<(), MemoryError> {
        self.memory
            .write_slice(bytes, GuestAddress(gpa))
            .map_err(|_| MemoryError::Setup { what, gpa })
    }

    /// Monitor-side read for diagnoses, ignoring guest permissions; `None`
    /// outside RAM.
    pub fn peek(&self, gpa: u64, len: usize) -> Option<Vec<u8>> {
        let mut buf = vec![0; len];
        self.memory.read_slice(&mut buf, GuestAddress(gpa)).ok()?;
        Some(buf)
    }

    /// Debugger read (`flint run --gdb`): the bytes at `gpa` up to the
    /// first one the guest has not mapped (gdb asks for bytes around
    /// whatever a register points at; those outside the guest's own pages,
    /// such as its page tables, are not shown).
    pub fn debug_read(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut readable = 0;
        while readable < len && self.layout.allows(gpa + readable as u64, 1, Perm::RO) {
            let region_end = self
                .layout
                .region_at(gpa + readable as u64)
                .map_or(0, |r| r.end);
            readable = (region_end - gpa).min(len as u64) as usize;
        }
        self.peek(gpa, readable).unwrap_or_default()
    }

    /// Debugger write (`flint run --gdb`): writes `bytes` at `gpa` through
    /// the monitor's own mapping of guest RAM, so it also reaches pages the
    /// guest may only read or execute (a breakpoint's `int3` goes into
    /// code). Only pages the guest has mapped; `Efault` otherwise.
    pub fn debug_write(&self, gpa: u64, bytes: &[u8]) -> Result<(), Efault> {
        if bytes.is_empty() {
            return Ok(());
        }
        if !self.layout.allows(gpa, bytes.len() as u64, Perm::RO) {
            return Err(Efault);
        }
        self.memory
            .write_slice(bytes, GuestAddress(gpa))
            .map_err(|_| Efault)
    }

    /// Reads the argument block `T` at `gpa`, which must be 8-byte aligned
    /// and wholly in pages the guest can write.
    pub fn block<T: FromBytes + IntoBytes + Immutable>(&self, gpa: u64) -> Result<T, BadBlock> {
        if !gpa.is_multiple_of(8) {
            return Err(BadBlock::Unaligned);
        }
        if !self.layout.allows(gpa, size_of::<T>() as u64, Perm::RW) {
            return Err(BadBlock::NotWritable);
        }
        let mut value = T::new_zeroed();
        self.memory
            .read_slice(value.as_mut_bytes(), GuestAddress(gpa))
            .map_err(|_| BadBlock::NotWritable)?;
        Ok(value)
    }

    /// Writes one output field of a block that [`GuestRam::block`] accepted.
    pub fn set_field<V: IntoBytes + Immutable>(&self, block: u64, offset: usize, value: V) {
        // The block was checked writable and in RAM, so this cannot fail.
        let _ = self
            .memory
            .write_slice(value.as_bytes(), GuestAddress(block + offset as u64));
    }

    /// Checks that the guest could read all `len` bytes at `gpa`, then copies
    /// the first `max` of them (`len` 0 is never checked).
    pub fn read_buf(&self, gpa: u64, len: u64, max: u64) -> Result<Vec<u8>, Efault> {
        if len == 0 {
            return Ok(Vec::new());
        }
        if !self.layout.allows(gpa, len, Perm::RO) {
            return Err(Efault);
        }
        let mut buf = vec![0; len.min(max) as usize];
        self.memory
            .read_slice(&mut buf, GuestAddress(gpa))
            .map_err(|_| Efault)?;
        Ok(buf)
    }

    /// Checks that the guest could read `len` bytes at `gpa`.
    pub fn check_readable(&self, gpa: u64, len: u64) -> Result<(), Efault> {
        if len == 0 || self.layout.allows(gpa, len, Perm::RO) {
            Ok(())
        } else {
            Err(Efault)
        }
    }

    /// Checks that the guest could write `len` bytes at `gpa`.
    pub fn check_writable(&self, gpa: u64, len: u64) -> Result<(), Efault> {
        if len == 0 || self.layout.allows(gpa, len, Perm::RW) {
            Ok(())
        } else {
            Err(Efault)
        }
    }

    /// Writes `bytes` at `gpa` if the guest could write them itself.
    pub fn write_buf(&self, gpa: u64, bytes: &[u8]) -> Result<(), Efault> {
        self.check_writable(gpa, bytes.len() as u64)?;
        if bytes.is_empty() {
            return Ok(());
        }
        self.memory
            .write_slice(bytes, GuestAddress(gpa))
            .map_err(|_| Efault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Region, RegionKind};

    pub(super) fn layout() -> Layout {
        Layout {
            mem_size: 4 << 20,
            heap_start: 0x20_1000,
            heap_end: (4 << 20) - 0x5000,
            stack_top: 4 << 20,
            stack_size: 0x4000,
            cmdline: 0,
            regions: vec![Region {
                start: 0x20_0000,
                end: 0x20_1000,
                perm: Perm::RW,
                kind: RegionKind::Image,
            }],
        }
    }

    #[test]
    fn instances_of_a_template_start_alike_and_write_their_own_copies() {
        let template = MemoryTemplate::build(
            layout(),
            &[
                (0x20_0000, b"image", "an image segment"),
                (0x3000, b"gdt", "the GDT"),
            ],
        )
        .expect("template");
        let a = GuestRam::from_template(&template).expect("map a");
        let b = GuestRam::from_template(&template).expect("map b");
        assert_eq!(a.peek(0x20_0000, 5).as_deref(), Some(&b"image"[..]));
        assert_eq!(b.peek(0x3000, 3).as_deref(), Some(&b"gdt"[..]));
        assert_eq!(a.peek(0x30_0000, 4).as_deref(), Some(&[0u8; 4][..]));
        a.setup_write(0x20_0000, b"IMAGE", "test").expect("write a");
        assert_eq!(a.peek(0x20_0000, 5).as_deref(), Some(&b"IMAGE"[..]));
        assert_eq!(b.peek(0x20_0000, 5).as_deref(), Some(&b"image"[..]));
        let c = GuestRam::from_template(&template).expect("map c");
        assert_eq!(c.peek(0x20_0000, 5).as_deref(), Some(&b"image"[..]));
    }

    #[test]
    fn a_template_is_sealed_against_writes() {
        let template = MemoryTemplate::build(layout(), &[]).expect("template");
        assert!(template.file.write_all_at(b"x", 0).is_err());
    }

    #[test]
    fn contents_outside_ram_are_refused() {
        let past_end = MemoryTemplate::build(layout(), &[(4 << 20, b"x", "the GDT")]);
        assert!(matches!(past_end, Err(MemoryError::Setup { .. })));
    }
}
