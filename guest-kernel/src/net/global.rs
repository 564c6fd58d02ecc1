//! The instance's one stack, made on first use from `BootInfo.net`, and
//! the wait loop that sleeps in POLL.

use hypercall_abi::POLL_READY_NET;
use spin::Mutex;

use super::config::Config;
use super::device::HypercallLink;
use super::stack::Stack;
use super::{Error, Result};
use crate::{generation, random, time};

/// The link of the VM's stack.
pub(crate) type VmLink = HypercallLink;

/// The stack, once a network call has made it.
static STACK: Mutex<Option<Stack<VmLink>>> = Mutex::new(None);

/// How many times in a row [`wait`] runs the stack without sleeping when
/// smoltcp asks to be polled again at once; then it sleeps in POLL with a
/// deadline already reached, which costs one exit but tells whether a
/// frame came.
const EAGER_ROUNDS: u32 = 2;

/// Runs `f` on the stack, making it first if needed. Fails with
/// [`Error::NoDevice`] if the instance has no usable network device.
pub(crate) fn with_stack<R>(f: impl FnOnce(&mut Stack<VmLink>) -> R) -> Result<R> {
    let mut guard = STACK.lock();
    let stack = match &mut *guard {
        Some(stack) => stack,
        empty => {
            let generation = generation::current();
            let config = Config::from_boot(&generation::fresh_boot_info().net)?;
            let mut stack = Stack::new(HypercallLink, &config, random::u64(), time::monotonic_ns());
            stack.generation = generation;
            empty.insert(stack)
        }
    };
    catch_up(stack);
    Ok(f(stack))
}

/// After a snapshot restore, takes in the identity the monitor gave this
/// instance (ABI.md section 3). Returns true if it did.
fn catch_up(stack: &mut Stack<VmLink>) -> bool {
    let generation = generation::current();
    if stack.generation == generation {
        return false;
    }
    if let Ok(config) = Config::from_boot(&generation::fresh_boot_info().net) {
        stack.reconfigure(&config, random::u64(), time::monotonic_ns());
    }
    stack.generation = generation;
    true
}

/// See [`super::wait`].
pub(crate) fn wait(deadline: Option<u64>) {
    let deadline = deadline.unwrap_or(u64::MAX);
    let waited = with_stack(|stack| wait_on(stack, deadline));
    if waited.is_err() && time::monotonic_ns() < deadline {
        // No network: only the deadline can end the wait.
        time::poll(deadline);
    }
}

/// Runs `stack` until a socket may have changed or `deadline` passes,
/// sleeping in POLL while nothing is to be done.
fn wait_on(stack: &mut Stack<VmLink>, deadline: u64) {
    let mut eager = 0;
    loop {
        let now = time::monotonic_ns();
        if stack.poll(now) || now >= deadline {
            return;
        }
        let wake = stack
            .poll_delay_ns(now)
            .map_or(deadline, |delay| now.saturating_add(delay).min(deadline));
        if wake <= now && eager < EAGER_ROUNDS {
            eager += 1;
            continue;
        }
        eager = 0;
        stack.device.stats.polls += 1;
        if time::poll(wake) & POLL_READY_NET != 0 {
            stack.device.set_rx_ready();
        }
        if catch_up(stack) {
            // Restored: the sockets may see a new world; let the app look.
            return;
        }
    }
}

/// See [`super::poll`].
pub(crate) fn poll() -> bool {
    with_stack(|stack| stack.poll(time::monotonic_ns())).unwrap_or(false)
}

/// Calls `attempt` until it gives a value or fails, waiting for the
/// network in between; fails with [`Error::TimedOut`] once `deadline`
/// (instance-clock ns) has passed.
pub(crate) fn block_on<T>(
    deadline: Option<u64>,
    mut attempt: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    loop {
        if let Some(value) = attempt()? {
            return Ok(value);
        }
        if deadline.is_some_and(|d| time::monotonic_ns() >= d) {
            return Err(Error::TimedOut);
        }
        wait(deadline);
    }
}
