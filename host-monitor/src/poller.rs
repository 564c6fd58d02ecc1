//! The one place the vCPU thread sleeps: POLL waits here on an epoll set
//! holding the network backend's fds, a timerfd for the nearest deadline,
//! and an eventfd that a stop signal writes. Level-triggered throughout, so
//! an fd nobody drained stays ready and nothing is lost between waits.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Token of the deadline timer.
const TOKEN_TIMER: u64 = 0;
/// Token of the stop eventfd.
const TOKEN_WAKE: u64 = 1;
/// Tokens below this are the poller's own; backends use the rest.
pub const FIRST_FREE_TOKEN: u64 = 2;

/// How many events one wait takes at most; more stay ready for the next.
const EVENTS_PER_WAIT: usize = 64;

/// What a registered fd is waited for. Errors and hang-ups are always
/// reported, whatever the interest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    pub read: bool,
    pub write: bool,
}

impl Interest {
    /// Wait for nothing but errors and hang-ups.
    pub const NONE: Interest = Interest {
        read: false,
        write: false,
    };
    /// Wait until readable.
    pub const READ: Interest = Interest {
        read: true,
        write: false,
    };

    fn events(self) -> EventSet {
        let mut set = EventSet::empty();
        if self.read {
            set |= EventSet::IN;
        }
        if self.write {
            set |= EventSet::OUT;
        }
        set
    }
}

/// One ready fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready {
    pub token: u64,
    pub readable: bool,
    pub writable: bool,
    /// An error or hang-up: a read or write will tell which.
    pub hangup: bool,
    pub error: bool,
}

/// What a wait saw besides the backend's fds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Woken {
    /// The stop eventfd is set: the monitor was asked to stop.
    pub stop: bool,
}

/// The epoll set, its timer and the stop eventfd.
pub struct Poller {
    epoll: Epoll,
    timer: OwnedFd,
    /// When the timer is armed to fire, so an unchanged deadline costs no
    /// syscall.
    armed: Option<Instant>,
    wake: EventFd,
    events: Vec<EpollEvent>,
}

impl Poller {
    /// An epoll set with the timer and the stop eventfd in it.
    pub fn new() -> io::Result<Poller> {
        let epoll = Epoll::new()?;
        // SAFETY: timerfd_create has no memory preconditions; the result is
        // checked before it is owned.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd that nothing else owns.
        let timer = unsafe { OwnedFd::from_raw_fd(raw) };
        let wake = EventFd::new(EFD_NONBLOCK | libc::EFD_CLOEXEC)?;
        let poller = Poller {
            epoll,
            timer,
            armed: None,
            wake,
            events: vec![EpollEvent::default(); EVENTS_PER_WAIT],
        };
        poller.add(poller.timer.as_raw_fd(), TOKEN_TIMER, Interest::READ)?;
        poller.add(poller.wake.as_raw_fd(), TOKEN_WAKE, Interest::READ)?;
        Ok(poller)
    }

    /// The eventfd whose being set stops every wait; a signal handler
    /// writes it (see `signals`).
    pub fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// The set's own fds (epoll, timer, wake eventfd): a confined vCPU
    /// thread reads and writes them.
    pub fn fds(&self) -> [RawFd; 3] {
        [
            self.epoll.as_raw_fd(),
            self.timer.as_raw_fd(),
            self.wake.as_raw_fd(),
        ]
    }

    /// Starts waiting on `fd` for `interest`; its events carry `token`.
    pub fn add(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let event = EpollEvent::new(interest.events(), token);
        self.epoll.ctl(ControlOperation::Add, fd, event)
    }

    /// Changes what `fd` is waited for.
    pub fn modify(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let event = EpollEvent::new(interest.events(), token);
        self.epoll.ctl(ControlOperation::Modify, fd, event)
    }

    /// Stops waiting on `fd` (closing it does that too).
    pub fn remove(&self, fd: RawFd) -> io::Result<()> {
        self.epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default())
    }

    /// Waits until a registered fd is ready, the stop eventfd is set, or
    /// `until` passes (`None`: no deadline; a past one: just look), and
    /// appends the ready backend fds to `ready`.
    pub fn wait(&mut self, until: Option<Instant>, ready: &mut Vec<Ready>) -> io::Result<Woken> {
        let now = Instant::now();
        let timeout_ms = match until {
            Some(at) if at <= now => 0,
            Some(at) => {
                self.arm(at, at - now)?;
                -1
            }
            None => -1,
        };
        let n = match self.epoll.wait(timeout_ms, &mut self.events) {
            Ok(n) => n,
            // A signal: the caller looks at why and waits again if it must.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        let mut woken = Woken::default();
        for event in &self.events[..n] {
            let set = event.event_set();
            match event.data() {
                TOKEN_TIMER => {
                    let mut expirations = [0u8; 8];
                    // SAFETY: reads 8 bytes into a local buffer of 8 bytes;
                    // the timerfd is non-blocking.
                    unsafe {
                        libc::read(self.timer.as_raw_fd(), expirations.as_mut_ptr().cast(), 8)
                    };
                    self.armed = None;
                }
                TOKEN_WAKE => woken.stop = true,
                token => ready.push(Ready {
                    token,
                    readable: set.contains(EventSet::IN),
                    writable: set.contains(EventSet::OUT),
                    hangup: set.contains(EventSet::HANG_UP),
                    error: set.contains(EventSet::ERROR),
                }),
            }
        }
        Ok(woken)
    }

    /// Arms the timer to fire `after` from now (at `at`), unless it already
    /// fires then. A timer armed for an earlier instant that was not waited
    /// for is simply moved: re-arming clears a pending expiration.
    fn arm(&mut self, at: Instant, after: Duration) -> io::Result<()> {
        if self.armed == Some(at) {
            return Ok(());
        }
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs().min(i64::MAX as u64) as libc::time_t,
                // A zero it_value would disarm the timer: at least 1 ns.
                tv_nsec: libc::c_long::from(
                    after.subsec_nanos().max(u32::from(after.as_secs() == 0)),
                ),
            },
        };
        // SAFETY: `spec` is a valid itimerspec on the stack; the old value
        // is not asked for (null).
        let ret = unsafe {
            libc::timerfd_settime(self.timer.as_raw_fd(), 0, &spec, std::ptr::null_mut())
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        self.armed = Some(at);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_ends_the_wait_and_a_past_one_does_not_block() {
        let mut poller = Poller::new().expect("poller");
        let mut ready = Vec::new();
        let start = Instant::now();
        let woken = poller
            .wait(Some(start + Duration::from_millis(20)), &mut ready)
            .expect("wait");
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert!(!woken.stop && ready.is_empty());
        let start = Instant::now();
        poller.wait(Some(start), &mut ready).expect("wait");
        assert!(start.elapsed() < Duration::from_millis(20));
    }

    #[test]
    fn the_wake_fd_stops_every_wait_until_the_end() {
        let mut poller = Poller::new().expect("poller");
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a local array to an eventfd we own.
        unsafe { libc::write(poller.wake_fd(), one.as_ptr().cast(), 8) };
        let mut ready = Vec::new();
        for _ in 0..2 {
            let woken = poller.wait(None, &mut ready).expect("wait");
            assert!(woken.stop);
        }
    }
}
