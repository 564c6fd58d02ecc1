//! POLL: the guest has nothing to do until a frame arrives or its deadline
//! passes, so the vCPU thread sleeps in a [`Poller`] and the host-side
//! network does its work there, costing no CPU while idle.

use super::{Flow, Services};
use crate::guest_memory::BadBlock;
use crate::outcome::Outcome;
use crate::poller::{Poller, Woken};
use hypercall_abi::{PollBlock, POLL_READY_NET};
use std::mem::offset_of;
use std::time::{Duration, Instant};

/// POLL: `{ deadline_ns, ready, ret }`. Returns at once while a frame waits
/// (level-triggered); otherwise services the network until a frame waits,
/// the deadline passes, `--timeout` runs out or a stop signal comes.
pub(super) fn poll(s: &mut Services, gpa: u64) -> Result<Flow, BadBlock> {
    let block: PollBlock = s.ram.block(gpa)?;
    // `None`: a deadline beyond any the host can name, i.e. never.
    let deadline = s.clock.instant_at(block.deadline_ns);
    let mut first = true;
    let ready = loop {
        if s.net.as_mut().is_some_and(|net| net.frame_waiting()) {
            break POLL_READY_NET;
        }
        let now = Instant::now();
        if let Some(timeout) = s.timeout.filter(|t| now >= t.at) {
            return Ok(Flow::Stop(Outcome::TimedOut(timeout.limit)));
        }
        if let Some(signo) = s.stop.requested() {
            return Ok(Flow::Stop(Outcome::Signalled(signo)));
        }
        // The first pass only looks (host sockets may have bytes for the
        // guest); after that a deadline that has passed ends the call.
        if !first && deadline.is_some_and(|d| now >= d) {
            break 0;
        }
        let until = if first {
            Some(now)
        } else {
            let net_wake = s.net.as_mut().and_then(|net| net.next_wake());
            [deadline, s.timeout.map(|t| t.at), net_wake]
                .into_iter()
                .flatten()
                .min()
        };
        if !first {
            if let Some(recorder) = s.snapshot.take().filter(|r| r.is_armed()) {
                // The snapshot resumes as if this POLL returned with nothing
                // ready; this instance goes on waiting.
                s.ram.set_field(gpa, offset_of!(PollBlock, ready), 0u64);
                s.ram.set_field(gpa, offset_of!(PollBlock, ret), 0i64);
                if let Err(e) = recorder.write(&s.ram) {
                    eprintln!("flint: {e}");
                }
            }
            if let Some(on_idle) = s.on_idle.take() {
                on_idle();
            }
        }
        first = false;
        match wait(s, until) {
            Ok(woken) if woken.stop => {
                if let Some(signo) = s.stop.requested().or_else(|| control_wake(s)) {
                    return Ok(Flow::Stop(Outcome::Signalled(signo)));
                }
                if s.stop.snapshot_requested() {
                    // Return with nothing ready: the guest asks again, and
                    // that POLL's exit arms the snapshot.
                    break 0;
                }
            }
            Ok(_) => {}
            // epoll failed (it cannot with valid fds) or could not be set
            // up (no fds left): POLL may return early, and a short nap keeps
            // a guest that asks again from spinning.
            Err(_) => {
                std::thread::sleep(Duration::from_millis(1));
                break 0;
            }
        }
    };
    s.ram.set_field(gpa, offset_of!(PollBlock, ready), ready);
    s.ram.set_field(gpa, offset_of!(PollBlock, ret), 0i64);
    Ok(Flow::Resume)
}

/// A wake that was not a stop came from the instance's owner (a pause or
/// a snapshot request, [`crate::signals::StopHandle`]): empty the wake
/// eventfd and park while paused. Returns the stop signal if one came
/// meanwhile. For `flint run` (no owner) every wake is a stop: SIGTERM.
fn control_wake(s: &mut Services) -> Option<libc::c_int> {
    if matches!(s.stop, crate::signals::StopSource::Process) {
        return Some(libc::SIGTERM);
    }
    let fd = match (&s.net, &s.idle) {
        (Some(net), _) => net.wake_fd(),
        (None, Some(idle)) => idle.wake_fd(),
        (None, None) => -1,
    };
    crate::signals::drain_wake(fd);
    // A stop sets its signal before it wakes: none is lost by the drain.
    if let Some(signo) = s.stop.requested() {
        return Some(signo);
    }
    s.stop.park_if_paused();
    s.stop.requested()
}

/// Sleeps on the network device's wait set, or without one on a bare
/// poller made the first time it is needed.
fn wait(s: &mut Services, until: Option<Instant>) -> std::io::Result<Woken> {
    if let Some(net) = s.net.as_mut() {
        return net.wait(until);
    }
    let idle = match s.idle.as_mut() {
        Some(idle) => idle,
        None => {
            let idle = s.idle.insert(Poller::new()?);
            s.stop.set_wake_fd(idle.wake_fd());
            idle
        }
    };
    idle.wait(until, &mut Vec::new())
}
