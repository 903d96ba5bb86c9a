//! Request bodies written to make the gateway read a call one way and the
//! upstream another (SPEC §9): escaped and duplicated keys, letter-case
//! variants, nesting, every length field. The mock upstream records what it
//! received as a standard parser reads it; each test compares that with what
//! the gateway checked and charged.

mod common;
use common::mock::{use_mock, Mock};
use common::*;
use serde_json::{json, Value};
use tollgate::config::PlanConfig;

/// A server whose `tight` plan allows only `local/cheap` (and the mock's
/// `local/usage:*` scripts) and 2,000 tokens a month; `alice` is on it.
async fn setup() -> (Mock, TestServer, String) {
    let mock = Mock::start().await;
    let s = TestServer::start_with(|cfg| {
        use_mock(cfg, &mock, &["local", "openrouter"]);
        cfg.plans = vec![
            PlanConfig {
                name: "tight".into(),
                monthly_tokens: 2_000,
                requests_per_minute: 1000,
                price_usd_month: 0.0,
                allowed_models: vec!["local/cheap".into(), "local/usage:*".into()],
                monthly_usd: None,
                pay_as_you_go: false,
            },
            PlanConfig {
                name: "empty".into(),
                monthly_tokens: 0,
                requests_per_minute: 1000,
                price_usd_month: 0.0,
                allowed_models: vec!["*".into()],
                monthly_usd: None,
                pay_as_you_go: false,
            },
        ];
    })
    .await;
    let (_, _, key) = s.user_with_key("alice", Some("tight")).await;
    (mock, s, key)
}

/// POSTs `body` exactly as written.
async fn send(s: &TestServer, key: &str, body: &str) -> reqwest::Response {
    s.client
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn used(s: &TestServer, key: &str) -> i64 {
    let me: Value = s
        .get_as("/subscriptions/me", key)
        .await
        .json()
        .await
        .unwrap();
    me["tokens_used"].as_i64().unwrap() + me["tokens_reserved"].as_i64().unwrap()
}

/// Sends `body` and expects 400 naming `param`, nothing forwarded, nothing charged.
async fn refused(s: &TestServer, mock: &Mock, key: &str, body: &str, param: &str) {
    let before = mock.generation_calls().len();
    let r = send(s, key, body).await;
    let v = assert_error_is(r, 400, "invalid_request_error", None).await;
    assert_eq!(v["error"]["param"], param, "{body}: {v}");
    assert_eq!(
        mock.generation_calls().len(),
        before,
        "{body} was forwarded"
    );
    assert_eq!(used(s, key).await, 0);
}

const MSG: &str = r#""messages":[{"role":"user","content":"hi"}]"#;

#[tokio::test]
async fn an_escaped_model_key_cannot_pick_another_model() {
    // Row 1: `m\u006fdel` is `model` to every parser; the gateway read the first.
    let (mock, s, key) = setup().await;
    let body = format!(r#"{{"model":"local/cheap","m\u006fdel":"local/expensive",{MSG}}}"#);
    refused(&s, &mock, &key, &body, "model").await;
    // Row 5: a letter-case variant, which Go's decoder (Ollama) reads as `model`.
    let body = format!(r#"{{"model":"local/cheap","Model":"local/expensive",{MSG}}}"#);
    refused(&s, &mock, &key, &body, "Model").await;
    // Alone, a key the gateway reads may not be written with escapes: a
    // parser that does not decode them would read no model at all.
    let body = format!(r#"{{"m\u006fdel":"local/cheap",{MSG}}}"#);
    refused(&s, &mock, &key, &body, "model").await;
    let body = format!(r#"{{"model":"local/expensive",{MSG}}}"#);
    let r = send(&s, &key, &body).await;
    assert_error_is(r, 403, "permission_error", Some("model_not_allowed")).await;
    let body =
        format!(r#"{{"model":"local/cheap","n\u0065ws":"escapes elsewhere are fine",{MSG}}}"#);
    assert_eq!(send(&s, &key, &body).await.status(), 200);
    let calls = mock.generation_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].body["model"], "cheap");
    assert_eq!(calls[0].body["news"], "escapes elsewhere are fine");
    assert!(
        std::str::from_utf8(&calls[0].raw)
            .unwrap()
            .starts_with(r#"{"model":"cheap""#),
        "{:?}",
        calls[0].raw
    );
}

#[tokio::test]
async fn escaped_length_fields_n_and_stream_are_refused() {
    let (mock, s, key) = setup().await;
    // Row 2: a second max_tokens the upstream would read.
    let body =
        format!(r#"{{"model":"local/cheap",{MSG},"max_tokens":20,"max_t\u006fkens":100000}}"#);
    refused(&s, &mock, &key, &body, "max_tokens").await;
    // Row 3: n.
    let body = format!(r#"{{"model":"local/cheap",{MSG},"n":1,"\u006e":120}}"#);
    refused(&s, &mock, &key, &body, "n").await;
    // Row 4: stream.
    let body = format!(r#"{{"model":"local/cheap",{MSG},"stream":false,"str\u0065am":true}}"#);
    refused(&s, &mock, &key, &body, "stream").await;
    let body = format!(r#"{{"model":"local/cheap",{MSG},"Stream":true}}"#);
    refused(&s, &mock, &key, &body, "Stream").await;
    // Nested ones the gateway reads, too.
    let body = format!(
        r#"{{"model":"local/cheap",{MSG},"options":{{"num_predict":5,"num_pr\u0065dict":9000}}}}"#
    );
    refused(&s, &mock, &key, &body, "options.num_predict").await;
}

#[tokio::test]
async fn an_escaped_n_alone_is_refused_and_n_is_reserved() {
    // Row 3: `\u006e` alone is refused; a plain `n` is reserved for every
    // choice, so a plan of 2,000 tokens cannot buy 128 choices of 100 tokens.
    let (mock, s, key) = setup().await;
    let body = format!(r#"{{"model":"local/cheap",{MSG},"\u006e":120}}"#);
    refused(&s, &mock, &key, &body, "n").await;
    let body = format!(r#"{{"model":"local/cheap",{MSG},"max_tokens":100,"n":128}}"#);
    let r = send(&s, &key, &body).await;
    assert_error_is(r, 429, "insufficient_quota", Some("insufficient_quota")).await;
    assert!(mock.generation_calls().is_empty());
    let body = format!(r#"{{"model":"local/usage:9:30",{MSG},"max_tokens":100,"n":3}}"#);
    assert_eq!(send(&s, &key, &body).await.status(), 200);
    let c = &mock.generation_calls()[0];
    assert_eq!(c.body["n"], 3);
    let cap = c.body["max_tokens"].as_i64().unwrap();
    assert!(cap * 3 <= 2_000, "{cap}");
    assert_eq!(
        used(&s, &key).await,
        39,
        "charged what the upstream reported"
    );
}

#[tokio::test]
async fn every_length_field_carries_the_cap() {
    // Row 8: the client's smaller cap goes into both fields; the upstream
    // reads no larger one anywhere.
    let (mock, s, key) = setup().await;
    let body = format!(
        r#"{{"model":"local/usage:9:20",{MSG},"max_completion_tokens":20,"max_tokens":100000,
            "max_new_tokens":5000,"options":{{"num_predict":-1,"temperature":0}}}}"#
    );
    assert_eq!(send(&s, &key, &body).await.status(), 200);
    let c = &mock.generation_calls()[0];
    for f in ["max_completion_tokens", "max_tokens", "max_new_tokens"] {
        assert_eq!(c.body[f], 20, "{f}: {}", c.body);
    }
    assert_eq!(
        c.body["options"],
        json!({"num_predict": 20, "temperature": 0})
    );
    // No cap of the client's: the plan's balance sets it, in each field.
    let body =
        format!(r#"{{"model":"local/usage:9:20",{MSG},"max_tokens":null,"num_predict":900000}}"#);
    assert_eq!(send(&s, &key, &body).await.status(), 200);
    let c = &mock.generation_calls()[1];
    let cap = c.body["max_tokens"].as_i64().unwrap();
    assert!(cap > 0 && cap < 2_000, "{cap}");
    assert_eq!(c.body["num_predict"], cap);
    assert_eq!(used(&s, &key).await, 58);
}

#[tokio::test]
async fn fallback_models_are_checked_like_the_model() {
    // OpenRouter's `models` makes the upstream run another model: each entry,
    // named under the provider, must be allowed.
    let (mock, s, key) = setup().await;
    let r = s
        .client
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "local/cheap", "models": ["expensive"], "messages": []}))
        .send()
        .await
        .unwrap();
    let v = assert_error_is(r, 403, "permission_error", Some("model_not_allowed")).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("local/expensive"),
        "{v}"
    );
    let r = s
        .client
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "local/cheap", "models": ["cheap", "usage:1:1"], "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        mock.generation_calls()[0].body["models"],
        json!(["cheap", "usage:1:1"])
    );
}

#[tokio::test]
async fn a_deeply_nested_body_is_refused_and_the_server_lives() {
    // Row 6: 20 KB of brackets from a user with no quota left used to
    // overflow the stack while the prompt was estimated.
    let (mock, s, key) = setup().await;
    let (_, _, broke) = s.user_with_key("bob", Some("empty")).await;
    for (who, depth) in [(&broke, 10_000), (&key, 10_000), (&key, 129)] {
        let body = format!(
            r#"{{"model":"local/cheap","messages":[{{"role":"user","content":{}{}}}]}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let r = send(&s, who, &body).await;
        let v = assert_error_is(r, 400, "invalid_request_error", None).await;
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("nested deeper than 128"),
            "{v}"
        );
    }
    // 128 levels, the body's own included, are read.
    let body = format!(
        r#"{{"model":"local/cheap","messages":[{{"role":"user","content":"hi","x":{}{}}}]}}"#,
        "[".repeat(125),
        "]".repeat(125)
    );
    assert_eq!(send(&s, &key, &body).await.status(), 200);
    assert_eq!(mock.generation_calls().len(), 1);
    assert_eq!(
        s.client
            .get(s.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
