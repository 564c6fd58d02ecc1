//! Networking helpers: free loopback ports, a guest app published on one,
//! a raw HTTP/1.1 client that shows the bytes it got, CPU time of a
//! process, and the monitor's `--stats` lines.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::{image, Run, Server};

/// Read and write timeout of every test socket.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// A loopback port that was free a moment ago (bound to port 0, then
/// closed). Another process may take it before flint does: [`publish`]
/// retries then.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

/// A guest app served through `--publish 127.0.0.1:<port>:<guest port>`.
pub struct Published {
    pub server: Server,
    /// The host port on 127.0.0.1.
    pub port: u16,
    /// The guest's `listening on` line.
    pub listening: String,
}

impl Published {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A new connection with [`IO_TIMEOUT`]s; fails the test (showing
    /// what flint printed) if it cannot connect.
    #[track_caller]
    pub fn connect(&self) -> Conn {
        Conn::open(self.addr()).unwrap_or_else(|e| self.server.fail(e))
    }
}

/// Boots `app` (with `-- guest_args`) published on a free loopback port
/// forwarding to `guest_port`, plus monitor options `opts`, and waits for
/// its `listening on` line. Retries with another port if flint lost the
/// race for the first one.
#[track_caller]
pub fn publish(app: &str, guest_port: u16, guest_args: &[&str], opts: &[&str]) -> Published {
    let mut last = None;
    for _ in 0..3 {
        let port = free_port();
        let spec = format!("127.0.0.1:{port}:{guest_port}");
        let mut run = Run::image(&image(app)).opts(&["--publish", &spec]);
        run = run.opts(opts);
        if !guest_args.is_empty() {
            run = run.guest(guest_args);
        }
        let server = run.serve();
        match server.try_wait_line("listening on", super::server::LISTEN_WITHIN) {
            Ok(listening) => {
                return Published {
                    server,
                    port,
                    listening,
                }
            }
            Err(why) => {
                let lost_race =
                    !server.running() && server.snapshot().stderr_str().contains("in use");
                if !lost_race {
                    server.fail(why);
                }
                last = Some(server.snapshot());
            }
        }
    }
    panic!(
        "three free ports were taken before flint could bind them\n{}",
        last.expect("three tries")
    )
}

/// One HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A test's TCP connection, keeping every byte it received for messages.
pub struct Conn {
    pub stream: TcpStream,
    /// Received and not yet consumed.
    unread: Vec<u8>,
    /// Everything received, for failure messages.
    pub seen: Vec<u8>,
    pub eof: bool,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            unread: Vec::new(),
            seen: Vec::new(),
            eof: false,
        })
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn shutdown_write(&mut self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }

    /// Reads more into `unread`; false at EOF.
    fn fill(&mut self) -> Result<bool, String> {
        let mut buf = [0u8; 16384];
        match self.stream.read(&mut buf) {
            Ok(0) => {
                self.eof = true;
                Ok(false)
            }
            Ok(n) => {
                self.unread.extend_from_slice(&buf[..n]);
                self.seen.extend_from_slice(&buf[..n]);
                Ok(true)
            }
            Err(e) => Err(self.saw(format_args!("read failed: {e}"))),
        }
    }

    /// `why`, then the bytes received so far.
    pub fn saw(&self, why: impl std::fmt::Display) -> String {
        format!(
            "{why}; received {} bytes{}: {:?}",
            self.seen.len(),
            if self.eof { " then EOF" } else { "" },
            String::from_utf8_lossy(&self.seen[..self.seen.len().min(2000)])
        )
    }

    /// Reads one response; `head` means it answers a HEAD request (no
    /// body whatever Content-Length says).
    pub fn response(&mut self, head: bool) -> Result<Response, String> {
        let end = loop {
            if let Some(i) = find(&self.unread, b"\r\n\r\n") {
                break i + 4;
            }
            if !self.fill()? {
                return Err(self.saw("EOF before the end of a response head"));
            }
        };
        let head_text = String::from_utf8_lossy(&self.unread[..end]).into_owned();
        self.unread.drain(..end);
        let mut lines = head_text.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status = status_line
            .strip_prefix("HTTP/1.")
            .and_then(|r| r.get(2..5))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| self.saw(format_args!("bad status line {status_line:?}")))?;
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if head || status == 204 || status == 304 || (100..200).contains(&status) {
            return Ok(response);
        }
        if let Some(len) = response.header("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| self.saw(format_args!("bad Content-Length {len:?}")))?;
            while self.unread.len() < len {
                if !self.fill()? {
                    return Err(self.saw(format_args!("EOF inside a {len}-byte body")));
                }
            }
            response.body = self.unread.drain(..len).collect();
        } else if response
            .header("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        {
            return Err(self.saw("chunked responses are not expected from the http app"));
        } else {
            while self.fill()? {}
            response.body = std::mem::take(&mut self.unread);
        }
        Ok(response)
    }

    /// Reads until EOF (within `limit`) and returns what was not consumed.
    pub fn read_to_eof(&mut self, limit: Duration) -> Result<Vec<u8>, String> {
        let start = Instant::now();
        while self.fill()? {
            if start.elapsed() > limit {
                return Err(self.saw(format_args!("no EOF within {limit:?}")));
            }
        }
        Ok(std::mem::take(&mut self.unread))
    }

    /// Sets SO_LINGER to 0, so closing sends a reset instead of a FIN.
    pub fn set_linger_zero(&self) {
        use std::os::fd::AsRawFd;
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on a socket we own, with a correctly sized
        // `linger` value.
        let rc = unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `GET path` (or another `method`) with `Connection: close` on a new
/// connection; the response, or why there was none.
pub fn request(p: &Published, method: &str, path: &str) -> Result<Response, String> {
    let mut c = Conn::open(p.addr()).map_err(|e| format!("connect: {e}"))?;
    let req = format!("{method} {path} HTTP/1.1\r\nHost: flint\r\nConnection: close\r\n\r\n");
    c.send(req.as_bytes())
        .map_err(|e| c.saw(format_args!("send: {e}")))?;
    c.response(method == "HEAD")
}

/// A process's user + system CPU time so far (all its threads), from
/// `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Duration {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // Fields after the `(comm)`, which may itself hold spaces: state is
    // field 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')').expect("comm in /proc stat") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// The `flint: stats: ` lines of `stderr`, without the prefix.
pub fn stats_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("flint: stats: "))
        .map(str::to_owned)
        .collect()
}

/// Every `key=value` number of the stats line whose first word is `first`
/// (e.g. `vm_exits=...` or `net`), or None if there is no such line.
pub fn stats_line(stderr: &str, first: &str) -> Option<HashMap<String, u64>> {
    let line = stats_lines(stderr)
        .into_iter()
        .find(|l| l.split([' ', '=']).next() == Some(first))?;
    Some(
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
            .collect(),
    )
}

/// Checks `GET /health` still answers `ok` (after something that might
/// have broken the server).
#[track_caller]
pub fn still_healthy(p: &Published, after: &str) {
    match request(p, "GET", "/health") {
        Ok(r) if r.status == 200 && r.body_str().trim_end() == "ok" => {}
        Ok(r) => p.server.fail(format_args!(
            "after {after}, GET /health gave {} {:?}",
            r.status,
            r.body_str()
        )),
        Err(e) => p
            .server
            .fail(format_args!("after {after}, GET /health failed: {e}")),
    }
}

/// Waits for every client thread and returns what each failed one said (a
/// panicking client counts as a failure too).
pub fn client_failures(clients: Vec<std::thread::JoinHandle<Result<(), String>>>) -> Vec<String> {
    clients
        .into_iter()
        .filter_map(|t| {
            t.join()
                .unwrap_or_else(|_| Err("client thread panicked".into()))
                .err()
        })
        .collect()
}
