//! Where everything goes in guest RAM (ABI.md section 2), and what the guest
//! may do with each page.

use crate::image::Image;
use hypercall_abi::{
    BootInfo, CMDLINE_MAX, GUARD_SIZE, HEAP_MIN, MEM_SIZE_MAX, PAGE_SIZE, STACK_SIZE_MIN,
};

/// The monitor's structures below 1 MiB. The guest sees only the BootInfo
/// page (with a short command line after it) and, for a long command line,
/// the page that follows; the GDT and page tables are never mapped.
pub mod low {
    /// `BootInfo`, read-only to the guest.
    pub const BOOT_INFO: u64 = 0x1000;
    /// A command line that fits after `BootInfo` in its page goes here.
    pub const CMDLINE_SHORT: u64 = 0x1100;
    /// A longer command line gets the next page of its own.
    pub const CMDLINE_LONG: u64 = 0x2000;
    /// The GDT and the TSS that `TR` names.
    pub const GDT: u64 = 0x3000;
    /// Page tables fill `[PAGE_TABLES, PAGE_TABLES_END)`.
    pub const PAGE_TABLES: u64 = 0x4000;
    /// First byte above the monitor's structures.
    pub const PAGE_TABLES_END: u64 = 0x10_0000;
}

/// What the guest may do with a mapped page. Every mapped page is readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    /// Stores are allowed.
    pub write: bool,
    /// Instruction fetches are allowed.
    pub exec: bool,
}

impl Perm {
    /// Read-only data.
    pub const RO: Perm = Perm {
        write: false,
        exec: false,
    };
    /// Read-write data.
    pub const RW: Perm = Perm {
        write: true,
        exec: false,
    };
}

/// A page-aligned range of guest RAM with one permission and one purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// What the guest may do there.
    pub perm: Perm,
    /// What it holds, for diagnoses.
    pub kind: RegionKind,
}

/// What a region holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    BootInfo,
    CommandLine,
    Image,
    Heap,
    Stack,
}

impl RegionKind {
    /// How a diagnosis names this region.
    pub fn name(self) -> &'static str {
        match self {
            RegionKind::BootInfo => "BootInfo",
            RegionKind::CommandLine => "the command line",
            RegionKind::Image => "the image",
            RegionKind::Heap => "the heap",
            RegionKind::Stack => "the stack",
        }
    }
}

/// Why an image and its options do not make a guest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("--mem {0:#x} is not a positive multiple of 4 KiB of at most 3 GiB")]
    BadMemSize(u64),
    #[error("--stack {0:#x} is not a multiple of 4 KiB of at least 16 KiB")]
    BadStackSize(u64),
    #[error("the image (up to {image_end:#x}), a 64 KiB heap, the guard page and a {stack_size:#x}-byte stack do not fit in {mem_size:#x} bytes of guest RAM; raise --mem or lower --stack")]
    DoesNotFit {
        image_end: u64,
        stack_size: u64,
        mem_size: u64,
    },
    #[error("the arguments are {0} bytes long; at most 4096 are allowed")]
    CmdlineTooLong(usize),
}

/// The guest memory layout of one instance.
#[derive(Clone, Debug)]
pub struct Layout {
    pub mem_size: u64,
    pub heap_start: u64,
    pub heap_end: u64,
    pub stack_top: u64,
    pub stack_size: u64,
    /// Where the command line is (0 if empty).
    pub cmdline: u64,
    /// Mapped regions, sorted and disjoint.
    pub regions: Vec<Region>,
}

impl Layout {
    /// Lays out `image` with a command line of `cmdline_len` bytes.
    pub fn new(
        image: &Image,
        mem_size: u64,
        stack_size: u64,
        cmdline_len: usize,
    ) -> Result<Layout, LayoutError> {
        if mem_size == 0 || !mem_size.is_multiple_of(PAGE_SIZE) || mem_size > MEM_SIZE_MAX {
            return Err(LayoutError::BadMemSize(mem_size));
        }
        if !stack_size.is_multiple_of(PAGE_SIZE) || stack_size < STACK_SIZE_MIN {
            return Err(LayoutError::BadStackSize(stack_size));
        }
        if cmdline_len as u64 > CMDLINE_MAX {
            return Err(LayoutError::CmdlineTooLong(cmdline_len));
        }
        let image_end = image.end();
        let heap_start = image_end.next_multiple_of(PAGE_SIZE);
        let too_big = LayoutError::DoesNotFit {
            image_end,
            stack_size,
            mem_size,
        };
        // Checked: a snapshot's stack size is untrusted, and one near 2^64
        // must not wrap to a layout with no stack and no guard page.
        let heap_end = stack_size
            .checked_add(GUARD_SIZE)
            .and_then(|below| mem_size.checked_sub(below))
            .filter(|end| end.saturating_sub(heap_start) >= HEAP_MIN && *end >= heap_start)
            .ok_or(too_big)?;

        let mut regions = Vec::new();
        let short = (low::CMDLINE_SHORT - low::BOOT_INFO) + cmdline_len as u64 <= PAGE_SIZE;
        regions.push(Region {
            start: low::BOOT_INFO,
            end: low::BOOT_INFO + PAGE_SIZE,
            perm: Perm::RO,
            kind: RegionKind::BootInfo,
        });
        let cmdline = match cmdline_len {
            0 => 0,
            _ if short => low::CMDLINE_SHORT,
            _ => {
                regions.push(Region {
                    start: low::CMDLINE_LONG,
                    end: low::CMDLINE_LONG + PAGE_SIZE,
                    perm: Perm::RO,
                    kind: RegionKind::CommandLine,
                });
                low::CMDLINE_LONG
            }
        };
        for segment in image.segments() {
            regions.push(Region {
                start: segment.vaddr,
                end: segment.end().next_multiple_of(PAGE_SIZE),
                perm: Perm {
                    write: segment.writable,
                    exec: segment.executable,
                },
                kind: RegionKind::Image,
            });
        }
        regions.push(Region {
            start: heap_start,
            end: heap_end,
            perm: Perm::RW,
            kind: RegionKind::Heap,
        });
        let stack_top = mem_size;
        regions.push(Region {
            start: stack_top - stack_size,
            end: stack_top,
            perm: Perm::RW,
            kind: RegionKind::Stack,
        });
        Ok(Layout {
            mem_size,
            heap_start,
            heap_end,
            stack_top,
            stack_size,
            cmdline,
            regions,
        })
    }

    /// The region holding `addr`, if it is mapped.
    pub fn region_at(&self, addr: u64) -> Option<&Region> {
        self.regions
            .iter()
            .find(|r| (r.start..r.end).contains(&addr))
    }

    /// True if every byte of `[addr, addr + len)` is mapped with at least
    /// `need` (`len` > 0; an overflowing range is never allowed).
    pub fn allows(&self, addr: u64, len: u64, need: Perm) -> bool {
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        let mut at = addr;
        while at < end {
            match self.region_at(at) {
                Some(r) if (r.perm.write || !need.write) && (r.perm.exec || !need.exec) => {
                    at = r.end
                }
                _ => return false,
            }
        }
        true
    }

    /// The guard page between heap and stack.
    pub fn guard_page(&self) -> u64 {
        self.heap_end
    }

    /// Fills in the layout fields of `boot`.
    pub fn describe(&self, boot: &mut BootInfo, cmdline_len: usize) {
        boot.mem_size = self.mem_size;
        boot.heap_start = self.heap_start;
        boot.heap_end = self.heap_end;
        boot.stack_top = self.stack_top;
        boot.stack_size = self.stack_size;
        boot.cmdline = self.cmdline;
        boot.cmdline_len = cmdline_len as u64;
    }
}
