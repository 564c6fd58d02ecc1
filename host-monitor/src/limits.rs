//! Per-instance limits a hostile guest cannot talk its way past: console
//! output (`--console-limit BYTES[/RATE]`) and frames sent per second
//! (`--net-rate PPS`). Memory (`--mem`) and wall time (`--timeout`) are
//! limited elsewhere.
//!
//! A limit never stops the instance: like a serial line or a NIC with no
//! room, the excess is dropped, the guest is told it went out, and the loss
//! is counted (`--stats`, the `limits` line). The first time each limit is
//! hit, the monitor prints one line on stderr, so a hit is never silent;
//! that line is the one exception to "a guest that exits on its own leaves
//! stderr empty".

use std::time::Instant;

/// The limits of one instance; the default is none at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Console output.
    pub console: Option<ConsoleLimit>,
    /// Frames the guest may send per second (NET_WRITE).
    pub net_pps: Option<u64>,
}

/// `--console-limit BYTES[/RATE]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsoleLimit {
    /// Bytes of console output over the instance's life.
    pub total: u64,
    /// Bytes per second (bursts of up to one second's worth).
    pub per_second: Option<u64>,
}

/// What the limits have dropped so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitCounts {
    /// Console bytes dropped because the total was reached.
    pub console_total_dropped: u64,
    /// Console bytes dropped because they came faster than the rate.
    pub console_rate_dropped: u64,
    /// Frames from the guest dropped by `--net-rate`.
    pub net_rate_dropped: u64,
}

/// Parses `--console-limit`: `BYTES` or `BYTES/RATE`, each a size such as
/// `4096`, `64K` or `1M` (RATE in bytes per second).
pub fn parse_console_limit(text: &str) -> Result<ConsoleLimit, String> {
    let (total, rate) = match text.split_once('/') {
        Some((total, rate)) => (total, Some(rate)),
        None => (text, None),
    };
    let total = crate::cli::parse_size(total)?;
    let per_second = rate.map(crate::cli::parse_size).transpose()?;
    Ok(ConsoleLimit { total, per_second })
}

/// Parses `--net-rate`: a positive number of frames per second.
pub fn parse_net_rate(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("'{text}' is not a positive number of frames per second"))
}

/// A token bucket: `rate` tokens a second, holding at most one second's
/// worth, full at the start.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: u64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `rate` tokens a second.
    pub fn new(rate: u64) -> TokenBucket {
        TokenBucket {
            rate,
            tokens: rate as f64,
            last: Instant::now(),
        }
    }

    /// Takes up to `wanted` tokens at `now`; how many it got.
    pub fn take(&mut self, wanted: u64, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.rate as f64).min(self.rate as f64);
        let got = (self.tokens.floor() as u64).min(wanted);
        self.tokens -= got as f64;
        got
    }
}

/// The console limit of one instance at run time.
#[derive(Clone, Debug)]
pub struct ConsoleLimiter {
    limit: ConsoleLimit,
    written: u64,
    rate: Option<TokenBucket>,
    total_reported: bool,
    rate_reported: bool,
}

impl ConsoleLimiter {
    /// Enforces `limit` from now on.
    pub fn new(limit: ConsoleLimit) -> ConsoleLimiter {
        ConsoleLimiter {
            limit,
            written: 0,
            rate: limit.per_second.map(TokenBucket::new),
            total_reported: false,
            rate_reported: false,
        }
    }

    /// How many of `len` bytes written now may go out (a prefix); the rest
    /// are counted in `counts`, and the first hit of each limit reported.
    pub fn allow(&mut self, len: u64, now: Instant, counts: &mut LimitCounts) -> u64 {
        let room = self.limit.total.saturating_sub(self.written);
        let mut allowed = len.min(room);
        if allowed < len {
            counts.console_total_dropped += len - allowed;
            if !self.total_reported {
                self.total_reported = true;
                report(&format!(
                    "console limit of {} bytes reached; further console output is dropped \
                     (the instance goes on)",
                    self.limit.total
                ));
            }
        }
        if let Some(bucket) = self.rate.as_mut() {
            let got = bucket.take(allowed, now);
            if got < allowed {
                counts.console_rate_dropped += allowed - got;
                if !self.rate_reported {
                    self.rate_reported = true;
                    report(&format!(
                        "console rate limit of {} bytes/s reached; output beyond it is dropped \
                         (the instance goes on)",
                        bucket.rate
                    ));
                }
            }
            allowed = got;
        }
        self.written += allowed;
        allowed
    }
}

/// The `--net-rate` limit of one instance at run time.
#[derive(Clone, Debug)]
pub struct NetRateLimiter {
    bucket: TokenBucket,
    reported: bool,
}

impl NetRateLimiter {
    /// At most `pps` frames a second (bursts of up to one second's worth).
    pub fn new(pps: u64) -> NetRateLimiter {
        NetRateLimiter {
            bucket: TokenBucket::new(pps),
            reported: false,
        }
    }

    /// True if one more frame may go out now; a frame that may not is
    /// counted in `counts`, and the first one reported.
    pub fn allow(&mut self, now: Instant, counts: &mut LimitCounts) -> bool {
        if self.bucket.take(1, now) == 1 {
            return true;
        }
        counts.net_rate_dropped += 1;
        if !self.reported {
            self.reported = true;
            report(&format!(
                "network rate limit of {} frames/s reached; frames beyond it are dropped \
                 (the instance goes on)",
                self.bucket.rate
            ));
        }
        false
    }
}

/// Where this thread's limit hits go instead of stderr.
type Reporter = Box<dyn Fn(&str)>;

thread_local! {
    static REPORTER: std::cell::RefCell<Option<Reporter>> =
        const { std::cell::RefCell::new(None) };
}

/// Sends the limit hits of instances run on this thread to `reporter`
/// (e.g. a fleet worker's event naming the instance) instead of one
/// `flint: limit:` line on stderr; `None` goes back to stderr.
pub fn report_to(reporter: Option<Reporter>) {
    REPORTER.with(|r| *r.borrow_mut() = reporter);
}

/// The one report of a limit hit.
fn report(what: &str) {
    let sent = REPORTER.with(|r| match &*r.borrow() {
        Some(reporter) => {
            reporter(what);
            true
        }
        None => false,
    });
    if !sent {
        eprintln!("flint: limit: {what}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn console_limit_takes_a_total_and_an_optional_rate() {
        assert_eq!(
            parse_console_limit("1M"),
            Ok(ConsoleLimit {
                total: 1 << 20,
                per_second: None
            })
        );
        assert_eq!(
            parse_console_limit("64K/4K"),
            Ok(ConsoleLimit {
                total: 64 << 10,
                per_second: Some(4 << 10)
            })
        );
        for bad in ["", "0", "1M/", "/4K", "1M/0", "x/1", "1M/4K/2"] {
            assert!(parse_console_limit(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn net_rate_is_a_positive_number() {
        assert_eq!(parse_net_rate("1000"), Ok(1000));
        for bad in ["", "0", "-5", "1.5", "1k"] {
            assert!(parse_net_rate(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn console_output_past_the_total_is_dropped_and_counted() {
        let mut limiter = ConsoleLimiter::new(ConsoleLimit {
            total: 100,
            per_second: None,
        });
        let mut counts = LimitCounts::default();
        let now = Instant::now();
        assert_eq!(limiter.allow(60, now, &mut counts), 60);
        assert_eq!(limiter.allow(60, now, &mut counts), 40);
        assert_eq!(limiter.allow(10, now, &mut counts), 0);
        assert_eq!(counts.console_total_dropped, 30);
        assert_eq!(counts.console_rate_dropped, 0);
    }

    #[test]
    fn console_rate_refills_with_time_up_to_one_second() {
        let mut limiter = ConsoleLimiter::new(ConsoleLimit {
            total: u64::MAX,
            per_second: Some(1000),
        });
        let mut counts = LimitCounts::default();
        let t0 = Instant::now();
        assert_eq!(limiter.allow(1500, t0, &mut counts), 1000);
        assert_eq!(counts.console_rate_dropped, 500);
        let half = t0 + Duration::from_millis(500);
        assert_eq!(limiter.allow(1000, half, &mut counts), 500);
        // A long pause refills one second's worth, no more.
        let later = half + Duration::from_secs(10);
        assert_eq!(limiter.allow(5000, later, &mut counts), 1000);
    }

    #[test]
    fn net_rate_drops_frames_beyond_the_rate() {
        let mut limiter = NetRateLimiter::new(10);
        let mut counts = LimitCounts::default();
        let t0 = Instant::now();
        let sent = (0..25).filter(|_| limiter.allow(t0, &mut counts)).count();
        assert_eq!(sent, 10);
        assert_eq!(counts.net_rate_dropped, 15);
        let later = t0 + Duration::from_millis(200);
        let sent = (0..25)
            .filter(|_| limiter.allow(later, &mut counts))
            .count();
        assert_eq!(sent, 2);
    }
}
