//! The network hypercalls with a device attached (ABI.md sections 3 and
//! 4), spoken raw by the `probe` guest to the monitor's user-mode gateway:
//! `BootInfo.net`, error answers, ARP, ping, level-triggered POLL, EMSGSIZE
//! on read, and malformed or flooding frames that must not hurt the host.

mod support;

use std::time::Duration;

use support::net::{free_port, stats_line};
use support::{kvm_or_skip, probe, Outcome};

use hypercall_abi::errno::{EAGAIN, EFAULT, EINVAL, EMSGSIZE};

/// `probe net ARGS` with monitor options `opts`; checks it finished.
fn net_probe(opts: &[&str], args: &[&str]) -> Outcome {
    let mut all = vec!["net"];
    all.extend(args);
    let out = probe(&all).opts(opts).limit(Duration::from_secs(60)).go();
    out.status(0).stdout_line("probe: net done");
    out
}

#[track_caller]
fn expect(out: &Outcome, key: &str, want: &str) {
    let got = out.value(key);
    if got != want {
        out.fail(format_args!("expected {key}={want}, got {key}={got}"));
    }
}

#[track_caller]
fn expect_n(out: &Outcome, key: &str, want: i64) {
    expect(out, key, &want.to_string());
}

/// The `flint: stats: net ...` counters; fails if there are none.
#[track_caller]
fn net_stats(out: &Outcome) -> std::collections::HashMap<String, u64> {
    stats_line(&out.stderr_str(), "net")
        .unwrap_or_else(|| out.fail("expected a `flint: stats: net ...` line with --stats"))
}

#[test]
fn no_net_means_no_device_in_bootinfo() {
    if !kvm_or_skip() {
        return;
    }
    for opts in [&[][..], &["--net", "none"]] {
        let out = net_probe(opts, &["config"]);
        expect(&out, "net_present", "0");
    }
}

#[test]
fn net_user_gives_the_documented_defaults() {
    if !kvm_or_skip() {
        return;
    }
    let out = net_probe(&["--net", "user"], &["config"]);
    expect(&out, "net_present", "1");
    expect(&out, "net_mac", "52:54:00:12:34:56");
    expect(&out, "net_ipv4", "10.0.2.15");
    expect(&out, "net_prefix_len", "24");
    expect(&out, "net_gateway", "10.0.2.2");
    expect(&out, "net_mtu", "1500");
}

#[test]
fn publish_implies_net_user() {
    if !kvm_or_skip() {
        return;
    }
    let spec = format!("127.0.0.1:{}:80", free_port());
    let out = net_probe(&["--publish", &spec], &["config"]);
    expect(&out, "net_present", "1");
    expect(&out, "net_ipv4", "10.0.2.15");
}

#[test]
fn ip_gateway_and_mac_options_reach_bootinfo() {
    if !kvm_or_skip() {
        return;
    }
    let opts = [
        "--net",
        "user",
        "--ip",
        "10.9.8.7/16",
        "--gateway",
        "10.9.0.1",
        "--mac",
        "02:11:22:33:44:55",
    ];
    let out = net_probe(&opts, &["config"]);
    expect(&out, "net_present", "1");
    expect(&out, "net_mac", "02:11:22:33:44:55");
    expect(&out, "net_ipv4", "10.9.8.7");
    expect(&out, "net_prefix_len", "16");
    expect(&out, "net_gateway", "10.9.0.1");
}

#[test]
fn net_hypercall_errors_with_a_device_follow_the_abi() {
    if !kvm_or_skip() {
        return;
    }
    let out = net_probe(&["--net", "user"], &["errors"]);
    expect_n(&out, "write_13_ret", EINVAL);
    expect_n(&out, "write_mtu_plus_15_ret", EMSGSIZE);
    expect_n(&out, "write_badbuf_ret", EFAULT);
    // A buffer of length 0 is never checked: too short, not a bad buffer.
    expect_n(&out, "write_len0_ret", EINVAL);
    expect_n(&out, "read_empty_ret", EAGAIN);
    // EFAULT comes before EAGAIN.
    expect_n(&out, "read_badbuf_ret", EFAULT);
}

#[test]
fn gateway_answers_arp_and_net_read_follows_the_abi() {
    if !kvm_or_skip() {
        return;
    }
    let out = net_probe(&["--net", "user", "--stats"], &["arp"]);
    expect(&out, "arp_write_ret", "42");
    expect(&out, "arp_ready", "1");
    // Level-triggered: POLL keeps saying ready while the frame waits.
    expect(&out, "arp_poll_again_ready", "1");
    // A bad buffer is EFAULT and the frame stays.
    expect_n(&out, "arp_read_badbuf_ret", EFAULT);
    expect(&out, "arp_after_efault_ready", "1");
    // Too small a buffer: EMSGSIZE with the frame's size; the frame is gone.
    expect_n(&out, "arp_read_small_ret", EMSGSIZE);
    let len = out.number("arp_read_small_len");
    if !(42..=60).contains(&len) {
        out.fail(format_args!(
            "expected arp_read_small_len to be an ARP reply's size (42..=60), got {len}"
        ));
    }
    expect_n(&out, "arp_read_after_drop_ret", EAGAIN);
    expect(&out, "arp_reply_sender_ip", "10.0.2.2");
    expect(&out, "arp_reply_target_ip", "10.0.2.15");
    expect(&out, "arp_reply_target_mac", "52:54:00:12:34:56");
    expect(&out, "arp_reply_dst", "52:54:00:12:34:56");
    if net_stats(&out)["dropped"] < 1 {
        out.fail("the frame dropped by EMSGSIZE must be counted in `dropped`");
    }
}

#[test]
fn gateway_answers_ping() {
    if !kvm_or_skip() {
        return;
    }
    let out = net_probe(&["--net", "user"], &["ping"]);
    expect(&out, "ping_write_ret", "74");
    expect(&out, "ping_reply_from", "10.0.2.2");
    expect(&out, "ping_reply_type", "0");
    expect(&out, "ping_reply_id_seq", "1");
    expect(&out, "ping_reply_payload_same", "1");
    expect(&out, "ping_reply_checksum_ok", "1");
}

#[test]
fn malformed_frames_from_the_guest_are_dropped_and_counted() {
    if !kvm_or_skip() {
        return;
    }
    let out = net_probe(&["--net", "user", "--stats"], &["garbage"]);
    let sent = out.number("garbage_sent");
    // Like a NIC, NET_WRITE takes every frame of a valid size.
    expect(&out, "garbage_accepted", &sent.to_string());
    // And the gateway still works.
    expect(&out, "garbage_then_arp", "1");
    let net = net_stats(&out);
    // All but the unknown ethertype are broken Ethernet/ARP/IPv4/TCP.
    let broken = sent - 1;
    if net["malformed"] + net["dropped"] < broken {
        out.fail(format_args!(
            "expected the {broken} malformed frames to be counted (malformed + dropped >= {broken})"
        ));
    }
    if net["malformed"] == 0 {
        out.fail("expected `malformed` to count the broken frames");
    }
}

#[test]
fn a_flood_of_frames_does_not_wedge_the_monitor() {
    if !kvm_or_skip() {
        return;
    }
    let out = net_probe(&["--net", "user", "--stats"], &["flood", "3000"]);
    expect(&out, "flood_sent", "3000");
    expect(&out, "flood_bad_ret", "0");
    expect(&out, "flood_then_arp", "1");
    let net = net_stats(&out);
    // Whichever direction the monitor calls them, 3000 frames went by.
    if net["tx_frames"].max(net["rx_frames"]) < 3000 {
        out.fail("expected the frame counters to count the 3000 frames the guest sent");
    }
}
