//! The proxy against a mock upstream: routing, bodies, streaming, errors,
//! retries, fallbacks, model lists.

mod common;
use common::mock::{use_mock, Mock};
use common::*;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;

async fn setup(
    edit: impl FnOnce(&mut tollgate::config::Config, &Mock),
) -> (Mock, TestServer, String) {
    let mock = Mock::start().await;
    let s = TestServer::start_with(|cfg| {
        use_mock(cfg, &mock, &["openrouter", "aiml", "requesty", "glama"]);
        edit(cfg, &mock);
    })
    .await;
    let (_, _, key) = s.user_with_key("alice", Some("enterprise")).await;
    (mock, s, key)
}

async fn chat(s: &TestServer, key: &str, body: Value) -> reqwest::Response {
    s.client
        .post(s.url("/llm/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Reads an SSE body into its `data:` payloads.
fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: ").map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn chat_is_routed_rewritten_and_metered() {
    let (mock, s, key) = setup(|_, _| {}).await;
    let r = chat(
        &s,
        &key,
        json!({"model": "aiml/usage:7:5", "messages": [{"role": "user", "content": "hi"}],
               "temperature": 0.5, "vendor_extension": {"keep": [1, 2]}}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["model"], "aiml/usage:7:5",
        "the answer names the model as the client did"
    );
    assert_eq!(v["choices"][0]["message"]["content"], "Hello world");
    let info = &v["_usage_info"];
    assert_eq!(info["tokens_used"], 12);
    assert_eq!(info["prompt_tokens"], 7);
    assert_eq!(info["completion_tokens"], 5);
    assert_eq!(info["provider"], "aiml");
    assert_eq!(info["request_id"], rid.as_str());
    assert_eq!(info["estimated"], false);
    assert_eq!(info["remaining_tokens"], 1_000_000 - 12);

    let calls = mock.generation_calls();
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert_eq!(c.provider, "aiml");
    assert_eq!(c.body["model"], "usage:7:5", "prefix stripped");
    assert_eq!(
        c.body["vendor_extension"],
        json!({"keep": [1, 2]}),
        "unknown fields kept"
    );
    assert_eq!(c.body["temperature"], json!(0.5));
    assert!(
        c.body["max_tokens"].as_i64().unwrap() > 0,
        "a completion cap is always sent"
    );
    assert!(
        c.body.get("stream_options").is_none(),
        "never asked for usage without stream"
    );
    assert_eq!(c.headers["authorization"], "Bearer sk-test-aiml-secret");
}

#[tokio::test]
async fn a_name_without_known_prefix_goes_whole_to_the_default_provider() {
    let (mock, s, key) = setup(|_, _| {}).await;
    let r = chat(
        &s,
        &key,
        json!({"model": "anthropic/claude", "messages": []}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let c = &mock.generation_calls()[0];
    assert_eq!(
        (c.provider.as_str(), c.body["model"].as_str().unwrap()),
        ("openrouter", "anthropic/claude")
    );
    assert_eq!(c.headers["x-title"], "tollgate");
    assert!(c.headers.contains_key("http-referer"));
}

#[tokio::test]
async fn streaming_forwards_chunks_as_they_arrive() {
    let (mock, s, key) = setup(|_, _| {}).await;
    let mut r = chat(
        &s,
        &key,
        json!({"model": "aiml/gated", "stream": true, "messages": []}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    // The upstream is held after its first content chunk: that chunk must already be here.
    let mut got = String::new();
    while !got.contains("Hello") {
        let c = tokio::time::timeout(Duration::from_secs(5), r.chunk())
            .await
            .expect("first chunk in time")
            .unwrap();
        got.push_str(std::str::from_utf8(&c.unwrap()).unwrap());
    }
    assert_eq!(
        mock.state.finished_streams.load(Ordering::SeqCst),
        0,
        "upstream has not finished yet"
    );
    mock.state.gate.notify_one();
    while let Some(c) = r.chunk().await.unwrap() {
        got.push_str(std::str::from_utf8(&c).unwrap());
    }
    let data = sse_data(&got);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.iter().all(|c| c["model"] == "aiml/gated"));
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "usage removed when the client did not ask"
    );
    assert!(
        chunks
            .iter()
            .all(|c| !c["choices"].as_array().unwrap().is_empty()),
        "usage chunk dropped"
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello world");
    assert!(
        got.contains(": OPENROUTER PROCESSING"),
        "comments pass through"
    );
    let up = &mock.generation_calls()[0];
    assert_eq!(
        up.body["stream_options"]["include_usage"], true,
        "usage asked of the upstream"
    );
}

#[tokio::test]
async fn usage_chunk_is_forwarded_with_usage_info_when_asked() {
    let (_mock, s, key) = setup(|_, _| {}).await;
    let r = chat(
        &s,
        &key,
        json!({"model": "openrouter/split+usage:11:4", "stream": true, "stream_options": {"include_usage": true}, "messages": []}),
    )
    .await;
    let text = r.text().await.unwrap();
    let data = sse_data(&text);
    let chunks: Vec<Value> = data
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let usage_chunk = chunks
        .iter()
        .find(|c| c["choices"].as_array().unwrap().is_empty())
        .expect("usage chunk");
    assert_eq!(usage_chunk["usage"]["total_tokens"], 15);
    assert_eq!(usage_chunk["_usage_info"]["tokens_used"], 15);
    assert_eq!(usage_chunk["_usage_info"]["estimated"], false);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        content, "Hello world",
        "events split across reads are reassembled"
    );
}

#[tokio::test]
async fn upstream_dying_mid_stream_ends_with_an_error_event() {
    let (_mock, s, key) = setup(|_, _| {}).await;
    for model in ["aiml/die", "aiml/stream_error"] {
        let r = chat(
            &s,
            &key,
            json!({"model": model, "stream": true, "messages": []}),
        )
        .await;
        assert_eq!(r.status(), 200);
        let text = tokio::time::timeout(Duration::from_secs(10), r.text())
            .await
            .expect("no hang")
            .unwrap();
        let data = sse_data(&text);
        let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
        assert!(
            last["error"]["message"]
                .as_str()
                .unwrap()
                .contains("AIML API"),
            "{model}: {last}"
        );
        assert_eq!(last["error"]["type"], "api_error");
    }
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream() {
    let (mock, s, key) = setup(|_, _| {}).await;
    let mut r = chat(
        &s,
        &key,
        json!({"model": "aiml/endless", "stream": true, "messages": []}),
    )
    .await;
    let _ = r.chunk().await.unwrap();
    drop(r);
    for _ in 0..100 {
        if mock.state.dropped_streams.load(Ordering::SeqCst) == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the upstream stream was not cancelled");
}
