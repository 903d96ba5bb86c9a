//! The one door into a generation call (`http::generation_door`): the same
//! authentication, body limit and dialect-shaped errors whether a request
//! comes straight from the connection or through the router (a browser's
//! request with an `Origin`, for CORS); the client headers passed on to a
//! provider of the same dialect; and translated streams forwarded event by
//! event as the provider sends them.

mod common;
use common::mock::{use_mock, Mock};
use common::TestServer;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tollgate::config::{ProviderApi, Secret};

const ORIGIN: &str = "https://app.example";

async fn setup() -> (Mock, TestServer, String) {
    let mock = Mock::start().await;
    let s = TestServer::start_with(|cfg| {
        use_mock(cfg, &mock, &["aiml"]);
        let p = cfg.providers.entry("anth".into()).or_default();
        p.base_url = Some(mock.base("anth"));
        p.api_key = Secret::new("sk-ant-test");
        p.api = Some(ProviderApi::Anthropic);
        cfg.server.cors_allowed_origins = vec![ORIGIN.into()];
        cfg.server.max_body_bytes = 64 * 1024;
    })
    .await;
    let (_, _, key) = s.user_with_key("door-user", Some("enterprise")).await;
    (mock, s, key)
}

fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

fn messages_body(model: &str) -> Value {
    json!({"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]})
}

/// Both ways in: straight (no `Origin`) and through the router (`Origin`).
async fn post_both(
    s: &TestServer,
    path: &str,
    key: Option<&str>,
    body: String,
) -> [reqwest::Response; 2] {
    let mut out = Vec::new();
    for origin in [None, Some(ORIGIN)] {
        let mut r = s
            .client
            .post(s.url(path))
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        out.push(r.send().await.unwrap());
    }
    out.try_into().unwrap()
}

#[tokio::test]
async fn a_browser_call_goes_through_the_same_door() {
    let (mock, s, key) = setup().await;
    for (path, body) in [
        ("/v1/chat/completions", chat_body("aiml/m1")),
        ("/llm/messages", messages_body("aiml/m1")),
        ("/responses", json!({"model": "anth/m1", "input": "hi"})),
    ] {
        let [direct, routed] = post_both(&s, path, Some(&key), body.to_string()).await;
        assert!(direct
            .headers()
            .get("access-control-allow-origin")
            .is_none());
        assert_eq!(
            routed.headers()["access-control-allow-origin"],
            ORIGIN,
            "{path}"
        );
        for r in [direct, routed] {
            assert_eq!(r.status(), 200, "{path}");
            assert!(r.headers().contains_key("x-request-id"));
            let v: Value = r.json().await.unwrap();
            assert!(v["_usage_info"]["tokens_used"].as_i64().unwrap() > 0, "{v}");
        }
    }
    assert_eq!(mock.generation_calls().len(), 6);

    // Refusals are the same both ways, in the endpoint's dialect.
    for (path, body, shape) in [
        ("/v1/chat/completions", chat_body("aiml/m1"), "openai"),
        ("/v1/messages", messages_body("aiml/m1"), "anthropic"),
    ] {
        for r in post_both(&s, path, None, body.to_string()).await {
            assert_eq!(r.status(), 401, "{path}");
            let v: Value = r.json().await.unwrap();
            match shape {
                "anthropic" => {
                    assert_eq!(v["type"], "error", "{v}");
                    assert_eq!(v["error"]["type"], "authentication_error", "{v}");
                }
                _ => assert_eq!(v["error"]["code"], "invalid_api_key", "{v}"),
            }
        }
        let big = format!(
            r#"{{"model":"aiml/m1","max_tokens":5,"messages":[{{"role":"user","content":"{}"}}]}}"#,
            "x".repeat(70 * 1024)
        );
        for r in post_both(&s, path, Some(&key), big).await {
            assert_eq!(r.status(), 413, "{path}");
            let v: Value = r.json().await.unwrap();
            if shape == "anthropic" {
                assert_eq!(v["error"]["type"], "request_too_large", "{v}");
            } else {
                assert_eq!(v["error"]["code"], "request_too_large", "{v}");
            }
        }
    }
    assert_eq!(
        mock.generation_calls().len(),
        6,
        "no refused call went upstream"
    );
}

#[tokio::test]
async fn anthropic_beta_reaches_an_anthropic_provider_only() {
    let (mock, s, key) = setup().await;
    for model in ["anth/m1", "aiml/m1"] {
        let r = s
            .client
            .post(s.url("/v1/messages?beta=true"))
            .header("x-api-key", &key)
            .header("anthropic-version", "2023-06-01")
            .header("anthropic-beta", "context-management-2025-06-27")
            .header("anthropic-beta", "interleaved-thinking-2025-05-14")
            .json(&messages_body(model))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    let calls = mock.generation_calls();
    let betas: Vec<&str> = calls[0]
        .headers
        .get_all("anthropic-beta")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        betas,
        [
            "context-management-2025-06-27",
            "interleaved-thinking-2025-05-14"
        ]
    );
    assert_eq!(calls[0].headers["anthropic-version"], "2023-06-01");
    assert_eq!(calls[0].headers["x-api-key"], "sk-ant-test");
    assert!(calls[0].headers.get("authorization").is_none());
    assert_eq!(calls[1].path, "/chat/completions");
    assert!(calls[1].headers.get("anthropic-beta").is_none());
    assert!(calls[1].headers.get("x-api-key").is_none());
}

/// A translated stream whose provider holds after its first text piece: that
/// piece, in the client's dialect, is already with the client.
#[tokio::test]
async fn translated_streams_are_forwarded_as_they_come() {
    let (mock, s, key) = setup().await;
    let cases = [
        (
            "/v1/messages",
            json!({"model": "aiml/gated", "max_tokens": 50, "stream": true,
                   "messages": [{"role": "user", "content": "hi"}]}),
            "text_delta",
        ),
        (
            "/v1/responses",
            json!({"model": "anth/gated", "stream": true, "input": "hi"}),
            "response.output_text.delta",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "anth/gated", "stream": true, "stream_options": {"include_usage": true},
                   "messages": [{"role": "user", "content": "hi"}]}),
            "\"content\":\"Hello\"",
        ),
    ];
    for (i, (path, body, first)) in cases.into_iter().enumerate() {
        let mut r = s
            .client
            .post(s.url(path))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let mut got = String::new();
        while !got.contains(first) {
            let c = tokio::time::timeout(Duration::from_secs(5), r.chunk())
                .await
                .unwrap_or_else(|_| panic!("{path}: the first piece is held back: {got}"))
                .unwrap()
                .unwrap_or_else(|| panic!("{path}: ended early: {got}"));
            got.push_str(std::str::from_utf8(&c).unwrap());
        }
        assert_eq!(
            mock.state.finished_streams.load(Ordering::SeqCst),
            i,
            "{path}: the provider is still held"
        );
        mock.state.gate.notify_one();
        while let Some(c) = r.chunk().await.unwrap() {
            got.push_str(std::str::from_utf8(&c).unwrap());
        }
        assert!(got.contains("_usage_info"), "{path}: {got}");
    }
}
