//! The monitor's own phase breakdown (`--timings` or `FLINT_TIMINGS=1`).

use std::time::{Duration, Instant};

/// Durations of named start-up phases.
pub struct Timings {
    enabled: bool,
    start: Instant,
    last: Instant,
    phases: Vec<Phase>,
}

/// One timed phase.
#[derive(Clone, Copy, Debug)]
pub struct Phase {
    /// What was done.
    pub name: &'static str,
    /// How long it took.
    pub took: Duration,
}

impl Timings {
    /// Starts timing now; records nothing unless `enabled`.
    pub fn new(enabled: bool) -> Timings {
        let now = Instant::now();
        Timings {
            enabled,
            start: now,
            last: now,
            phases: Vec::new(),
        }
    }

    /// Ends the phase `name` (it began where the previous one ended).
    pub fn mark(&mut self, name: &'static str) {
        if self.enabled {
            let now = Instant::now();
            self.phases.push(Phase {
                name,
                took: now - self.last,
            });
            self.last = now;
        }
    }

    /// True if phases are being recorded.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The recorded phases.
    pub fn phases(&self) -> &[Phase] {
        &self.phases
    }

    /// Prints one line per phase, and the wall time from start to the last
    /// phase, to stderr.
    pub fn report(&self) {
        if !self.enabled {
            return;
        }
        for phase in &self.phases {
            let us = phase.took.as_secs_f64() * 1e6;
            eprintln!("flint: timing: {:<16} {us:>9.1} us", phase.name);
        }
        let total = (self.last - self.start).as_secs_f64() * 1e6;
        eprintln!("flint: timing: {:<16} {total:>9.1} us", "total (wall)");
    }
}
