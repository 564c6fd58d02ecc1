//! What the server answers, and the bytes of its responses.

use alloc::vec::Vec;

use crate::request::{Method, Request};

/// The page at `/`.
pub const INDEX: &[u8] = b"<!DOCTYPE html>
<html>
<head><meta charset=\"utf-8\"><title>Flint</title></head>
<body>
<h1>Hello from Flint</h1>
<p>This page was served by a Rust unikernel in a KVM micro-VM, over smoltcp.</p>
</body>
</html>
";

/// A response: status, body and whether the connection closes after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type` of the body.
    pub content_type: &'static str,
    /// The body (left out for HEAD, but still counted in
    /// `Content-Length`).
    pub body: &'static [u8],
    /// Send the body (false for HEAD).
    pub send_body: bool,
    /// Close the connection after this response.
    pub close: bool,
    /// Say `Connection: keep-alive` (to an HTTP/1.0 client that asked).
    pub keep_alive_header: bool,
}

const HTML: &str = "text/html; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

impl Response {
    /// 400 Bad Request, closing the connection: the answer to anything
    /// that does not parse.
    pub const BAD_REQUEST: Response = Response {
        status: 400,
        content_type: TEXT,
        body: b"bad request\n",
        send_body: true,
        close: true,
        keep_alive_header: false,
    };

    /// The reason phrase of the status.
    pub fn reason(&self) -> &'static str {
        match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            _ => "Unknown",
        }
    }

    /// Appends the whole response (head, and body unless HEAD) to `out`;
    /// `date` is the `Date` header's value, `instance` the id of the Flint
    /// instance answering (`X-Flint-Instance`, so a client behind a fleet's
    /// load balancer can tell instances apart).
    pub fn write_to(&self, out: &mut Vec<u8>, date: &[u8], instance: u64) {
        let mut number = [0; 20];
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(decimal(self.status.into(), &mut number));
        out.push(b' ');
        out.extend_from_slice(self.reason().as_bytes());
        out.extend_from_slice(b"\r\nServer: flint\r\nX-Flint-Instance: ");
        out.extend_from_slice(decimal(instance, &mut number));
        out.extend_from_slice(b"\r\nDate: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\nContent-Type: ");
        out.extend_from_slice(self.content_type.as_bytes());
        out.extend_from_slice(b"\r\nContent-Length: ");
        out.extend_from_slice(decimal(self.body.len() as u64, &mut number));
        if self.status == 405 {
            out.extend_from_slice(b"\r\nAllow: GET, HEAD");
        }
        if self.close {
            out.extend_from_slice(b"\r\nConnection: close");
        } else if self.keep_alive_header {
            out.extend_from_slice(b"\r\nConnection: keep-alive");
        }
        out.extend_from_slice(b"\r\n\r\n");
        if self.send_body {
            out.extend_from_slice(self.body);
        }
    }
}

/// `n` in decimal, written at the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// The response to `request`: `/` and `/health` for GET and HEAD, 404 for
/// other paths, 405 for other methods.
pub fn respond(request: &Request) -> Response {
    let (status, content_type, body) = match (request.method, request.path) {
        (Method::Other, _) => (405, TEXT, &b"method not allowed\n"[..]),
        (_, b"/") => (200, HTML, INDEX),
        (_, b"/health") => (200, TEXT, &b"ok"[..]),
        _ => (404, TEXT, &b"not found\n"[..]),
    };
    Response {
        status,
        content_type,
        body,
        send_body: request.method != Method::Head,
        close: !request.keep_alive,
        keep_alive_header: request.keep_alive && request.minor_version == 0,
    }
}

#[cfg(test)]
mod tests {
    use std::string::String;

    use super::*;
    use crate::request::{parse, Parse};

    const DATE: &[u8] = b"Thu, 01 Jan 1970 00:00:00 GMT";

    fn answer(raw: &[u8]) -> String {
        let response = match parse(raw) {
            Parse::Complete(request, _) => respond(&request),
            Parse::Invalid => Response::BAD_REQUEST,
            Parse::Incomplete => panic!("incomplete"),
        };
        let mut out = Vec::new();
        response.write_to(&mut out, DATE, 7);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn health_says_ok() {
        let text = answer(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nServer: flint\r\nX-Flint-Instance: 7\r\n\
             Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n\
             Content-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\n\r\nok"
        );
    }

    #[test]
    fn index_is_html_and_head_has_no_body() {
        let get = answer(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(get.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(get.contains("Content-Type: text/html"));
        assert!(get.ends_with("</html>\n"));
        let head = answer(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
        let length = std::format!("Content-Length: {}\r\n", INDEX.len());
        assert!(head.contains(&length));
        assert!(head.ends_with("\r\n\r\n"));
    }

    #[test]
    fn unknown_paths_are_404_and_other_methods_405() {
        assert!(answer(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 404 "));
        let post = answer(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405 "));
        assert!(post.contains("\r\nAllow: GET, HEAD\r\n"));
    }

    #[test]
    fn close_is_announced() {
        let bad = answer(b"nonsense\r\n\r\n");
        assert!(bad.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(bad.contains("\r\nConnection: close\r\n"));
        let closing = answer(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert!(closing.contains("\r\nConnection: close\r\n"));
        let old = answer(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(old.contains("\r\nConnection: keep-alive\r\n"));
    }
}
