//! The density bench's plot, hand-written SVG: host memory per instance
//! (MemAvailable drop and RSS) and start rate, each against N.

use std::fmt::Write;

use super::density::Point;

const W: f64 = 420.0;
const H: f64 = 300.0;
const PAD: f64 = 64.0;

/// One panel: `series` of (label, colour, values per point) against N.
fn panel(
    out: &mut String,
    x0: f64,
    title: &str,
    unit: &str,
    points: &[Point],
    series: &[(&str, &str, Vec<f64>)],
) {
    let max_n = points.iter().map(|p| p.n).max().unwrap_or(1) as f64;
    let max_y = series
        .iter()
        .flat_map(|(_, _, v)| v.iter().copied())
        .fold(0.0_f64, f64::max)
        .max(1e-9)
        * 1.15;
    let x = |n: f64| x0 + PAD + n / max_n * (W - 1.5 * PAD);
    let y = |v: f64| H - PAD + 10.0 - v / max_y * (H - 1.7 * PAD);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="24" font-size="15" text-anchor="middle">{title}</text>"#,
        x0 + W / 2.0
    );
    // Axes and ticks.
    let (left, bottom) = (x0 + PAD, H - PAD + 10.0);
    let _ = writeln!(
        out,
        r#"<path d="M{left} 40 V{bottom} H{}" stroke="black" fill="none"/>"#,
        x0 + W - PAD / 2.0
    );
    for i in 0..=4 {
        let v = max_y * f64::from(i) / 4.0;
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text><path d="M{left} {:.1} h{}" stroke="#ddd"/>"##,
            left - 6.0,
            y(v) + 4.0,
            tick(v, max_y),
            y(v),
            W - 1.5 * PAD
        );
    }
    for p in points {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle">{}</text>"#,
            x(p.n as f64),
            bottom + 16.0,
            p.n
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">instances (N)</text>"#,
        x0 + W / 2.0,
        H - 8.0
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="12" transform="rotate(-90 {} {})" text-anchor="middle">{unit}</text>"#,
        x0 + 12.0,
        H / 2.0,
        x0 + 12.0,
        H / 2.0
    );
    // Lines, dots and a legend.
    for (i, (label, colour, values)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .zip(values)
            .map(|(p, v)| format!("{:.1},{:.1}", x(p.n as f64), y(*v)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" stroke="{colour}" stroke-width="2" fill="none"/>"#,
            path.join(" ")
        );
        for (p, v) in points.iter().zip(values) {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{colour}"/>"#,
                x(p.n as f64),
                y(*v)
            );
        }
        let ly = 48.0 + 16.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<rect x="{}" y="{}" width="12" height="4" fill="{colour}"/><text x="{}" y="{}" font-size="11">{label}</text>"#,
            x0 + W - 170.0,
            ly - 4.0,
            x0 + W - 152.0,
            ly
        );
    }
}

/// A tick label with as many decimals as the axis' scale needs.
fn tick(v: f64, max: f64) -> String {
    match max {
        m if m >= 50.0 => format!("{v:.0}"),
        m if m >= 5.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

/// The whole plot.
pub fn svg(points: &[Point]) -> String {
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{H}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
"#,
        2.0 * W
    );
    let mem = |f: fn(&Point) -> f64| points.iter().map(f).collect::<Vec<_>>();
    panel(
        &mut out,
        0.0,
        "host memory per idle instance",
        "MiB per instance",
        points,
        &[
            (
                "MemAvailable drop / N",
                "#c0392b",
                mem(Point::mem_per_instance_mib),
            ),
            ("RSS / N", "#2980b9", mem(Point::rss_per_instance_mib)),
        ],
    );
    panel(
        &mut out,
        W,
        "start rate",
        "instances per second",
        points,
        &[("start rate", "#27ae60", mem(|p| p.start_rate))],
    );
    out.push_str("</svg>\n");
    out
}
