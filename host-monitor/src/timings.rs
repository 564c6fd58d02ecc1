//! The monitor's own phase breakdown (`--timings` or `FLINT_TIMINGS=1`).

use std::time::{Duration, Instant};

/// Durations of named start-up phases.
pub struct Timings {
    enabled: bool,
    last: Instant,
    phases: Vec<(&'static str, Duration)>,
}

impl Timings {
    /// Starts timing now; records nothing unless `enabled`.
    pub fn new(enabled: bool) -> Timings {
        Timings {
            enabled,
            last: Instant::now(),
            phases: Vec::new(),
        }
    }

    /// Ends the phase `name` (it began where the previous one ended).
    pub fn mark(&mut self, name: &'static str) {
        if self.enabled {
            let now = Instant::now();
            self.phases.push((name, now - self.last));
            self.last = now;
        }
    }

    /// True if phases are being recorded.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The recorded phases.
    pub fn phases(&self) -> &[(&'static str, Duration)] {
        &self.phases
    }

    /// Prints one line per phase, and the total, to stderr.
    pub fn report(&self) {
        if !self.enabled {
            return;
        }
        let mut total = Duration::ZERO;
        for (name, took) in &self.phases {
            total += *took;
            eprintln!(
                "flint: timing: {name:<16} {:>9.1} us",
                took.as_secs_f64() * 1e6
            );
        }
        eprintln!(
            "flint: timing: {:<16} {:>9.1} us",
            "total",
            total.as_secs_f64() * 1e6
        );
    }
}
