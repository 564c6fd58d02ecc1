//! The coldstart bench's plot, hand-written SVG: one histogram per case on
//! a shared logarithmic time axis, with p50/p90/p99 marked; a case known
//! only by its percentiles gets the marks alone, one not measured a line
//! saying why.

use std::fmt::Write;
use std::time::Duration;

use super::coldstart_report::Row;

const W: f64 = 760.0;
const LEFT: f64 = 210.0;
const RIGHT: f64 = 20.0;
const ROW_H: f64 = 70.0;
const TOP: f64 = 40.0;
const BINS: usize = 60;

/// The time axis: decades from `lo` to `hi` microseconds.
struct Axis {
    lo: f64,
    hi: f64,
}

impl Axis {
    fn new(rows: &[Row]) -> Axis {
        let all = rows
            .iter()
            .filter_map(|r| r.result.as_ref().ok())
            .flat_map(|m| m.samples.iter().copied().chain([m.p50, m.p90, m.p99]))
            .map(|d| d.as_secs_f64() * 1e6)
            .filter(|&us| us > 0.0);
        let (min, max) = all.fold((f64::MAX, 0.0_f64), |(a, b), us| (a.min(us), b.max(us)));
        if max == 0.0 {
            return Axis { lo: 1.0, hi: 4.0 };
        }
        Axis {
            lo: min.log10().floor(),
            hi: max.log10().ceil().max(min.log10().floor() + 1.0),
        }
    }

    /// x of `d` on the axis.
    fn x(&self, d: Duration) -> f64 {
        let us = (d.as_secs_f64() * 1e6)
            .max(1e-3)
            .log10()
            .clamp(self.lo, self.hi);
        LEFT + (us - self.lo) / (self.hi - self.lo) * (W - LEFT - RIGHT)
    }
}

/// The SVG for `rows`.
pub fn svg(rows: &[Row]) -> String {
    let axis = Axis::new(rows);
    let h = TOP + ROW_H * rows.len() as f64 + 50.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{W}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">Flint cold start: time to first byte / first hypercall (log scale)</text>"#,
        W / 2.0
    );
    for (i, row) in rows.iter().enumerate() {
        let top = TOP + ROW_H * i as f64;
        let base = top + ROW_H - 14.0;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            base - 20.0,
            escape(&row.name)
        );
        let m = match &row.result {
            Ok(m) => m,
            Err(why) => {
                let _ = writeln!(
                    out,
                    r##"<text x="{}" y="{}" fill="#888">not available: {}</text>"##,
                    LEFT + 4.0,
                    base - 20.0,
                    escape(why)
                );
                continue;
            }
        };
        let _ = writeln!(
            out,
            r##"<path d="M{LEFT} {base} H{}" stroke="#bbb"/>"##,
            W - RIGHT
        );
        histogram(&mut out, &axis, &m.samples, top + 6.0, base);
        for (label, d, colour) in [
            ("p50", m.p50, "#d62728"),
            ("p90", m.p90, "#ff7f0e"),
            ("p99", m.p99, "#9467bd"),
        ] {
            let x = axis.x(d);
            let _ = writeln!(
                out,
                r#"<path d="M{x:.1} {} V{base}" stroke="{colour}" stroke-width="1.5"><title>{label} {:.1} us</title></path>"#,
                top + 4.0,
                d.as_secs_f64() * 1e6
            );
        }
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" text-anchor="end" fill="#555" font-size="11">p50 {:.1} us</text>"##,
            LEFT - 8.0,
            base - 4.0,
            m.p50.as_secs_f64() * 1e6
        );
    }
    // The axis, one tick per decade.
    let y = TOP + ROW_H * rows.len() as f64 + 4.0;
    let _ = writeln!(
        out,
        r#"<path d="M{LEFT} {y} H{}" stroke="black"/>"#,
        W - RIGHT
    );
    let mut decade = axis.lo;
    while decade <= axis.hi + 1e-9 {
        let x = axis.x(Duration::from_secs_f64(10f64.powi(decade as i32) / 1e6));
        let label = match 10f64.powi(decade as i32) {
            us if us >= 1000.0 => format!("{} ms", us / 1000.0),
            us => format!("{us} us"),
        };
        let _ = writeln!(
            out,
            r#"<path d="M{x:.1} {y} v5" stroke="black"/><text x="{x:.1}" y="{}" text-anchor="middle">{label}</text>"#,
            y + 18.0
        );
        decade += 1.0;
    }
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" fill="#555" font-size="11">red p50, orange p90, purple p99; bars: share of runs per bin</text>"##,
        LEFT,
        y + 38.0
    );
    out.push_str("</svg>\n");
    out
}

/// Bars of `samples` in [`BINS`] log-spaced bins between `top` and `base`.
fn histogram(out: &mut String, axis: &Axis, samples: &[Duration], top: f64, base: f64) {
    if samples.is_empty() {
        return;
    }
    let mut counts = [0usize; BINS];
    let span = W - LEFT - RIGHT;
    for &d in samples {
        let bin = ((axis.x(d) - LEFT) / span * BINS as f64) as usize;
        counts[bin.min(BINS - 1)] += 1;
    }
    let max = *counts.iter().max().unwrap_or(&1) as f64;
    let width = span / BINS as f64;
    for (i, &c) in counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let bar = c as f64 / max * (base - top);
        let _ = writeln!(
            out,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{bar:.1}" fill="#1f77b4" opacity="0.75"><title>{c} runs</title></rect>"##,
            LEFT + i as f64 * width,
            base - bar,
            width - 0.5
        );
    }
}

/// `s` safe inside SVG text.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::coldstart_report::{Measured, Target};

    #[test]
    fn measured_partial_and_missing_cases_all_draw() {
        let us = Duration::from_micros;
        let rows = vec![
            Row {
                name: "native".into(),
                endpoints: "",
                result: Ok(Measured {
                    p50: us(900),
                    p90: us(1000),
                    p99: us(1500),
                    n: 3,
                    samples: vec![us(200), us(1000), us(5000)],
                    phases: vec![],
                }),
                target: None,
            },
            Row {
                name: "reset".into(),
                endpoints: "",
                result: Ok(Measured {
                    p50: us(30),
                    p90: us(40),
                    p99: us(50),
                    n: 0,
                    samples: vec![],
                    phases: vec![],
                }),
                target: Some(Target::Within(us(50))),
            },
            Row {
                name: "qemu <x>".into(),
                endpoints: "",
                result: Err("not installed".into()),
                target: None,
            },
        ];
        let svg = svg(&rows);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("not available: not installed"));
        assert!(svg.contains("qemu &lt;x&gt;"));
        assert!(svg.contains("10 us") && svg.contains("10 ms"));
        assert_eq!(svg.matches("runs</title>").count(), 3);
    }
}
