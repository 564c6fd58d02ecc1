//! A small ELF64 editor for the malformed-image tests: reads and writes the
//! header and program headers by offset, so a test can break exactly one
//! rule of ABI.md section 1 in a freshly built image.

use std::path::Path;

pub const PT_NULL: u32 = 0;
pub const PT_LOAD: u32 = 1;
pub const PT_DYNAMIC: u32 = 2;
pub const PT_INTERP: u32 = 3;
pub const PT_NOTE: u32 = 4;
pub const PT_TLS: u32 = 7;

pub const PF_X: u32 = 1;
pub const PF_W: u32 = 2;
pub const PF_R: u32 = 4;

/// Offsets in the Elf64 file header.
pub mod ehdr {
    pub const CLASS: usize = 4;
    pub const DATA: usize = 5;
    pub const TYPE: usize = 16;
    pub const MACHINE: usize = 18;
    pub const ENTRY: usize = 24;
    pub const PHOFF: usize = 32;
    pub const PHENTSIZE: usize = 54;
    pub const PHNUM: usize = 56;
}

const PHDR_SIZE: usize = 56;

/// One program header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Phdr {
    pub p_type: u32,
    pub p_flags: u32,
    pub p_offset: u64,
    pub p_vaddr: u64,
    pub p_paddr: u64,
    pub p_filesz: u64,
    pub p_memsz: u64,
    pub p_align: u64,
}

impl Phdr {
    /// A `PT_LOAD` at `vaddr` (== paddr) backed by file offset `offset`.
    pub fn load(vaddr: u64, offset: u64, filesz: u64, memsz: u64, flags: u32) -> Phdr {
        Phdr {
            p_type: PT_LOAD,
            p_flags: flags,
            p_offset: offset,
            p_vaddr: vaddr,
            p_paddr: vaddr,
            p_filesz: filesz,
            p_memsz: memsz,
            p_align: 4096,
        }
    }

    pub fn end(&self) -> u64 {
        self.p_vaddr + self.p_memsz
    }
}

/// An ELF image as bytes, edited in place.
#[derive(Clone)]
pub struct Elf {
    pub bytes: Vec<u8>,
}

impl Elf {
    pub fn read(path: &Path) -> Elf {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {path:?}: {e}"));
        assert!(
            bytes.starts_with(b"\x7fELF") && bytes.len() > 64,
            "{path:?} is no ELF"
        );
        Elf { bytes }
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, &self.bytes).unwrap_or_else(|e| panic!("writing {path:?}: {e}"));
    }

    pub fn u16(&self, at: usize) -> u16 {
        u16::from_le_bytes(self.bytes[at..at + 2].try_into().unwrap())
    }
    pub fn u32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.bytes[at..at + 4].try_into().unwrap())
    }
    pub fn u64(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.bytes[at..at + 8].try_into().unwrap())
    }
    pub fn set_u16(&mut self, at: usize, v: u16) {
        self.bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }
    pub fn set_u32(&mut self, at: usize, v: u32) {
        self.bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    pub fn set_u64(&mut self, at: usize, v: u64) {
        self.bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    pub fn entry(&self) -> u64 {
        self.u64(ehdr::ENTRY)
    }
    pub fn set_entry(&mut self, entry: u64) {
        self.set_u64(ehdr::ENTRY, entry);
    }
    pub fn phoff(&self) -> usize {
        self.u64(ehdr::PHOFF) as usize
    }
    pub fn phnum(&self) -> usize {
        self.u16(ehdr::PHNUM) as usize
    }

    fn phdr_at(&self, i: usize) -> usize {
        assert_eq!(self.u16(ehdr::PHENTSIZE) as usize, PHDR_SIZE, "e_phentsize");
        assert!(i < self.phnum(), "program header {i} of {}", self.phnum());
        self.phoff() + i * PHDR_SIZE
    }

    pub fn phdr(&self, i: usize) -> Phdr {
        let at = self.phdr_at(i);
        Phdr {
            p_type: self.u32(at),
            p_flags: self.u32(at + 4),
            p_offset: self.u64(at + 8),
            p_vaddr: self.u64(at + 16),
            p_paddr: self.u64(at + 24),
            p_filesz: self.u64(at + 32),
            p_memsz: self.u64(at + 40),
            p_align: self.u64(at + 48),
        }
    }

    pub fn set_phdr(&mut self, i: usize, p: Phdr) {
        let at = self.phdr_at(i);
        self.set_u32(at, p.p_type);
        self.set_u32(at + 4, p.p_flags);
        self.set_u64(at + 8, p.p_offset);
        self.set_u64(at + 16, p.p_vaddr);
        self.set_u64(at + 24, p.p_paddr);
        self.set_u64(at + 32, p.p_filesz);
        self.set_u64(at + 40, p.p_memsz);
        self.set_u64(at + 48, p.p_align);
    }

    pub fn phdrs(&self) -> Vec<Phdr> {
        (0..self.phnum()).map(|i| self.phdr(i)).collect()
    }

    /// Index of the first program header `pred` accepts.
    pub fn find(&self, pred: impl Fn(&Phdr) -> bool) -> usize {
        let phdrs = self.phdrs();
        phdrs
            .iter()
            .position(pred)
            .unwrap_or_else(|| panic!("no such program header in {phdrs:#x?}"))
    }

    /// Edits the first program header `pred` accepts.
    pub fn edit(&mut self, pred: impl Fn(&Phdr) -> bool, f: impl FnOnce(&mut Phdr)) {
        let i = self.find(pred);
        let mut p = self.phdr(i);
        f(&mut p);
        self.set_phdr(i, p);
    }

    /// The executable `PT_LOAD` (the text).
    pub fn text(&self) -> Phdr {
        self.phdr(self.find(|p| p.p_type == PT_LOAD && p.p_flags & PF_X != 0))
    }

    /// The end of the highest `PT_LOAD` with a size.
    pub fn image_end(&self) -> u64 {
        self.phdrs()
            .iter()
            .filter(|p| p.p_type == PT_LOAD && p.p_memsz > 0)
            .map(Phdr::end)
            .max()
            .expect("a PT_LOAD")
    }

    /// Appends a program header. The table moves to the end of the file
    /// (8-byte aligned) with room for one more entry; nothing else moves.
    pub fn push_phdr(&mut self, p: Phdr) {
        let old = self.bytes[self.phoff()..self.phoff() + self.phnum() * PHDR_SIZE].to_vec();
        self.bytes.resize(self.bytes.len().next_multiple_of(8), 0);
        let new_off = self.bytes.len();
        self.bytes.extend_from_slice(&old);
        self.bytes.extend_from_slice(&[0; PHDR_SIZE]);
        let n = self.phnum();
        self.set_u64(ehdr::PHOFF, new_off as u64);
        self.set_u16(ehdr::PHNUM, (n + 1) as u16);
        self.set_phdr(n, p);
    }

    /// File offset of the 4-byte descriptor of the `FLINT` note, and of the
    /// note's type field.
    pub fn flint_note(&self) -> Option<(usize, usize)> {
        for p in self.phdrs().iter().filter(|p| p.p_type == PT_NOTE) {
            let mut at = p.p_offset as usize;
            let end = at + p.p_filesz as usize;
            while at + 12 <= end {
                let namesz = self.u32(at) as usize;
                let descsz = self.u32(at + 4) as usize;
                let name_at = at + 12;
                let desc_at = name_at + namesz.next_multiple_of(4);
                if &self.bytes[name_at..name_at + namesz] == b"FLINT\0" {
                    return Some((desc_at, at + 8));
                }
                at = desc_at + descsz.next_multiple_of(4);
            }
        }
        None
    }
}
