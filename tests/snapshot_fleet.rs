//! A fleet from one snapshot: `flint fleet -n N --restore FILE` restores
//! every instance from the same file, each with its own identity on the
//! fleet's switch, and each guest must take it in (ABI.md section 3).

#[path = "snapshot_support/mod.rs"]
mod snap;
mod support;

use std::collections::{BTreeMap, HashSet};

use support::net::free_port;
use support::{kvm_or_skip, Run};

const N: usize = 4;

#[test]
fn a_fleet_restored_from_one_snapshot_has_n_distinct_identities() {
    if !kvm_or_skip() {
        return;
    }
    let publish = |port: u16| format!("127.0.0.1:{port}:80");
    let file = snap::take(
        "probe",
        &["--publish", &publish(free_port())],
        &["snapshot-identity"],
    );
    let out = Run::raw(&[
        "fleet",
        "-n",
        &N.to_string(),
        "--restore",
        file.to_str().unwrap(),
        "--publish",
        &publish(free_port()),
    ])
    .go();
    out.status(0);
    // `[ID] after key=value ...` lines, per instance id.
    let mut by_id: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for line in out.stdout_str().lines() {
        let Some((id, rest)) = line
            .strip_prefix('[')
            .and_then(|l| l.split_once("] after "))
        else {
            continue;
        };
        let report = by_id.entry(id.to_owned()).or_default();
        for pair in rest.split(' ') {
            if let Some((k, v)) = pair.split_once('=') {
                report.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    if by_id.len() != N {
        out.fail(format_args!(
            "expected {N} restored instances to report, saw {}",
            by_id.len()
        ));
    }
    for (id, report) in &by_id {
        if report.get("generation").map(String::as_str) != Some("1")
            || report.get("instance_id") != Some(id)
            || report.get("went_back").map(String::as_str) != Some("0")
        {
            out.fail(format_args!("instance {id}: generation 1, its own id and a clock that did not go back expected, got {report:?}"));
        }
    }
    for key in ["random", "mac", "ipv4"] {
        let distinct: HashSet<_> = by_id.values().filter_map(|r| r.get(key)).collect();
        if distinct.len() != N {
            out.fail(format_args!(
                "{N} restored instances must have {N} distinct `{key}`s"
            ));
        }
    }
}
