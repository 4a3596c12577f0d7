//! The server's connections, over bare TCP: what a client that stalls, floods or sends a
//! request the server refuses early can do to the connection and to everyone else.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::time::Duration;

use common::{Server, ADMIN_TOKEN};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A generous bound for a liveness check: an answer within it, or the test fails.
const LIVENESS: Duration = Duration::from_secs(10);

fn addr(s: &Server) -> String {
    s.base.trim_start_matches("http://").to_owned()
}

/// One HTTP/1.1 response read off `stream`: status, lower-cased head, body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k.trim() == name).then_some(v.trim())
        })
    }
}

/// Reads one response (its head, then `Content-Length` bytes of body); `None` when the
/// server closes the connection first.
async fn read_answer(stream: &mut (impl AsyncRead + Unpin)) -> Option<Answer> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(LIVENESS, stream.read(&mut byte))
            .await
            .expect("the server neither answered nor closed")
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let status = head
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .expect("status");
    let mut answer = Answer {
        status,
        head,
        body: String::new(),
    };
    let len: usize = answer
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    tokio::time::timeout(LIVENESS, stream.read_exact(&mut body))
        .await
        .expect("the body never came")
        .ok()?;
    answer.body = String::from_utf8_lossy(&body).into_owned();
    Some(answer)
}

/// Whether the server closed the connection (EOF or reset) within the liveness bound.
async fn closed_by_server(stream: &mut (impl AsyncRead + Unpin)) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(LIVENESS, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Whether the server has closed `socket`, without waiting.
fn is_closed(socket: &TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match socket.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

// ---------------------------------------------------------------------------------------
// A request refused before its body is read
// ---------------------------------------------------------------------------------------

/// A POST or PATCH answered before its body was read (no token, an unknown table, a
/// caller without the role) either leaves the connection usable for the next request or
/// says `Connection: close` — never closes a connection it told the client to keep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_before_its_body_is_read_keeps_its_connection_honest() {
    let s = Server::start().await;
    s.create_tenant("acme").await;
    let body = format!(r#"[{{"name":"{}"}}]"#, "x".repeat(200_000));
    let cases = [
        ("POST", "/v1/tenants", None),
        ("POST", "/t/acme/v1/data/members", None),
        ("POST", "/t/acme/v1/data/nope", Some(ADMIN_TOKEN)),
        ("PATCH", "/t/acme/v1/data/nope/1", Some(ADMIN_TOKEN)),
        ("PATCH", "/t/acme/v1/data/members/m1", None),
    ];
    for (method, path, token) in cases {
        for len in [64, body.len()] {
            let mut stream = TcpStream::connect(addr(&s)).await.unwrap();
            let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
            let head = format!(
                "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}\
                 Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            // The body goes out as the server takes it; a body the server never takes
            // is no failure by itself.
            let (mut reader, mut writer) = stream.into_split();
            let payload = body.as_bytes()[..len].to_vec();
            let sending = tokio::spawn(async move {
                let _ = writer.write_all(&payload).await;
                writer
            });
            let context = format!("{method} {path} ({len} bytes)");
            let answer = read_answer(&mut reader).await.expect(&context);
            // Refused, whether before its body was read or (a short body) after.
            assert!(
                (400..500).contains(&answer.status),
                "{context}: {}",
                answer.head
            );
            if answer.header("connection") == Some("close") {
                // Told: the client opens a new connection, and this one ends.
                assert!(
                    closed_by_server(&mut reader).await,
                    "{context}: said close, kept it"
                );
                continue;
            }
            // Not told: the connection takes the next request.
            let mut writer = tokio::time::timeout(LIVENESS, sending)
                .await
                .unwrap_or_else(|_| panic!("{context}: body never taken, connection kept"))
                .unwrap();
            writer
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await
                .unwrap_or_else(|e| panic!("{context}: the kept connection was closed: {e}"));
            let next = read_answer(&mut reader).await;
            assert_eq!(
                next.map(|a| a.status),
                Some(200),
                "{context}: the kept connection failed the next request"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Timeouts and the connection cap
// ---------------------------------------------------------------------------------------

fn limits(
    max: usize,
    header_read: Duration,
    idle: Duration,
    request: Duration,
) -> tenancy_http::HttpConfig {
    tenancy_http::HttpConfig {
        connections: tenancy_http::ConnectionLimits {
            max_connections: max,
            header_read_timeout: header_read,
            idle_timeout: idle,
            request_timeout: request,
            ..Default::default()
        },
        ..Default::default()
    }
}

const LONG: Duration = Duration::from_secs(120);
const SHORT: Duration = Duration::from_millis(500);

async fn healthz(s: &Server) -> u16 {
    tokio::time::timeout(LIVENESS, s.client.get(format!("{}/healthz", s.base)).send())
        .await
        .expect("/healthz answers")
        .expect("/healthz")
        .status()
        .as_u16()
}

/// A request head sent in part, or a byte at a time, is closed once the header timeout
/// has passed since its first byte, though the idle timeout is far off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_request_head_is_closed_after_the_header_timeout() {
    let s = Server::start_with(limits(100, SHORT, LONG, LONG)).await;
    let mut half = TcpStream::connect(addr(&s)).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: local")
        .await
        .unwrap();
    let mut trickle = TcpStream::connect(addr(&s)).await.unwrap();
    let trickling = async {
        let head = b"GET /healthz HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for byte in head {
            if trickle.write_all(&[*byte]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    // The trickle's writes fail once the server has closed it (or its reads end).
    let refused_midway = trickling.await;
    assert!(closed_by_server(&mut half).await, "a half head stays open");
    assert!(
        refused_midway || closed_by_server(&mut trickle).await,
        "a head sent a byte at a time stays open"
    );
    assert_eq!(healthz(&s).await, 200, "whole requests are served");
}

/// A connection that says nothing, and a kept-alive one left unused after its request,
/// are closed once the idle timeout has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_unused_connections_are_closed_after_the_idle_timeout() {
    let s = Server::start_with(limits(100, LONG, SHORT, LONG)).await;
    let mut silent = TcpStream::connect(addr(&s)).await.unwrap();
    let mut used = TcpStream::connect(addr(&s)).await.unwrap();
    used.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut used).await.expect("answer");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("connection"), None, "kept alive");
    assert!(closed_by_server(&mut silent).await, "a silent connection");
    assert!(
        closed_by_server(&mut used).await,
        "an unused kept-alive connection"
    );
}

/// A request whose body stops arriving answers `408 request_timeout` (problem+json) and
/// closes its connection once the request timeout has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_request_timeout_answers_408() {
    let s = Server::start_with(limits(100, LONG, LONG, Duration::from_secs(1))).await;
    let mut slow = TcpStream::connect(addr(&s)).await.unwrap();
    slow.write_all(
        b"POST /v1/auth/signup HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"email\":",
    )
    .await
    .unwrap();
    let answer = read_answer(&mut slow).await.expect("an answer");
    assert_eq!(answer.status, 408, "{}", answer.head);
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json")
    );
    let problem: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(problem["code"], "request_timeout", "{problem}");
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(closed_by_server(&mut slow).await);
}

/// Far more silent and half-head sockets than the cap: the server keeps at most the cap
/// open (the idlest make room for new ones), and `/healthz` and a tenant's read answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_sockets_past_the_cap_locks_no_one_out() {
    const CAP: usize = 8;
    let s = Server::start_with(limits(CAP, LONG, LONG, LONG)).await;
    s.create_tenant("acme").await;
    let read = || async {
        let resp = tokio::time::timeout(
            LIVENESS,
            s.client
                .get(format!("{}/t/acme/v1/data/members", s.base))
                .bearer_auth(ADMIN_TOKEN)
                .send(),
        )
        .await
        .expect("a tenant read answers")
        .expect("read");
        resp.status().as_u16()
    };
    let mut flood = Vec::new();
    for i in 0..100 {
        let mut socket = TcpStream::connect(addr(&s)).await.unwrap();
        if i % 2 == 0 {
            socket
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: loc")
                .await
                .unwrap();
        }
        flood.push(socket);
    }
    for _ in 0..5 {
        assert_eq!(healthz(&s).await, 200);
        assert_eq!(read().await, 200);
    }
    // At most the cap stays open; every other flood socket was closed by the server.
    let deadline = tokio::time::Instant::now() + LIVENESS;
    loop {
        let closed = flood.iter().filter(|s| is_closed(s)).count();
        if closed >= flood.len() - CAP {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {closed} of {} flood sockets were closed; the cap is {CAP}",
            flood.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// When every connection under the cap is busy (a request in progress), a new one is
/// answered a minimal `503 too_many_connections` with `Connection: close`; once one frees
/// up, new connections are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_connection_is_busy_a_new_one_is_refused_with_503() {
    const CAP: usize = 4;
    let s = Server::start_with(limits(CAP, LONG, LONG, LONG)).await;
    let mut busy = Vec::new();
    for _ in 0..CAP {
        let mut socket = TcpStream::connect(addr(&s)).await.unwrap();
        socket
            .write_all(
                b"POST /v1/auth/signup HTTP/1.1\r\nHost: localhost\r\n\
                  Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
            )
            .await
            .unwrap();
        busy.push(socket);
    }
    // The uploads' heads must have reached their handlers before the next connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut refused = TcpStream::connect(addr(&s)).await.unwrap();
    refused
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut refused).await.expect("a refusal");
    assert_eq!(answer.status, 503, "{}", answer.head);
    assert_eq!(answer.header("connection"), Some("close"));
    assert_eq!(answer.header("retry-after"), Some("1"));
    let problem: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(problem["code"], "too_many_connections", "{problem}");

    drop(busy.pop());
    let deadline = tokio::time::Instant::now() + LIVENESS;
    loop {
        let mut socket = TcpStream::connect(addr(&s)).await.unwrap();
        socket
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        match read_answer(&mut socket).await.map(|a| a.status) {
            Some(200) => break,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "a freed slot is never reused: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
