//! One Flint instance: a KVM VM with one vCPU running one image.
//! [`Instance::start`] reads as DESIGN.md's boot line; [`Instance::run`] is
//! the KVM_RUN loop.

use crate::debug::{DebugEvent, Debugger, Verdict};
use crate::fault;
use crate::gdt;
use crate::guest_memory::{GuestRam, MemoryError, MemoryTemplate};
use crate::hypercall::{self, Console, Flow, InstanceClock, Services, Timeout};
use crate::image::Image;
use crate::layout::{low, Layout, LayoutError};
use crate::limits::{LimitCounts, Limits};
use crate::net::spec::NetSetup;
use crate::net::{NetDevice, NetError};
use crate::outcome::Outcome;
use crate::paging::{PageTables, TooManyTables};
use crate::poller::Poller;
use crate::pool::PooledVm;
use crate::signals::StopSource;
use crate::snapshot::{Recorder, Snapshot, SnapshotError};
use crate::stats::{CallCounts, ExitCounts, Stats};
use crate::timings::Timings;
use crate::vcpu::{self, EntryState, KvmError};
use crate::watchdog::Watchdog;
use hypercall_abi::{
    BootInfo, Hypercall, ABI_VERSION, BOOTINFO_MAGIC, HYPERCALLS_V1, HYPERCALL_PAGE, PAGE_SIZE,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use zerocopy::IntoBytes;

/// How to run an instance.
#[derive(Clone, Debug)]
pub struct Config {
    /// Guest RAM in bytes.
    pub mem_size: u64,
    /// Stack size in bytes.
    pub stack_size: u64,
    /// Wall-time limit.
    pub timeout: Option<Duration>,
    /// The app's arguments, joined by single spaces.
    pub cmdline: String,
    /// Record the start-up phases.
    pub timings: bool,
    /// The network device.
    pub net: NetSetup,
}

/// Why an instance could not start (status 125).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    PageTables(#[from] TooManyTables),
    #[error(transparent)]
    Kvm(#[from] KvmError),
    #[error("cannot start the timeout watchdog: {0}")]
    Watchdog(std::io::Error),
    #[error("the host has no entropy for the guest's seed: {0}")]
    Entropy(getrandom::Error),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("cannot set up POLL's wait set: {0}")]
    Poller(std::io::Error),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

static NEXT_INSTANCE_ID: AtomicU64 = AtomicU64::new(1);

impl StartError {
    /// True if the host ran out of memory, file descriptors or threads:
    /// starting more instances now would fail the same way.
    pub fn is_exhaustion(&self) -> bool {
        let errno = match self {
            StartError::Memory(e) => return e.is_exhaustion(),
            StartError::Kvm(KvmError::Open(e) | KvmError::Ioctl { source: e, .. }) => {
                Some(e.errno())
            }
            StartError::Watchdog(e)
            | StartError::Poller(e)
            | StartError::Net(NetError::Poller(e) | NetError::Port(e)) => e.raw_os_error(),
            _ => None,
        };
        matches!(
            errno,
            Some(libc::ENOMEM | libc::EMFILE | libc::ENFILE | libc::EAGAIN | libc::ENOSPC)
        )
    }
}

/// What the owner of many instances (a fleet worker) supplies besides the
/// [`Config`]; every field has a default that is what `flint run` does.
#[derive(Default)]
pub struct Launch<'a> {
    /// `BootInfo.instance_id`; default: the next id of this process.
    pub instance_id: Option<u64>,
    /// Guest RAM mapped copy-on-write from this template, which
    /// [`prepare_template`] made for the same image and config; default:
    /// fresh RAM written for this instance alone.
    pub template: Option<&'a MemoryTemplate>,
    /// A pre-created VM and vCPU ([`crate::pool::VmPool::take`]); default:
    /// create them for this instance.
    pub pooled: Option<PooledVm>,
    /// An open `/dev/kvm`; default: open one.
    pub kvm: Option<&'a Kvm>,
    /// The network device; default: the one `config.net` names.
    pub net: Option<NetDevice>,
    /// The console; default: the monitor's stdout.
    pub console: Option<Console>,
    /// Where a stop request comes from; default: SIGTERM/SIGINT.
    pub stop: StopSource,
    /// Called at the instance's first VM exit (its first hypercall).
    pub on_first_hypercall: Option<Box<dyn FnOnce() + Send>>,
    /// Called the first time the guest blocks in POLL.
    pub on_idle: Option<Box<dyn FnOnce() + Send>>,
    /// Without a network device, make POLL's wait set (3 fds) at start
    /// rather than at the first POLL, so that a host out of fds fails the
    /// start instead of leaving a started guest unable to sleep.
    pub idle_poller: bool,
    /// Write a snapshot the first time the guest blocks in POLL.
    pub snapshot_on_idle: Option<Recorder>,
    /// Resume this snapshot (opened for `image`, with `config` made from
    /// its header) instead of booting; its RAM is the template.
    pub restore: Option<&'a Snapshot>,
    /// Console and network limits (`--console-limit`, `--net-rate`);
    /// default: none. They hold for the instance's life, across
    /// [`Instance::reset`]s.
    pub limits: Limits,
}

/// A started instance, ready to run.
pub struct Instance<'i> {
    image: &'i Image,
    services: Services,
    // Field order is drop order: the vCPU and VM go before their memory.
    vcpu: VcpuFd,
    _vm: VmFd,
    timings: Timings,
    watchdog: Option<Watchdog>,
    exits: ExitCounts,
    on_first_hypercall: Option<Box<dyn FnOnce() + Send>>,
    /// The vCPU's TSC frequency, for a reset's `BootInfo`.
    tsc_hz: u64,
    /// KVM loads registers from `kvm_run` (KVM_CAP_SYNC_REGS).
    sync_regs: bool,
    /// Stores wider than 8 bytes to the hypercall page.
    wide_stores: WideStores,
    /// `flint run --gdb`'s debugger ([`Instance::attach_debugger`]).
    debugger: Option<Box<dyn Debugger + Send>>,
}

impl<'i> Instance<'i> {
    /// Creates the VM for `image` and sets it up to run from its entry point.
    pub fn start(image: &'i Image, config: &Config) -> Result<Instance<'i>, StartError> {
        Instance::start_timed(image, config, Timings::new(config.timings))
    }

    /// [`Instance::start`], adding its phases to `timings`.
    pub fn start_timed(
        image: &'i Image,
        config: &Config,
        timings: Timings,
    ) -> Result<Instance<'i>, StartError> {
        Instance::start_with(image, config, Launch::default(), timings)
    }

    /// [`Instance::start_timed`] with what `launch` supplies.
    pub fn start_with(
        image: &'i Image,
        config: &Config,
        mut launch: Launch<'_>,
        mut timings: Timings,
    ) -> Result<Instance<'i>, StartError> {
        if let Some(snapshot) = launch.restore {
            launch.template = Some(snapshot.template());
        }
        let layout = match launch.template {
            Some(template) => template.layout().clone(),
            None => Layout::new(
                image,
                config.mem_size,
                config.stack_size,
                config.cmdline.len(),
            )?,
        };
        // The network first: a port that is taken should refuse the start
        // before any VM is made.
        let net = match launch.net.take() {
            Some(net) => Some(net),
            None => NetDevice::open(&config.net)?,
        }
        .map(|net| net.limited(launch.limits.net_pps));
        if net.is_some() {
            timings.mark("network");
        }

        let (segments, gdt_bytes) = gdt::segments();
        let entry = EntryState {
            entry: image.entry(),
            boot_info: low::BOOT_INFO,
            stack_top: layout.stack_top,
            page_tables: low::PAGE_TABLES,
            segments: &segments,
        };
        let (vm, mut vcpu, tsc_hz, sync_regs) = match launch.pooled.take() {
            Some(pooled) => attach_pooled(pooled, &entry, &mut timings)?,
            None => {
                let (vm, vcpu) = create_machine(launch.kvm, &entry, &mut timings)?;
                let tsc_hz = vcpu::tsc_hz(&vcpu)?;
                (vm, vcpu, tsc_hz, false)
            }
        };
        let ram = match launch.template {
            Some(template) => {
                let ram = GuestRam::from_template(template)?;
                timings.mark("memory");
                ram
            }
            None => prepare_memory(image, layout, &gdt_bytes, &config.cmdline, &mut timings)?,
        };
        vcpu::attach_memory(&vm, &ram)?;
        timings.mark("attach memory");

        // A restore sets the guest TSC before BootInfo's clock base is read.
        let resumed = match launch.restore {
            Some(snapshot) => Some(snapshot.resume(&mut vcpu, &ram, &gdt_bytes, sync_regs)?),
            None => None,
        };
        let clock = write_boot_info(
            &ram,
            &vcpu,
            tsc_hz,
            launch.instance_id,
            net.as_ref(),
            config.cmdline.len(),
        )?;
        let clock = match resumed {
            Some(resumed) => resumed.continue_boot_info(&ram, tsc_hz, clock)?,
            None => clock,
        };
        timings.mark("boot info");

        let timeout = config.timeout.map(|limit| Timeout {
            at: Instant::now() + limit,
            limit,
        });
        let watchdog = timeout
            .map(|t| Watchdog::arm(t.at))
            .transpose()
            .map_err(StartError::Watchdog)?;
        let idle = match net {
            None if launch.idle_poller => Some(Poller::new().map_err(StartError::Poller)?),
            _ => None,
        };
        let services = Services {
            ram,
            clock,
            console: launch
                .console
                .take()
                .unwrap_or_else(Console::stdout)
                .limited(launch.limits.console),
            timeout,
            net,
            idle,
            calls: CallCounts::default(),
            stop: launch.stop,
            on_idle: launch.on_idle,
            snapshot: launch.snapshot_on_idle,
        };
        let wide_stores = WideStores::watch(&vm, &mut vcpu);
        Ok(Instance {
            image,
            services,
            vcpu,
            _vm: vm,
            timings,
            watchdog,
            exits: ExitCounts::default(),
            on_first_hypercall: launch.on_first_hypercall,
            tsc_hz,
            sync_regs,
            wide_stores,
            debugger: None,
        })
    }

    /// Makes this instance start over from `template` (which
    /// [`prepare_template`] made for this instance's image and `config`):
    /// guest RAM becomes the template's again (a fresh copy-on-write
    /// mapping laid over the old one), with a fresh `BootInfo` (new seed,
    /// clock base and `instance_id`, default the next id of this process),
    /// and the vCPU goes back to the entry state; the next
    /// [`Instance::run`] boots the guest again. The VM, vCPU, console and
    /// network device are kept (no VM is created), which makes this the
    /// cheapest way to run an image again. If it fails, the instance must
    /// not be run again.
    pub fn reset(
        &mut self,
        template: &MemoryTemplate,
        config: &Config,
        instance_id: Option<u64>,
    ) -> Result<(), StartError> {
        let mut timings = Timings::new(config.timings);
        self.services.ram.reset_from(template)?;
        timings.mark("reset memory");
        let (segments, _) = gdt::segments();
        let entry = EntryState {
            entry: self.image.entry(),
            boot_info: low::BOOT_INFO,
            stack_top: self.services.ram.layout().stack_top,
            page_tables: low::PAGE_TABLES,
            segments: &segments,
        };
        // At CPL 3 the guest can still load other selectors into data
        // segment registers, and a fault leaves CR2 and more behind: the
        // special registers go back to the entry state too.
        let sregs = vcpu::entry_sregs(vcpu::get_sregs(&self.vcpu)?, low::PAGE_TABLES, &segments);
        vcpu::load_entry(&mut self.vcpu, &entry, Some(sregs), self.sync_regs)?;
        timings.mark("registers");
        self.services.clock = write_boot_info(
            &self.services.ram,
            &self.vcpu,
            self.tsc_hz,
            instance_id,
            self.services.net.as_ref(),
            config.cmdline.len(),
        )?;
        timings.mark("boot info");
        self.services.timeout = config.timeout.map(|limit| Timeout {
            at: Instant::now() + limit,
            limit,
        });
        self.watchdog = self
            .services
            .timeout
            .map(|t| Watchdog::arm(t.at))
            .transpose()
            .map_err(StartError::Watchdog)?;
        self.services.calls = CallCounts::default();
        self.exits = ExitCounts::default();
        self.timings = timings;
        Ok(())
    }

    /// Calls `notify` at the next run's first VM exit (after a
    /// [`Instance::reset`]; at start, [`Launch::on_first_hypercall`]).
    pub fn on_first_hypercall(&mut self, notify: Box<dyn FnOnce() + Send>) {
        self.on_first_hypercall = Some(notify);
    }

    /// Runs the guest until it exits, panics, faults, times out or a stop
    /// comes (a stop signal if [`crate::signals::install`] was called, or a
    /// stop through the [`Launch::stop`] handle).
    pub fn run(&mut self) -> Outcome {
        let immediate_exit = &mut self.vcpu.get_kvm_run().immediate_exit as *mut u8;
        let wake_fd = match (&self.services.net, &self.services.idle) {
            (Some(net), _) => net.wake_fd(),
            (None, Some(idle)) => idle.wake_fd(),
            (None, None) => -1,
        };
        let _attached = self.services.stop.attach(immediate_exit, wake_fd);
        let mut first_exit = true;
        self.wide_stores.restart();
        if let Verdict::End(outcome) = self.debug_stop(DebugEvent::Start) {
            return outcome;
        }
        loop {
            if self.watchdog.as_ref().is_some_and(Watchdog::fired) {
                return self.timed_out();
            }
            if let Some(signo) = self.services.stop.requested() {
                return Outcome::Signalled(signo);
            }
            if self.debugger.as_ref().is_some_and(|d| d.wants_stop()) {
                if let Verdict::End(outcome) = self.debug_stop(DebugEvent::Interrupt) {
                    return outcome;
                }
            }
            // Paused by the owner (`flint daemon`): off the CPU until
            // resumed, then look at the watchdog and stops again.
            if self.services.stop.park_if_paused() {
                continue;
            }
            let exit = match self.vcpu.run() {
                Ok(exit) => Exit::from(exit),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.exits.interrupted += 1;
                    self.services.stop.clear_stale_kick();
                    continue;
                }
                Err(e) => Exit::Failed(e),
            };
            if first_exit {
                first_exit = false;
                self.timings.mark("first hypercall");
                if let Some(notify) = self.on_first_hypercall.take() {
                    notify();
                }
            }
            let flow = match exit {
                Exit::Store { addr, data, len } => {
                    self.exits.mmio_write += 1;
                    if self.wide_stores.is_second_piece(&self.vcpu, addr) {
                        return self.broken(&format!(
                            "store of more than 8 bytes to {} (KVM handed it over in 8-byte \
                             pieces; a hypercall is one 8-byte store)",
                            describe_gpa(addr.wrapping_sub(8))
                        ));
                    }
                    match self.hypercall(addr, data, len) {
                        // A debugger's step over the hypercall ends here.
                        Flow::Resume => match self.debug_stop(DebugEvent::Hypercall) {
                            Verdict::End(outcome) => Flow::Stop(outcome),
                            Verdict::Resume | Verdict::NotMine => Flow::Resume,
                        },
                        stop => stop,
                    }
                }
                Exit::Load { addr } => {
                    self.exits.mmio_read += 1;
                    Flow::Stop(self.broken(&format!("load from {}", describe_gpa(addr))))
                }
                Exit::Shutdown => {
                    self.exits.shutdown += 1;
                    // With a debugger, a breakpoint or a step ends this way.
                    match self.debug_stop(DebugEvent::Shutdown) {
                        Verdict::Resume => continue,
                        Verdict::End(outcome) => Flow::Stop(outcome),
                        Verdict::NotMine => Flow::Stop(self.exception()),
                    }
                }
                Exit::Interrupted => {
                    self.exits.interrupted += 1;
                    self.services.stop.clear_stale_kick();
                    continue;
                }
                Exit::Other(what) => {
                    self.exits.other += 1;
                    Flow::Stop(self.broken(&format!("unexpected VM exit ({what})")))
                }
                Exit::Failed(e) => {
                    Flow::Stop(self.broken(&format!("the vCPU could not run ({e})")))
                }
            };
            self.services.stop.publish(|| self.stats());
            if let Flow::Stop(outcome) = flow {
                return outcome;
            }
        }
    }

    /// Hands the vCPU to `debugger` before the first instruction, at
    /// every shutdown exit and whenever it wants the guest stopped
    /// (`flint run --gdb`, [`crate::debug`]).
    pub fn attach_debugger(&mut self, debugger: Box<dyn Debugger + Send>) {
        self.debugger = Some(debugger);
    }

    fn debug_stop(&mut self, event: DebugEvent) -> Verdict {
        match self.debugger.as_mut() {
            Some(debugger) => debugger.stopped(event, &mut self.vcpu, &self.services.ram),
            None => Verdict::NotMine,
        }
    }

    /// The vCPU's fd: the only one a seccomp-filtered vCPU thread may
    /// issue KVM ioctls on.
    pub fn vcpu_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.vcpu)
    }

    /// Every fd running the instance reads or writes (console, wait set,
    /// network device), if that set is fixed from now on; `None` if it is
    /// not (a user-mode network accepts connections; a wait set not made
    /// yet). `seccomp::confine_vcpu` pins the thread's reads and writes
    /// to these.
    pub fn io_fds(&self) -> Option<Vec<std::os::fd::RawFd>> {
        let services = &self.services;
        let mut fds = services.console.io_fds()?;
        match (&services.net, &services.idle) {
            (Some(net), _) => fds.extend(net.io_fds()?),
            (None, Some(idle)) => fds.extend(idle.fds()),
            (None, None) => return None,
        }
        Some(fds)
    }

    /// Guest RAM's host mapping: (address, length), e.g. to measure how
    /// much of it is resident. Valid while the instance exists.
    pub fn guest_ram(&self) -> (u64, u64) {
        let ram = &self.services.ram;
        (ram.host_base(), ram.layout().mem_size)
    }

    /// What the instance has cost so far.
    pub fn stats(&self) -> Stats {
        Stats {
            exits: self.exits,
            calls: self.services.calls,
            net: self
                .services
                .net
                .as_ref()
                .map(NetDevice::counters)
                .unwrap_or_default(),
            limits: self.limit_counts(),
        }
    }

    /// What the instance's limits have dropped so far.
    pub fn limit_counts(&self) -> LimitCounts {
        let console = self.services.console.limit_counts();
        let net = self
            .services
            .net
            .as_ref()
            .map(NetDevice::limit_counts)
            .unwrap_or_default();
        LimitCounts {
            net_rate_dropped: net.net_rate_dropped,
            ..console
        }
    }

    /// The start-up phases recorded so far.
    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// Bytes of console output that could not be delivered.
    pub fn console_dropped(&self) -> u64 {
        self.services.console.dropped
    }

    fn hypercall(&mut self, addr: u64, data: [u8; 8], len: usize) -> Flow {
        let offset = addr.wrapping_sub(HYPERCALL_PAGE);
        if offset >= PAGE_SIZE {
            return Flow::Stop(self.broken(&format!("store to {}", describe_gpa(addr))));
        }
        if !offset.is_multiple_of(8) {
            return Flow::Stop(self.broken(&format!(
                "store to the hypercall page at offset {offset:#x}, not a multiple of 8"
            )));
        }
        if len != 8 {
            return Flow::Stop(self.broken(&format!(
                "{len}-byte store to the hypercall page (a hypercall is one 8-byte store)"
            )));
        }
        if Hypercall::from_nr(offset / 8) == Some(Hypercall::Poll) {
            // A snapshot the owner asked for (`flint daemon`) is taken
            // like `--snapshot-on-idle`'s, at this POLL if it blocks.
            if self.services.snapshot.is_none() {
                self.services.snapshot = self.services.stop.take_snapshot_request();
            }
            if self.services.snapshot.is_some() {
                self.arm_snapshot();
            }
        }
        match hypercall::dispatch(&mut self.services, offset / 8, u64::from_le_bytes(data)) {
            Ok(flow) => flow,
            Err(broken) => Flow::Stop(self.broken(&broken.to_string())),
        }
    }

    /// Records the vCPU at a POLL exit for the snapshot POLL writes if it
    /// blocks (the registers and clocks of the moment the guest asked).
    fn arm_snapshot(&mut self) {
        let clock_ns = self.services.clock.now_ns();
        let (Ok(regs), Ok(tsc)) = (self.vcpu.get_regs(), vcpu::guest_tsc(&self.vcpu)) else {
            return;
        };
        if let Some(recorder) = self.services.snapshot.as_mut() {
            recorder.arm(&regs, tsc, self.tsc_hz, clock_ns);
        }
    }

    /// A fault the monitor noticed, with where the guest was.
    fn broken(&self, what: &str) -> Outcome {
        match self.vcpu.get_regs() {
            Ok(regs) => Outcome::Fault(format!(
                "{what} from {}",
                fault::at_rip(self.image, regs.rip)
            )),
            Err(_) => Outcome::Fault(what.to_owned()),
        }
    }

    fn exception(&self) -> Outcome {
        let (Ok(regs), Ok(sregs)) = (self.vcpu.get_regs(), self.vcpu.get_sregs()) else {
            return Outcome::Fault("CPU exception (registers unreadable)".to_owned());
        };
        let ram = &self.services.ram;
        let code = ram.peek(regs.rip, 2);
        let before_rcx = regs.rcx.checked_sub(2).and_then(|at| ram.peek(at, 2));
        let crash = fault::Crash {
            rip: regs.rip,
            cr2: sregs.cr2,
            code: code.as_deref(),
            before_rcx: before_rcx.as_deref().map(|bytes| (regs.rcx, bytes)),
        };
        Outcome::Fault(fault::exception(self.image, ram.layout(), &crash))
    }

    fn timed_out(&self) -> Outcome {
        let limit = self.services.timeout.map(|t| t.limit).unwrap_or_default();
        Outcome::TimedOut(limit)
    }
}

/// A VM exit, copied out of `kvm_run` so the vCPU can be borrowed again.
enum Exit {
    Store {
        addr: u64,
        data: [u8; 8],
        len: usize,
    },
    Load {
        addr: u64,
    },
    Shutdown,
    Interrupted,
    Other(String),
    Failed(kvm_ioctls::Error),
}

impl From<VcpuExit<'_>> for Exit {
    fn from(exit: VcpuExit<'_>) -> Exit {
        match exit {
            VcpuExit::MmioWrite(addr, bytes) => {
                let mut data = [0; 8];
                let len = bytes.len().min(8);
                data[..len].copy_from_slice(&bytes[..len]);
                Exit::Store {
                    addr,
                    data,
                    len: bytes.len(),
                }
            }
            VcpuExit::MmioRead(addr, _) => Exit::Load { addr },
            VcpuExit::Shutdown => Exit::Shutdown,
            VcpuExit::Intr => Exit::Interrupted,
            other => Exit::Other(format!("{other:?}")),
        }
    }
}

/// Spots a store wider than 8 bytes to the hypercall page, which ABI.md
/// section 4 says stops the instance. KVM hands such a store over as one
/// 8-byte MMIO exit per piece, RIP already past the instruction, and the
/// next piece's exit comes without the guest running in between: so a
/// store exit 8 bytes above the last one with every register unchanged is
/// the same instruction's second piece (a store instruction that runs
/// again computes the same address from the same registers). The first
/// piece has been served by then, like any hypercall. Needs the
/// registers copied out at each exit (KVM_CAP_SYNC_REGS); without it,
/// wide stores go unnoticed.
struct WideStores {
    enabled: bool,
    last: Option<(u64, kvm_bindings::kvm_regs)>,
}

impl WideStores {
    /// Has KVM copy the registers out at each exit, if it can; call it
    /// before the vCPU thread is confined (it asks the VM).
    fn watch(vm: &VmFd, vcpu: &mut VcpuFd) -> WideStores {
        let enabled = vm.check_extension_int(kvm_ioctls::Cap::SyncRegs)
            & (kvm_ioctls::SyncReg::Register as i32)
            != 0;
        if enabled {
            vcpu.set_sync_valid_reg(kvm_ioctls::SyncReg::Register);
        }
        WideStores {
            enabled,
            last: None,
        }
    }

    /// Forgets the last store: a new run starts.
    fn restart(&mut self) {
        self.last = None;
    }

    /// Called at each store exit, at `addr`.
    fn is_second_piece(&mut self, vcpu: &VcpuFd, addr: u64) -> bool {
        if !self.enabled {
            return false;
        }
        let regs = vcpu.sync_regs().regs;
        let second = self
            .last
            .is_some_and(|(last, ref before)| addr == last.wrapping_add(8) && regs == *before);
        self.last = Some((addr, regs));
        second
    }
}

/// Names a guest-physical address with no RAM behind it.
fn describe_gpa(addr: u64) -> String {
    if (HYPERCALL_PAGE..HYPERCALL_PAGE + PAGE_SIZE).contains(&addr) {
        format!("the hypercall page at {addr:#x}")
    } else {
        format!("{addr:#x}, which has no RAM")
    }
}

/// Takes a pre-created VM and points its vCPU at `entry`; with its TSC
/// frequency and whether it takes registers through `kvm_run`.
fn attach_pooled(
    pooled: PooledVm,
    entry: &EntryState,
    timings: &mut Timings,
) -> Result<(VmFd, VcpuFd, u64, bool), StartError> {
    let PooledVm {
        mut vcpu,
        vm,
        tsc_hz,
        sync_regs,
    } = pooled;
    vcpu::load_entry(&mut vcpu, entry, None, sync_regs)?;
    timings.mark("pooled vCPU");
    Ok((vm, vcpu, tsc_hz, sync_regs))
}

/// Writes the instance's `BootInfo` into `ram` (a fresh seed, its id,
/// default the next id of this process, and the clock base); the instance
/// clock starts now.
fn write_boot_info(
    ram: &GuestRam,
    vcpu: &VcpuFd,
    tsc_hz: u64,
    instance_id: Option<u64>,
    net: Option<&NetDevice>,
    cmdline_len: usize,
) -> Result<InstanceClock, StartError> {
    let mut boot = BootInfo {
        magic: BOOTINFO_MAGIC,
        abi_version: ABI_VERSION,
        size: size_of::<BootInfo>() as u32,
        tsc_hz,
        instance_id: instance_id
            .unwrap_or_else(|| NEXT_INSTANCE_ID.fetch_add(1, Ordering::Relaxed)),
        hypercalls: HYPERCALLS_V1,
        net: net.map(NetDevice::boot_config).unwrap_or_default(),
        ..BootInfo::default()
    };
    ram.layout().describe(&mut boot, cmdline_len);
    // Without entropy an instance's "random" seed would repeat; refuse.
    getrandom::fill(&mut boot.seed).map_err(StartError::Entropy)?;
    // The instance clock's zero: as close to the first instruction as
    // the monitor can put it.
    boot.tsc_at_boot = vcpu::guest_tsc(vcpu)?;
    let clock = InstanceClock::start();
    boot.wall_ns_at_boot = hypercall::wall_ns();
    ram.setup_write(low::BOOT_INFO, boot.as_bytes(), "BootInfo")?;
    Ok(clock)
}

/// Creates the VM and its vCPU, ready to run at `entry`, with `kvm` or a
/// `/dev/kvm` opened for it (the VM does not need it open afterwards).
fn create_machine(
    kvm: Option<&Kvm>,
    entry: &EntryState,
    timings: &mut Timings,
) -> Result<(VmFd, VcpuFd), StartError> {
    let opened;
    let kvm = match kvm {
        Some(kvm) => kvm,
        None => {
            opened = vcpu::open_kvm()?;
            timings.mark("open KVM");
            &opened
        }
    };
    let vm = vcpu::create_vm(kvm)?;
    timings.mark("create VM");
    let vcpu = vcpu::create_vcpu(&vm, entry)?;
    timings.mark("vCPU");
    Ok((vm, vcpu))
}

/// The guest RAM contents every instance of `image` with `config` starts
/// with (page tables, GDT, image segments, command line), prepared once as
/// a template that instances map copy-on-write.
pub fn prepare_template(image: &Image, config: &Config) -> Result<MemoryTemplate, StartError> {
    let layout = Layout::new(
        image,
        config.mem_size,
        config.stack_size,
        config.cmdline.len(),
    )?;
    let tables = PageTables::build(&layout)?;
    let table_bytes = tables.bytes();
    let (_, gdt) = gdt::segments();
    let mut contents: Vec<(u64, &[u8], &'static str)> = image
        .segments()
        .iter()
        .map(|segment| {
            let bytes = image.segment_bytes(segment);
            (segment.vaddr, bytes, "an image segment")
        })
        .collect();
    contents.push((tables.root(), &table_bytes, "page tables"));
    contents.push((low::GDT, &gdt, "the GDT"));
    if !config.cmdline.is_empty() {
        contents.push((
            layout.cmdline,
            config.cmdline.as_bytes(),
            "the command line",
        ));
    }
    Ok(MemoryTemplate::build(layout, &contents)?)
}

/// Reserves guest RAM and writes the image, page tables, GDT and command
/// line into it.
fn prepare_memory(
    image: &Image,
    layout: Layout,
    gdt: &[u8],
    cmdline: &str,
    timings: &mut Timings,
) -> Result<GuestRam, StartError> {
    let ram = GuestRam::new(layout)?;
    timings.mark("memory");
    // The rest of each segment is already zero: guest RAM starts zeroed.
    for segment in image.segments() {
        ram.setup_write(
            segment.vaddr,
            image.segment_bytes(segment),
            "an image segment",
        )?;
    }
    timings.mark("load");
    let tables = PageTables::build(ram.layout())?;
    ram.setup_write(tables.root(), &tables.bytes(), "page tables")?;
    ram.setup_write(low::GDT, gdt, "the GDT")?;
    if !cmdline.is_empty() {
        ram.setup_write(ram.layout().cmdline, cmdline.as_bytes(), "the command line")?;
    }
    timings.mark("page tables");
    Ok(ram)
}
