//! The native baseline of `bench net`: a small HTTP/1.1 server on loopback,
//! std only, one thread per connection, keep-alive and pipelining. It
//! answers each path with bytes it is given: the bench hands it the exact
//! responses the guest's http app gave, so both serve identical bytes.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;

/// Longest request head the server reads before answering 400 and closing.
const MAX_HEAD: usize = 16 * 1024;

/// Whole responses (status line, headers and body) by request path.
#[derive(Clone, Debug, Default)]
pub struct Responses {
    /// Path → response bytes.
    pub by_path: HashMap<String, Vec<u8>>,
    /// For any other path.
    pub not_found: Vec<u8>,
    /// For a request that is not HTTP/1.x (sent before closing).
    pub bad_request: Vec<u8>,
}

/// A running server; it lives as long as the process (the bench is short).
pub struct NativeHttp {
    /// Where it listens (127.0.0.1, a free port).
    pub addr: SocketAddr,
}

/// Starts the server on `127.0.0.1:0` in background threads.
pub fn start(responses: Responses) -> io::Result<NativeHttp> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let responses = Arc::new(responses);
    thread::Builder::new()
        .name("native-http".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let responses = responses.clone();
                let _ = thread::Builder::new()
                    .name("native-http-conn".into())
                    .spawn(move || serve(stream, &responses));
            }
        })?;
    Ok(NativeHttp { addr })
}

/// Serves one connection until the client closes it, asks to close, or
/// sends something that is not HTTP.
fn serve(mut stream: TcpStream, responses: &Responses) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        // Answer every complete request head already buffered (pipelining)
        // in one write.
        let mut out = Vec::new();
        let mut close = false;
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            match parse_head(&head) {
                Some(req) => {
                    out.extend_from_slice(
                        responses
                            .by_path
                            .get(req.path)
                            .unwrap_or(&responses.not_found),
                    );
                    if req.close {
                        close = true;
                        break;
                    }
                }
                None => {
                    out.extend_from_slice(&responses.bad_request);
                    close = true;
                    break;
                }
            }
        }
        if !out.is_empty() && stream.write_all(&out).is_err() {
            return;
        }
        if close || buf.len() > MAX_HEAD {
            if !close {
                let _ = stream.write_all(&responses.bad_request);
            }
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The parts of a request head the server acts on.
#[derive(Debug, PartialEq, Eq)]
struct Request<'a> {
    path: &'a str,
    /// `Connection: close`, or HTTP/1.0 without `Connection: keep-alive`.
    close: bool,
}

fn parse_head(head: &str) -> Option<Request<'_>> {
    let mut lines = head.split("\r\n");
    let mut words = lines.next()?.split(' ');
    let (_method, path, version) = (words.next()?, words.next()?, words.next()?);
    if words.next().is_some() || !path.starts_with('/') {
        return None;
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return None,
    };
    let mut connection = None;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        if name.trim().eq_ignore_ascii_case("connection") {
            connection = Some(value.trim().to_ascii_lowercase());
        }
    }
    let close = match connection.as_deref() {
        Some("close") => true,
        Some("keep-alive") => false,
        _ => http10,
    };
    Some(Request { path, close })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn responses() -> Responses {
        let mut by_path = HashMap::new();
        by_path.insert(
            "/health".to_owned(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        );
        Responses {
            by_path,
            not_found: b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
            bad_request: b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".to_vec(),
        }
    }

    #[test]
    fn request_heads_are_parsed() {
        let r = parse_head("GET /health HTTP/1.1\r\nHost: x").unwrap();
        assert_eq!(
            r,
            Request {
                path: "/health",
                close: false
            }
        );
        assert!(
            parse_head("GET / HTTP/1.1\r\nConnection: Close")
                .unwrap()
                .close
        );
        assert!(parse_head("GET / HTTP/1.0").unwrap().close);
        assert!(parse_head("GET / HTTP/2").is_none());
        assert!(parse_head("garbage").is_none());
        assert!(parse_head("GET / HTTP/1.1\r\nno colon").is_none());
    }

    #[test]
    fn serves_pipelined_requests_then_closes_on_request() {
        let server = start(responses()).unwrap();
        let mut c = TcpStream::connect(server.addr).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        c.write_all(b"GET /health HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        let r = responses();
        let mut want = r.by_path["/health"].clone();
        want.extend_from_slice(&r.not_found);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want)
        );
    }
}
