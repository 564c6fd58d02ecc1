//! seccomp filters: once setup is done, each monitor thread may make only
//! the system calls its job needs, and any other call kills the whole
//! monitor process with SIGSYS.
//!
//! - A vCPU thread runs its guest and services its hypercalls: KVM_RUN and
//!   the few register reads a fault diagnosis or a snapshot needs, each
//!   only on its own vCPU fd (ioctls are filtered by fd and request
//!   number); reads and writes only on its own instance's fds (console,
//!   wait set, network device, stop eventfd) where that set is known,
//!   which is every case but a user-mode network whose published ports
//!   accept connections on the vCPU thread; epoll and timerfd, futex,
//!   clocks, getrandom, the allocator's memory calls, signal return and
//!   raising its own stop signal, exit. It cannot open files, create
//!   sockets, connect, execve, fork or ptrace. With `--snapshot-on-idle`
//!   it may also create, size, write, sync and rename the snapshot file.
//! - A watchdog thread (`--timeout`) may only sleep, read clocks, kick the
//!   vCPU threads with the kick signal, and exit.
//! - A fleet's switch thread ([`fleet`]) carries published connections:
//!   accept, read, write, epoll; no KVM, no files, no new sockets but
//!   accepted ones.
//! - A fleet worker's main thread ([`fleet::confine_worker`]) gets a floor
//!   filter once set up (starting instances: KVM, threads, console files),
//!   which the vCPU and watchdog threads it starts inherit; each vCPU
//!   thread stacks its own filter on top once its instance has started.
//!   Its stop-signal thread filters itself as it starts.
//! - The fleet parent ([`fleet::confine_parent`]) filters all its threads
//!   at once (TSYNC) once every worker is started.
//!
//! # For embedders
//!
//! A program that runs instances through the library confines each vCPU
//! thread itself, after [`Instance::start_with`](crate::instance::Instance::start_with)
//! and before [`Instance::run`](crate::instance::Instance::run), from the
//! thread that runs it:
//!
//! ```no_run
//! # fn demo(instance: &mut host_monitor::instance::Instance<'_>) -> Result<(), host_monitor::seccomp::SeccompError> {
//! use host_monitor::seccomp::{confine_service_threads, confine_vcpu, VcpuPolicy};
//! // Once, before the first instance with a timeout starts.
//! confine_service_threads()?;
//! // ... Instance::start_with(...) on this thread, then:
//! confine_vcpu(instance, &VcpuPolicy::default())?;
//! let outcome = instance.run();
//! # Ok(()) }
//! ```
//!
//! A filter cannot be lifted: a confined thread runs its instance to the
//! end and drops it, and a new instance starts on a new thread (or set
//! [`VcpuPolicy::reset`] to run it again with [`Instance::reset`](crate::instance::Instance::reset)).

use crate::instance::Instance;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::sync::OnceLock;

pub mod fleet;

/// Why a filter could not be built or applied.
#[derive(Debug, thiserror::Error)]
#[error("seccomp: {0}")]
pub struct SeccompError(String);

const KVMIO: u64 = 0xAE;
// Request numbers as <linux/kvm.h> defines them (x86_64).
const KVM_RUN: u64 = io(KVMIO, 0x80);
const KVM_GET_REGS: u64 = ior(KVMIO, 0x81, 144);
const KVM_GET_SREGS: u64 = ior(KVMIO, 0x83, 312);
const KVM_GET_MSRS: u64 = iowr(KVMIO, 0x88, 8);
const KVM_GET_TSC_KHZ: u64 = io(KVMIO, 0xa3);
const KVM_SET_REGS: u64 = iow(KVMIO, 0x82, 144);
const KVM_SET_SREGS: u64 = iow(KVMIO, 0x84, 312);

const fn ioc(dir: u64, ty: u64, nr: u64, size: u64) -> u64 {
    (dir << 30) | (size << 16) | (ty << 8) | nr
}
const fn io(ty: u64, nr: u64) -> u64 {
    ioc(0, ty, nr, 0)
}
const fn iow(ty: u64, nr: u64, size: u64) -> u64 {
    ioc(1, ty, nr, size)
}
const fn ior(ty: u64, nr: u64, size: u64) -> u64 {
    ioc(2, ty, nr, size)
}
const fn iowr(ty: u64, nr: u64, size: u64) -> u64 {
    ioc(3, ty, nr, size)
}

/// What the vCPU thread needs whatever the options, besides [`THREAD_CALLS`].
const VCPU_CALLS: &[libc::c_long] = &[
    // I/O calls are in IO_CALLS. Closing: the instance's own fds when it
    // ends, accepted connections.
    libc::SYS_close,
    // POLL, the user-mode gateway's timers, wake-ups.
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    // The POLL service's poller is made on the guest's first POLL.
    libc::SYS_epoll_create1,
    libc::SYS_timerfd_create,
    libc::SYS_eventfd2,
    libc::SYS_ppoll,
];

/// What every long-lived monitor thread needs however narrow its job:
/// futexes, clocks, the allocator, the stop signals' handler and dying by
/// them, and its own exit.
pub(crate) const THREAD_CALLS: &[libc::c_long] = &[
    // Locks, clocks, randomness.
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_clock_gettime,
    libc::SYS_gettimeofday,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_getrandom,
    // The allocator, and unmapping guest RAM at the end.
    libc::SYS_brk,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    // Stop signals: their handler returns (and a sleep it broke goes on);
    // die_by re-raises the signal.
    libc::SYS_rt_sigreturn,
    libc::SYS_restart_syscall,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigaction,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_tgkill,
    // Exit: the main thread's signal stack goes back too.
    libc::SYS_sigaltstack,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// What writing a snapshot (`--snapshot-on-idle`) adds.
/// (openat is allowed separately, for `File::create` only.)
const SNAPSHOT_CALLS: &[libc::c_long] = &[
    libc::SYS_ftruncate,
    libc::SYS_pwrite64,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
];

/// The flags of `File::create`: the snapshot's temporary file is created
/// write-only; nothing may be opened for reading.
const CREATE_FLAGS: u64 = (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC) as u64;

/// What the watchdog thread needs: sleep, clocks, kick, exit.
const WATCHDOG_CALLS: &[libc::c_long] = &[
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_clock_gettime,
    libc::SYS_gettimeofday,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_rt_sigreturn,
    libc::SYS_restart_syscall,
    libc::SYS_rt_sigprocmask,
    // Thread exit: the signal stack and the stack go back.
    libc::SYS_sigaltstack,
    libc::SYS_munmap,
    libc::SYS_madvise,
    libc::SYS_exit,
];

fn fail(e: impl std::fmt::Display) -> SeccompError {
    SeccompError(e.to_string())
}

/// Argument `arg` equals `value`, comparing the low 32 bits only: every
/// argument filtered here is an int or a 32-bit request number, and the
/// upper half of an int argument's register is not guaranteed to be zero.
fn eq(arg: u8, value: u64) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value).map_err(fail)
}

/// mmap and mprotect, never with PROT_EXEC: no new code in the monitor.
fn no_exec(rules: &mut BTreeMap<i64, Vec<SeccompRule>>) -> Result<(), SeccompError> {
    let prot = |exec| {
        SeccompCondition::new(
            2,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64),
            exec,
        )
        .map_err(fail)
    };
    for call in [libc::SYS_mmap, libc::SYS_mprotect] {
        rules.insert(call, vec![SeccompRule::new(vec![prot(0)?]).map_err(fail)?]);
    }
    Ok(())
}

fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>) -> Result<BpfProgram, SeccompError> {
    SeccompFilter::new(rules, refused(), SeccompAction::Allow, TargetArch::x86_64)
        .and_then(TryInto::try_into)
        .map_err(fail)
}

/// What a filter does with a call it does not allow: kill the process.
#[cfg(not(feature = "test-hooks"))]
fn refused() -> SeccompAction {
    SeccompAction::KillProcess
}

/// What a filter does with a call it does not allow: kill the process, or
/// in a test-hooks build with FLINT_TEST_SECCOMP_ERRNO set, fail it with
/// EHWPOISON, an errno nothing else returns, so that `strace -f` lists
/// every call a filter is missing in one run (`=trap`: raise SIGSYS in
/// the thread, for a debugger's backtrace). For finding what a new code
/// path needs; never in a release build.
#[cfg(feature = "test-hooks")]
fn refused() -> SeccompAction {
    match std::env::var("FLINT_TEST_SECCOMP_ERRNO").as_deref() {
        // SIGSYS to the thread, which a debugger can stop at.
        Ok("trap") => SeccompAction::Trap,
        Ok(_) => SeccompAction::Errno(libc::EHWPOISON as u32),
        Err(_) => SeccompAction::KillProcess,
    }
}

fn allow_all(rules: &mut BTreeMap<i64, Vec<SeccompRule>>, calls: &[libc::c_long]) {
    for &call in calls {
        rules.insert(call, Vec::new());
    }
}

/// What a vCPU thread may do besides running and servicing its own
/// guest. The default is the least: what `flint run` and a fleet worker's
/// vCPU threads get without `--snapshot-on-idle`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VcpuPolicy {
    /// The instance writes a snapshot when it first idles
    /// ([`Launch::snapshot_on_idle`](crate::instance::Launch::snapshot_on_idle)):
    /// the thread may create (write-only), size, write, sync and rename a
    /// file.
    pub snapshot: bool,
    /// The thread runs the instance again with
    /// [`Instance::reset`](crate::instance::Instance::reset): it may also
    /// load registers (KVM_SET_REGS, KVM_SET_SREGS) on its own vCPU fd,
    /// start threads (a watchdog for a new `--timeout`; never processes),
    /// scan `/proc/self/pagemap` (opened before the filter) and `pread`
    /// fds it has (the template's memfd).
    pub reset: bool,
    /// The thread also reads and writes these fds (an embedder's own pipe,
    /// eventfd or socket the thread uses while the instance runs, e.g. to
    /// wake an async runtime). Ignored when `any_fd` is set.
    pub extra_fds: Vec<RawFd>,
    /// read/write on any fd the thread holds, not only its instance's:
    /// for a thread that talks to fds it cannot name (e.g. an async
    /// runtime's channels). Weaker; say why where you set it.
    pub any_fd: bool,
}

/// Confines the calling thread, which must be the one that will call
/// `instance.run()`, to what running `instance` needs (see the module
/// doc), per `policy`. Call it after the instance has started and before
/// it runs. The filter stays for the thread's life and is inherited by any
/// thread it starts; a forbidden call kills the whole process with SIGSYS.
///
/// Fails if the filter cannot be built or the kernel refuses it; the
/// thread is then unfiltered, and the caller should not run the instance.
pub fn confine_vcpu(instance: &Instance<'_>, policy: &VcpuPolicy) -> Result<(), SeccompError> {
    // A snapshot is written through a file made after the filter.
    let io = match (policy.any_fd || policy.snapshot, instance.io_fds()) {
        (false, Some(mut fds)) => {
            fds.extend_from_slice(&policy.extra_fds);
            // RANDOM reads it where there is no getrandom(2) to call.
            fds.extend(entropy_fd());
            Some(fds)
        }
        _ => None,
    };
    let rules = VcpuRules {
        vcpu_fd: instance.vcpu_fd(),
        snapshot: policy.snapshot,
        reset: policy.reset,
        io,
    };
    let program = rules.compile()?;
    if policy.reset {
        apply_allowing_threads(&program)
    } else {
        apply(&program)
    }
}

/// Makes every watchdog thread (`--timeout`) and fleet switch thread
/// started from now on in this process filter itself as it starts. Call it
/// once, before starting the instances; calling it again changes nothing.
pub fn confine_service_threads() -> Result<(), SeccompError> {
    prepare();
    filter_watchdogs(crate::watchdog::kick_signal())?;
    fleet::filter_switches()
}

/// The fd the `getrandom` crate reads entropy from, if it uses one: a
/// statically linked glibc hides the getrandom(2) wrapper from it, and it
/// then opens `/dev/urandom` at its first use and keeps it open. Found once
/// (after a first use, so that the open happens before any filter).
fn entropy_fd() -> Option<RawFd> {
    static FD: OnceLock<Option<RawFd>> = OnceLock::new();
    *FD.get_or_init(|| {
        let _ = getrandom::fill(&mut [0u8; 1]);
        std::fs::read_dir("/proc/self/fd")
            .ok()?
            .flatten()
            .find(|entry| {
                std::fs::read_link(entry.path())
                    .is_ok_and(|target| target == std::path::Path::new("/dev/urandom"))
            })
            .and_then(|entry| entry.file_name().to_str()?.parse().ok())
    })
}

/// Gets ready, before a filter forbids opening files, what a filtered
/// thread may need later: the entropy source (see [`entropy_fd`]) and
/// glibc's malloc (see [`warm_malloc`]).
fn prepare() {
    let _ = entropy_fd();
    warm_malloc();
}

/// glibc's malloc reads `/proc/sys/vm/overcommit_memory` the first time it
/// shrinks the heap of a thread's arena (not the main thread's), then
/// keeps the answer: a filtered thread freeing memory would otherwise be
/// killed for that open. A short-lived thread makes it happen once, now:
/// it fills its own arena's heap past the trim threshold (128 KiB) in
/// blocks below the mmap threshold and frees them.
///
/// And glibc reads `/sys/devices/system/cpu/online` when a process first
/// has more than 8 arenas, to size their limit: setting the limit it would
/// compute (8 per core) now spares the read.
fn warm_malloc() {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(|| {
        let arenas = libc::c_int::try_from(8 * cpus()).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only changes malloc's tuning; the value is
        // glibc's own default for this many cores.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
        let warm = std::thread::Builder::new()
            .name("flint-warm".into())
            .spawn(|| {
                // Capacity only: malloc writes each chunk's header, not
                // its bytes, so this costs a dozen page faults, not 180.
                let blocks: Vec<Vec<u8>> = (0..12).map(|_| Vec::with_capacity(60 << 10)).collect();
                drop(std::hint::black_box(blocks));
            });
        if let Ok(thread) = warm {
            let _ = thread.join();
        }
    });
}

/// The CPUs this process may run on, as glibc counts cores for its arena
/// limit; from the affinity mask, because `available_parallelism` reads
/// cgroup files, ~0.3 ms on every `flint run` here.
fn cpus() -> usize {
    // SAFETY: sched_getaffinity fills the zeroed, correctly sized set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return 2;
        }
        usize::try_from(libc::CPU_COUNT(&set)).map_or(2, |n| n.max(1))
    }
}

/// The rules of one vCPU thread's filter.
struct VcpuRules {
    /// The only fd it may use KVM ioctls on.
    vcpu_fd: RawFd,
    snapshot: bool,
    reset: bool,
    /// The fds it may read and write; `None`: any.
    io: Option<Vec<RawFd>>,
}

/// Calls that move bytes through an fd: pinned to the instance's fds.
const IO_CALLS: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_accept4,
    libc::SYS_shutdown,
];

/// The most fds a vCPU thread's reads and writes are pinned to; with more,
/// they are not pinned (an instance has fewer than ten of its own).
const MAX_PINNED_FDS: usize = 64;

/// The fds every thread may write whatever its instance: stdin (never
/// read by the monitor, but harmless), stdout, stderr (diagnoses, limit
/// lines, a fleet's event protocol).
const STDIO: [RawFd; 3] = [0, 1, 2];

impl VcpuRules {
    fn compile(&self) -> Result<BpfProgram, SeccompError> {
        let mut rules = BTreeMap::new();
        allow_all(&mut rules, VCPU_CALLS);
        allow_all(&mut rules, THREAD_CALLS);
        match &self.io {
            // A filter holds at most 4096 instructions, and each pinned fd
            // costs a few per call: a set too large goes unpinned.
            Some(fds) if fds.len() > MAX_PINNED_FDS => allow_all(&mut rules, IO_CALLS),
            None => allow_all(&mut rules, IO_CALLS),
            Some(fds) => {
                let mut fds: Vec<RawFd> = fds.iter().chain(&STDIO).copied().collect();
                fds.sort_unstable();
                fds.dedup();
                // No sockets here (a user-mode network leaves `io` unknown):
                // the socket calls stay forbidden.
                for call in [
                    libc::SYS_read,
                    libc::SYS_readv,
                    libc::SYS_write,
                    libc::SYS_writev,
                ] {
                    let mut on = Vec::new();
                    for &fd in &fds {
                        let fd = u64::try_from(fd).map_err(fail)?;
                        on.push(SeccompRule::new(vec![eq(0, fd)?]).map_err(fail)?);
                    }
                    rules.insert(call, on);
                }
            }
        }
        no_exec(&mut rules)?;
        if self.snapshot {
            allow_all(&mut rules, SNAPSHOT_CALLS);
            rules.insert(
                libc::SYS_openat,
                vec![SeccompRule::new(vec![eq(2, CREATE_FLAGS)?]).map_err(fail)?],
            );
        }
        let fd = u64::try_from(self.vcpu_fd).map_err(fail)?;
        let mut requests = vec![
            KVM_RUN,
            KVM_GET_REGS,
            KVM_GET_SREGS,
            KVM_GET_MSRS,
            KVM_GET_TSC_KHZ,
        ];
        let mut ioctls = Vec::new();
        if self.reset {
            requests.extend([KVM_SET_REGS, KVM_SET_SREGS]);
            threads(&mut rules)?;
            // A reset copies back the pages the guest wrote, found in
            // /proc/self/pagemap (opened before the filter), reading them
            // from the template's memfd (any fd: the policy does not name
            // the template; pread reads only fds already open).
            rules.insert(libc::SYS_pread64, Vec::new());
            if let Some(pagemap) = crate::guest_memory::pagemap_fd() {
                let pagemap = u64::try_from(pagemap).map_err(fail)?;
                ioctls.push(
                    SeccompRule::new(vec![
                        eq(0, pagemap)?,
                        eq(1, crate::guest_memory::PAGEMAP_SCAN_REQUEST)?,
                    ])
                    .map_err(fail)?,
                );
            }
        }
        for request in requests {
            ioctls.push(SeccompRule::new(vec![eq(0, fd)?, eq(1, request)?]).map_err(fail)?);
        }
        // std's set_nonblocking on accepted connections, any fd.
        ioctls.push(SeccompRule::new(vec![eq(1, libc::FIONBIO)?]).map_err(fail)?);
        rules.insert(libc::SYS_ioctl, ioctls);
        // Forwarded connections: TCP_NODELAY when accepted, SO_LINGER 0 to
        // pass a guest's reset on; SO_ERROR to learn why one failed.
        rules.insert(
            libc::SYS_setsockopt,
            vec![
                sockopt(libc::IPPROTO_TCP, libc::TCP_NODELAY)?,
                sockopt(libc::SOL_SOCKET, libc::SO_LINGER)?,
            ],
        );
        // Debug builds of std check an fd is open before closing it.
        rules.insert(
            libc::SYS_fcntl,
            vec![SeccompRule::new(vec![eq(1, libc::F_GETFD as u64)?]).map_err(fail)?],
        );
        rules.insert(
            libc::SYS_getsockopt,
            vec![sockopt(libc::SOL_SOCKET, libc::SO_ERROR)?],
        );
        compile(rules)
    }
}

/// A setsockopt/getsockopt rule for one `level` and option `name`.
fn sockopt(level: libc::c_int, name: libc::c_int) -> Result<SeccompRule, SeccompError> {
    SeccompRule::new(vec![eq(1, level as u64)?, eq(2, name as u64)?]).map_err(fail)
}

/// Starting threads (not processes): `clone` only with CLONE_THREAD, and
/// `clone3` (whose flags seccomp cannot see) never: glibc falls back to
/// `clone` when it fails with ENOSYS (see [`apply`]).
fn threads(rules: &mut BTreeMap<i64, Vec<SeccompRule>>) -> Result<(), SeccompError> {
    let thread = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
        libc::CLONE_THREAD as u64,
    )
    .map_err(fail)?;
    rules.insert(
        libc::SYS_clone,
        vec![SeccompRule::new(vec![thread]).map_err(fail)?],
    );
    // Allowed here only to be refused with ENOSYS by the filter
    // `apply_allowing_threads` puts under it.
    rules.insert(libc::SYS_clone3, Vec::new());
    // The threads started may filter themselves further (a filter can
    // only narrow what a thread may do).
    rules.insert(libc::SYS_seccomp, Vec::new());
    allow_all(
        rules,
        &[
            libc::SYS_set_robust_list,
            libc::SYS_rseq,
            libc::SYS_sched_getaffinity,
            libc::SYS_prctl,
        ],
    );
    Ok(())
}

/// The vCPU thread's filter for `flint run`: `vcpu_fd` is the only fd it
/// may use KVM ioctls on; `snapshot` allows writing the
/// `--snapshot-on-idle` file; `io`, if known, the only fds it may read and
/// write (besides stdio).
pub fn vcpu_filter(
    vcpu_fd: RawFd,
    snapshot: bool,
    io: Option<Vec<RawFd>>,
) -> Result<BpfProgram, SeccompError> {
    VcpuRules {
        vcpu_fd,
        snapshot,
        reset: false,
        io,
    }
    .compile()
}

/// The watchdog thread's filter: it may only signal this process with
/// `kick` (the vCPU kick signal).
pub fn watchdog_filter(kick: libc::c_int) -> Result<BpfProgram, SeccompError> {
    let mut rules = BTreeMap::new();
    allow_all(&mut rules, WATCHDOG_CALLS);
    // The thread's malloc arena.
    no_exec(&mut rules)?;
    let pid = u64::from(std::process::id());
    let kick = u64::try_from(kick).map_err(fail)?;
    rules.insert(
        libc::SYS_tgkill,
        vec![SeccompRule::new(vec![eq(0, pid)?, eq(2, kick)?]).map_err(fail)?],
    );
    compile(rules)
}

/// The filter watchdog threads started from now on apply to themselves.
static WATCHDOG: OnceLock<BpfProgram> = OnceLock::new();

/// Makes every watchdog thread started from now on filter itself
/// (`flint run` only: one instance per process).
pub fn filter_watchdogs(kick: libc::c_int) -> Result<(), SeccompError> {
    let program = watchdog_filter(kick)?;
    let _ = WATCHDOG.set(program);
    Ok(())
}

/// Called by a watchdog thread as it starts: applies its filter if
/// [`filter_watchdogs`] asked for one.
pub fn apply_watchdog() {
    apply_at_thread_start(WATCHDOG.get(), "watchdog");
}

/// Applies `program`, if there is one, to a service thread that has just
/// started. If the kernel refuses, the monitor must not run unfiltered: it
/// stops.
pub(crate) fn apply_at_thread_start(program: Option<&BpfProgram>, thread: &str) {
    if let Some(program) = program {
        // Set up what the thread's first use would otherwise set up under
        // the filter: its handle and its malloc arena.
        let _ = std::thread::current();
        drop(std::hint::black_box(Box::new(0u64)));
        if let Err(e) = apply(program) {
            eprintln!("flint: cannot filter the {thread} thread: {e}");
            std::process::exit(crate::outcome::STATUS_START_FAILED);
        }
    }
}

/// Applies `program` to the calling thread (setting no_new_privs).
pub fn apply(program: &BpfProgram) -> Result<(), SeccompError> {
    seccompiler::apply_filter(program).map_err(fail)
}

/// A filter that makes `clone3` fail with ENOSYS and allows the rest: the
/// other filters cannot see clone3's flags (they are in memory), so they
/// refuse it this way and glibc starts threads with `clone` instead, whose
/// flags they check.
fn clone3_enosys() -> Result<BpfProgram, SeccompError> {
    let mut rules = BTreeMap::new();
    rules.insert(libc::SYS_clone3, Vec::new());
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        TargetArch::x86_64,
    )
    .and_then(TryInto::try_into)
    .map_err(fail)
}

/// [`apply`] for a `program` made with [`threads`]: the clone3 filter goes
/// on first (the kernel takes the strictest answer of all filters, so
/// ENOSYS beats the program's allowing clone3).
fn apply_allowing_threads(program: &BpfProgram) -> Result<(), SeccompError> {
    apply(&clone3_enosys()?)?;
    apply(program)
}

/// Applies `program` to every thread of the process at once (TSYNC).
fn apply_all_threads(program: &BpfProgram) -> Result<(), SeccompError> {
    seccompiler::apply_filter_all_threads(program).map_err(fail)
}

/// Test-only hook: with the `test-hooks` feature, the vCPU thread makes
/// the forbidden call FLINT_TEST_FORBIDDEN_SYSCALL names once its filter is
/// on: `open` (a file open for reading), `kvm-run-other-fd` (KVM_RUN on an
/// fd that is not its vCPU's), `kvm-other-request` (a KVM ioctl not on the
/// list, on its own vCPU fd) or `mmap-exec` (executable memory).
#[cfg(feature = "test-hooks")]
pub fn forbidden_syscall_hook(vcpu_fd: RawFd) {
    let Some(which) = std::env::var_os("FLINT_TEST_FORBIDDEN_SYSCALL") else {
        return;
    };
    // SAFETY: each call either fails harmlessly or (the point) is killed
    // by the filter; none touches memory Rust owns.
    unsafe {
        match which.to_str() {
            Some("open") => {
                let _ = std::fs::File::open("/etc/hostname");
            }
            Some("kvm-run-other-fd") => {
                libc::ioctl(0, KVM_RUN as _, 0);
            }
            Some("kvm-other-request") => {
                // KVM_GET_FPU.
                let mut fpu = [0u8; 416];
                libc::ioctl(vcpu_fd, ior(KVMIO, 0x8c, 416) as _, fpu.as_mut_ptr());
            }
            Some("mmap-exec") => {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
            }
            _ => return,
        }
    }
    eprintln!("flint: test hook: the forbidden call {which:?} was allowed");
}

/// Without the `test-hooks` feature there is no hook.
#[cfg(not(feature = "test-hooks"))]
pub fn forbidden_syscall_hook(_vcpu_fd: RawFd) {}

/// [`forbidden_syscall_hook`] in a fleet worker's vCPU thread of instance
/// `id`: with FLINT_TEST_FORBIDDEN_INSTANCE set, only that instance makes
/// the call.
#[cfg(feature = "test-hooks")]
pub fn forbidden_syscall_hook_for(id: u64, vcpu_fd: RawFd) {
    let only = std::env::var("FLINT_TEST_FORBIDDEN_INSTANCE").ok();
    if only.is_none_or(|only| only == id.to_string()) {
        forbidden_syscall_hook(vcpu_fd);
    }
}

/// Without the `test-hooks` feature there is no hook.
#[cfg(not(feature = "test-hooks"))]
pub fn forbidden_syscall_hook_for(_id: u64, _vcpu_fd: RawFd) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_kvm_h() {
        assert_eq!(KVM_RUN, 0xAE80);
        assert_eq!(KVM_GET_REGS, 0x8090_AE81);
        assert_eq!(KVM_GET_SREGS, 0x8138_AE83);
        assert_eq!(KVM_GET_MSRS, 0xC008_AE88);
        assert_eq!(KVM_GET_TSC_KHZ, 0xAEA3);
        assert_eq!(
            std::mem::size_of::<kvm_bindings::kvm_regs>(),
            144,
            "KVM_GET_REGS size"
        );
        assert_eq!(std::mem::size_of::<kvm_bindings::kvm_sregs>(), 312);
        assert_eq!(std::mem::size_of::<kvm_bindings::kvm_msrs>(), 8);
    }

    #[test]
    fn filters_compile() {
        vcpu_filter(3, false, None).unwrap();
        vcpu_filter(3, true, Some(vec![4, 5, 6])).unwrap();
        VcpuRules {
            vcpu_fd: 3,
            snapshot: true,
            reset: true,
            io: Some((10..10 + MAX_PINNED_FDS as RawFd).collect()),
        }
        .compile()
        .unwrap();
        // Too many to pin: unpinned, not an error.
        vcpu_filter(3, false, Some((10..1000).collect())).unwrap();
        watchdog_filter(libc::SIGRTMIN()).unwrap();
    }
}
