//! The GDT and the segment registers of ABI.md section 2: flat 64-bit code
//! and data at DPL 3, and a TSS because VM entry insists on a usable TR.

use crate::layout::low;
use kvm_bindings::{kvm_dtable, kvm_segment};

/// Selector indexes in the GDT.
const USER_DATA: u16 = 1;
const USER_CODE: u16 = 2;
const TSS: u16 = 3; // a 16-byte system descriptor: entries 3 and 4
const ENTRIES: usize = 5;
/// The TSS sits right after the GDT; nothing ever uses its contents because
/// there is no IDT, so no interrupt ever switches stacks.
const TSS_BASE: u64 = low::GDT + (ENTRIES as u64) * 8;
const TSS_LIMIT: u32 = 0x67;

/// Segment register contents for the guest at entry.
pub struct Segments {
    pub code: kvm_segment,
    pub data: kvm_segment,
    pub tss: kvm_segment,
    pub ldt: kvm_segment,
    pub gdt: kvm_dtable,
    pub idt: kvm_dtable,
}

/// Builds the segments and the GDT bytes to write at [`low::GDT`].
pub fn segments() -> (Segments, Vec<u8>) {
    let code = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: (USER_CODE << 3) | 3,
        type_: 0xb, // execute/read, accessed
        present: 1,
        dpl: 3,
        db: 0,
        s: 1,
        l: 1,
        g: 1,
        ..Default::default()
    };
    let data = kvm_segment {
        selector: (USER_DATA << 3) | 3,
        type_: 0x3, // read/write, accessed
        db: 1,
        l: 0,
        ..code
    };
    let tss = kvm_segment {
        base: TSS_BASE,
        limit: TSS_LIMIT,
        selector: TSS << 3,
        type_: 0xb, // 64-bit TSS, busy
        present: 1,
        dpl: 0,
        s: 0,
        ..Default::default()
    };
    let ldt = kvm_segment {
        type_: 0x2,
        unusable: 1,
        ..Default::default()
    };

    let mut gdt = [0u64; ENTRIES];
    gdt[USER_DATA as usize] = descriptor(&data);
    gdt[USER_CODE as usize] = descriptor(&code);
    gdt[TSS as usize] = descriptor(&tss);
    gdt[TSS as usize + 1] = TSS_BASE >> 32;
    let bytes = gdt.iter().flat_map(|d| d.to_le_bytes()).collect();

    let segments = Segments {
        code,
        data,
        tss,
        ldt,
        gdt: kvm_dtable {
            base: low::GDT,
            limit: (ENTRIES * 8 - 1) as u16,
            ..Default::default()
        },
        // No IDT: every exception escalates to a triple fault, which KVM
        // reports as a shutdown with the faulting RIP (and CR2) intact.
        idt: kvm_dtable {
            base: 0,
            limit: 0,
            ..Default::default()
        },
    };
    (segments, bytes)
}

/// The 8-byte descriptor that loads as `seg`.
fn descriptor(seg: &kvm_segment) -> u64 {
    let limit = if seg.g != 0 {
        seg.limit >> 12
    } else {
        seg.limit
    } as u64;
    let base = seg.base;
    let access = u64::from(seg.type_)
        | u64::from(seg.s) << 4
        | u64::from(seg.dpl) << 5
        | u64::from(seg.present) << 7;
    let flags =
        u64::from(seg.avl) | u64::from(seg.l) << 1 | u64::from(seg.db) << 2 | u64::from(seg.g) << 3;
    (limit & 0xffff)
        | (base & 0xff_ffff) << 16
        | access << 40
        | ((limit >> 16) & 0xf) << 48
        | flags << 52
        | ((base >> 24) & 0xff) << 56
}
