//! A `flint run` serving in the background for a bench: waits for the
//! guest's `listening on` line, stops it with a signal, reads its
//! `--stats` lines, and is killed by PID on drop whatever happens.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// How long a guest may take to print `listening on`.
const LISTEN_WITHIN: Duration = Duration::from_secs(20);

/// How long flint may take to stop after SIGTERM before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(10);

/// A serving `flint`.
pub struct Serving {
    child: Child,
    reaped: bool,
    lines: Receiver<String>,
    stderr: Option<JoinHandle<String>>,
    /// The published host address, 127.0.0.1:<port>.
    pub addr: SocketAddr,
    /// The command line, for messages.
    pub argv: String,
}

/// How flint ended and what it printed on stderr.
pub struct Stopped {
    pub status: ExitStatus,
    pub stderr: String,
}

impl Serving {
    /// Starts `flint run --publish 127.0.0.1:<free port>:<guest_port> OPTS
    /// IMAGE` and waits for its `listening on` line; retries with another
    /// port if the first was taken meanwhile.
    pub fn start(flint: &Path, image: &Path, guest_port: u16, opts: &[&str]) -> Result<Serving> {
        let mut last = String::new();
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(Error::io("127.0.0.1:0"))?
                .port();
            let mut cmd = Command::new(flint);
            cmd.arg("run")
                .arg("--publish")
                .arg(format!("127.0.0.1:{port}:{guest_port}"))
                .args(opts)
                .arg(image)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let argv = crate::cmd::describe(&cmd);
            let mut child = cmd.spawn().map_err(|source| Error::Spawn {
                program: flint.display().to_string(),
                source,
            })?;
            let (tx, lines) = mpsc::channel();
            let stdout = child.stdout.take().expect("piped stdout");
            // Keeps draining the console for the whole run.
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                    let _ = tx.send(line);
                }
            });
            let mut err_pipe = child.stderr.take().expect("piped stderr");
            let stderr = thread::spawn(move || {
                let mut s = String::new();
                let _ = err_pipe.read_to_string(&mut s);
                s
            });
            let mut serving = Serving {
                child,
                reaped: false,
                lines,
                stderr: Some(stderr),
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                argv,
            };
            match serving.wait_listening() {
                Ok(()) => return Ok(serving),
                Err(why) => {
                    let stopped = serving.kill();
                    last = format!("`{}`: {why}; stderr: {}", serving.argv, stopped.trim());
                    if !last.contains("in use") {
                        break;
                    }
                }
            }
        }
        Err(Error::Bench(last))
    }

    fn wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + LISTEN_WITHIN;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains("listening on") => return Ok(()),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("no `listening on` line within {LISTEN_WITHIN:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err("flint ended before the guest said `listening on`".into())
                }
            }
        }
    }

    /// Kills flint at once and returns its stderr.
    fn kill(&mut self) -> String {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.reaped = true;
        }
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }

    /// Sends `signal` (e.g. SIGTERM), waits for flint to exit (killing it
    /// after [`STOP_WITHIN`]) and returns how it ended.
    pub fn stop(mut self, signal: i32) -> Result<Stopped> {
        // SAFETY: kill(2) on our own child, not reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        let start = Instant::now();
        let status = loop {
            match self
                .child
                .try_wait()
                .map_err(Error::io("waiting for flint"))?
            {
                Some(status) => break status,
                None if start.elapsed() > STOP_WITHIN => {
                    let stderr = self.kill();
                    return Err(Error::Bench(format!(
                        "`{}` did not stop within {STOP_WITHIN:?} of signal {signal}; stderr: {stderr}",
                        self.argv
                    )));
                }
                None => thread::sleep(Duration::from_millis(5)),
            }
        };
        self.reaped = true;
        let stderr = self.kill();
        Ok(Stopped { status, stderr })
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The numbers of the `flint: stats: ` line whose first word is `first`.
pub fn stats_line(stderr: &str, first: &str) -> Option<HashMap<String, u64>> {
    let line = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("flint: stats: "))
        .find(|l| l.split([' ', '=']).next() == Some(first))?;
    Some(
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
            .collect(),
    )
}

/// Sends `request` on a new connection to `addr` and returns the whole
/// first response (head and Content-Length body), or, with `to_eof`,
/// everything until the server closes.
pub fn fetch(addr: SocketAddr, request: &[u8], to_eof: bool) -> Result<Vec<u8>> {
    let fail = |why: String| {
        Error::Bench(format!(
            "{} to {addr}: {why}",
            String::from_utf8_lossy(request).trim_end()
        ))
    };
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| fail(format!("connect: {e}")))?;
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| fail(e.to_string()))?;
    c.write_all(request)
        .map_err(|e| fail(format!("write: {e}")))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if !to_eof {
            if let Some(len) = complete_response(&got) {
                got.truncate(len);
                return Ok(got);
            }
        }
        match c.read(&mut buf) {
            Ok(0) if to_eof => return Ok(got),
            Ok(0) => {
                return Err(fail(format!(
                    "EOF inside the response: {:?}",
                    String::from_utf8_lossy(&got)
                )))
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(fail(format!("read: {e}"))),
        }
    }
}

/// The length of the first whole response in `bytes` (its head says
/// Content-Length), if it is all there.
fn complete_response(bytes: &[u8]) -> Option<usize> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&bytes[..end]);
    let len: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    (bytes.len() >= end + len).then_some(end + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_lines_are_read_by_first_word() {
        let err = "flint: stats: vm_exits=10 hypercalls=8 poll=3\nflint: stats: net rx_frames=4 tx_frames=5\n";
        assert_eq!(stats_line(err, "vm_exits").unwrap()["poll"], 3);
        assert_eq!(stats_line(err, "net").unwrap()["tx_frames"], 5);
        assert!(stats_line(err, "blk").is_none());
    }

    #[test]
    fn responses_end_after_their_content_length() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP";
        assert_eq!(complete_response(r), Some(r.len() - 4));
        assert_eq!(complete_response(&r[..30]), None);
    }
}
