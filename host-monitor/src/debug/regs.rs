//! KVM's registers as gdb's x86-64 core registers, and back.

use gdbstub_arch::x86::reg::{X86SegmentRegs, X86_64CoreRegs};
use kvm_bindings::{kvm_regs, kvm_sregs};

/// RFLAGS.TF: the trap flag, set by the stub to single-step.
pub const TRAP_FLAG: u64 = 1 << 8;

/// gdb's view of the vCPU. The guest has no FPU or SSE state of its own
/// (it is soft-float), so those registers read as zero.
pub fn to_gdb(regs: &kvm_regs, sregs: &kvm_sregs) -> X86_64CoreRegs {
    X86_64CoreRegs {
        // gdb's order: rax rbx rcx rdx rsi rdi rbp rsp r8..r15.
        regs: [
            regs.rax, regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi, regs.rbp, regs.rsp,
            regs.r8, regs.r9, regs.r10, regs.r11, regs.r12, regs.r13, regs.r14, regs.r15,
        ],
        // The upper half of RFLAGS is reserved (zero).
        eflags: regs.rflags as u32,
        rip: regs.rip,
        segments: X86SegmentRegs {
            cs: sregs.cs.selector.into(),
            ss: sregs.ss.selector.into(),
            ds: sregs.ds.selector.into(),
            es: sregs.es.selector.into(),
            fs: sregs.fs.selector.into(),
            gs: sregs.gs.selector.into(),
        },
        ..X86_64CoreRegs::default()
    }
}

/// `regs` with what gdb wrote into its general registers, RIP and RFLAGS.
/// Segment and FPU registers are not written back: the guest's segments
/// are fixed by the ABI, and it has no FPU state. TF stays the stub's to
/// set (a resume decides it).
pub fn from_gdb(gdb: &X86_64CoreRegs, mut regs: kvm_regs) -> kvm_regs {
    let r = &gdb.regs;
    (regs.rax, regs.rbx, regs.rcx, regs.rdx) = (r[0], r[1], r[2], r[3]);
    (regs.rsi, regs.rdi, regs.rbp, regs.rsp) = (r[4], r[5], r[6], r[7]);
    (regs.r8, regs.r9, regs.r10, regs.r11) = (r[8], r[9], r[10], r[11]);
    (regs.r12, regs.r13, regs.r14, regs.r15) = (r[12], r[13], r[14], r[15]);
    regs.rip = gdb.rip;
    regs.rflags = (u64::from(gdb.eflags) & !TRAP_FLAG) | (regs.rflags & TRAP_FLAG);
    regs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_round_trip_in_gdb_order() {
        let regs = kvm_regs {
            rax: 1,
            rbx: 2,
            rcx: 3,
            rdx: 4,
            rsi: 5,
            rdi: 6,
            rbp: 7,
            rsp: 8,
            r8: 9,
            r15: 16,
            rip: 0x20_1000,
            rflags: 0x202,
            ..Default::default()
        };
        let gdb = to_gdb(&regs, &kvm_sregs::default());
        assert_eq!(gdb.regs[..9], [1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(gdb.regs[15], 16);
        assert_eq!((gdb.rip, gdb.eflags), (0x20_1000, 0x202));
        assert_eq!(from_gdb(&gdb, kvm_regs::default()), regs);
    }

    #[test]
    fn gdb_cannot_set_or_clear_the_trap_flag() {
        let gdb = X86_64CoreRegs {
            eflags: 0x302,
            ..Default::default()
        };
        assert_eq!(from_gdb(&gdb, kvm_regs::default()).rflags, 0x202);
        let stepping = kvm_regs {
            rflags: 0x302,
            ..Default::default()
        };
        let gdb = X86_64CoreRegs {
            eflags: 0x202,
            ..Default::default()
        };
        assert_eq!(from_gdb(&gdb, stepping).rflags, 0x302);
    }
}
