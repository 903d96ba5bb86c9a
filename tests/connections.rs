//! Client connections on raw sockets (SPEC §9): hyper's framing (pipelined
//! calls, heads in pieces, chunked bodies, `Expect`, HTTP/2), the head,
//! body and keep-alive timers, the connection caps, and a 401 or 413 answered
//! from the head without reading the body.

mod common;
use common::mock::{use_mock, Mock};
use common::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn setup_with(
    edit: impl FnOnce(&mut tollgate::config::Config),
) -> (Mock, TestServer, i64, String) {
    let mock = Mock::start().await;
    let s = TestServer::start_with(|cfg| {
        use_mock(cfg, &mock, &["aiml"]);
        cfg.server.header_timeout_secs = 1;
        cfg.server.body_timeout_secs = 1;
        cfg.server.keep_alive_secs = 2;
        edit(cfg);
    })
    .await;
    let (uid, _, key) = s.user_with_key("fred", Some("pro")).await;
    (mock, s, uid, key)
}

async fn setup() -> (Mock, TestServer, i64, String) {
    setup_with(|_| {}).await
}

fn post(path: &str, key: &str, body: &Value, extra: &str) -> String {
    let body = body.to_string();
    format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn chat_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

struct Answer {
    status: u16,
    /// Lower-cased header lines.
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one answer (Content-Length or chunked) from `conn`; `buf` keeps what
/// was read past it. A test helper reading a known server's answers.
async fn read_answer(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Answer {
    async fn more(conn: &mut TcpStream, buf: &mut Vec<u8>) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut chunk))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(
            n > 0,
            "connection closed mid-answer: {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        more(conn, buf).await;
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    buf.drain(..head_end);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let mut answer = Answer {
        status,
        headers,
        body: String::new(),
    };
    if (100..200).contains(&answer.status) {
        return answer;
    }
    if let Some(len) = answer.header("content-length") {
        let len: usize = len.parse().unwrap();
        while buf.len() < len {
            more(conn, buf).await;
        }
        answer.body = String::from_utf8(buf.drain(..len).collect()).unwrap();
        return answer;
    }
    assert_eq!(answer.header("transfer-encoding"), Some("chunked"));
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            more(conn, buf).await;
        };
        let size = usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap(), 16)
            .expect("a chunk size");
        while buf.len() < line_end + 2 + size + 2 {
            more(conn, buf).await;
        }
        let data = buf[line_end + 2..line_end + 2 + size].to_vec();
        buf.drain(..line_end + 4 + size);
        if size == 0 {
            return answer;
        }
        answer.body.push_str(std::str::from_utf8(&data).unwrap());
    }
}

/// Sends `raw` on a new connection and reads one answer.
async fn one_answer(s: &TestServer, raw: &str) -> Answer {
    let mut conn = TcpStream::connect(s.addr).await.unwrap();
    conn.write_all(raw.as_bytes()).await.unwrap();
    read_answer(&mut conn, &mut Vec::new()).await
}

/// How long until the server closes `conn` (reads give EOF or an error),
/// reading and dropping whatever it sends; `None` if still open at `within`.
async fn closed_after(conn: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut sink = [0u8; 4096];
    loop {
        let left = within.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, conn.read(&mut sink)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// A connection to the server from the loopback address `from`.
async fn connect_from(s: &TestServer, from: [u8; 4]) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::from((from, 0))).unwrap();
    sock.connect(s.addr).await.unwrap()
}

/// `GET /health` on a connection from `from`, which the server then closes.
async fn health_from(s: &TestServer, from: [u8; 4]) -> u16 {
    let mut c = connect_from(s, from).await;
    c.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let status = read_answer(&mut c, &mut Vec::new()).await.status;
    assert!(closed_after(&mut c, Duration::from_secs(2)).await.is_some());
    status
}

/// What the server sends on `conn` before it closes it (within 2 s).
async fn refusal_text(conn: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 1024];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut chunk)).await
    {
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn pipelined_calls_then_another_route_on_one_connection() {
    let (_mock, s, _, key) = setup().await;
    let mut conn = TcpStream::connect(s.addr).await.unwrap();
    let raw = post(
        "/v1/chat/completions",
        &key,
        &chat_body("aiml/usage:3:4", true),
        "",
    ) + &post(
        "/llm/chat/completions?x=1",
        &key,
        &chat_body("aiml/usage:5:6", false),
        "",
    ) + "GET /health HTTP/1.1\r\nHost: t\r\n\r\n";
    conn.write_all(raw.as_bytes()).await.unwrap();
    let mut buf = Vec::new();

    let a = read_answer(&mut conn, &mut buf).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("content-type"), Some("text/event-stream"));
    assert!(a.header("x-request-id").is_some_and(|v| v.len() > 8));
    assert!(a.header("date").is_some_and(|d| d.ends_with(" GMT")));
    assert!(a.body.contains("Hello"), "{}", a.body);
    assert!(a.body.trim_end().ends_with("data: [DONE]"), "{}", a.body);

    let b = read_answer(&mut conn, &mut buf).await;
    assert_eq!(b.status, 200, "{}", b.body);
    let v: Value = serde_json::from_str(&b.body).unwrap();
    assert_eq!(v["_usage_info"]["tokens_used"], 11, "{v}");
    assert_eq!(
        b.header("x-request-id"),
        v["_usage_info"]["request_id"].as_str()
    );

    let c = read_answer(&mut conn, &mut buf).await;
    assert_eq!(c.status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&c.body).unwrap()["status"],
        "ok"
    );
    let raw = post(
        "/v1/embeddings",
        &key,
        &json!({"model": "aiml/e", "input": "x"}),
        "",
    );
    conn.write_all(raw.as_bytes()).await.unwrap();
    let d = read_answer(&mut conn, &mut buf).await;
    assert_eq!(d.status, 200, "{}", d.body);
    assert!(buf.is_empty());
}

#[tokio::test]
async fn a_head_in_pieces_and_connection_close() {
    let (_mock, s, _, key) = setup().await;
    let mut conn = TcpStream::connect(s.addr).await.unwrap();
    let raw = post(
        "/v1/chat/completions",
        &key,
        &chat_body("aiml/x", false),
        "Connection: close\r\n",
    );
    for piece in raw.as_bytes().chunks(7) {
        conn.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut buf = Vec::new();
    let a = read_answer(&mut conn, &mut buf).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("connection"), Some("close"));
    assert!(closed_after(&mut conn, Duration::from_secs(5))
        .await
        .is_some());
}

#[tokio::test]
async fn chunked_bodies_and_expect_continue() {
    let (_mock, s, _, key) = setup().await;
    let body = chat_body("aiml/usage:1:2", false).to_string();
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let a = one_answer(&s, &raw).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("\"tokens_used\":3"), "{}", a.body);

    let mut conn = TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n\
         Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let go = read_answer(&mut conn, &mut buf).await;
    assert_eq!(go.status, 100);
    conn.write_all(body.as_bytes()).await.unwrap();
    let a = read_answer(&mut conn, &mut buf).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test]
async fn a_client_leaving_a_waiting_call_cancels_it() {
    let (_mock, s, uid, key) = setup().await;
    let mut conn = TcpStream::connect(s.addr).await.unwrap();
    let raw = post(
        "/v1/chat/completions",
        &key,
        &chat_body("aiml/delay:8000", false),
        "",
    );
    conn.write_all(raw.as_bytes()).await.unwrap();
    eventually("the call to reserve", || async {
        s.balance(uid).await.reserved > 0
    })
    .await;
    drop(conn);
    eventually("the reservation to be released", || async {
        s.balance(uid).await.reserved == 0
    })
    .await;
    let admin = s.admin_token().await;
    let v: Value = s
        .get_as("/admin/requests?limit=10", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"][0]["outcome"], "client_cancelled", "{v}");
}

#[tokio::test]
async fn http2_without_tls() {
    let (_mock, s, _, key) = setup().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2.get(s.url("/health")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let r = h2
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&chat_body("aiml/usage:2:3", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["_usage_info"]["tokens_used"], 5, "{v}");
}

#[tokio::test]
async fn slow_heads_and_idle_connections_are_closed() {
    // Row 9: clients sending a head one byte at a time are closed after
    // header_timeout_secs (1 s here) however often they send; so are
    // connections that send nothing.
    let (_mock, s, _, _) = setup().await;
    let head = b"GET /health HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let slow = (0..20).map(|_| {
        let addr = s.addr;
        tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let start = Instant::now();
            for b in head.iter() {
                if c.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                if start.elapsed() > Duration::from_secs(3) {
                    break;
                }
            }
            // Closed by the server: writes fail or reads see the end.
            let took = start.elapsed();
            let closed = closed_after(&mut c, Duration::from_millis(10)).await;
            (took, closed)
        })
    });
    let slow: Vec<_> = slow.collect();
    // Meanwhile the server answers everyone else at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    assert_eq!(
        s.client
            .get(s.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(start.elapsed() < Duration::from_millis(500));
    let mut idle = TcpStream::connect(s.addr).await.unwrap();
    let idle_closed = closed_after(&mut idle, Duration::from_secs(3)).await;
    for t in slow {
        let (took, _) = t.await.unwrap();
        assert!(
            took < Duration::from_millis(2_500),
            "a slow head was held {took:?}"
        );
    }
    let idle_closed = idle_closed.expect("an idle new connection is closed");
    assert!(idle_closed >= Duration::from_millis(900), "{idle_closed:?}");
    assert!(
        idle_closed < Duration::from_millis(2_000),
        "{idle_closed:?}"
    );
}

#[tokio::test]
async fn keep_alive_outlasts_the_head_timer_but_not_its_own() {
    let (_mock, s, _, _) = setup().await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let mut buf = Vec::new();
    c.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_answer(&mut c, &mut buf).await.status, 200);
    // Idle for longer than the head timer (1 s), within keep-alive (2 s).
    tokio::time::sleep(Duration::from_millis(1_400)).await;
    c.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_answer(&mut c, &mut buf).await.status, 200);
    // Then idle: closed once keep_alive_secs have passed.
    let closed = closed_after(&mut c, Duration::from_secs(4))
        .await
        .expect("closed");
    assert!(closed >= Duration::from_millis(1_800), "{closed:?}");
    assert!(closed < Duration::from_millis(3_000), "{closed:?}");
}

#[tokio::test]
async fn a_stalled_body_is_answered_408() {
    let (mock, s, _, key) = setup().await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"model\":"
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let start = Instant::now();
    let a = read_answer(&mut c, &mut Vec::new()).await;
    assert_eq!(a.status, 408, "{}", a.body);
    assert!(start.elapsed() < Duration::from_millis(2_500));
    let v: Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(v["error"]["code"], "request_timeout");
    assert!(closed_after(&mut c, Duration::from_secs(2)).await.is_some());
    assert!(mock.generation_calls().is_empty());
    // The same through the router (another route with a body).
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "PATCH /api/keys/1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        s.admin_token().await
    );
    c.write_all(head.as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut c, &mut Vec::new()).await.status, 408);
}

#[tokio::test]
async fn refused_from_the_head_without_reading_the_body() {
    // Row 11: no credential, or a wrong one, with a 4 MiB body announced:
    // 401 at once, the body never sent nor read.
    let (_mock, s, _, _) = setup().await;
    for auth in [
        "",
        "Authorization: Bearer sk_live_nope\r\n",
        "X-API-Key: sk_live_nope\r\n",
    ] {
        for path in ["/v1/chat/completions", "/api/keys", "/admin/users"] {
            let mut c = TcpStream::connect(s.addr).await.unwrap();
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n",
                4 * 1024 * 1024 - 1
            );
            c.write_all(head.as_bytes()).await.unwrap();
            let a = read_answer(&mut c, &mut Vec::new()).await;
            assert_eq!(a.status, 401, "{path} {auth}");
            let v: Value = serde_json::from_str(&a.body).unwrap();
            assert_eq!(v["error"]["code"], "invalid_api_key");
        }
    }
    // A route without a credential takes small bodies only: 413 from the head.
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /auth/login HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        4 * 1024 * 1024 - 1
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let a = read_answer(&mut c, &mut Vec::new()).await;
    assert_eq!(a.status, 413, "{}", a.body);
}

#[tokio::test]
async fn connections_over_the_caps_are_refused_and_others_served() {
    // Row 10: idle connections up to the caps; one more is refused at once,
    // while other addresses are still served.
    // (No other client here: every connection the server counts is this test's.)
    let s = TestServer::start_with(|c| {
        c.server.max_connections = 15;
        c.server.max_connections_per_ip = 10;
    })
    .await;
    // Connections that were served once and stay open.
    async fn open_from(s: &TestServer, from: [u8; 4]) -> TcpStream {
        let mut c = connect_from(s, from).await;
        c.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_answer(&mut c, &mut Vec::new()).await.status, 200);
        c
    }
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(open_from(&s, [127, 0, 0, 1]).await);
    }
    let start = Instant::now();
    let mut over = connect_from(&s, [127, 0, 0, 1]).await;
    let text = refusal_text(&mut over).await;
    assert!(start.elapsed() < Duration::from_secs(1), "refused at once");
    assert!(text.starts_with("HTTP/1.1 503"), "{text:?}");
    assert!(text.contains("max_connections_per_ip"), "{text}");
    assert_eq!(health_from(&s, [127, 0, 0, 2]).await, 200);
    // (The server notices that connection's end just after the client does.)
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        held.push(open_from(&s, [127, 0, 0, 2]).await);
    }
    let mut over = connect_from(&s, [127, 0, 0, 3]).await;
    let text = refusal_text(&mut over).await;
    assert!(text.contains("max_connections)"), "{text}");
    // Closing some makes room again.
    held.truncate(8);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(health_from(&s, [127, 0, 0, 1]).await, 200);
    // The soft limit on open files was raised to the hard one at start.
    let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap();
    assert_eq!(soft, hard);
}
