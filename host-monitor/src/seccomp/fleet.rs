//! The filters of `flint fleet`: the parent, the workers and a worker's
//! switch thread. (A worker's vCPU threads stack the vCPU filter of the
//! parent module on the worker's.)
//!
//! - The parent, once every worker process is started, may only read the
//!   workers' pipes, write its own stdout and stderr, wait for and signal
//!   its workers, read files (`/proc`, for the summary's memory figures;
//!   read-only opens only), write the `--summary-json` file if asked
//!   (created write-only and renamed), and sleep. It cannot start
//!   processes (the workers are all started first), execute anything or
//!   create sockets.
//! - A worker, once its image, template, `/dev/kvm` and switch are set up,
//!   may start instances: KVM ioctls (request type 0xAE only), guest RAM
//!   mappings (never executable), threads (never processes), eventfds,
//!   epoll and timer fds, and its instances' `--console-dir` files
//!   (opened write-only); plus what its instances and switch do at run
//!   time. It cannot execute anything, fork, ptrace, open a file for
//!   reading, or create sockets (its listeners exist before the filter).
//! - The switch thread carries published connections: accept on its
//!   listeners, read and write, epoll; no KVM ioctl, no file, no new
//!   thread.

use super::{
    allow_all, apply_all_threads, apply_allowing_threads, compile, eq, fail, no_exec, sockopt,
    threads, SeccompError, CREATE_FLAGS, IO_CALLS, KVMIO, THREAD_CALLS, VCPU_CALLS,
};
use seccompiler::{BpfProgram, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// What a switch thread needs besides what a vCPU thread without KVM
/// does: nothing more (accept, read, write, epoll, timers, futex, exit).
fn switch_filter() -> Result<BpfProgram, SeccompError> {
    let mut rules = BTreeMap::new();
    allow_all(&mut rules, VCPU_CALLS);
    allow_all(&mut rules, THREAD_CALLS);
    allow_all(&mut rules, IO_CALLS);
    no_exec(&mut rules)?;
    // Accepted connections: non-blocking, TCP_NODELAY, SO_LINGER 0 to pass
    // a guest's reset on, SO_ERROR to learn why one failed.
    rules.insert(
        libc::SYS_ioctl,
        vec![SeccompRule::new(vec![eq(1, libc::FIONBIO)?]).map_err(fail)?],
    );
    sockopts(&mut rules)?;
    rules.insert(
        libc::SYS_fcntl,
        vec![SeccompRule::new(vec![eq(1, libc::F_GETFD as u64)?]).map_err(fail)?],
    );
    compile(rules)
}

fn sockopts(rules: &mut BTreeMap<i64, Vec<SeccompRule>>) -> Result<(), SeccompError> {
    rules.insert(
        libc::SYS_setsockopt,
        vec![
            sockopt(libc::IPPROTO_TCP, libc::TCP_NODELAY)?,
            sockopt(libc::SOL_SOCKET, libc::SO_LINGER)?,
        ],
    );
    rules.insert(
        libc::SYS_getsockopt,
        vec![sockopt(libc::SOL_SOCKET, libc::SO_ERROR)?],
    );
    Ok(())
}

/// The filter switch threads started from now on apply to themselves.
static SWITCH: OnceLock<BpfProgram> = OnceLock::new();

/// Makes every switch thread started from now on filter itself.
pub(super) fn filter_switches() -> Result<(), SeccompError> {
    if SWITCH.get().is_none() {
        let _ = SWITCH.set(switch_filter()?);
    }
    Ok(())
}

/// Called by a switch thread as it starts: applies its filter if
/// [`super::confine_service_threads`] asked for one.
pub fn apply_switch() {
    super::apply_at_thread_start(SWITCH.get(), "switch");
}

/// The flags `OpenOptions` passes for a `--console-dir` file: created
/// write-only, truncated at an instance's first start and appended to
/// after a restart.
const LOG_FLAGS: [libc::c_int; 2] = [
    libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
    libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC,
];

/// What a worker adds to its vCPU threads' calls to start instances and
/// run its stop-signal thread.
const WORKER_CALLS: &[libc::c_long] = &[
    // New instances: their wait sets, stop handles, switch ports.
    libc::SYS_eventfd2,
    libc::SYS_epoll_create1,
    libc::SYS_timerfd_create,
    // Console files, and the stdout lock's writes.
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_lseek,
    // The stop-signal thread.
    libc::SYS_rt_sigtimedwait,
    // vCPU threads add their own filter (a filter can only narrow what a
    // thread may do).
    libc::SYS_seccomp,
    // A guest's TSC, the vCPU threads' affinity.
    libc::SYS_sched_getaffinity,
    libc::SYS_getrusage,
];

/// A worker's floor filter, for all its threads.
fn worker_filter() -> Result<BpfProgram, SeccompError> {
    let mut rules = BTreeMap::new();
    allow_all(&mut rules, VCPU_CALLS);
    allow_all(&mut rules, THREAD_CALLS);
    allow_all(&mut rules, IO_CALLS);
    allow_all(&mut rules, WORKER_CALLS);
    no_exec(&mut rules)?;
    threads(&mut rules)?;
    // KVM ioctls of any request on any fd (the worker makes VMs and
    // vCPUs; each vCPU thread then pins its own), FIONBIO.
    let kvm = SeccompCondition::new(
        1,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(0xff00),
        KVMIO << 8,
    )
    .map_err(fail)?;
    rules.insert(
        libc::SYS_ioctl,
        vec![
            SeccompRule::new(vec![kvm]).map_err(fail)?,
            SeccompRule::new(vec![eq(1, libc::FIONBIO)?]).map_err(fail)?,
        ],
    );
    sockopts(&mut rules)?;
    let mut opens = Vec::new();
    for flags in LOG_FLAGS {
        opens.push(SeccompRule::new(vec![eq(2, flags as u64)?]).map_err(fail)?);
    }
    rules.insert(libc::SYS_openat, opens);
    rules.insert(
        libc::SYS_fcntl,
        vec![SeccompRule::new(vec![eq(1, libc::F_GETFD as u64)?]).map_err(fail)?],
    );
    compile(rules)
}

/// Confines a fleet worker's main thread, once the worker is set up
/// (image, template, `/dev/kvm`, switch and its listeners, console
/// directory), to what starting and running its instances needs. The
/// threads it starts later (vCPU, watchdog) inherit the filter; each vCPU
/// thread adds its own with [`super::confine_vcpu`]. The worker's other
/// threads filter themselves as they start: the switch thread
/// ([`apply_switch`]) and the stop-signal thread ([`signals_filter`]).
pub fn confine_worker() -> Result<(), SeccompError> {
    super::prepare();
    apply_allowing_threads(&worker_filter()?)
}

/// The filter of a worker's stop-signal thread: it waits for SIGTERM and
/// SIGINT and passes a stop to each instance (a flag, its wait set's
/// eventfd, the kick signal to its vCPU thread). It applies the filter to
/// itself as it starts.
pub fn signals_filter() -> Result<BpfProgram, SeccompError> {
    let mut rules = BTreeMap::new();
    allow_all(
        &mut rules,
        &[
            libc::SYS_rt_sigtimedwait,
            libc::SYS_rt_sigprocmask,
            libc::SYS_rt_sigreturn,
            libc::SYS_restart_syscall,
            libc::SYS_write,
            libc::SYS_futex,
            libc::SYS_sched_yield,
            libc::SYS_clock_gettime,
            libc::SYS_getpid,
            libc::SYS_gettid,
            libc::SYS_brk,
            libc::SYS_munmap,
            libc::SYS_madvise,
            libc::SYS_sigaltstack,
            libc::SYS_exit,
            libc::SYS_exit_group,
        ],
    );
    no_exec(&mut rules)?;
    let pid = u64::from(std::process::id());
    let kick = u64::try_from(crate::signals::kick_signal()).map_err(fail)?;
    rules.insert(
        libc::SYS_tgkill,
        vec![SeccompRule::new(vec![eq(0, pid)?, eq(2, kick)?]).map_err(fail)?],
    );
    compile(rules)
}

/// What the fleet parent does once its workers are started.
const PARENT_CALLS: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_poll,
    libc::SYS_ppoll,
    // The summary reads /proc (meminfo, the workers' smaps_rollup).
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_lseek,
    libc::SYS_newfstatat,
    // Workers: reap, stop.
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_kill,
    // Threads (the last readers may still be starting), clocks.
    libc::SYS_sched_getaffinity,
    libc::SYS_rseq,
    libc::SYS_set_robust_list,
    libc::SYS_prctl,
    // The rest: THREAD_CALLS.
];

/// The parent's filter, for all its threads; `summary_file`: it writes
/// `--summary-json` (created write-only, then renamed into place).
fn parent_filter(summary_file: bool) -> Result<BpfProgram, SeccompError> {
    let mut rules = BTreeMap::new();
    allow_all(&mut rules, PARENT_CALLS);
    allow_all(&mut rules, THREAD_CALLS);
    no_exec(&mut rules)?;
    // Read-only opens (`File::open`), and `fs::write`'s create.
    let mut opens = vec![
        SeccompRule::new(vec![eq(2, (libc::O_RDONLY | libc::O_CLOEXEC) as u64)?]).map_err(fail)?,
    ];
    if summary_file {
        opens.push(SeccompRule::new(vec![eq(2, CREATE_FLAGS)?]).map_err(fail)?);
        allow_all(
            &mut rules,
            &[libc::SYS_rename, libc::SYS_renameat, libc::SYS_renameat2],
        );
    }
    rules.insert(libc::SYS_openat, opens);
    // Debug builds of std check an fd is open before closing it.
    rules.insert(
        libc::SYS_fcntl,
        vec![SeccompRule::new(vec![eq(1, libc::F_GETFD as u64)?]).map_err(fail)?],
    );
    // The progress bar asks whether stderr is a terminal, and its size.
    rules.insert(
        libc::SYS_ioctl,
        vec![
            SeccompRule::new(vec![eq(1, libc::TIOCGWINSZ)?]).map_err(fail)?,
            SeccompRule::new(vec![eq(1, libc::TCGETS)?]).map_err(fail)?,
        ],
    );
    compile(rules)
}

/// Confines every thread of the fleet parent once all its workers are
/// started (see the module doc); `summary_file`: it writes
/// `--summary-json`.
pub fn confine_parent(summary_file: bool) -> Result<(), SeccompError> {
    apply_all_threads(&parent_filter(summary_file)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_filters_compile() {
        switch_filter().unwrap();
        worker_filter().unwrap();
        signals_filter().unwrap();
        parent_filter(false).unwrap();
        parent_filter(true).unwrap();
    }
}
