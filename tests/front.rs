//! The server's own HTTP/1.1 front (`server::front`) on raw connections:
//! pipelined calls, heads in pieces, `Connection: close`, the hand-over to
//! hyper for everything else on the same connection, and a client leaving a
//! call that is still waiting for its upstream.

mod common;
use common::mock::{use_mock, Mock};
use common::*;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn setup() -> (Mock, TestServer, i64, String) {
    let mock = Mock::start().await;
    let s = TestServer::start_with(|cfg| use_mock(cfg, &mock, &["aiml"])).await;
    let (uid, _, key) = s.user_with_key("fred", Some("pro")).await;
    (mock, s, uid, key)
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
/// was read past it.
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
        assert_eq!(&buf[line_end + 2 + size..line_end + 4 + size], b"\r\n");
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

#[tokio::test]
async fn pipelined_calls_then_another_route_on_one_connection() {
    let (_mock, s, _, key) = setup().await;
    let mut conn = TcpStream::connect(s.addr).await.unwrap();
    // Two calls, a stream and a whole answer, then a route the front hands to
    // hyper, all in one write.
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
    // The connection stays with hyper, which still serves generation calls.
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
    // Then the server closes the connection.
    let n = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf))
        .await
        .expect("closed in time")
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn calls_the_front_does_not_take_are_answered_by_hyper() {
    let (_mock, s, _, key) = setup().await;
    let body = chat_body("aiml/usage:1:2", false).to_string();
    // A chunked body, then one announced with `Expect: 100-continue`.
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

    // A bad credential gets the same error shape on the front.
    let raw = post(
        "/v1/chat/completions",
        "sk_live_nope",
        &chat_body("aiml/x", false),
        "",
    );
    let a = one_answer(&s, &raw).await;
    assert_eq!(a.status, 401);
    let v: Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key", "{v}");
    assert!(a.header("x-request-id").is_some());
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
    let p = tollgate::metering::period_of(s.state.clock.now());
    let reserved = || s.state.metering.ledger.user(uid, &p).reserved;
    eventually("the call to reserve", || async { reserved() > 0 }).await;
    drop(conn);
    // Settled long before the upstream would have answered.
    eventually("the reservation to be released", || async {
        reserved() == 0
    })
    .await;
    let admin = s.admin_token().await;
    let r = s.get_as("/admin/requests?limit=10", &admin).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"][0]["outcome"], "client_cancelled", "{v}");
}

#[tokio::test]
async fn http2_without_tls_still_reaches_hyper() {
    let (_mock, s, _, key) = setup().await;
    // An HTTP/2 preface is not a head the front reads: hyper takes it.
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
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["_usage_info"]["tokens_used"], 5, "{v}");
}
