//! A guest on a real TAP device, inside a network namespace the test makes
//! (and deletes, even on failure): `curl` and `ping` reach it from inside
//! that namespace, and it costs no CPU while idle there. Nothing here
//! touches the host's own namespace.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use support::net::cpu_time;
use support::netns::NetNs;
use support::tool::{curl, tool_or_skip};
use support::{image, kvm_or_skip, Run};

const TAP: &str = "ftap0";
const HOST_ADDR: &str = "10.200.0.1/24";
const GUEST_ADDR: &str = "10.200.0.2";

#[test]
fn tap_guest_answers_curl_and_ping_inside_a_namespace() {
    if !kvm_or_skip() || !tool_or_skip("curl", "curl") || !tool_or_skip("ping", "iputils-ping") {
        return;
    }
    let Some(ns) = NetNs::create_or_skip() else {
        return;
    };
    ns.ip(&["tuntap", "add", "dev", TAP, "mode", "tap"]);
    ns.ip(&["addr", "add", HOST_ADDR, "dev", TAP]);
    ns.ip(&["link", "set", TAP, "up"]);

    let tap = format!("tap:{TAP}");
    let guest = format!("{GUEST_ADDR}/24");
    let server = Run::image(&image("http"))
        .opts(&["--net", &tap, "--ip", &guest])
        .prefix(&ns.exec_prefix())
        .serve();
    let listening = server.wait_listening();
    if listening != format!("http: listening on {GUEST_ADDR}:80") {
        server.fail(format_args!(
            "expected the guest to listen on {GUEST_ADDR}:80, it said {listening:?}"
        ));
    }
    // `ip netns exec` must have exec'd flint in place: the guard kills
    // this PID.
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", server.pid())).unwrap_or_default();
    if comm.trim() != "flint" {
        server.fail(format_args!(
            "expected PID {} to be flint itself, it is {comm:?}",
            server.pid()
        ));
    }

    let prefix = ns.exec_prefix();
    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let health = curl(&prefix, &[], &format!("http://{GUEST_ADDR}/health"));
    if !health.out.ok() || health.status != 200 || health.body.trim_end() != "ok" {
        server.fail(format_args!(
            "curl /health inside the namespace: expected 200 `ok`\n{}",
            health.out
        ));
    }
    let page = curl(&prefix, &[], &format!("http://{GUEST_ADDR}/"));
    if !page.out.ok() || page.status != 200 || page.body.is_empty() {
        server.fail(format_args!(
            "curl / inside the namespace: expected 200 and a page\n{}",
            page.out
        ));
    }

    let ping = ns.run(
        "ping",
        &["-c", "3", "-i", "0.2", "-W", "2", "-n", GUEST_ADDR],
        Duration::from_secs(20),
    );
    if !ping.ok() || !ping.stdout.contains("3 received") {
        server.fail(format_args!(
            "ping -c 3 {GUEST_ADDR} inside the namespace: expected 3 replies\n{ping}"
        ));
    }
    // Idle on a TAP device, the guest sleeps in POLL too.
    let (cpu0, t0) = (cpu_time(server.pid()), Instant::now());
    thread::sleep(Duration::from_secs(2));
    let share = (cpu_time(server.pid()) - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64();
    if share > 0.05 {
        server.fail(format_args!(
            "idle on a TAP device, flint used {:.1}% of a core (bound 5%)",
            share * 100.0
        ));
    }
    // The guard order: flint first, then the namespace it lived in.
    drop(server);
    drop(ns);
}

#[test]
fn tap_guest_gets_its_address_and_the_devices_mtu() {
    if !kvm_or_skip() {
        return;
    }
    let Some(ns) = NetNs::create_or_skip() else {
        return;
    };
    ns.ip(&["tuntap", "add", "dev", TAP, "mode", "tap"]);
    ns.ip(&["link", "set", TAP, "mtu", "1400"]);
    let tap = format!("tap:{TAP}");
    let out = Run::image(&image("probe"))
        .opts(&[
            "--net",
            &tap,
            "--ip",
            "10.200.0.2/24",
            "--gateway",
            "10.200.0.1",
        ])
        .prefix(&ns.exec_prefix())
        .guest(&["net", "config"])
        .go();
    out.status(0);
    for (key, want) in [
        ("net_present", "1"),
        ("net_mac", "52:54:00:12:34:56"),
        ("net_ipv4", "10.200.0.2"),
        ("net_prefix_len", "24"),
        ("net_gateway", "10.200.0.1"),
        ("net_mtu", "1400"),
    ] {
        if out.value(key) != want {
            out.fail(format_args!("expected {key}={want}"));
        }
    }
    drop(ns);
}
