//! `flint-oci` driven by a real containerd (Debian's `containerd`, 1.6),
//! as shared/CONTAINERD.md describes: each test starts its own containerd
//! in a temporary directory (its own root, state, gRPC socket and
//! flint-oci state root), imports OCI archives written by the xtask
//! library, and stops it by PID at the end. `ctr` is the client for plain
//! containers; for the CRI pod, tests/cri/pod.py (Debian's python3-grpcio,
//! stubs compiled from tests/cri/api.proto with python3-grpc-tools) does
//! what kubelet does.
//!
//! `cargo xtask test` installs containerd and the Python packages; where
//! containerd is not installed these tests say loudly that they are skipped.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use support::{flint_bin, image, kvm_or_skip};

/// How long one `ctr` (or CRI client) call may take before the test gives
/// up on it: far above the fraction of a second a healthy one takes.
const CALL_LIMIT: Duration = Duration::from_secs(30);

/// The CRI runtime handler the private containerd names flint-oci.
const HANDLER: &str = "flint";

/// A private containerd, stopped (with the shims it started) on drop.
struct Containerd {
    dir: PathBuf,
    socket: PathBuf,
    runtime: PathBuf,
    daemon: Child,
}

impl Containerd {
    /// Starts one for test `name`; `None` (after a loud message) where
    /// containerd is not installed.
    fn start(name: &str) -> Option<Containerd> {
        if !kvm_or_skip() {
            return None;
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            let _ = writeln!(
                std::io::stderr(),
                "!!!!!! SKIPPED, NOT PASSED: {name}: containerd needs root"
            );
            return None;
        }
        for program in ["containerd", "ctr", "containerd-shim-runc-v2"] {
            if !on_path(program) {
                let _ = writeln!(
                    std::io::stderr(),
                    "!!!!!! SKIPPED, NOT PASSED: {name}: `{program}` is not installed \
                     (apt-get install containerd; `cargo xtask test` does it)"
                );
                return None;
            }
        }
        static SEQ: AtomicU32 = AtomicU32::new(0);
        // Short: the gRPC socket's path must fit in sun_path.
        let dir = std::env::temp_dir().join(format!(
            "flint-oci-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {dir:?}: {e}"));
        let runtime = flint_bin().with_file_name("flint-oci");
        assert!(runtime.is_file(), "{runtime:?} was not built beside flint");
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(&config, config_toml(&dir, &socket, &runtime)).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting containerd: {e}"));
        let c = Containerd {
            dir,
            socket,
            runtime,
            daemon,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while c
            .try_ctr(&["version"])
            .map_or(true, |o| !o.status.success())
        {
            if Instant::now() > deadline {
                c.fail("containerd did not answer on its socket within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(c)
    }

    /// `ctr -a SOCKET ARGS`, with a time limit.
    fn try_ctr(&self, args: &[&str]) -> Result<Output, String> {
        let mut cmd = Command::new("ctr");
        cmd.arg("-a").arg(&self.socket).args(args);
        run_limited(cmd)
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.try_ctr(args)
            .unwrap_or_else(|e| self.fail(format_args!("ctr {args:?}: {e}")))
    }

    /// `ctr ARGS` that must succeed.
    fn ctr_ok(&self, args: &[&str]) -> Output {
        let out = self.ctr(args);
        if !out.status.success() {
            self.fail(format_args!("ctr {args:?} failed: {}", show(&out)));
        }
        out
    }

    /// Writes the archive of guest `app` and imports it into `namespace`.
    fn import_app(&self, namespace: &str, app: &str) -> String {
        let tar = self.dir.join(format!("{app}.oci.tar"));
        xtask::oci::write_app(&tar, app, &image(app))
            .unwrap_or_else(|e| panic!("writing {tar:?}: {e}"));
        self.import(namespace, &tar);
        xtask::oci::image_name(app)
    }

    fn import(&self, namespace: &str, tar: &Path) {
        let tar = tar.to_str().unwrap();
        self.ctr_ok(&[
            "-n",
            namespace,
            "image",
            "import",
            "--snapshotter",
            "native",
            tar,
        ]);
    }

    /// `ctr run` options that make flint-oci the runtime, its state and
    /// the IO fifos in this containerd's directory.
    fn run_opts(&self) -> Vec<String> {
        vec![
            "--snapshotter".into(),
            "native".into(),
            "--runc-binary".into(),
            self.runtime.display().to_string(),
            "--runc-root".into(),
            self.dir.join("flint-oci").display().to_string(),
            "--fifo-dir".into(),
            self.dir.join("fifo").display().to_string(),
        ]
    }

    /// The line of `ctr task ls` for task `id`, if listed.
    fn task_line(&self, id: &str) -> Option<String> {
        let out = self.ctr_ok(&["task", "ls"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .map(str::to_owned)
    }

    /// Fails the test with `why` and containerd's log.
    fn fail(&self, why: impl std::fmt::Display) -> ! {
        let log = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "{why}\n--- containerd log (last lines) ---\n{}",
            tail.join("\n")
        );
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // A test that failed half-way leaves tasks: delete them while
        // containerd still runs (their shims then exit and unmount).
        for ns in ["default", "k8s.io"] {
            let listed = self.try_ctr(&["-n", ns, "task", "ls", "-q"]);
            let ids = listed.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            for id in ids.unwrap_or_default().lines() {
                let _ = self.try_ctr(&["-n", ns, "task", "delete", "--force", id]);
            }
        }
        // SAFETY: kill(2) on our own child, by its PID.
        unsafe { libc::kill(self.daemon.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.daemon.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.daemon.kill();
                let _ = self.daemon.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Shims still alive (daemons: not our children) work in a bundle
        // directory under ours: stop each by its PID.
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if std::fs::read_link(entry.path().join("cwd"))
                .is_ok_and(|cwd| cwd.starts_with(&self.dir))
            {
                // SAFETY: kill(2) on a shim this test's containerd started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        // Their rootfs bind mounts, deepest first, so that removing the
        // directory cannot reach through one.
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .filter(|m| Path::new(m).starts_with(&self.dir))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            if let Ok(m) = std::ffi::CString::new(m) {
                // SAFETY: umount2 with a NUL-terminated path.
                unsafe { libc::umount2(m.as_ptr(), libc::MNT_DETACH) };
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The private containerd's configuration: everything under `dir`; the CRI
/// plugin with flint-oci as runtime handler [`HANDLER`] and the default.
fn config_toml(dir: &Path, socket: &Path, runtime: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "{HANDLER}"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{HANDLER}]
      runtime_type = "io.containerd.runc.v2"
      pod_annotations = ["dev.flint.*"]
      container_annotations = ["dev.flint.*"]
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{HANDLER}.options]
        BinaryName = "{runtime}"
        Root = "{d}/flint-oci-cri"
"#,
        socket = socket.display(),
        runtime = runtime.display(),
        pause = xtask::oci::PAUSE_IMAGE,
    )
}

/// Runs `cmd` to completion, killing it after [`CALL_LIMIT`].
fn run_limited(mut cmd: Command) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    // Drain the pipes on threads so a chatty child cannot block.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + CALL_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{cmd:?} ran past {CALL_LIMIT:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    })
}

fn show(out: &Output) -> String {
    format!(
        "{}; stdout {:?}; stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

fn ctr_run(c: &Containerd, extra: &[&str], image: &str, id: &str, args: &[&str]) -> Output {
    let opts = c.run_opts();
    let mut argv: Vec<&str> = vec!["run"];
    argv.extend(opts.iter().map(String::as_str));
    argv.extend(extra);
    argv.push(image);
    argv.push(id);
    argv.extend(args);
    c.ctr(&argv)
}

#[test]
fn ctr_run_hello_prints_hello_world_and_exits_0() {
    let Some(c) = Containerd::start("ctr_run_hello_prints_hello_world_and_exits_0") else {
        return;
    };
    let hello = c.import_app("default", "hello");
    let out = ctr_run(&c, &["--rm"], &hello, "hello1", &[]);
    if !out.status.success() || String::from_utf8_lossy(&out.stdout) != "Hello, world!\n" {
        c.fail(format_args!("ctr run of hello: {}", show(&out)));
    }
    // `ctr run IMAGE ID ARGS` replaces the whole argv: the image, then the
    // guest's arguments.
    let out = ctr_run(
        &c,
        &["--rm"],
        &hello,
        "hello2",
        &["/hello.elf", "containerd"],
    );
    if !out.status.success() || String::from_utf8_lossy(&out.stdout) != "Hello, containerd!\n" {
        c.fail(format_args!(
            "ctr run of hello with arguments: {}",
            show(&out)
        ));
    }
}

#[test]
fn guest_exit_status_reaches_ctr() {
    let Some(c) = Containerd::start("guest_exit_status_reaches_ctr") else {
        return;
    };
    let probe = c.import_app("default", "probe");
    let out = ctr_run(&c, &["--rm"], &probe, "exit3", &["/probe.elf", "exit", "3"]);
    if out.status.code() != Some(3) {
        c.fail(format_args!(
            "a guest exiting with 3 under ctr: {}",
            show(&out)
        ));
    }
    // A bad image fails at create, and the shim shows flint-oci's message
    // from the JSON log.
    let out = ctr_run(&c, &["--rm"], &probe, "noimage", &["/nonexistent.elf"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || !stderr.contains("names no file in the container's rootfs") {
        c.fail(format_args!("a missing image under ctr: {}", show(&out)));
    }
}

#[test]
fn http_guest_runs_answers_on_its_published_port_and_stops_on_sigterm() {
    let Some(c) =
        Containerd::start("http_guest_runs_answers_on_its_published_port_and_stops_on_sigterm")
    else {
        return;
    };
    let http = c.import_app("default", "http");
    let port = support::net::free_port();
    let publish = format!("dev.flint.publish=127.0.0.1:{port}:80");
    let out = ctr_run(&c, &["-d", "--annotation", &publish], &http, "web", &[]);
    if !out.status.success() {
        c.fail(format_args!("ctr run -d of http: {}", show(&out)));
    }
    match c.task_line("web") {
        Some(line) if line.contains("RUNNING") => {}
        other => c.fail(format_args!("ctr task ls while serving: {other:?}")),
    }
    let body = get_health(port).unwrap_or_else(|e| c.fail(e));
    if !body.starts_with("HTTP/1.1 200") || !body.ends_with("\r\n\r\nok") {
        c.fail(format_args!(
            "GET /health through the published port: {body:?}"
        ));
    }
    c.ctr_ok(&["task", "kill", "web"]); // SIGTERM, ctr's default
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.task_line("web") {
            Some(line) if line.contains("STOPPED") => break,
            other if Instant::now() > deadline => {
                c.fail(format_args!("after SIGTERM, ctr task ls says {other:?}"))
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    // The monitor died by the signal: 128 + 15.
    let out = c.ctr(&["task", "delete", "web"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !said.contains("143") {
        c.fail(format_args!(
            "ctr task delete after SIGTERM: {}",
            show(&out)
        ));
    }
    if TcpStream::connect(("127.0.0.1", port)).is_ok() {
        c.fail(format_args!(
            "port {port} still accepts after the task stopped"
        ));
    }
    c.ctr_ok(&["container", "delete", "web"]);
}

/// `GET /health` on 127.0.0.1:`port`, retried while the guest starts.
fn get_health(port: u16) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /health HTTP/1.1\r\nHost: flint\r\nConnection: close\r\n\r\n")?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        })();
        match attempt {
            Ok(text) if !text.is_empty() => return Ok(text),
            Ok(_) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            other => return Err(format!("GET /health on port {port}: {other:?}")),
        }
    }
}

/// Runs tests/cri/pod.py against `c`: one pod (flint runtime handler) of
/// one container of `app`, with `extra` options; its JSON summary (the CRI
/// log directory is `c.dir/pod-logs`).
fn cri_pod(c: &Containerd, app: &str, extra: &[&str]) -> String {
    let python = Path::new("/usr/bin/python3");
    let probe = Command::new(python)
        .args(["-c", "import grpc, grpc_tools.protoc"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        panic!(
            "the CRI client needs Debian's python3 with python3-grpcio and python3-grpc-tools \
             (apt-get install python3-grpcio python3-grpc-tools; `cargo xtask test` does it)"
        );
    }
    // The pod's sandbox image must be there: nothing can be pulled.
    let pause = c.dir.join("pause.oci.tar");
    xtask::oci::write_pause(&pause).unwrap();
    c.import("k8s.io", &pause);
    let image = c.import_app("k8s.io", app);
    let stubs = c.dir.join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    let cri = Path::new(env!("CARGO_MANIFEST_DIR")).join("cri");
    let mut protoc = Command::new(python);
    protoc
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", cri.display()))
        .arg(format!("--python_out={}", stubs.display()))
        .arg(format!("--grpc_python_out={}", stubs.display()))
        .arg(cri.join("api.proto"));
    let out = run_limited(protoc).unwrap_or_else(|e| c.fail(e));
    if !out.status.success() {
        c.fail(format_args!("compiling the CRI proto: {}", show(&out)));
    }
    let logs = c.dir.join("pod-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut client = Command::new(python);
    client
        .arg(cri.join("pod.py"))
        .arg("--stubs")
        .arg(&stubs)
        .arg("--socket")
        .arg(&c.socket)
        .args(["--handler", HANDLER, "--image", &image, "--timeout", "20"])
        .arg("--logdir")
        .arg(&logs)
        .args(extra);
    let out = run_limited(client).unwrap_or_else(|e| c.fail(e));
    if !out.status.success() {
        c.fail(format_args!("the CRI client: {}", show(&out)));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails unless the JSON `summary` of pod.py holds every one of `fields`.
fn expect_fields(c: &Containerd, summary: &str, fields: &[&str]) {
    for field in fields {
        if !summary.contains(field) {
            c.fail(format_args!("the pod: no {field} in {summary}"));
        }
    }
}

#[test]
fn cri_pod_runs_hello_to_completion_with_its_output_in_the_cri_log() {
    let Some(c) =
        Containerd::start("cri_pod_runs_hello_to_completion_with_its_output_in_the_cri_log")
    else {
        return;
    };
    let summary = cri_pod(&c, "hello", &[]);
    // pod.py prints json.dumps of its summary.
    expect_fields(
        &c,
        &summary,
        &[
            r#""pod_state": "SANDBOX_READY""#,
            r#""container_state": "CONTAINER_EXITED""#,
            r#""exit_code": 0,"#,
        ],
    );
    // CRI log lines: `TIME stdout F Hello, world!`.
    let log = std::fs::read_to_string(c.dir.join("pod-logs/hello.log")).unwrap_or_default();
    if !log.lines().any(|l| l.ends_with(" stdout F Hello, world!")) {
        c.fail(format_args!("the container's CRI log: {log:?}"));
    }
}

#[test]
fn cri_pod_running_http_answers_on_the_port_its_annotation_publishes() {
    let Some(c) =
        Containerd::start("cri_pod_running_http_answers_on_the_port_its_annotation_publishes")
    else {
        return;
    };
    let port = support::net::free_port();
    let annotation = format!("dev.flint.publish=127.0.0.1:{port}:80");
    let url = format!("http://127.0.0.1:{port}/health");
    let summary = cri_pod(&c, "http", &["--annotation", &annotation, "--get", &url]);
    expect_fields(
        &c,
        &summary,
        &[
            r#""pod_state": "SANDBOX_READY""#,
            r#""container_state": "CONTAINER_RUNNING""#,
            r#""get": "200 ok""#,
        ],
    );
}
