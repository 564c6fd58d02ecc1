//! Percentiles of a set of durations, and their JSON form.

use std::fmt::Write;
use std::time::Duration;

/// A sorted set of samples.
pub struct Samples {
    sorted: Vec<Duration>,
}

impl Samples {
    pub fn new(mut samples: Vec<Duration>) -> Samples {
        assert!(!samples.is_empty(), "a bench needs at least one sample");
        samples.sort_unstable();
        Samples { sorted: samples }
    }

    /// The `q`-quantile (0 < q ≤ 1) by the nearest-rank method: the
    /// smallest sample with at least `q` of all samples at or below it.
    pub fn quantile(&self, q: f64) -> Duration {
        let rank = (q * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }

    pub fn p50(&self) -> Duration {
        self.quantile(0.50)
    }
    pub fn p90(&self) -> Duration {
        self.quantile(0.90)
    }
    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }

    pub fn min(&self) -> Duration {
        self.sorted[0]
    }

    pub fn max(&self) -> Duration {
        self.sorted[self.sorted.len() - 1]
    }

    pub fn mean(&self) -> Duration {
        self.sorted.iter().sum::<Duration>() / self.sorted.len() as u32
    }

    /// `{"p50_ns": .., "p90_ns": .., "p99_ns": .., "min_ns": .., "max_ns": ..,
    /// "mean_ns": ..}`.
    pub fn json(&self) -> String {
        format!(
            "{{\"p50_ns\": {}, \"p90_ns\": {}, \"p99_ns\": {}, \"min_ns\": {}, \"max_ns\": {}, \"mean_ns\": {}}}",
            self.p50().as_nanos(),
            self.p90().as_nanos(),
            self.p99().as_nanos(),
            self.min().as_nanos(),
            self.max().as_nanos(),
            self.mean().as_nanos()
        )
    }
}

/// Durations in run order as a JSON array of nanoseconds.
pub fn json_ns(samples: &[Duration]) -> String {
    let mut out = String::from("[");
    for (i, d) in samples.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(out, "{sep}{}", d.as_nanos());
    }
    out.push(']');
    out
}

/// `s` as a JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(v: &[u64]) -> Samples {
        Samples::new(v.iter().map(|&u| Duration::from_micros(u)).collect())
    }

    #[test]
    fn nearest_rank_quantiles() {
        let s = us(&(1..=100).rev().collect::<Vec<_>>());
        assert_eq!(s.p50(), Duration::from_micros(50));
        assert_eq!(s.p90(), Duration::from_micros(90));
        assert_eq!(s.p99(), Duration::from_micros(99));
        assert_eq!(s.min(), Duration::from_micros(1));
        assert_eq!(s.max(), Duration::from_micros(100));
    }

    #[test]
    fn one_sample_is_every_quantile() {
        let s = us(&[7]);
        assert_eq!(s.p50(), s.p99());
        assert_eq!(s.mean(), Duration::from_micros(7));
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n"), r#""a\"b\\c\u000a""#);
    }
}
