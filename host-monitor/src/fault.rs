//! Diagnoses for the ways a guest can break: the text after `guest fault: `.

use crate::image::Image;
use crate::layout::{Layout, RegionKind};
use crate::vcpu::CR2_SENTINEL;
use hypercall_abi::{HYPERCALL_PAGE, MEM_SIZE_MAX, PAGE_SIZE};

/// `rip 0x... (symbol+0x..)`, the symbol part only when the image names it.
pub fn at_rip(image: &Image, rip: u64) -> String {
    match image.symbolizer().describe(rip) {
        Some(symbol) => format!("rip {rip:#x} ({symbol})"),
        None => format!("rip {rip:#x}"),
    }
}

/// What the guest's registers and memory showed at a shutdown.
pub struct Crash<'a> {
    pub rip: u64,
    pub cr2: u64,
    /// The first bytes at RIP, if RIP is in RAM.
    pub code: Option<&'a [u8]>,
    /// The two bytes before RCX: `syscall` leaves its return address there.
    pub before_rcx: Option<(u64, &'a [u8])>,
}

/// A CPU exception, seen as a shutdown (triple fault: there is no IDT).
pub fn exception(image: &Image, layout: &Layout, crash: &Crash) -> String {
    let Crash {
        rip,
        cr2,
        code,
        before_rcx,
    } = *crash;
    // kvm_pvm runs `syscall` even with EFER.SCE clear: it jumps to LSTAR,
    // which is 0, and faults there. RCX still holds the return address.
    if rip == 0 && cr2 == 0 {
        if let Some((rcx, [0x0f, 0x05])) = before_rcx {
            let at = at_rip(image, rcx - 2);
            return format!("system call (syscall is not available; use hypercalls) at {at}");
        }
    }
    let rip_text = at_rip(image, rip);
    if cr2 != CR2_SENTINEL {
        let what = page_fault_cause(layout, rip, cr2);
        return format!("page fault at {cr2:#x} from {rip_text}: {what}");
    }
    let what = code.and_then(instruction_name).unwrap_or(
        "CPU exception (general protection, invalid opcode or similar; not a page fault)",
    );
    format!("{what} at {rip_text}")
}

/// Why an access to `addr` from `rip` faulted, from the guest's own layout.
fn page_fault_cause(layout: &Layout, rip: u64, addr: u64) -> String {
    let page = addr & !(PAGE_SIZE - 1);
    // A fetch fault leaves CR2 == RIP; so does a store by an instruction to
    // its own (executable, read-only) bytes, which the region tells apart.
    if addr == rip {
        match layout.region_at(addr) {
            Some(r) if !r.perm.exec => {
                return format!("execute from {}, which is not executable", r.kind.name())
            }
            None if addr == 0 => {
                return "jump to address 0 (a null function pointer?)".to_owned();
            }
            None => return "jump to an unmapped address".to_owned(),
            Some(_) => {}
        }
    }
    if page == layout.guard_page() {
        return "stack overflow into the guard page below the stack".to_owned();
    }
    match layout.region_at(addr) {
        Some(r) if r.kind == RegionKind::Image => {
            "write to read-only memory of the image".to_owned()
        }
        Some(r) => format!("write to {}, which is read-only", r.kind.name()),
        None if page == 0 => "null pointer dereference (page 0 is never mapped)".to_owned(),
        None if addr >= layout.mem_size && addr < MEM_SIZE_MAX.max(HYPERCALL_PAGE) => {
            "access beyond guest RAM".to_owned()
        }
        None => "access to an unmapped address".to_owned(),
    }
}

/// Names the faulting instruction when its bytes say enough.
fn instruction_name(code: &[u8]) -> Option<&'static str> {
    match code {
        [0x0f, 0x0b, ..] => Some("invalid opcode (ud2)"),
        [0x0f, 0x05, ..] => Some("system call (syscall is not available; use hypercalls)"),
        [0x0f, 0x34, ..] => Some("system call (sysenter is not available; use hypercalls)"),
        [0xf4, ..] => Some("privileged instruction (hlt) at CPL 3"),
        [0xfa, ..] | [0xfb, ..] => Some("privileged instruction (cli/sti) at CPL 3"),
        [0xe4..=0xe7, ..] | [0xec..=0xef, ..] => Some("privileged instruction (port I/O) at CPL 3"),
        [0x0f, 0x20..=0x23, ..] => {
            Some("privileged instruction (control/debug register access) at CPL 3")
        }
        [0xcd, ..] => Some("software interrupt (int n): there is no IDT"),
        _ => None,
    }
}
