//! Pre-created VMs: the part of starting an instance that does not depend
//! on the image (create the VM and its vCPU, set CPUID, control and segment
//! registers and MSRs), done ahead of time so that a start is only "attach
//! the template, write `BootInfo`, load the registers, run".
//!
//! ```no_run
//! use host_monitor::image::Image;
//! use host_monitor::instance::{prepare_template, Config, Instance, Launch};
//! use host_monitor::pool::VmPool;
//! use host_monitor::timings::Timings;
//! use host_monitor::vcpu;
//! use std::path::Path;
//!
//! let config = Config {
//!     mem_size: 16 << 20,
//!     stack_size: 256 << 10,
//!     timeout: None,
//!     cmdline: String::new(),
//!     timings: false,
//!     net: Default::default(),
//! };
//! let image = Image::load(Path::new("target/flint/hello.elf"), config.mem_size)?;
//! let template = prepare_template(&image, &config)?;
//! let kvm = vcpu::open_kvm()?;
//! let pool = VmPool::new(&kvm, 4)?;
//! let launch = Launch {
//!     template: Some(&template),
//!     pooled: pool.take(),
//!     ..Launch::default()
//! };
//! let outcome = Instance::start_with(&image, &config, launch, Timings::new(false))?.run();
//! pool.refill()?; // off the start path, e.g. while the instance runs
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::gdt;
use crate::layout::low;
use crate::vcpu::{self, KvmError};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

/// A VM with its vCPU set up as ABI.md section 2 says, except for the
/// general registers (entry point, stack, `BootInfo` address) and guest RAM,
/// which [`crate::instance::Instance::start_with`] adds.
pub struct PooledVm {
    // Field order is drop order: the vCPU goes before its VM.
    pub(crate) vcpu: VcpuFd,
    pub(crate) vm: VmFd,
    /// The vCPU's TSC frequency, read once here rather than per start.
    pub(crate) tsc_hz: u64,
    /// KVM loads registers from `kvm_run` (KVM_CAP_SYNC_REGS).
    pub(crate) sync_regs: bool,
}

impl PooledVm {
    /// Creates one VM and its vCPU with `kvm`.
    pub fn create(kvm: &Kvm) -> Result<PooledVm, KvmError> {
        let vm = vcpu::create_vm(kvm)?;
        let (segments, _) = gdt::segments();
        let mut vcpu = vcpu::prepare_vcpu(&vm, low::PAGE_TABLES, &segments)?;
        let tsc_hz = vcpu::tsc_hz(&vcpu)?;
        prime(&mut vcpu);
        Ok(PooledVm {
            vcpu,
            vm,
            tsc_hz,
            sync_regs: vcpu::has_sync_regs(kvm),
        })
    }
}

/// Pays the vCPU's first `KVM_RUN` now: with `immediate_exit` set, KVM
/// loads the vCPU and returns `EINTR` before entering the guest (which has
/// no RAM yet), and the `kvm_run` page gets mapped. Measured here, this
/// takes ~8 us off the pooled start's way to the first hypercall. Nothing
/// depends on it succeeding.
fn prime(vcpu: &mut VcpuFd) {
    vcpu.get_kvm_run().immediate_exit = 1;
    let _ = vcpu.run().map(drop);
    vcpu.get_kvm_run().immediate_exit = 0;
}

/// A stock of [`PooledVm`]s, shareable between threads: [`VmPool::take`]
/// one per start, and [`VmPool::refill`] off the start path or
/// [`VmPool::serve`] on a thread of its own.
pub struct VmPool<'k> {
    kvm: &'k Kvm,
    target: usize,
    ready: Mutex<Vec<PooledVm>>,
    /// Signalled when a VM is taken or the pool closes.
    wanted: Condvar,
    closed: AtomicBool,
}

impl<'k> VmPool<'k> {
    /// A pool holding `target` VMs made with `kvm` (all created now).
    pub fn new(kvm: &'k Kvm, target: usize) -> Result<VmPool<'k>, KvmError> {
        let pool = VmPool {
            kvm,
            target,
            ready: Mutex::new(Vec::with_capacity(target)),
            wanted: Condvar::new(),
            closed: AtomicBool::new(false),
        };
        pool.refill()?;
        Ok(pool)
    }

    /// A ready VM, or `None` if the pool is empty (then start the instance
    /// without one: [`crate::instance::Launch::pooled`] `None` creates it).
    pub fn take(&self) -> Option<PooledVm> {
        let vm = self.lock().pop();
        self.wanted.notify_one();
        vm
    }

    /// Refills the pool each time a VM is taken, until [`VmPool::close`]:
    /// for a thread of its own, so that VM creation overlaps the starts
    /// (on another core) instead of adding to them.
    pub fn serve(&self) -> Result<(), KvmError> {
        loop {
            {
                let mut ready = self.lock();
                while ready.len() >= self.target && !self.closed.load(Ordering::Relaxed) {
                    ready = self
                        .wanted
                        .wait(ready)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                }
                if self.closed.load(Ordering::Relaxed) {
                    return Ok(());
                }
            }
            let vm = PooledVm::create(self.kvm)?;
            self.lock().push(vm);
        }
    }

    /// Ends [`VmPool::serve`] and drops the VMs still ready (each holds
    /// host memory and two file descriptors); [`VmPool::take`] then
    /// returns `None`.
    pub fn close(&self) {
        let mut ready = self.lock();
        self.closed.store(true, Ordering::Relaxed);
        ready.clear();
        self.wanted.notify_all();
    }

    /// Creates VMs until the pool holds its target again; how many it
    /// made. VMs are created without holding the lock, so [`VmPool::take`]
    /// never waits for a VM being made.
    pub fn refill(&self) -> Result<usize, KvmError> {
        let mut made = 0;
        while self.len() < self.target && !self.closed.load(Ordering::Relaxed) {
            let vm = PooledVm::create(self.kvm)?;
            self.lock().push(vm);
            made += 1;
        }
        Ok(made)
    }

    /// How many VMs are ready.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True if no VM is ready.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many VMs the pool keeps.
    pub fn target(&self) -> usize {
        self.target
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PooledVm>> {
        // A thread that panicked while holding the lock left a valid Vec.
        self.ready
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
