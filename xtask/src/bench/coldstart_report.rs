//! The coldstart bench's results: one row per case, the table a person
//! reads and the JSON a program reads.

use std::time::Duration;

use super::coldstart::WARMUP;
use super::coldstart_cases::InProcess;
use super::stats::{json_ns, json_str, Samples};

/// One case's result: measured, or why not.
pub struct Row {
    pub name: String,
    pub endpoints: &'static str,
    pub result: std::result::Result<Measured, String>,
    /// The target, e.g. `p50 <= 1.3x native` or `p50 <= 150 us`.
    pub target: Option<Target>,
}

/// A measured case.
pub struct Measured {
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub n: usize,
    /// Every sample in run order (empty if only percentiles are known).
    pub samples: Vec<Duration>,
    /// Where the time goes, one line per phase.
    pub phases: Vec<String>,
}

impl Measured {
    pub fn from_samples(samples: Vec<Duration>, phases: Vec<String>) -> Measured {
        let s = Samples::new(samples.clone());
        Measured {
            p50: s.p50(),
            p90: s.p90(),
            p99: s.p99(),
            n: samples.len(),
            samples,
            phases,
        }
    }

    pub fn from_inprocess(c: InProcess) -> Measured {
        Measured {
            p50: c.p50,
            p90: c.p90,
            p99: c.p99,
            n: c.n as usize,
            samples: c.samples,
            phases: c
                .phases
                .iter()
                .map(|(name, d)| format!("{name}: {}", us(*d)))
                .collect(),
        }
    }
}

#[derive(Clone, Copy)]
pub enum Target {
    /// p50 at most this factor of the native baseline's p50.
    RatioToNative(f64),
    /// p50 at most this long.
    Within(Duration),
}

/// A duration for the table: microseconds below 10 ms, else milliseconds.
fn us(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 10_000.0 {
        format!("{us:.1} us")
    } else {
        format!("{:.2} ms", us / 1e3)
    }
}

/// The native baseline's p50, if it was measured.
fn native_p50(rows: &[Row]) -> Option<Duration> {
    rows.first()?.result.as_ref().ok().map(|m| m.p50)
}

/// "met" / "NOT met" and the numbers, for a row with a target.
fn verdict(row: &Row, rows: &[Row]) -> Option<(bool, String)> {
    let m = row.result.as_ref().ok()?;
    match row.target? {
        Target::RatioToNative(r) => {
            let native = native_p50(rows)?;
            let got = ratio(m.p50, native);
            Some((got <= r, format!("p50 <= {r}x native ({got:.2}x)")))
        }
        Target::Within(limit) => Some((m.p50 <= limit, format!("p50 <= {}", us(limit)))),
    }
}

pub fn table(rows: &[Row], runs: usize) -> String {
    let mut t = format!(
        "\ncoldstart: {runs} runs per case; process cases interleaved round by round \
         (after {WARMUP} warm-up rounds), in-process cases interleaved among themselves\n\n"
    );
    t += &format!(
        "{:<28} {:>10} {:>10} {:>10}  {}\n",
        "case", "p50", "p90", "p99", "target"
    );
    for row in rows {
        match &row.result {
            Ok(m) => {
                let target = match verdict(row, rows) {
                    Some((met, what)) => format!("{what}: {}", if met { "met" } else { "NOT met" }),
                    None => String::new(),
                };
                t += &format!(
                    "{:<28} {:>10} {:>10} {:>10}  {target}\n",
                    row.name,
                    us(m.p50),
                    us(m.p90),
                    us(m.p99)
                );
            }
            Err(why) => t += &format!("{:<28} not available: {why}\n", row.name),
        }
    }
    t += "\nendpoints:\n";
    for row in rows {
        t += &format!("  {:<28} {}\n", row.name, row.endpoints);
    }
    for row in rows {
        let Ok(m) = &row.result else { continue };
        if m.phases.is_empty() {
            continue;
        }
        t += &format!("\nphases of {} (median per phase, or one run):\n", row.name);
        for line in &m.phases {
            t += &format!("  {line}\n");
        }
    }
    t
}

pub fn json(rows: &[Row], runs: usize) -> String {
    let mut cases = Vec::new();
    for row in rows {
        let mut fields = vec![
            format!("\"case\": {}", json_str(&row.name)),
            format!("\"endpoints\": {}", json_str(row.endpoints)),
        ];
        match &row.result {
            Ok(m) => {
                fields.push("\"available\": true".into());
                fields.push(format!("\"n\": {}", m.n));
                fields.push(format!(
                    "\"p50_ns\": {}, \"p90_ns\": {}, \"p99_ns\": {}",
                    m.p50.as_nanos(),
                    m.p90.as_nanos(),
                    m.p99.as_nanos()
                ));
                if let Some((met, what)) = verdict(row, rows) {
                    fields.push(format!(
                        "\"target\": {}, \"target_met\": {met}",
                        json_str(&what)
                    ));
                }
                let phases: Vec<String> = m.phases.iter().map(|l| json_str(l)).collect();
                fields.push(format!("\"phases\": [{}]", phases.join(", ")));
                if !m.samples.is_empty() {
                    let all = Samples::new(m.samples.clone());
                    fields.push(format!("\"stats\": {}", all.json()));
                }
                fields.push(format!("\"samples_ns\": {}", json_ns(&m.samples)));
            }
            Err(why) => {
                fields.push("\"available\": false".into());
                fields.push(format!("\"why\": {}", json_str(why)));
            }
        }
        cases.push(format!("    {{{}}}", fields.join(", ")));
    }
    format!(
        "{{\n  \"bench\": \"coldstart\",\n  \"runs\": {runs},\n  \"warmup_runs\": {WARMUP},\n  \"cases\": [\n{}\n  ]\n}}\n",
        cases.join(",\n")
    )
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_cases_say_why_and_targets_get_a_verdict() {
        use std::time::Duration;
        let measured = |p50_us: u64| {
            let d = Duration::from_micros(p50_us);
            Ok(Measured {
                p50: d,
                p90: d,
                p99: d,
                n: 1,
                samples: vec![d],
                phases: vec!["create VM 50 us".into()],
            })
        };
        let rows = [
            Row {
                name: "native".into(),
                endpoints: "e",
                result: measured(200),
                target: None,
            },
            Row {
                name: "flint run".into(),
                endpoints: "e",
                result: measured(250),
                target: Some(Target::RatioToNative(1.3)),
            },
            Row {
                name: "reset".into(),
                endpoints: "e",
                result: measured(60),
                target: Some(Target::Within(Duration::from_micros(50))),
            },
            Row {
                name: "restore".into(),
                endpoints: "e",
                result: Err("this flint has no --restore".into()),
                target: None,
            },
        ];
        let t = table(&rows, 1);
        assert!(t.contains("p50 <= 1.3x native (1.25x): met"), "{t}");
        assert!(t.contains("p50 <= 50.0 us: NOT met"), "{t}");
        assert!(
            t.contains("restore                      not available: this flint has no --restore"),
            "{t}"
        );
        assert!(t.contains("create VM 50 us"), "{t}");
        let j = json(&rows, 1);
        assert!(
            j.contains("\"available\": false, \"why\": \"this flint has no --restore\""),
            "{j}"
        );
        assert!(j.contains("\"target_met\": true"), "{j}");
    }
}
