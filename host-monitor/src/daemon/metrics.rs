//! `GET /metrics`: the Prometheus text exposition format (version 0.0.4)
//! of every instance's metrics and the host totals.

use super::model::{HostInfo, InstanceInfo, Metrics};
use std::fmt::Write;

/// The whole exposition.
pub fn render(host: &HostInfo, instances: &[InstanceInfo]) -> String {
    let mut out = String::new();
    let o = &mut out;
    family(o, "flint_up", "gauge", "The daemon is serving.");
    line(o, "flint_up", &[], 1.0);
    family(
        o,
        "flint_instances",
        "gauge",
        "Instances the daemon holds, by state.",
    );
    for (state, n) in &host.instances {
        line(o, "flint_instances", &[("state", state)], *n as f64);
    }
    family(
        o,
        "flint_instance_cap",
        "gauge",
        "Most instances holding a VM at once.",
    );
    line(o, "flint_instance_cap", &[], host.instance_cap as f64);
    family(
        o,
        "flint_memory_budget_bytes",
        "gauge",
        "Guest RAM the daemon may hand out.",
    );
    line(
        o,
        "flint_memory_budget_bytes",
        &[],
        host.memory_budget_bytes as f64,
    );
    family(
        o,
        "flint_memory_reserved_bytes",
        "gauge",
        "Guest RAM of the instances holding a VM.",
    );
    line(
        o,
        "flint_memory_reserved_bytes",
        &[],
        host.memory_reserved_bytes as f64,
    );
    if let Some(bytes) = host.host_mem_available_bytes {
        family(
            o,
            "flint_host_memory_available_bytes",
            "gauge",
            "MemAvailable of the host.",
        );
        line(o, "flint_host_memory_available_bytes", &[], bytes as f64);
    }
    if let Some(bytes) = host.daemon_rss_bytes {
        family(
            o,
            "flint_daemon_rss_bytes",
            "gauge",
            "Resident memory of the daemon process.",
        );
        line(o, "flint_daemon_rss_bytes", &[], bytes as f64);
    }
    host_totals(o, &host.totals);

    family(
        o,
        "flint_instance_info",
        "gauge",
        "One per instance: its image and state.",
    );
    for i in instances {
        line(
            o,
            "flint_instance_info",
            &[("id", &i.id), ("image", &i.image), ("state", i.state)],
            1.0,
        );
    }
    per_instance(
        o,
        instances,
        "flint_instance_uptime_seconds",
        "gauge",
        "Seconds since start.",
        |m| vec![(vec![], m.uptime_secs)],
    );
    per_instance(
        o,
        instances,
        "flint_instance_vm_exits_total",
        "counter",
        "VM exits by reason.",
        |m| labelled(&m.vm_exits, "reason"),
    );
    per_instance(
        o,
        instances,
        "flint_instance_hypercalls_total",
        "counter",
        "Hypercalls by name.",
        |m| labelled(&m.hypercalls, "call"),
    );
    per_instance(
        o,
        instances,
        "flint_instance_console_bytes_total",
        "counter",
        "Console bytes written by the guest.",
        |m| vec![(vec![], m.console.bytes as f64)],
    );
    per_instance(
        o,
        instances,
        "flint_instance_console_writes_total",
        "counter",
        "Console writes by the guest.",
        |m| vec![(vec![], m.console.writes as f64)],
    );
    per_instance(
        o,
        instances,
        "flint_instance_net_bytes_total",
        "counter",
        "Network bytes (rx: to the guest).",
        |m| {
            vec![
                (vec![("direction", "rx".to_owned())], m.net.rx_bytes as f64),
                (vec![("direction", "tx".to_owned())], m.net.tx_bytes as f64),
            ]
        },
    );
    per_instance(
        o,
        instances,
        "flint_instance_net_packets_total",
        "counter",
        "Network frames (rx: to the guest).",
        |m| {
            vec![
                (
                    vec![("direction", "rx".to_owned())],
                    m.net.rx_packets as f64,
                ),
                (
                    vec![("direction", "tx".to_owned())],
                    m.net.tx_packets as f64,
                ),
            ]
        },
    );
    per_instance(
        o,
        instances,
        "flint_instance_vcpu_seconds_total",
        "counter",
        "CPU time of the vCPU thread.",
        |m| vec![(vec![], m.vcpu_time_secs)],
    );
    per_instance(
        o,
        instances,
        "flint_instance_memory_touched_bytes",
        "gauge",
        "Resident guest RAM.",
        |m| vec![(vec![], m.memory_touched_bytes as f64)],
    );
    out
}

type Samples = Vec<(Vec<(&'static str, String)>, f64)>;

fn labelled(map: &std::collections::BTreeMap<&'static str, u64>, label: &'static str) -> Samples {
    map.iter()
        .filter(|(k, _)| **k != "total")
        .map(|(k, v)| (vec![(label, k.to_lowercase())], *v as f64))
        .collect()
}

fn host_totals(o: &mut String, m: &Metrics) {
    let totals: [(&str, &str, Samples); 6] = [
        (
            "flint_vm_exits_total",
            "VM exits of all instances by reason.",
            labelled(&m.vm_exits, "reason"),
        ),
        (
            "flint_hypercalls_total",
            "Hypercalls of all instances by name.",
            labelled(&m.hypercalls, "call"),
        ),
        (
            "flint_console_bytes_total",
            "Console bytes of all instances.",
            vec![(vec![], m.console.bytes as f64)],
        ),
        (
            "flint_net_bytes_total",
            "Network bytes of all instances.",
            vec![
                (vec![("direction", "rx".to_owned())], m.net.rx_bytes as f64),
                (vec![("direction", "tx".to_owned())], m.net.tx_bytes as f64),
            ],
        ),
        (
            "flint_vcpu_seconds_total",
            "CPU time of all vCPU threads.",
            vec![(vec![], m.vcpu_time_secs)],
        ),
        (
            "flint_memory_touched_bytes",
            "Resident guest RAM of all instances.",
            vec![(vec![], m.memory_touched_bytes as f64)],
        ),
    ];
    for (name, help, samples) in totals {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        family(o, name, kind, help);
        for (labels, value) in samples {
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            line(o, name, &labels, value);
        }
    }
}

fn per_instance(
    o: &mut String,
    instances: &[InstanceInfo],
    name: &str,
    kind: &str,
    help: &str,
    samples: impl Fn(&Metrics) -> Samples,
) {
    family(o, name, kind, help);
    for i in instances {
        for (labels, value) in samples(&i.metrics) {
            let mut all: Vec<(&str, &str)> = vec![("id", &i.id)];
            all.extend(labels.iter().map(|(k, v)| (*k, v.as_str())));
            line(o, name, &all, value);
        }
    }
}

fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

fn line(o: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    o.push_str(name);
    if !labels.is_empty() {
        o.push('{');
        for (n, (k, v)) in labels.iter().enumerate() {
            if n > 0 {
                o.push(',');
            }
            let _ = write!(o, "{k}=\"{}\"", escape(v));
        }
        o.push('}');
    }
    let _ = writeln!(o, " {value}");
}

/// Label values escape backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_follow_the_text_format() {
        let mut o = String::new();
        line(
            &mut o,
            "flint_x_total",
            &[("id", "1"), ("call", "a\"b")],
            3.0,
        );
        assert_eq!(o, "flint_x_total{id=\"1\",call=\"a\\\"b\"} 3\n");
    }
}
