//! `flint daemon`: the HTTP/JSON API driven by a real client (curl over
//! the Unix socket), bad requests, admission control, pause that really
//! stops the vCPU, metrics, logs, delete that frees everything, and the
//! `flint` CLI as its client.

mod daemon_support;
mod support;

use daemon_support::Daemon;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::{image, kvm_or_skip};

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn lifecycle_over_http() {
    if !kvm_or_skip() {
        return;
    }
    let probe = image("probe");
    let d = Daemon::start("lifecycle", &[]);
    let registered = d.expect(
        "POST",
        "/images",
        Some(&json!({"path": probe.display().to_string(), "name": "probe"}).to_string()),
        201,
    );
    assert_eq!(registered["id"], "probe");
    let images = d.expect("GET", "/images", None, 200);
    assert_eq!(images.as_array().map(Vec::len), Some(1), "{images}");

    let body = json!({"image": "probe", "args": ["args", "a", "b"], "mem": "32M"}).to_string();
    let created = d.expect("POST", "/instances", Some(&body), 201);
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["state"], "created");
    assert_eq!(n(&created["config"]["mem_bytes"]), 32 << 20);
    let started = d.expect("POST", &format!("/instances/{id}/start"), None, 200);
    assert!(matches!(
        started["state"].as_str(),
        Some("running" | "exited")
    ));
    let ended = d.wait_state(&id, "exited");
    assert_eq!(ended["exit_status"], 0, "{ended:#}");
    let logs = d.call("GET", &format!("/instances/{id}/logs"), None);
    assert_eq!(logs.status, 200);
    assert!(logs.text().contains("cmdline=args a b"), "{}", logs.text());
    let m = &ended["metrics"];
    assert!(n(&m["hypercalls"]["CONSOLE_WRITE"]) >= 1, "{m:#}");
    assert_eq!(n(&m["hypercalls"]["EXIT"]), 1, "{m:#}");
    assert!(n(&m["vm_exits"]["mmio_write"]) >= 2, "{m:#}");
    assert_eq!(n(&m["console"]["bytes"]), logs.body.len() as u64);
    assert!(f(&m["vcpu_time_secs"]) > 0.0, "{m:#}");

    let list = d.expect("GET", "/instances", None, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    d.expect("DELETE", &format!("/instances/{id}"), None, 204);
    d.expect("GET", &format!("/instances/{id}"), None, 404);
    let host = d.expect("GET", "/host", None, 200);
    assert_eq!(n(&host["instances"]["exited"]), 0, "{host:#}");
}

#[test]
fn pause_stops_the_vcpu_until_resume() {
    if !kvm_or_skip() {
        return;
    }
    let d = Daemon::start("pause", &[]);
    // `count` prints a line every millisecond of busy-waiting, never
    // sleeping: while it runs, its console grows.
    let id = d.create(&image("probe"), &["count"], json!({}), true);
    let progress = |info: &Value| {
        (
            n(&info["metrics"]["console"]["bytes"]),
            f(&info["metrics"]["vcpu_time_secs"]),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while progress(&d.instance(&id)).0 < 100 {
        assert!(Instant::now() < deadline, "the guest never printed");
        std::thread::sleep(Duration::from_millis(10));
    }
    let paused = d.expect("POST", &format!("/instances/{id}/pause"), None, 200);
    assert_eq!(paused["state"], "paused");
    let (bytes, cpu) = progress(&d.instance(&id));
    std::thread::sleep(Duration::from_millis(300));
    let info = d.instance(&id);
    assert_eq!(info["state"], "paused");
    assert_eq!(
        progress(&info),
        (bytes, cpu),
        "a paused guest made progress or used CPU"
    );
    // The console really holds no more than the metric says.
    let logs = d.call("GET", &format!("/instances/{id}/logs"), None);
    assert_eq!(logs.body.len() as u64, bytes);

    // Pausing twice is refused; the instance stays paused.
    let again = d.call("POST", &format!("/instances/{id}/pause"), None);
    assert_eq!((again.status, again.code().as_str()), (409, "wrong_state"));

    let resumed = d.expect("POST", &format!("/instances/{id}/resume"), None, 200);
    assert_eq!(resumed["state"], "running");
    let deadline = Instant::now() + Duration::from_secs(20);
    while progress(&d.instance(&id)).0 <= bytes {
        assert!(
            Instant::now() < deadline,
            "the guest did not go on after resume"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // An instance asleep in POLL pauses and resumes too.
    let idle = d.create(&image("probe"), &["poll-forever"], json!({}), true);
    std::thread::sleep(Duration::from_millis(50));
    let paused = d.expect("POST", &format!("/instances/{idle}/pause"), None, 200);
    assert_eq!(paused["state"], "paused");
    let resumed = d.expect("POST", &format!("/instances/{idle}/resume"), None, 200);
    assert_eq!(resumed["state"], "running");
    d.expect("DELETE", &format!("/instances/{idle}"), None, 204);

    // Pause and resume again, then stop it while paused.
    d.expect("POST", &format!("/instances/{id}/pause"), None, 200);
    d.expect("POST", &format!("/instances/{id}/resume"), None, 200);
    d.expect("POST", &format!("/instances/{id}/pause"), None, 200);
    let stopped = d.expect("POST", &format!("/instances/{id}/stop"), None, 200);
    assert_eq!(stopped["state"], "exited");
    assert_eq!(stopped["exit_status"], 128 + libc::SIGTERM, "{stopped:#}");
}

#[test]
fn bad_requests_get_clear_errors_and_the_daemon_goes_on() {
    if !kvm_or_skip() {
        return;
    }
    let d = Daemon::start("bad", &[]);
    let probe = image("probe").display().to_string();
    let cases: Vec<(&str, String, Option<String>, u16, &str)> = vec![
        ("GET", "/instances/99".into(), None, 404, "not_found"),
        ("GET", "/instances/nonsense".into(), None, 404, "not_found"),
        ("POST", "/instances/99/start".into(), None, 404, "not_found"),
        ("POST", "/instances/99/pause".into(), None, 404, "not_found"),
        ("DELETE", "/instances/99".into(), None, 404, "not_found"),
        ("GET", "/images/nope".into(), None, 404, "not_found"),
        ("GET", "/no/such/route".into(), None, 404, "no_route"),
        (
            "POST",
            "/instances".into(),
            Some("{not json".into()),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/instances".into(),
            Some("[1,2]".into()),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/instances".into(),
            Some("{}".into()),
            400,
            "bad_request",
        ),
        ("POST", "/instances".into(), None, 400, "bad_request"),
        (
            "POST",
            "/instances".into(),
            Some(json!({"image": probe, "colour": "red"}).to_string()),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/instances".into(),
            Some(json!({"image": probe, "mem": "5G"}).to_string()),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/instances".into(),
            Some(json!({"image": probe, "publish": ["nonsense"]}).to_string()),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/instances".into(),
            Some(json!({"image": "/no/such/image.elf"}).to_string()),
            404,
            "not_found",
        ),
        (
            "POST",
            "/images".into(),
            Some(json!({"path": "/etc/hostname"}).to_string()),
            422,
            "cannot_start",
        ),
    ];
    for (method, path, body, status, code) in &cases {
        let reply = d.call(method, path, body.as_deref());
        assert_eq!(
            (reply.status, reply.code()),
            (*status, code.to_string()),
            "{method} {path} {body:?}: {}",
            reply.text()
        );
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert!(
            message.len() > 10,
            "{method} {path}: no message: {}",
            reply.text()
        );
    }

    // State errors: start twice, pause or resume what does not run, stop
    // or pause what has ended, delete twice.
    let id = d.create(&image("probe"), &["poll-forever"], json!({}), false);
    let refuse = |method: &str, verb: &str, code: &str| {
        let path = if verb.is_empty() {
            format!("/instances/{id}")
        } else {
            format!("/instances/{id}/{verb}")
        };
        let reply = d.call(method, &path, None);
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (if code == "not_found" { 404 } else { 409 }, code),
            "{method} {path}: {}",
            reply.text()
        );
    };
    refuse("POST", "pause", "wrong_state");
    refuse("POST", "resume", "wrong_state");
    d.expect("POST", &format!("/instances/{id}/start"), None, 200);
    refuse("POST", "start", "wrong_state");
    refuse("POST", "resume", "wrong_state");
    d.expect("POST", &format!("/instances/{id}/stop"), None, 200);
    refuse("POST", "stop", "wrong_state");
    refuse("POST", "pause", "wrong_state");
    refuse("POST", "start", "wrong_state");
    d.expect("DELETE", &format!("/instances/{id}"), None, 204);
    refuse("DELETE", "", "not_found");
    refuse("POST", "pause", "not_found");

    // Still serving.
    let host = d.expect("GET", "/host", None, 200);
    assert_eq!(n(&host["instances"]["running"]), 0, "{host:#}");
}

#[test]
fn admission_control_refuses_past_the_budget_and_the_cap() {
    if !kvm_or_skip() {
        return;
    }
    let d = Daemon::start(
        "admission",
        &["--max-instances", "2", "--memory-budget", "48M"],
    );
    let probe = image("probe");
    let a = d.create(&probe, &["poll-forever"], json!({"mem": "16M"}), true);
    // 16M + 64M > 48M.
    let body = json!({"image": probe.display().to_string(), "mem": "64M"}).to_string();
    let over = d.call("POST", "/instances", Some(&body));
    assert_eq!(
        (over.status, over.code().as_str()),
        (429, "memory_budget"),
        "{}",
        over.text()
    );
    let b = d.create(&probe, &["poll-forever"], json!({"mem": "32M"}), false);
    // Two instances hold a VM: the cap.
    let body = json!({"image": probe.display().to_string(), "mem": "4M"}).to_string();
    let capped = d.call("POST", "/instances", Some(&body));
    assert_eq!(
        (capped.status, capped.code().as_str()),
        (429, "instance_cap"),
        "{}",
        capped.text()
    );
    let host = d.expect("GET", "/host", None, 200);
    assert_eq!(n(&host["memory_reserved_bytes"]), 48 << 20, "{host:#}");
    // A stopped instance gives its room back.
    d.expect("POST", &format!("/instances/{a}/stop"), None, 200);
    let c = d.create(&probe, &["poll-forever"], json!({"mem": "16M"}), true);
    d.expect("DELETE", &format!("/instances/{b}"), None, 204);
    d.expect("DELETE", &format!("/instances/{c}"), None, 204);
    let host = d.expect("GET", "/host", None, 200);
    assert_eq!(n(&host["memory_reserved_bytes"]), 0, "{host:#}");
}

#[test]
fn delete_frees_threads_and_fds() {
    if !kvm_or_skip() {
        return;
    }
    let d = Daemon::start("frees", &[]);
    let probe = image("probe");
    // From /proc, not through the API: a request would keep one of the
    // runtime's blocking threads alive.
    let usage = || d.usage();
    // Warm up once: the runtime's blocking threads and lazily made
    // process-wide state.
    let warm = d.create(&probe, &["poll-forever"], json!({}), true);
    d.expect("DELETE", &format!("/instances/{warm}"), None, 204);
    // The runtime's blocking threads end 0.5 s after their last request.
    let settle = |want: Option<(usize, usize)>| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = usage();
        loop {
            std::thread::sleep(Duration::from_millis(700));
            let now = usage();
            match want {
                Some(want) if now.0 <= want.0 && now.1 <= want.1 => return now,
                None if now == last => return now,
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "threads/fds {now:?}, want {want:?}"
            );
            last = now;
        }
    };
    let baseline = settle(None);
    let ids: Vec<String> = (0..4)
        .map(|i| {
            let args: &[&str] = if i % 2 == 0 {
                &["poll-forever"]
            } else {
                &["count"]
            };
            d.create(&probe, args, json!({}), i < 3)
        })
        .collect();
    let busy = usage();
    assert!(
        busy.0 >= baseline.0 + 4 && busy.1 > baseline.1,
        "{busy:?} vs {baseline:?}"
    );
    d.expect("POST", &format!("/instances/{}/pause", ids[1]), None, 200);
    for id in &ids {
        d.expect("DELETE", &format!("/instances/{id}"), None, 204);
    }
    let after = settle(Some(baseline));
    assert_eq!(after, baseline, "threads and fds after deleting everything");
}

#[test]
fn metrics_endpoint_speaks_prometheus_text() {
    if !kvm_or_skip() {
        return;
    }
    let d = Daemon::start("metrics", &[]);
    let id = d.create(&image("probe"), &["args", "x"], json!({}), true);
    d.wait_state(&id, "exited");
    let reply = d.call("GET", "/metrics", None);
    assert_eq!(reply.status, 200);
    let text = reply.text();
    for want in [
        "# TYPE flint_instances gauge",
        "flint_instances{state=\"exited\"} 1",
        "# TYPE flint_instance_hypercalls_total counter",
        &format!("flint_instance_hypercalls_total{{id=\"{id}\",call=\"exit\"}} 1"),
        &format!("flint_instance_vm_exits_total{{id=\"{id}\",reason=\"mmio_write\"}}"),
        &format!("flint_instance_console_bytes_total{{id=\"{id}\"}}"),
        &format!("flint_instance_net_packets_total{{id=\"{id}\",direction=\"rx\"}} 0"),
        &format!("flint_instance_vcpu_seconds_total{{id=\"{id}\"}}"),
        &format!("flint_instance_memory_touched_bytes{{id=\"{id}\"}}"),
        "flint_hypercalls_total{call=\"exit\"} 1",
        "flint_memory_budget_bytes ",
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
    // Every sample line is `name{labels} number`.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap_or("");
        assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
    }
}

#[test]
fn snapshot_through_the_api_and_restore_a_copy() {
    if !kvm_or_skip() {
        return;
    }
    let d = Daemon::start("snapshot", &[]);
    let dir = support::scratch_dir("daemon-snapshot");
    let file = dir.join("probe.snap");
    // Sleeps in POLL until restored, then reports its new identity.
    let id = d.create(&image("probe"), &["snapshot-identity"], json!({}), true);
    let body = json!({"path": file.display().to_string()}).to_string();
    let snap = d.call("POST", &format!("/instances/{id}/snapshot"), Some(&body));
    assert_eq!(snap.status, 200, "{}", snap.text());
    assert!(file.is_file());
    let body = json!({"snapshot": file.display().to_string(), "start": true}).to_string();
    let copy = d.expect("POST", "/instances", Some(&body), 201);
    let copy_id = copy["id"].as_str().unwrap().to_owned();
    assert_eq!(copy["snapshot"], file.display().to_string());
    let ended = d.wait_state(&copy_id, "exited");
    let logs = d
        .call("GET", &format!("/instances/{copy_id}/logs"), None)
        .text();
    assert!(logs.contains("generation=1"), "{logs}\n{ended:#}");
    // Snapshot of something that does not run: refused.
    let body = json!({"path": dir.join("again.snap").display().to_string()}).to_string();
    let snap = d.call(
        "POST",
        &format!("/instances/{copy_id}/snapshot"),
        Some(&body),
    );
    assert_eq!(snap.status, 409, "{}", snap.text());
}

#[test]
fn the_cli_is_a_client_of_the_daemon() {
    if !kvm_or_skip() {
        return;
    }
    let d = Daemon::start("cli", &[]);
    let probe = image("probe").display().to_string();
    let ok = |args: &[&str]| {
        let out = d.cli(args);
        assert!(
            out.status.success(),
            "flint {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let registered = ok(&["register", &probe, "--name", "p"]);
    assert_eq!(registered, "p");
    assert!(ok(&["images"]).contains("p "));
    let id = ok(&["create", "--mem", "8M", "p", "--", "count"]);
    assert_eq!(ok(&["start", &id]), format!("{id} running"));
    assert_eq!(ok(&["pause", &id]), format!("{id} paused"));
    assert!(ok(&["ps"]).contains("paused"));
    assert_eq!(ok(&["resume", &id]), format!("{id} running"));
    let stats = ok(&["stats", &id]);
    assert!(
        stats.contains("hypercalls") && stats.contains("CONSOLE_WRITE="),
        "{stats}"
    );
    assert!(ok(&["stats"]).contains("instances"));
    assert_eq!(ok(&["stop", &id]), format!("{id} exited"));
    assert!(ok(&["logs", &id]).contains("count=0"));
    assert_eq!(ok(&["rm", &id]), id);

    // Refusals: status 1 and the daemon's message.
    let out = d.cli(&["pause", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no instance with id"));

    // No daemon: status 2 and what to do.
    let out = std::process::Command::new(support::flint_bin())
        .args(["ps", "--socket", "/nonexistent/flint.sock"])
        .output()
        .expect("flint ps");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach the flint daemon")
            && stderr.contains("flint daemon --socket"),
        "{stderr}"
    );
}

#[test]
fn a_networked_instance_serves_through_its_published_port() {
    if !kvm_or_skip() {
        return;
    }
    let d = Daemon::start("net", &[]);
    let http = image("http");
    // The port may be taken between the check and the bind: try a few.
    let (id, port) = (0..5)
        .find_map(|_| {
            let port = support::net::free_port();
            let body = json!({
                "image": http.display().to_string(),
                "publish": [format!("127.0.0.1:{port}:80")],
                "start": true,
            })
            .to_string();
            let reply = d.call("POST", "/instances", Some(&body));
            (reply.status == 201).then(|| {
                (
                    reply.json()["id"].as_str().unwrap_or_default().to_owned(),
                    port,
                )
            })
        })
        .expect("no free port for the published http instance");
    let url = format!("http://127.0.0.1:{port}/health");
    let get = || {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "20", &url])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The guest listens once it has initialised: retry until it answers.
    let deadline = Instant::now() + Duration::from_secs(20);
    while get() != "ok" {
        assert!(Instant::now() < deadline, "no answer on {url}: {}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    d.expect("POST", &format!("/instances/{id}/pause"), None, 200);
    d.expect("POST", &format!("/instances/{id}/resume"), None, 200);
    assert_eq!(get(), "ok");
    let info = d.instance(&id);
    let net = &info["metrics"]["net"];
    for key in ["rx_packets", "tx_packets", "rx_bytes", "tx_bytes"] {
        assert!(n(&net[key]) > 0, "{key}: {info:#}");
    }
    assert!(
        n(&info["metrics"]["hypercalls"]["NET_WRITE"]) > 0,
        "{info:#}"
    );
    d.expect("DELETE", &format!("/instances/{id}"), None, 204);
    // Its port is closed with it.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
