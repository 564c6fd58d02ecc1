//! seccomp filters for `flint run`: once setup is done, each monitor thread
//! may make only the system calls its job needs, and any other call kills
//! the whole monitor with SIGSYS.
//!
//! - The vCPU thread (the main thread) runs the guest and services its
//!   hypercalls: KVM_RUN and the few register reads a fault diagnosis or a
//!   snapshot needs, each only on its own vCPU fd (ioctls are filtered by
//!   fd and request number); reads and writes on fds it already has
//!   (console, TAP device, published sockets), accepting connections on
//!   listeners it already has, epoll and timerfd, futex, clocks, getrandom,
//!   the allocator's memory calls, signal return and raising its own stop
//!   signal, exit. It cannot open files, create sockets, connect, execve,
//!   fork or ptrace. With `--snapshot-on-idle` it may also create, size,
//!   write, sync and rename the snapshot file.
//! - The watchdog thread (`--timeout`) may only sleep, read clocks, kick the
//!   vCPU thread with its kick signal, and exit.
//!
//! Not filtered yet: `flint fleet` (neither the parent nor its workers),
//! and embedders of the library, who choose their own policy.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::sync::OnceLock;

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

const fn ioc(dir: u64, ty: u64, nr: u64, size: u64) -> u64 {
    (dir << 30) | (size << 16) | (ty << 8) | nr
}
const fn io(ty: u64, nr: u64) -> u64 {
    ioc(0, ty, nr, 0)
}
const fn ior(ty: u64, nr: u64, size: u64) -> u64 {
    ioc(2, ty, nr, size)
}
const fn iowr(ty: u64, nr: u64, size: u64) -> u64 {
    ioc(3, ty, nr, size)
}

/// What the vCPU thread needs whatever the options.
const VCPU_CALLS: &[libc::c_long] = &[
    // I/O on fds opened during setup: console, TAP, published sockets.
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
    // Threads, clocks, randomness.
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
    // Stop signals: their handler returns; die_by re-raises the signal.
    libc::SYS_rt_sigreturn,
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
    SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .and_then(TryInto::try_into)
    .map_err(fail)
}

fn allow_all(rules: &mut BTreeMap<i64, Vec<SeccompRule>>, calls: &[libc::c_long]) {
    for &call in calls {
        rules.insert(call, Vec::new());
    }
}

/// The vCPU thread's filter: `vcpu_fd` is the only fd it may use KVM
/// ioctls on; `snapshot` allows writing the `--snapshot-on-idle` file.
pub fn vcpu_filter(vcpu_fd: RawFd, snapshot: bool) -> Result<BpfProgram, SeccompError> {
    let mut rules = BTreeMap::new();
    allow_all(&mut rules, VCPU_CALLS);
    no_exec(&mut rules)?;
    if snapshot {
        allow_all(&mut rules, SNAPSHOT_CALLS);
        rules.insert(
            libc::SYS_openat,
            vec![SeccompRule::new(vec![eq(2, CREATE_FLAGS)?]).map_err(fail)?],
        );
    }
    let fd = u64::try_from(vcpu_fd).map_err(fail)?;
    let mut ioctls = Vec::new();
    for request in [
        KVM_RUN,
        KVM_GET_REGS,
        KVM_GET_SREGS,
        KVM_GET_MSRS,
        KVM_GET_TSC_KHZ,
    ] {
        ioctls.push(SeccompRule::new(vec![eq(0, fd)?, eq(1, request)?]).map_err(fail)?);
    }
    // std's set_nonblocking on accepted connections, any fd.
    ioctls.push(SeccompRule::new(vec![eq(1, libc::FIONBIO)?]).map_err(fail)?);
    rules.insert(libc::SYS_ioctl, ioctls);
    // Forwarded connections: TCP_NODELAY when accepted, SO_LINGER 0 to
    // pass a guest's reset on; SO_ERROR to learn why one failed.
    let sockopt = |level: libc::c_int, name: libc::c_int| -> Result<SeccompRule, SeccompError> {
        SeccompRule::new(vec![eq(1, level as u64)?, eq(2, name as u64)?]).map_err(fail)
    };
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
/// [`filter_watchdogs`] asked for one. If the kernel refuses, the monitor
/// must not run unfiltered: it stops.
pub fn apply_watchdog() {
    if let Some(program) = WATCHDOG.get() {
        // Set up what the thread's first use would otherwise set up under
        // the filter: its handle and its malloc arena.
        let _ = std::thread::current();
        drop(std::hint::black_box(Box::new(0u64)));
        if let Err(e) = apply(program) {
            eprintln!("flint: cannot filter the watchdog thread: {e}");
            std::process::exit(crate::outcome::STATUS_START_FAILED);
        }
    }
}

/// Applies `program` to the calling thread (setting no_new_privs).
pub fn apply(program: &BpfProgram) -> Result<(), SeccompError> {
    seccompiler::apply_filter(program).map_err(fail)
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
        vcpu_filter(3, false).unwrap();
        vcpu_filter(3, true).unwrap();
        watchdog_filter(libc::SIGRTMIN()).unwrap();
    }
}
