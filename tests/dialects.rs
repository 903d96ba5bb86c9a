//! The Anthropic Messages and OpenAI Responses dialects (SPEC §10), each to an
//! OpenAI-kind provider (`aiml`, translated) and an Anthropic-kind one (`anth`,
//! passed through), driven by the official Python SDKs (`tests/sdk/`) and by
//! plain HTTP. Every call's usage record is checked against what the mock
//! upstream reported. Shared setup and assertions live here; the tests in
//! `dialects/sdk_clients.rs` and `dialects/plain_http.rs`.

mod common;
use common::mock::{use_mock, Mock, Recorded};
use common::{assert_error, sdk, TestServer};
use serde_json::{json, Value};
use std::path::Path;
use tollgate::config::{ProviderApi, Secret};

const USER: &str = "dana";
const ANTH_KEY: &str = "sk-ant-test";
const WEATHER_SCHEMA: &str =
    r#"{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"#;

struct Env {
    mock: Mock,
    s: TestServer,
    key: String,
}

/// The gateway with `aiml` (OpenAI kind) and `anth` (Anthropic kind) on the
/// mock, and a user `dana` on `plan` with a key.
async fn setup_on(plan: &str) -> Env {
    let mock = Mock::start().await;
    let s = TestServer::start_with(|cfg| {
        use_mock(cfg, &mock, &["aiml"]);
        let p = cfg.providers.entry("anth".into()).or_default();
        p.base_url = Some(mock.base("anth"));
        p.api_key = Secret::new(ANTH_KEY);
        p.api = Some(ProviderApi::Anthropic);
        // The names Claude Code uses by itself, sent to the Anthropic provider.
        cfg.routing
            .aliases
            .insert("claude-*".into(), "anth/claude-*".into());
    })
    .await;
    let (_, _, key) = s.user_with_key(USER, Some(plan)).await;
    Env { mock, s, key }
}

async fn setup() -> Env {
    setup_on("enterprise").await
}

impl Env {
    async fn sdk(&self, py: &Path, script: &str, mode: &str, model: &str) -> Value {
        sdk::run(
            py,
            script,
            &[
                ("TOLLGATE_URL", &self.s.url),
                ("TOLLGATE_KEY", &self.key),
                ("MODEL", model),
                ("MODE", mode),
            ],
        )
        .await
    }

    /// POSTs `body` (JSON text, sent as is) to `path` with the key as Bearer.
    async fn post_raw(&self, path: &str, body: &str) -> reqwest::Response {
        self.s
            .client
            .post(self.s.url(path))
            .bearer_auth(&self.key)
            .header("content-type", "application/json")
            .header("anthropic-version", "2023-06-01")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.post_raw(path, &body.to_string()).await
    }

    /// The generation calls the mock received, checked to be `n`, each to
    /// the path of `provider`'s dialect, none carrying the user's key.
    fn upstream(&self, provider: &str, n: usize) -> Vec<Recorded> {
        let calls = self.mock.generation_calls();
        assert_eq!(calls.len(), n, "upstream calls: {calls:#?}");
        let path = match provider {
            "anth" => "/messages",
            _ => "/chat/completions",
        };
        for c in &calls {
            assert_eq!(c.provider, provider);
            assert_eq!(c.path, path);
            for (name, v) in &c.headers {
                let v = String::from_utf8_lossy(v.as_bytes());
                assert!(
                    !v.contains(&self.key),
                    "the user's key went upstream in {name}"
                );
            }
            if provider == "anth" {
                assert_eq!(c.headers["x-api-key"], ANTH_KEY);
                assert_eq!(c.headers["anthropic-version"], "2023-06-01");
            }
        }
        calls
    }

    /// Dana's usage records, oldest first, once there are `n` of them.
    async fn records(&self, n: usize) -> Vec<Value> {
        let admin = self.s.admin_token().await;
        let path = format!("/admin/requests?user={USER}&limit=500");
        let mut rows = vec![];
        for _ in 0..100 {
            let v: Value = self.s.get_as(&path, &admin).await.json().await.unwrap();
            rows = v["data"].as_array().cloned().unwrap_or_default();
            if rows.len() >= n {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(rows.len(), n, "usage records: {rows:#?}");
        rows.reverse();
        rows
    }
}

/// Asserts a record of a successful call with the mock's usage.
fn assert_record(rec: &Value, endpoint: &str, model: &str, prompt: i64, completion: i64) {
    assert_eq!(rec["endpoint"], endpoint, "{rec}");
    assert_eq!(rec["model"], model, "{rec}");
    assert_eq!(rec["outcome"], "ok", "{rec}");
    assert_eq!(rec["prompt_tokens"], prompt, "{rec}");
    assert_eq!(rec["completion_tokens"], completion, "{rec}");
    assert_eq!(rec["total_tokens"], prompt + completion, "{rec}");
    assert_eq!(rec["estimated"], false, "{rec}");
}

/// Asserts `_usage_info` with the mock's usage.
fn assert_usage_info(info: &Value, prompt: i64, completion: i64) {
    assert_eq!(info["prompt_tokens"], prompt, "_usage_info: {info}");
    assert_eq!(info["completion_tokens"], completion, "_usage_info: {info}");
    assert_eq!(
        info["tokens_used"],
        prompt + completion,
        "_usage_info: {info}"
    );
    assert!(info["remaining_tokens"].is_number(), "_usage_info: {info}");
}

/// Asserts Anthropic's error shape with `status` and `kind`; returns the body.
async fn assert_anthropic_error(r: reqwest::Response, status: u16, kind: &str) -> Value {
    assert_eq!(r.status().as_u16(), status, "status");
    let v: Value = r.json().await.expect("error body is JSON");
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], kind, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    v
}

fn position(types: &Value, t: &str) -> usize {
    let types = types.as_array().expect("event types");
    types
        .iter()
        .position(|x| x == t)
        .unwrap_or_else(|| panic!("no {t} event in {types:?}"))
}

fn event<'a>(events: &'a Value, t: &str) -> &'a Value {
    events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == t)
        .unwrap_or_else(|| panic!("no {t} event"))
}

fn json_of(text: &Value) -> Value {
    serde_json::from_str(text.as_str().expect("a JSON string"))
        .unwrap_or_else(|e| panic!("{text} is not JSON: {e}"))
}

/// Text blocks of an Anthropic message are never empty (Anthropic refuses
/// them when the history is sent back).
fn assert_no_empty_text(message: &Value) {
    for b in message["content"].as_array().expect("content") {
        if b["type"] == "text" {
            assert_ne!(b["text"], "", "an empty text block: {message}");
        }
    }
}

/// One test per provider kind: `name::aiml` and `name::anth`.
macro_rules! both_providers {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn aiml() {
                super::$name("aiml").await
            }
            #[tokio::test]
            async fn anth() {
                super::$name("anth").await
            }
        }
    )*};
}

fn anthropic_body(model: &str) -> Value {
    json!({"model": model, "max_tokens": 100,
           "messages": [{"role": "user", "content": "Say hello"}]})
}

/// A translated chat history: the assistant's call as the mock made it,
/// then its result under the same id.
fn assert_chat_history_has_the_call(body: &Value) {
    let msgs = body["messages"].as_array().expect("messages");
    let call = msgs
        .iter()
        .find_map(|m| m["tool_calls"].as_array().map(|c| &c[0]))
        .unwrap_or_else(|| panic!("no assistant tool call in {body}"));
    assert_eq!(
        call["id"], "call_mock1",
        "ids go back as the upstream made them"
    );
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        json_of(&call["function"]["arguments"]),
        json!({"city": "Paris"})
    );
    let result = msgs.last().unwrap();
    assert_eq!(result["role"], "tool", "{body}");
    assert_eq!(result["tool_call_id"], "call_mock1", "{body}");
}

/// The `event:` name and JSON `data:` of each event of an SSE text
/// (comments, which SSE allows anywhere, left out).
fn named_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| e.lines().any(|l| l.starts_with("data:")))
        .map(|e| {
            let mut name = String::new();
            let mut data = String::new();
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event:") {
                    name = n.trim().to_owned();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            let data = serde_json::from_str(&data)
                .unwrap_or_else(|err| panic!("event data is JSON ({err}): {e}"));
            (name, data)
        })
        .collect()
}

/// The JSON `data:` of each event of an SSE text, `[DONE]` left out.
fn data_events(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("SSE data is JSON"))
        .collect()
}

#[path = "dialects/sdk_clients.rs"]
mod sdk_clients;

#[path = "dialects/plain_http.rs"]
mod plain_http;
