//! The stub thread's seccomp filter: it talks to gdb over the socket it
//! was given, waits, kicks the vCPU thread with the kick signal, and
//! nothing else (no files, no new sockets, no KVM, no exec).

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

/// What the stub thread may call without conditions.
const STUB_CALLS: &[libc::c_long] = &[
    // gdb's socket and the wake pipe.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_shutdown,
    libc::SYS_close,
    // Channels, clocks.
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_clock_gettime,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    // The allocator.
    libc::SYS_brk,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    // Kicking the vCPU thread (pthread_kill), signal masks, thread exit.
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_exit,
];

/// Why the filter could not be built.
type SeccompError = String;

fn fail(e: impl std::fmt::Display) -> SeccompError {
    e.to_string()
}

fn arg(index: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(index, SeccompCmpArgLen::Dword, op, value).map_err(fail)
}

/// The stub thread's filter; `kick` is the only signal it may send, and
/// only to this process.
pub fn stub_filter(kick: libc::c_int) -> Result<BpfProgram, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for &call in STUB_CALLS {
        rules.insert(call, Vec::new());
    }
    let rule = |conditions| SeccompRule::new(conditions).map_err(fail);
    // No executable memory.
    for call in [libc::SYS_mmap, libc::SYS_mprotect] {
        let no_exec = arg(2, SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64), 0)?;
        rules.insert(call, vec![rule(vec![no_exec])?]);
    }
    let pid = u64::from(std::process::id());
    rules.insert(
        libc::SYS_tgkill,
        vec![rule(vec![
            arg(0, SeccompCmpOp::Eq, pid)?,
            arg(2, SeccompCmpOp::Eq, u64::try_from(kick).map_err(fail)?)?,
        ])?],
    );
    // gdbstub's peek switches the socket between blocking and not.
    rules.insert(
        libc::SYS_ioctl,
        vec![rule(vec![arg(1, SeccompCmpOp::Eq, libc::FIONBIO)?])?],
    );
    // gdbstub sets TCP_NODELAY when the session starts.
    rules.insert(
        libc::SYS_setsockopt,
        vec![rule(vec![
            arg(1, SeccompCmpOp::Eq, libc::IPPROTO_TCP as u64)?,
            arg(2, SeccompCmpOp::Eq, libc::TCP_NODELAY as u64)?,
        ])?],
    );
    SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .and_then(TryInto::try_into)
    .map_err(fail)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_stub_filter_compiles() {
        super::stub_filter(libc::SIGRTMIN()).unwrap();
    }
}
