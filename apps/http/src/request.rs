//! HTTP/1.0 and 1.1 request heads (RFC 9112), parsed from a byte buffer
//! without copying.
//!
//! Only what this server needs is kept: method, path, version, whether
//! the connection stays open, and the body length (the server skips
//! bodies). Anything that does not parse, or that would make the message
//! length ambiguous, is [`Parse::Invalid`]: the server answers 400 and
//! closes.

/// The longest request head accepted (request line and headers).
pub const HEAD_MAX: usize = 8192;

/// The request methods the server tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// HEAD: a GET without the body in the response.
    Head,
    /// Any other (well-formed) method.
    Other,
}

/// One parsed request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method.
    pub method: Method,
    /// The path, without query string (`/` for `*` or an empty path).
    pub path: &'a [u8],
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Whether the client wants the connection kept open afterwards.
    pub keep_alive: bool,
    /// Bytes of body that follow the head.
    pub content_length: usize,
}

/// What [`parse`] found at the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parse<'a> {
    /// No complete head yet; read more.
    Incomplete,
    /// A request whose head takes the first `usize` bytes (its body, if
    /// any, follows).
    Complete(Request<'a>, usize),
    /// Not a valid request (or a head over [`HEAD_MAX`]).
    Invalid,
}

/// Parses the request head at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parse<'_> {
    // A server should ignore empty lines before the request line (RFC 9112
    // section 2.2).
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let Some(end) = head_end(&buf[start..]) else {
        return if buf.len() >= HEAD_MAX {
            Parse::Invalid
        } else {
            Parse::Incomplete
        };
    };
    let head_len = start + end;
    if head_len > HEAD_MAX {
        return Parse::Invalid;
    }
    match parse_head(&buf[start..head_len]) {
        Some(request) => Parse::Complete(request, head_len),
        None => Parse::Invalid,
    }
}

/// The length of the head up to and including the empty line that ends
/// it (CRLF CRLF, or bare LFs, which RFC 9112 allows a server to accept).
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(nl) = buf[i..].iter().position(|&b| b == b'\n') {
        let after = i + nl + 1;
        match buf.get(after..) {
            Some([b'\n', ..]) => return Some(after + 1),
            Some([b'\r', b'\n', ..]) => return Some(after + 2),
            _ => i = after,
        }
    }
    None
}

/// Splits `head` into lines, each without its CRLF or LF.
fn lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    head.split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
}

fn parse_head(head: &[u8]) -> Option<Request<'_>> {
    let mut lines = lines(head);
    let (method, target, minor_version) = request_line(lines.next()?)?;
    let mut request = Request {
        method,
        path: path_of(target)?,
        minor_version,
        keep_alive: minor_version == 1,
        content_length: 0,
    };
    let mut content_length = None;
    let mut has_host = false;
    for line in lines.take_while(|line| !line.is_empty()) {
        let (name, value) = header(line)?;
        if name.eq_ignore_ascii_case(b"host") {
            // Exactly one Host (RFC 9112 section 3.2).
            if has_host {
                return None;
            }
            has_host = true;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let length = decimal(value)?;
            // Repeated with another value: the length is ambiguous.
            if content_length.is_some_and(|l| l != length) {
                return None;
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Chunked bodies are not supported; refusing them also shuts
            // out request smuggling through conflicting lengths.
            return None;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for option in value.split(|&b| b == b',').map(trim) {
                if option.eq_ignore_ascii_case(b"close") {
                    request.keep_alive = false;
                } else if option.eq_ignore_ascii_case(b"keep-alive") && minor_version == 0 {
                    request.keep_alive = true;
                }
            }
        }
    }
    // An HTTP/1.1 request without Host is invalid (RFC 9112 section 3.2).
    if minor_version == 1 && !has_host {
        return None;
    }
    request.content_length = content_length.unwrap_or(0);
    Some(request)
}

/// `METHOD SP request-target SP HTTP/1.x`.
fn request_line(line: &[u8]) -> Option<(Method, &[u8], u8)> {
    let mut parts = line.split(|&b| b == b' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !is_token(method) || target.is_empty() {
        return None;
    }
    let minor_version = match version {
        b"HTTP/1.1" => 1,
        b"HTTP/1.0" => 0,
        _ => return None,
    };
    let method = match method {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        _ => Method::Other,
    };
    Some((method, target, minor_version))
}

/// The path of a request target: origin form (`/a?b`), absolute form
/// (`http://host/a`) or `*`.
fn path_of(target: &[u8]) -> Option<&[u8]> {
    if target.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return None;
    }
    let path = if target == b"*" {
        b"/"
    } else if target.starts_with(b"/") {
        target
    } else {
        let rest = strip_prefix_ignore_case(target, b"http://")
            .or_else(|| strip_prefix_ignore_case(target, b"https://"))?;
        match rest.iter().position(|&b| b == b'/' || b == b'?') {
            Some(i) if rest[i] == b'/' => &rest[i..],
            _ => b"/",
        }
    };
    let path = path.split(|&b| b == b'?').next().unwrap_or(path);
    Some(if path.is_empty() { b"/" } else { path })
}

fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `name ":" OWS value OWS`; no space before the colon, no line folding.
fn header(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    let value = trim(&line[colon + 1..]);
    if !is_token(name) || value.iter().any(|&b| b < b' ' && b != b'\t' || b == 0x7f) {
        return None;
    }
    Some((name, value))
}

/// A Content-Length value: ASCII digits only, no sign, no overflow.
fn decimal(value: &[u8]) -> Option<usize> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0, |n, &d| n * 10 + usize::from(d - b'0')))
}

/// `value` without leading and trailing spaces and tabs.
fn trim(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// A token (RFC 9110 section 5.6.2): one or more tchars.
fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (Request<'_>, usize) {
        match parse(buf) {
            Parse::Complete(request, len) => (request, len),
            other => panic!("{:?} parsed as {other:?}", std::str::from_utf8(buf)),
        }
    }

    #[test]
    fn curl_get_is_keep_alive() {
        let buf = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n";
        let (request, len) = complete(buf);
        assert_eq!(len, buf.len());
        assert_eq!(request.method, Method::Get);
        assert_eq!(request.path, b"/health");
        assert!(request.keep_alive);
        assert_eq!(request.content_length, 0);
    }

    #[test]
    fn partial_heads_are_incomplete() {
        let buf = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for cut in 0..buf.len() {
            assert_eq!(parse(&buf[..cut]), Parse::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn pipelined_requests_parse_one_at_a_time() {
        let buf = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\n";
        let (first, len) = complete(buf);
        assert_eq!(first.path, b"/a");
        let (second, _) = complete(&buf[len..]);
        assert_eq!((second.method, second.path), (Method::Head, &b"/b"[..]));
    }

    #[test]
    fn connection_header_decides_keep_alive() {
        let (r, _) = complete(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n");
        assert!(!r.keep_alive);
        let (r, _) = complete(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!r.keep_alive);
        let (r, _) = complete(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(r.keep_alive);
        let (r, _) = complete(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: foo, close\r\n\r\n");
        assert!(!r.keep_alive);
    }

    #[test]
    fn bare_lf_leading_blank_lines_and_query_strings_are_accepted() {
        let (r, len) = complete(b"\r\n\nGET /health?x=1 HTTP/1.1\nHost: x\n\nrest");
        assert_eq!(r.path, b"/health");
        assert_eq!(len, 37);
    }

    #[test]
    fn absolute_form_and_asterisk_give_a_path() {
        let (r, _) = complete(b"GET http://example/health HTTP/1.1\r\nHost: example\r\n\r\n");
        assert_eq!(r.path, b"/health");
        let (r, _) = complete(b"GET HTTP://example HTTP/1.1\r\nHost: example\r\n\r\n");
        assert_eq!(r.path, b"/");
        let (r, _) = complete(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((r.method, r.path), (Method::Other, &b"/"[..]));
    }

    #[test]
    fn content_length_is_the_body_to_skip() {
        let (r, _) = complete(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(r.content_length, 12);
    }

    #[test]
    fn malformed_requests_are_invalid() {
        let cases: &[&[u8]] = &[
            b"garbage\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"G\xc3T / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET no-slash HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nNo colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\x01y\r\n\r\n",
        ];
        for case in cases {
            assert_eq!(
                parse(case),
                Parse::Invalid,
                "{:?}",
                std::string::String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn an_endless_head_is_invalid_at_the_limit() {
        let mut buf = std::vec::Vec::from(&b"GET / HTTP/1.1\r\nHost: x\r\n"[..]);
        while buf.len() + 19 < HEAD_MAX {
            buf.extend_from_slice(b"X-Pad: 0123456789\r\n");
        }
        assert_eq!(parse(&buf), Parse::Incomplete);
        buf.resize(HEAD_MAX, b'a');
        assert_eq!(parse(&buf), Parse::Invalid);
    }
}
