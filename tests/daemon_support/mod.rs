//! A `flint daemon` for one test, and a real HTTP client for it: curl
//! over the daemon's Unix socket (`curl --unix-socket`).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `flint daemon` on a socket of its own; stopped (SIGTERM, by
/// its pid) when dropped.
pub struct Daemon {
    child: Child,
    pub socket: PathBuf,
    log: PathBuf,
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {:?} (status {})",
                String::from_utf8_lossy(&self.body),
                self.status
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The error code of a 4xx/5xx body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Daemon {
    /// Starts `flint daemon --socket DIR/flint.sock EXTRA...` and waits
    /// until it answers.
    pub fn start(name: &str, extra: &[&str]) -> Daemon {
        let dir = crate::support::scratch_dir(&format!("daemon-{name}"));
        let socket = dir.join("flint.sock");
        let log = dir.join("daemon.log");
        let _ = std::fs::remove_file(&socket);
        let child = Command::new(crate::support::flint_bin())
            .arg("daemon")
            .arg("--socket")
            .arg(&socket)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("daemon log"))
            .spawn()
            .expect("starting flint daemon");
        let daemon = Daemon { child, socket, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while daemon.try_call("GET", "/host", None).is_none() {
            assert!(
                Instant::now() < deadline,
                "the daemon did not answer: {}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    /// The daemon process's threads and open fds, from /proc.
    pub fn usage(&self) -> (usize, usize) {
        let count = |what: &str| {
            std::fs::read_dir(format!("/proc/{}/{what}", self.child.id()))
                .map(|dir| dir.count())
                .unwrap_or_else(|e| panic!("/proc/{}/{what}: {e}", self.child.id()))
        };
        (count("task"), count("fd"))
    }

    /// What the daemon wrote on stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `curl -X METHOD --unix-socket SOCKET http://flint/PATH [-d BODY]`.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        self.try_call(method, path, body).unwrap_or_else(|| {
            panic!(
                "curl {method} {path}: no answer; daemon log:\n{}",
                self.log()
            )
        })
    }

    fn try_call(&self, method: &str, path: &str, body: Option<&str>) -> Option<Reply> {
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--max-time", "30", "-X", method, "--unix-socket"])
            .arg(&self.socket)
            .args(["-w", "\n%{http_code}"]);
        if let Some(body) = body {
            curl.args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ]);
        }
        curl.arg(format!("http://flint{path}"));
        let out = curl.output().expect("running curl (is it installed?)");
        if !out.status.success() {
            return None;
        }
        let mut raw = out.stdout;
        let at = raw.iter().rposition(|b| *b == b'\n')?;
        let status = std::str::from_utf8(&raw[at + 1..])
            .ok()?
            .trim()
            .parse()
            .ok()?;
        raw.truncate(at);
        Some(Reply { status, body: raw })
    }

    /// A call that must answer `status`; its JSON.
    pub fn expect(&self, method: &str, path: &str, body: Option<&str>, status: u16) -> Value {
        let reply = self.call(method, path, body);
        assert_eq!(
            reply.status,
            status,
            "{method} {path} {body:?}: {}\ndaemon log:\n{}",
            reply.text(),
            self.log()
        );
        if reply.body.is_empty() {
            Value::Null
        } else {
            reply.json()
        }
    }

    /// Creates an instance of `image` with `args` (and extra JSON fields),
    /// started if `start`; its id.
    pub fn create(&self, image: &Path, args: &[&str], extra: Value, start: bool) -> String {
        let mut body = serde_json::json!({
            "image": image.display().to_string(),
            "args": args,
            "start": start,
        });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let info = self.expect("POST", "/instances", Some(&body.to_string()), 201);
        info["id"].as_str().expect("an id").to_owned()
    }

    /// GET /instances/ID.
    pub fn instance(&self, id: &str) -> Value {
        self.expect("GET", &format!("/instances/{id}"), None, 200)
    }

    /// Waits until instance `id` is in `state`.
    pub fn wait_state(&self, id: &str, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let info = self.instance(id);
            if info["state"] == state {
                return info;
            }
            assert!(
                Instant::now() < deadline,
                "instance {id} never became {state}: {info:#}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `flint COMMAND --socket SOCKET REST...`: the CLI as this daemon's
    /// client.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(crate::support::flint_bin())
            .args(&args[..1])
            .arg("--socket")
            .arg(&self.socket)
            .args(&args[1..])
            .stdin(Stdio::null())
            .output()
            .expect("running flint")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of the child this guard started.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
