//! The guest's page tables: an identity map of its mapped regions with their
//! permissions, plus the hypercall page (ABI.md section 2).
//!
//! Built in host memory and written to guest RAM below 1 MiB in one go. The
//! tables themselves are never mapped, so the guest cannot change them.

use crate::layout::{low, Layout, Perm};
use hypercall_abi::{HYPERCALL_PAGE, PAGE_SIZE};
use x86_64::structures::paging::PageTableFlags;

const PRESENT: u64 = PageTableFlags::PRESENT.bits();
const WRITABLE: u64 = PageTableFlags::WRITABLE.bits();
const USER: u64 = PageTableFlags::USER_ACCESSIBLE.bits();
// Accessed and dirty are set up front: the CPU would otherwise update them
// on first use, which costs an exit per page under shadow paging (PVM).
const ACCESSED: u64 = PageTableFlags::ACCESSED.bits();
const DIRTY: u64 = PageTableFlags::DIRTY.bits();
const HUGE: u64 = PageTableFlags::HUGE_PAGE.bits();
const NO_EXECUTE: u64 = PageTableFlags::NO_EXECUTE.bits();
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

const TABLE: u64 = PRESENT | WRITABLE | USER | ACCESSED;
const ENTRIES: usize = 512;
const HUGE_PAGE: u64 = 2 << 20;

/// The page tables do not fit in the space below 1 MiB.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the image's segments need more page tables than fit below 1 MiB; merge its segments")]
pub struct TooManyTables;

/// Page tables laid out for guest RAM at [`low::PAGE_TABLES`].
pub struct PageTables {
    tables: Vec<[u64; ENTRIES]>,
}

impl PageTables {
    /// Maps every region of `layout` and the hypercall page.
    pub fn build(layout: &Layout) -> Result<PageTables, TooManyTables> {
        let mut pt = PageTables {
            tables: vec![[0; ENTRIES]],
        };
        for region in merged(layout) {
            let mut at = region.0;
            while at < region.1 {
                // A 2 MiB page where the whole 2 MiB has this one permission.
                if at % HUGE_PAGE == 0 && at + HUGE_PAGE <= region.1 {
                    pt.map(at, region.2, true)?;
                    at += HUGE_PAGE;
                } else {
                    pt.map(at, region.2, false)?;
                    at += PAGE_SIZE;
                }
            }
        }
        pt.map(HYPERCALL_PAGE, Perm::RW, false)?;
        Ok(pt)
    }

    /// The value for CR3.
    pub fn root(&self) -> u64 {
        low::PAGE_TABLES
    }

    /// The tables as bytes, to be written at [`PageTables::root`].
    pub fn bytes(&self) -> Vec<u8> {
        self.tables
            .iter()
            .flatten()
            .flat_map(|e| e.to_le_bytes())
            .collect()
    }

    fn map(&mut self, addr: u64, perm: Perm, huge: bool) -> Result<(), TooManyTables> {
        let pml4 = 0;
        let pdpt = self.next_table(pml4, (addr >> 39) as usize & 511)?;
        let pd = self.next_table(pdpt, (addr >> 30) as usize & 511)?;
        let mut leaf = PRESENT | USER | ACCESSED | (addr & ADDR_MASK);
        if perm.write {
            leaf |= WRITABLE | DIRTY;
        }
        if !perm.exec {
            leaf |= NO_EXECUTE;
        }
        if huge {
            self.tables[pd][(addr >> 21) as usize & 511] = leaf | HUGE;
        } else {
            let pt = self.next_table(pd, (addr >> 21) as usize & 511)?;
            self.tables[pt][(addr >> 12) as usize & 511] = leaf;
        }
        Ok(())
    }

    /// The table that entry `index` of table `parent` points to, made if new.
    fn next_table(&mut self, parent: usize, index: usize) -> Result<usize, TooManyTables> {
        let entry = self.tables[parent][index];
        if entry & PRESENT != 0 {
            return Ok(((entry & ADDR_MASK) - low::PAGE_TABLES) as usize / PAGE_SIZE as usize);
        }
        let child = self.tables.len();
        let gpa = low::PAGE_TABLES + child as u64 * PAGE_SIZE;
        if gpa >= low::PAGE_TABLES_END {
            return Err(TooManyTables);
        }
        self.tables.push([0; ENTRIES]);
        self.tables[parent][index] = gpa | TABLE;
        Ok(child)
    }
}

/// Regions with adjacent equal permissions joined, so 2 MiB pages can span
/// them: `(start, end, perm)`.
fn merged(layout: &Layout) -> Vec<(u64, u64, Perm)> {
    let mut out: Vec<(u64, u64, Perm)> = Vec::new();
    for r in &layout.regions {
        match out.last_mut() {
            Some(last) if last.1 == r.start && last.2 == r.perm => last.1 = r.end,
            _ => out.push((r.start, r.end, r.perm)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Region, RegionKind};

    /// Walks `pt` like the MMU: the leaf entry for `addr`, if mapped.
    fn walk(pt: &PageTables, addr: u64) -> Option<u64> {
        let mut table = 0;
        for shift in [39, 30, 21, 12] {
            let entry = pt.tables[table][(addr >> shift) as usize & 511];
            if entry & PRESENT == 0 {
                return None;
            }
            if shift == 12 || (shift == 21 && entry & HUGE != 0) {
                return Some(entry);
            }
            table = ((entry & ADDR_MASK) - low::PAGE_TABLES) as usize / PAGE_SIZE as usize;
        }
        None
    }

    fn layout() -> Layout {
        let region = |start, end, write, exec, kind| Region {
            start,
            end,
            perm: Perm { write, exec },
            kind,
        };
        Layout {
            mem_size: 16 << 20,
            heap_start: 0x204000,
            heap_end: (16 << 20) - 0x41000,
            stack_top: 16 << 20,
            stack_size: 0x40000,
            cmdline: 0,
            regions: vec![
                region(0x1000, 0x2000, false, false, RegionKind::BootInfo),
                region(0x200000, 0x202000, false, true, RegionKind::Image),
                region(0x202000, 0x203000, false, false, RegionKind::Image),
                region(0x203000, 0x204000, true, false, RegionKind::Image),
                region(
                    0x204000,
                    (16 << 20) - 0x41000,
                    true,
                    false,
                    RegionKind::Heap,
                ),
                region(
                    (16 << 20) - 0x40000,
                    16 << 20,
                    true,
                    false,
                    RegionKind::Stack,
                ),
            ],
        }
    }

    #[test]
    fn page_zero_page_tables_and_guard_page_are_unmapped() {
        let l = layout();
        let pt = PageTables::build(&l).unwrap();
        assert_eq!(walk(&pt, 0), None);
        assert_eq!(walk(&pt, low::GDT), None);
        assert_eq!(walk(&pt, low::PAGE_TABLES), None);
        assert_eq!(walk(&pt, l.guard_page()), None);
        assert_eq!(walk(&pt, l.mem_size), None);
    }

    #[test]
    fn permissions_follow_the_layout_and_nothing_is_writable_and_executable() {
        let pt = PageTables::build(&layout()).unwrap();
        let text = walk(&pt, 0x200000).unwrap();
        assert_eq!(text & (WRITABLE | NO_EXECUTE | USER), USER);
        let rodata = walk(&pt, 0x202000).unwrap();
        assert_eq!(rodata & (WRITABLE | NO_EXECUTE), NO_EXECUTE);
        let boot_info = walk(&pt, 0x1000).unwrap();
        assert_eq!(boot_info & (WRITABLE | NO_EXECUTE), NO_EXECUTE);
        for addr in (0..(16u64 << 20)).step_by(PAGE_SIZE as usize) {
            if let Some(entry) = walk(&pt, addr) {
                assert!(
                    entry & WRITABLE == 0 || entry & NO_EXECUTE != 0,
                    "{addr:#x} is W+X"
                );
                let page = if entry & HUGE != 0 {
                    addr & !(HUGE_PAGE - 1)
                } else {
                    addr
                };
                assert_eq!(entry & ADDR_MASK, page, "{addr:#x} is not identity-mapped");
            }
        }
    }

    #[test]
    fn uniform_two_megabyte_spans_use_huge_pages() {
        let pt = PageTables::build(&layout()).unwrap();
        assert_ne!(walk(&pt, 0x400000).unwrap() & HUGE, 0);
        assert_eq!(walk(&pt, 0x200000).unwrap() & HUGE, 0);
    }

    #[test]
    fn hypercall_page_is_mapped_writable_not_executable() {
        let pt = PageTables::build(&layout()).unwrap();
        let entry = walk(&pt, HYPERCALL_PAGE).unwrap();
        assert_eq!(entry & ADDR_MASK, HYPERCALL_PAGE);
        assert_eq!(
            entry & (WRITABLE | NO_EXECUTE | USER),
            WRITABLE | NO_EXECUTE | USER
        );
        assert_eq!(walk(&pt, HYPERCALL_PAGE + PAGE_SIZE), None);
    }
}
