//! Guest RAM, and the one gate through which a guest address becomes host
//! memory. Every hypercall handler reads and writes the guest only through
//! [`GuestRam::block`], [`GuestRam::read_buf`], [`GuestRam::write_buf`] and
//! [`GuestRam::set_field`], which check the address against guest RAM and
//! the guest's own page permissions (ABI.md section 4).

use crate::layout::{Layout, Perm};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Guest RAM could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot reserve {size:#x} bytes of guest RAM: {reason}; lower --mem")]
    Reserve { size: u64, reason: String },
    #[error("cannot write {what} into guest RAM at {gpa:#x}")]
    Setup { what: &'static str, gpa: u64 },
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
