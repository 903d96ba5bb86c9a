//! Upstreams that send too much, send what was not asked for, or try to
//! forge what the client reads (SPEC §9): answers are bounded, reported usage
//! is always charged, and the client reads what the gateway charged.

mod common;
use common::mock::{use_mock, Mock};
use common::*;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;

const MAX_RESPONSE: usize = 256 * 1024;
const MAX_EVENT: usize = 64 * 1024;

async fn setup() -> (Mock, TestServer, String, String) {
    let mock = Mock::start().await;
    let s = TestServer::start_with(|cfg| {
        use_mock(cfg, &mock, &["openrouter"]);
        cfg.routing.max_response_bytes = MAX_RESPONSE;
        cfg.routing.max_event_bytes = MAX_EVENT;
        cfg.routing.retries = 0;
    })
    .await;
    let (_, token, key) = s.user_with_key("alice", Some("enterprise")).await;
    (mock, s, token, key)
}

async fn chat(s: &TestServer, key: &str, model: &str, stream: bool) -> reqwest::Response {
    s.client
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

async fn tokens_used(s: &TestServer, token: &str) -> i64 {
    let me: Value = s
        .get_as("/subscriptions/me", token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["tokens_reserved"], 0, "{me}");
    me["tokens_used"].as_i64().unwrap()
}

/// The endless answer stopped being read: its byte count stays where it is,
/// no further than the limit plus what sockets buffer on the way.
async fn reading_stopped(mock: &Mock, limit: usize) {
    let mut last = mock.state.endless_bytes.load(Ordering::SeqCst);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = mock.state.endless_bytes.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        last = now;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let now = mock.state.endless_bytes.load(Ordering::SeqCst);
    assert_eq!(now, last, "the gateway is still reading the endless answer");
    assert!(now < limit + 16 * 1024 * 1024, "{now} bytes were read");
    mock.state.endless_bytes.store(0, Ordering::SeqCst);
}

#[tokio::test]
async fn an_endless_whole_answer_ends_at_max_response_bytes() {
    let (mock, s, token, key) = setup().await;
    let r = chat(&s, &key, "huge", false).await;
    let v = assert_error_is(r, 502, "api_error", Some("upstream_error")).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_response_bytes"),
        "{v}"
    );
    reading_stopped(&mock, MAX_RESPONSE).await;
    assert_eq!(tokens_used(&s, &token).await, 0);
    // The server goes on serving.
    assert_eq!(chat(&s, &key, "usage:3:4", false).await.status(), 200);
}

#[tokio::test]
async fn an_endless_event_ends_the_stream_at_max_event_bytes() {
    let (mock, s, token, key) = setup().await;
    let r = chat(&s, &key, "huge_event", true).await;
    assert_eq!(r.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(10), r.text())
        .await
        .expect("the stream ends")
        .unwrap();
    let events: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(events.len(), 3, "{text}");
    assert_eq!(events[0]["choices"][0]["delta"]["content"], "Hi");
    assert_eq!(events[1]["choices"][0]["delta"]["content"], "!");
    let e = &events[2]["error"];
    assert_eq!(e["code"], "upstream_error", "{text}");
    assert!(e["message"].as_str().unwrap().contains("max_event_bytes"));
    reading_stopped(&mock, MAX_EVENT).await;
    assert_eq!(tokens_used(&s, &token).await, 0);
}

#[tokio::test]
async fn usage_of_an_answer_streamed_unasked_is_charged() {
    // Row 4 in general: whatever the upstream did, a call whose upstream
    // reported usage is charged for it.
    let (mock, s, token, key) = setup().await;
    let r = chat(&s, &key, "streams_anyway+usage:11:29", false).await;
    let v = assert_error_is(r, 502, "api_error", Some("upstream_error")).await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("streamed"),
        "{v}"
    );
    assert_eq!(mock.generation_calls()[0].body["stream"], false);
    assert_eq!(tokens_used(&s, &token).await, 40);
    let admin = s.admin_token().await;
    let log: Value = s
        .get_as("/admin/requests?user=alice", &admin)
        .await
        .json()
        .await
        .unwrap();
    let rec = &log["data"][0];
    assert_eq!(rec["outcome"], "upstream_error");
    assert_eq!(rec["total_tokens"], 40);
    assert_eq!(rec["estimated"], false);
}

#[tokio::test]
async fn the_client_reads_the_usage_the_gateway_charged() {
    // An answer with `usage` twice and its own `_usage_info`: JSON parsers
    // keep the last `usage`, the gateway charges that one, and the
    // `_usage_info` the client reads is the gateway's.
    let (_mock, s, token, key) = setup().await;
    let r = chat(&s, &key, "forged", false).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 40, "completion_tokens": 60})
    );
    assert_eq!(v["_usage_info"]["tokens_used"], 100);
    assert_eq!(v["_usage_info"]["remaining_tokens"], 1_000_000 - 100);
    assert_eq!(text.matches("\"usage\"").count(), 1, "{text}");
    assert_eq!(text.matches("_usage_info").count(), 1, "{text}");
    assert_eq!(v["model"], "forged");
    assert_eq!(tokens_used(&s, &token).await, 100);
}
