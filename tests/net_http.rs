//! The http app through `flint run --publish 127.0.0.1:<port>:80`, reached
//! with `curl` and with raw TCP from the test: the page, `/health`, 404,
//! 400, keep-alive, pipelining, HEAD, request bodies, half-close, slow
//! clients, vanished clients. Many clients: net_http_load.rs.

mod support;

use std::thread;
use std::time::Duration;

use support::kvm_or_skip;
use support::net::{publish, request, still_healthy, Published};
use support::tool::{curl, run_tool, tool_or_skip};

/// The http app, published on a free loopback port; None if the test is
/// skipped.
fn http() -> Option<Published> {
    if !kvm_or_skip() {
        return None;
    }
    Some(publish("http", 80, &[], &[]))
}

/// `http()` when curl is installed too.
fn http_and_curl() -> Option<Published> {
    if !tool_or_skip("curl", "curl") {
        return None;
    }
    http()
}

#[test]
fn http_says_where_it_listens() {
    let Some(p) = http() else { return };
    if p.listening != "http: listening on 10.0.2.15:80" {
        p.server.fail(format_args!(
            "expected the line \"http: listening on 10.0.2.15:80\" (user-mode default address), got {:?}",
            p.listening
        ));
    }
}

#[test]
fn curl_fetches_the_page_at_slash() {
    let Some(p) = http_and_curl() else { return };
    let got = curl(&[], &[], &p.url("/"));
    let body = got.expect(200);
    if !got.content_type.starts_with("text/html") || !body.contains('<') {
        got.out.fail(format_args!(
            "expected an HTML page (Content-Type text/html), got type {:?}",
            got.content_type
        ));
    }
}

#[test]
fn curl_gets_ok_from_health() {
    let Some(p) = http_and_curl() else { return };
    let got = curl(&[], &[], &p.url("/health"));
    if got.expect(200).trim_end() != "ok" {
        got.out.fail("expected the body `ok`");
    }
}

#[test]
fn unknown_path_is_404() {
    let Some(p) = http_and_curl() else { return };
    curl(&[], &[], &p.url("/no/such/page")).expect(404);
    still_healthy(&p, "a 404");
}

#[test]
fn curl_fetches_twice_over_one_keep_alive_connection() {
    let Some(p) = http_and_curl() else { return };
    // Two URLs on one curl command line share one connection; -v says
    // whether it was reused.
    let out = run_tool(
        "curl",
        &[
            "-sS",
            "-v",
            "--max-time",
            "15",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            &p.url("/health"),
            &p.url("/"),
        ],
        Duration::from_secs(30),
    );
    if !out.ok() || !out.stderr.contains("Re-using existing connection") {
        out.fail("expected curl to fetch both URLs and reuse its connection for the second");
    }
}

#[test]
fn malformed_requests_get_400_and_the_connection_closes() {
    let Some(p) = http() else { return };
    let bad: [&[u8]; 4] = [
        b"THIS IS NOT HTTP\r\n\r\n",
        b"GET\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost flint no colon\r\n\r\n",
    ];
    for req in bad {
        let shown = String::from_utf8_lossy(req).into_owned();
        let mut c = p.connect();
        c.send(req).unwrap_or_else(|e| p.server.fail(e));
        let r = c
            .response(false)
            .unwrap_or_else(|e| p.server.fail(format_args!("request {shown:?}: {e}")));
        if r.status != 400 {
            p.server.fail(format_args!(
                "request {shown:?}: expected 400, got {}",
                r.status
            ));
        }
        if let Err(e) = c.read_to_eof(Duration::from_secs(10)) {
            p.server.fail(format_args!(
                "request {shown:?}: expected the server to close after its 400: {e}"
            ));
        }
    }
    still_healthy(&p, "malformed requests");
}

#[test]
fn oversized_request_head_does_not_break_the_server() {
    let Some(p) = http() else { return };
    let mut c = p.connect();
    let mut req = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..2000 {
        req.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(40)).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    // The server may answer 4xx and close before taking all of it: a
    // failed write is fine, a hang or a dead server is not.
    let _ = c.send(&req);
    match c.response(false) {
        Ok(r) if (400..500).contains(&r.status) => {}
        Ok(r) => p.server.fail(format_args!(
            "a 100 KB request head got {}, expected a 4xx or a closed connection",
            r.status
        )),
        // Closed (FIN or reset) without an answer: allowed. Silence is not.
        Err(e) if c.eof || !(e.contains("temporarily unavailable") || e.contains("timed out")) => {}
        Err(e) => p.server.fail(format_args!("a 100 KB request head: {e}")),
    }
    drop(c);
    still_healthy(&p, "a 100 KB request head");
}

#[test]
fn keep_alive_serves_two_requests_on_one_connection() {
    let Some(p) = http() else { return };
    let mut c = p.connect();
    for (path, want) in [
        ("/health", Some("ok")),
        ("/", None),
        ("/health", Some("ok")),
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: flint\r\n\r\n");
        c.send(req.as_bytes())
            .unwrap_or_else(|e| p.server.fail(c.saw(format_args!("sending {path}: {e}"))));
        let r = c.response(false).unwrap_or_else(|e| {
            p.server
                .fail(format_args!("GET {path} on a kept-alive connection: {e}"))
        });
        let body = r.body_str();
        if r.status != 200 || want.is_some_and(|w| body.trim_end() != w) {
            p.server
                .fail(c.saw(format_args!("GET {path}: unexpected response")));
        }
        if r.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            p.server
                .fail(c.saw("a keep-alive request got `Connection: close`"));
        }
    }
}

#[test]
fn connection_close_is_honoured() {
    let Some(p) = http() else { return };
    let mut c = p.connect();
    c.send(b"GET /health HTTP/1.1\r\nHost: flint\r\nConnection: close\r\n\r\n")
        .unwrap_or_else(|e| p.server.fail(e));
    let r = c.response(false).unwrap_or_else(|e| p.server.fail(e));
    if r.status != 200 {
        p.server.fail(c.saw("expected 200"));
    }
    if let Err(e) = c.read_to_eof(Duration::from_secs(10)) {
        p.server
            .fail(format_args!("expected EOF after `Connection: close`: {e}"));
    }
}

#[test]
fn head_gets_the_headers_of_get_without_a_body() {
    let Some(p) = http() else { return };
    let get = request(&p, "GET", "/").unwrap_or_else(|e| p.server.fail(e));
    let mut c = p.connect();
    c.send(b"HEAD / HTTP/1.1\r\nHost: flint\r\n\r\n")
        .unwrap_or_else(|e| p.server.fail(e));
    let head = c.response(true).unwrap_or_else(|e| p.server.fail(e));
    if head.status != 200 || head.header("content-length") != Some(&get.body.len().to_string()) {
        p.server.fail(c.saw(format_args!(
            "expected HEAD / to be 200 with Content-Length {}",
            get.body.len()
        )));
    }
    // No body bytes may follow: the next response must start right away.
    c.send(b"GET /health HTTP/1.1\r\nHost: flint\r\n\r\n")
        .unwrap_or_else(|e| p.server.fail(e));
    match c.response(false) {
        Ok(r) if r.status == 200 && r.body_str().trim_end() == "ok" => {}
        other => p.server.fail(c.saw(format_args!(
            "after HEAD, the next request on the connection got {other:?}"
        ))),
    }
}

#[test]
fn slow_client_sending_the_request_byte_by_byte_gets_an_answer() {
    let Some(p) = http() else { return };
    let mut c = p.connect();
    for b in b"GET /health HTTP/1.1\r\nHost: flint\r\n\r\n" {
        c.send(&[*b]).unwrap_or_else(|e| p.server.fail(e));
        thread::sleep(Duration::from_millis(25));
    }
    match c.response(false) {
        Ok(r) if r.status == 200 && r.body_str().trim_end() == "ok" => {}
        other => p.server.fail(c.saw(format_args!(
            "a request sent one byte per 25 ms got {other:?}"
        ))),
    }
}

#[test]
fn clients_that_vanish_do_not_break_the_server() {
    let Some(p) = http() else { return };
    for round in 0..5 {
        // Connects and closes at once (FIN, nothing sent).
        drop(p.connect());
        // Connects and resets without sending.
        let c = p.connect();
        c.set_linger_zero();
        drop(c);
        // Half a request, then a reset.
        let mut c = p.connect();
        let _ = c.send(b"GET /health HTTP/1.1\r\nHo");
        c.set_linger_zero();
        drop(c);
        // A whole request, then a reset before reading the answer.
        let mut c = p.connect();
        let _ = c.send(b"GET / HTTP/1.1\r\nHost: flint\r\n\r\n");
        c.set_linger_zero();
        drop(c);
        // Half a request, then a FIN.
        let mut c = p.connect();
        let _ = c.send(b"GET /heal");
        drop(c);
        still_healthy(&p, &format!("round {round} of vanishing clients"));
    }
    if tool_or_skip("curl", "curl") {
        let got = curl(&[], &[], &p.url("/health"));
        if got.expect(200).trim_end() != "ok" {
            got.out.fail("after vanishing clients, expected `ok`");
        }
    }
}

#[test]
fn http_takes_its_port_as_an_argument() {
    if !kvm_or_skip() {
        return;
    }
    let p = publish("http", 8080, &["8080"], &[]);
    if !p.listening.ends_with(":8080") {
        p.server.fail(format_args!(
            "expected it to listen on port 8080, said {:?}",
            p.listening
        ));
    }
    still_healthy(&p, "starting on port 8080");
}

#[test]
fn pipelined_requests_get_their_answers_in_order() {
    let Some(p) = http() else { return };
    let mut c = p.connect();
    // Three requests in one write: the server must answer all three, in
    // order (RFC 9112 section 9.3.2).
    c.send(
        b"GET /health HTTP/1.1\r\nHost: flint\r\n\r\n\
          GET /nope HTTP/1.1\r\nHost: flint\r\n\r\n\
          GET /health HTTP/1.1\r\nHost: flint\r\n\r\n",
    )
    .unwrap_or_else(|e| p.server.fail(e));
    for (i, want) in [200, 404, 200].into_iter().enumerate() {
        match c.response(false) {
            Ok(r) if r.status == want => {}
            other => p.server.fail(c.saw(format_args!(
                "pipelined request {i}: expected {want}, got {other:?}"
            ))),
        }
    }
}

#[test]
fn a_request_body_is_skipped_and_the_connection_goes_on() {
    let Some(p) = http() else { return };
    let mut c = p.connect();
    c.send(b"POST /health HTTP/1.1\r\nHost: flint\r\nContent-Length: 11\r\n\r\nhello=world")
        .unwrap_or_else(|e| p.server.fail(e));
    let first = c
        .response(false)
        .unwrap_or_else(|e| p.server.fail(format_args!("POST with a body: {e}")));
    if first
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    {
        // Closing after a request with a body is allowed; nothing more to see.
        return;
    }
    // The body must not be taken for the next request.
    c.send(b"GET /health HTTP/1.1\r\nHost: flint\r\n\r\n")
        .unwrap_or_else(|e| p.server.fail(e));
    match c.response(false) {
        Ok(r) if r.status == 200 && r.body_str().trim_end() == "ok" => {}
        other => p.server.fail(c.saw(format_args!(
            "after a POST with an 11-byte body (answered {}), GET /health got {other:?}",
            first.status
        ))),
    }
}

#[test]
fn http_answers_a_client_that_half_closed_after_its_request() {
    let Some(p) = http() else { return };
    let mut c = p.connect();
    c.send(b"GET /health HTTP/1.1\r\nHost: flint\r\n\r\n")
        .unwrap_or_else(|e| p.server.fail(e));
    c.shutdown_write().unwrap_or_else(|e| p.server.fail(e));
    match c.response(false) {
        Ok(r) if r.status == 200 && r.body_str().trim_end() == "ok" => {}
        other => p.server.fail(c.saw(format_args!(
            "a request followed by the client's FIN got {other:?}"
        ))),
    }
    if let Err(e) = c.read_to_eof(Duration::from_secs(10)) {
        p.server.fail(format_args!(
            "expected the server to close after the client's FIN: {e}"
        ));
    }
}

#[test]
fn http_1_0_request_gets_an_answer_and_the_connection_closes() {
    let Some(p) = http() else { return };
    let mut c = p.connect();
    // HTTP/1.0 without `Connection: keep-alive` is not persistent (RFC 9112
    // section 9.3): answer, then close.
    c.send(b"GET /health HTTP/1.0\r\n\r\n")
        .unwrap_or_else(|e| p.server.fail(e));
    match c.response(false) {
        Ok(r) if r.status == 200 && r.body_str().trim_end() == "ok" => {}
        other => p
            .server
            .fail(c.saw(format_args!("GET /health HTTP/1.0 got {other:?}"))),
    }
    if let Err(e) = c.read_to_eof(Duration::from_secs(10)) {
        p.server.fail(format_args!(
            "expected the server to close after an HTTP/1.0 answer: {e}"
        ));
    }
}
