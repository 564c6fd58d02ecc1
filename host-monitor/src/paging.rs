//! The guest's page tables: an identity map of its mapped regions with their
//! permissions, plus the hypercall page (ABI.md section 2).
//!
//! Built in host memory and written to guest RAM below 1 MiB in one go. The
//! tables themselves are never mapped, so the guest cannot change them.

use crate::layout::{low, Layout, Perm};
use hypercall_abi::{HYPERCALL_PAGE, PAGE_SIZE};

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
// Accessed and dirty are set up front: the CPU would otherwise update them
// on first use, which costs an exit per page under shadow paging (PVM).
const ACCESSED: u64 = 1 << 5;
const DIRTY: u64 = 1 << 6;
const HUGE: u64 = 1 << 7;
const NO_EXECUTE: u64 = 1 << 63;
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
