//! KVM: the VM, its memory slot, and the one vCPU in the machine state of
//! ABI.md section 2.

use crate::gdt::Segments;
use crate::guest_memory::GuestRam;
use kvm_bindings::{
    kvm_cpuid_entry2, kvm_msr_entry, kvm_regs, kvm_sregs, kvm_userspace_memory_region, CpuId, Msrs,
};
use kvm_ioctls::{Kvm, SyncReg, VcpuFd, VmFd};

/// CR0: PE MP ET NE WP PG. WP so that read-only pages bind at CPL 3 too.
pub const CR0: u64 = 0x8001_0033;
/// CR4: PAE OSFXSR OSXMMEXCPT.
pub const CR4: u64 = 0x620;
/// EFER: LME LMA NXE. No SCE: the guest has no system calls.
pub const EFER: u64 = 0xd00;
/// RFLAGS at entry: only the reserved bit 1.
const RFLAGS: u64 = 0x2;
/// CR2 at entry: non-canonical, so a page fault can never leave it there.
/// A shutdown with CR2 still holding it was some other exception.
pub const CR2_SENTINEL: u64 = 0x8000_dead_0000_0000;

const MSR_IA32_TSC: u32 = 0x10;
const MSR_SYSENTER_CS: u32 = 0x174;
const MSR_SYSENTER_ESP: u32 = 0x175;
const MSR_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;

/// KVM refused something the monitor needs.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    #[error(
        "cannot open /dev/kvm: {0}; is KVM enabled on this host, and may this user open /dev/kvm?"
    )]
    Open(#[source] kvm_ioctls::Error),
    #[error("KVM cannot {what}: {source}")]
    Ioctl {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
}

fn ioctl(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> KvmError {
    move |source| KvmError::Ioctl { what, source }
}

/// Opens `/dev/kvm`.
pub fn open_kvm() -> Result<Kvm, KvmError> {
    Kvm::new().map_err(KvmError::Open)
}

/// Creates an empty VM.
pub fn create_vm(kvm: &Kvm) -> Result<VmFd, KvmError> {
    kvm.create_vm().map_err(ioctl("create a VM"))
}

/// Gives the VM its RAM as memory slot 0 at guest-physical 0.
pub fn attach_memory(vm: &VmFd, ram: &GuestRam) -> Result<(), KvmError> {
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: ram.layout().mem_size,
        userspace_addr: ram.host_base(),
    };
    // SAFETY: the region is the whole of `ram`'s mapping, which lives in the
    // same `Instance` as the VM and is dropped after it.
    unsafe { vm.set_user_memory_region(region) }.map_err(ioctl("add guest memory"))
}

/// Where the vCPU starts.
pub struct EntryState<'a> {
    pub entry: u64,
    pub boot_info: u64,
    pub stack_top: u64,
    pub page_tables: u64,
    pub segments: &'a Segments,
}

/// Creates the vCPU, at CPL 3 in long mode, ready to run `state.entry`.
pub fn create_vcpu(vm: &VmFd, state: &EntryState) -> Result<VcpuFd, KvmError> {
    let vcpu = prepare_vcpu(vm, state.page_tables, state.segments)?;
    vcpu.set_regs(&entry_regs(state))
        .map_err(ioctl("set registers"))?;
    Ok(vcpu)
}

/// Creates the vCPU with everything of ABI.md section 2 that is the same
/// for every image (CPUID, control and segment registers, MSRs), but no
/// general registers yet: what a [`crate::pool::VmPool`] keeps ready.
pub fn prepare_vcpu(vm: &VmFd, page_tables: u64, segments: &Segments) -> Result<VcpuFd, KvmError> {
    let vcpu = vm.create_vcpu(0).map_err(ioctl("create a vCPU"))?;
    // KVM checks EFER.LME and NXE against the guest's CPUID, so the guest
    // must be told it has long mode before the registers go in.
    vcpu.set_cpuid2(&minimal_cpuid()?)
        .map_err(ioctl("set the vCPU's CPUID"))?;

    let sregs = vcpu.get_sregs().map_err(ioctl("read special registers"))?;
    vcpu.set_sregs(&entry_sregs(sregs, page_tables, segments))
        .map_err(ioctl("set special registers"))?;

    // syscall/sysenter must fault on every host: kvm_pvm jumps to LSTAR even
    // with EFER.SCE clear, and page 0 is never mapped.
    let zeroed = [
        MSR_STAR,
        MSR_LSTAR,
        MSR_CSTAR,
        MSR_SYSENTER_CS,
        MSR_SYSENTER_ESP,
        MSR_SYSENTER_EIP,
    ]
    .map(|index| kvm_msr_entry {
        index,
        data: 0,
        ..Default::default()
    });
    vcpu.set_msrs(&msr_list(&zeroed)?)
        .map_err(ioctl("set MSRs"))?;
    Ok(vcpu)
}

/// `base` (what KVM reported) with the control and segment registers of
/// ABI.md section 2.
pub fn entry_sregs(mut sregs: kvm_sregs, page_tables: u64, seg: &Segments) -> kvm_sregs {
    sregs.cr0 = CR0;
    sregs.cr2 = CR2_SENTINEL;
    sregs.cr3 = page_tables;
    sregs.cr4 = CR4;
    sregs.efer = EFER;
    sregs.cs = seg.code;
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) =
        (seg.data, seg.data, seg.data, seg.data, seg.data);
    sregs.tr = seg.tss;
    sregs.ldt = seg.ldt;
    sregs.gdt = seg.gdt;
    sregs.idt = seg.idt;
    sregs
}

/// The general registers at the guest's first instruction.
pub fn entry_regs(state: &EntryState) -> kvm_regs {
    kvm_regs {
        rip: state.entry,
        rsp: state.stack_top,
        rdi: state.boot_info,
        rflags: RFLAGS,
        ..Default::default()
    }
}

/// Has the next `KVM_RUN` load `regs` (and `sregs`, if given) from
/// `kvm_run`'s sync-regs area (KVM_CAP_SYNC_REGS) instead of a
/// `KVM_SET_REGS`/`KVM_SET_SREGS` ioctl each: one system call fewer per
/// register set on the path to the guest's first instruction.
pub fn load_on_entry(vcpu: &mut VcpuFd, regs: kvm_regs, sregs: Option<kvm_sregs>) {
    let sync = vcpu.sync_regs_mut();
    sync.regs = regs;
    if let Some(sregs) = sregs {
        sync.sregs = sregs;
    }
    vcpu.set_sync_dirty_reg(SyncReg::Register);
    if sregs.is_some() {
        vcpu.set_sync_dirty_reg(SyncReg::SystemRegister);
    }
}

/// Points the vCPU at `state` (and resets its special registers to
/// `sregs`, if given): through `kvm_run` when `sync_regs`, else with
/// ioctls.
pub fn load_entry(
    vcpu: &mut VcpuFd,
    state: &EntryState,
    sregs: Option<kvm_sregs>,
    sync_regs: bool,
) -> Result<(), KvmError> {
    let regs = entry_regs(state);
    if sync_regs {
        load_on_entry(vcpu, regs, sregs);
        return Ok(());
    }
    if let Some(sregs) = sregs {
        vcpu.set_sregs(&sregs)
            .map_err(ioctl("set special registers"))?;
    }
    vcpu.set_regs(&regs).map_err(ioctl("set registers"))
}

/// True if this KVM loads general and special registers from `kvm_run`
/// (KVM_CAP_SYNC_REGS), which [`load_on_entry`] needs.
pub fn has_sync_regs(kvm: &Kvm) -> bool {
    let need = (SyncReg::Register as i32) | (SyncReg::SystemRegister as i32);
    kvm.check_extension_int(kvm_ioctls::Cap::SyncRegs) & need == need
}

/// Reads the special registers (for a reset that must undo what the guest
/// could change).
pub fn get_sregs(vcpu: &VcpuFd) -> Result<kvm_sregs, KvmError> {
    vcpu.get_sregs().map_err(ioctl("read special registers"))
}

/// CPUID leaf 1 EDX: FPU TSC MSR PAE CX8 CMOV FXSR SSE SSE2, the baseline
/// every x86-64 CPU has.
const LEAF1_EDX: u32 =
    1 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 8 | 1 << 15 | 1 << 24 | 1 << 25 | 1 << 26;
/// CPUID leaf 0x8000_0001 EDX: NX and LM.
const EXT1_EDX: u32 = 1 << 20 | 1 << 29;

/// The guest's CPUID: just what KVM checks EFER.LME and EFER.NXE against.
/// Asking KVM for its full supported table costs ~50 us on a nested host
/// (each leaf is a trapped CPUID), and a guest at CPL 3 with no SSE needs
/// none of the rest.
fn minimal_cpuid() -> Result<CpuId, KvmError> {
    let vendor = std::arch::x86_64::__cpuid(0);
    let leaf = |function, eax, ebx, ecx, edx| kvm_cpuid_entry2 {
        function,
        eax,
        ebx,
        ecx,
        edx,
        ..Default::default()
    };
    let entries = [
        leaf(0, 1, vendor.ebx, vendor.ecx, vendor.edx),
        leaf(1, 0, 0, 0, LEAF1_EDX),
        leaf(0x8000_0000, 0x8000_0001, 0, 0, 0),
        leaf(0x8000_0001, 0, 0, 0, EXT1_EDX),
    ];
    CpuId::from_entries(&entries).map_err(|_| KvmError::Ioctl {
        what: "build the CPUID table",
        source: kvm_ioctls::Error::new(libc::EINVAL),
    })
}

/// The guest's TSC frequency in Hz.
pub fn tsc_hz(vcpu: &VcpuFd) -> Result<u64, KvmError> {
    let khz = vcpu
        .get_tsc_khz()
        .map_err(ioctl("report the TSC frequency"))?;
    Ok(u64::from(khz) * 1000)
}

/// The guest's TSC now.
pub fn guest_tsc(vcpu: &VcpuFd) -> Result<u64, KvmError> {
    let mut msrs = msr_list(&[kvm_msr_entry {
        index: MSR_IA32_TSC,
        ..Default::default()
    }])?;
    vcpu.get_msrs(&mut msrs)
        .map_err(ioctl("read the guest TSC"))?;
    Ok(msrs.as_slice()[0].data)
}

/// A KVM MSR list holding `entries`.
fn msr_list(entries: &[kvm_msr_entry]) -> Result<Msrs, KvmError> {
    // Only fails for more entries than the list type holds, a monitor bug.
    Msrs::from_entries(entries).map_err(|_| KvmError::Ioctl {
        what: "build the MSR list",
        source: kvm_ioctls::Error::new(libc::EINVAL),
    })
}
