//! Bad network options of `flint run` are status 125 with one stderr line
//! and no guest output, before any guest runs.

mod support;

use std::net::TcpListener;
use std::time::Duration;

use support::net::free_port;
use support::netns::NetNs;
use support::{image, kvm_or_skip, Run};

/// `flint run OPTS http.elf` exits 125 with one stderr line and no guest
/// output.
fn refused(opts: &[&str]) {
    if !kvm_or_skip() {
        return;
    }
    refused_run(Run::image(&image("http")).opts(opts));
}

fn refused_run(run: Run) {
    let out = run.limit(Duration::from_secs(10)).go();
    out.status(125);
    out.one_stderr_line();
    if !out.stdout.is_empty() {
        out.fail("no guest may run for a bad command line");
    }
    let err = out.stderr_str();
    if err.contains("panicked") || err.contains("RUST_BACKTRACE") {
        out.fail("the monitor panicked");
    }
}

/// `127.0.0.1:<free port>:<guest>`.
fn spec(guest: &str) -> String {
    format!("127.0.0.1:{}:{guest}", free_port())
}

#[test]
fn publish_garbage_is_refused_with_125() {
    refused(&["--publish", "garbage"]);
}

#[test]
fn publish_with_too_many_fields_is_refused_with_125() {
    refused(&["--publish", "127.0.0.1:1:2:3"]);
}

#[test]
fn publish_with_an_empty_value_is_refused_with_125() {
    refused(&["--publish", ""]);
}

#[test]
fn publish_host_port_0_is_refused_with_125() {
    refused(&["--publish", "127.0.0.1:0:80"]);
}

#[test]
fn publish_guest_port_0_is_refused_with_125() {
    refused(&["--publish", &spec("0")]);
}

#[test]
fn publish_host_port_70000_is_refused_with_125() {
    refused(&["--publish", "127.0.0.1:70000:80"]);
}

#[test]
fn publish_guest_port_70000_is_refused_with_125() {
    refused(&["--publish", &spec("70000")]);
}

#[test]
fn publish_with_a_bad_host_address_is_refused_with_125() {
    refused(&["--publish", &format!("999.0.0.1:{}:80", free_port())]);
}

#[test]
fn publish_with_net_tap_is_refused_with_125() {
    refused(&[
        "--net",
        "tap:ftapx",
        "--ip",
        "10.200.0.2/24",
        "--publish",
        &spec("80"),
    ]);
}

#[test]
fn publish_with_net_none_is_refused_with_125() {
    refused(&["--net", "none", "--publish", &spec("80")]);
}

#[test]
fn publish_on_a_host_port_in_use_is_refused_with_125() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    let port = taken.local_addr().expect("local addr").port();
    refused(&["--publish", &format!("127.0.0.1:{port}:80")]);
    drop(taken);
}

#[test]
fn unknown_net_kind_is_refused_with_125() {
    refused(&["--net", "bogus"]);
}

#[test]
fn net_tap_without_a_name_is_refused_with_125() {
    refused(&["--net", "tap:", "--ip", "10.200.0.2/24"]);
}

#[test]
fn net_tap_with_a_name_longer_than_15_bytes_is_refused_with_125() {
    refused(&["--net", "tap:ftap0123456789abcdef", "--ip", "10.200.0.2/24"]);
}

#[test]
fn net_tap_without_ip_is_refused_with_125() {
    if !kvm_or_skip() {
        return;
    }
    // Should flint open the TAP before checking --ip, it does so in a
    // namespace of the test's own when it can make one, not the host's.
    let ns = NetNs::try_create().ok();
    let mut run = Run::image(&image("http")).opts(&["--net", "tap:ftapx"]);
    if let Some(ns) = &ns {
        run = run.prefix(&ns.exec_prefix());
    }
    refused_run(run);
}

#[test]
fn mac_too_short_is_refused_with_125() {
    refused(&["--publish", &spec("80"), "--mac", "52:54:00:12:34"]);
}

#[test]
fn mac_with_non_hex_digits_is_refused_with_125() {
    refused(&["--publish", &spec("80"), "--mac", "52:54:00:zz:34:56"]);
}

#[test]
fn multicast_mac_is_refused_with_125() {
    // A guest's own address must be unicast (bit 0 of the first byte
    // clear); smoltcp refuses anything else.
    refused(&["--publish", &spec("80"), "--mac", "01:00:5e:00:00:01"]);
}

#[test]
fn ip_with_a_bad_address_is_refused_with_125() {
    refused(&["--publish", &spec("80"), "--ip", "10.0.2.300/24"]);
}

#[test]
fn ip_with_prefix_33_is_refused_with_125() {
    refused(&["--publish", &spec("80"), "--ip", "10.0.2.15/33"]);
}

#[test]
fn gateway_that_is_not_an_address_is_refused_with_125() {
    refused(&["--publish", &spec("80"), "--gateway", "nope"]);
}
