//! Connections to providers (SPEC §9): nothing carries over from one call to
//! the next on a pooled connection, TLS trusts `ca_file`, and `proxy` is
//! honoured, with `CONNECT` for https.

mod common;
use common::mock::{use_mock, Mock};
use common::raw::{Misbehave, RawUpstream, TestProxy};
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// A server whose provider `raw` is `up`; returns it and a key.
async fn with_raw(up: &RawUpstream) -> (TestServer, String) {
    let base = up.base();
    let s = TestServer::start_with(|cfg| {
        let p = cfg.providers.entry("raw".into()).or_default();
        p.base_url = Some(base);
        cfg.routing.retries = 0;
    })
    .await;
    let (_, _, key) = s.user_with_key("alice", Some("enterprise")).await;
    (s, key)
}

async fn chat(s: &TestServer, key: &str, model: &str) -> reqwest::Response {
    s.client
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

async fn tokens(r: reqwest::Response) -> i64 {
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["_usage_info"]["tokens_used"].as_i64().unwrap()
}

#[tokio::test]
async fn bytes_sent_unasked_after_an_answer_never_become_the_next_answer() {
    // Row 14: 300 ms after a complete answer the upstream writes a second,
    // forged answer on the idle connection. The next call must not read it.
    let up = RawUpstream::start(Misbehave::StrayAnswer).await;
    let (s, key) = with_raw(&up).await;
    assert_eq!(tokens(chat(&s, &key, "raw/m").await).await, 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        tokens(chat(&s, &key, "raw/m").await).await,
        4,
        "the forged answer would say 1800"
    );
    let seen = up.seen();
    assert_eq!(seen.len(), 2);
    assert_ne!(
        seen[1].0, seen[0].0,
        "the second call went on a new connection: {seen:?}"
    );
}

#[tokio::test]
async fn an_answer_with_length_and_chunked_framing_closes_its_connection() {
    let up = RawUpstream::start(Misbehave::LengthAndChunked).await;
    let (s, key) = with_raw(&up).await;
    assert_eq!(tokens(chat(&s, &key, "raw/m").await).await, 2);
    assert_eq!(tokens(chat(&s, &key, "raw/m").await).await, 4);
    assert_eq!(tokens(chat(&s, &key, "raw/m").await).await, 6);
    let c: Vec<usize> = up.seen().iter().map(|(c, _)| *c).collect();
    assert!(
        c[1] != c[0] && c[2] == c[1],
        "kept only after an unambiguous answer: {c:?}"
    );
}

#[tokio::test]
async fn an_answer_cut_short_is_a_502_and_its_connection_is_gone() {
    let up = RawUpstream::start(Misbehave::CutShort).await;
    let (s, key) = with_raw(&up).await;
    let r = chat(&s, &key, "raw/m").await;
    assert_error_is(r, 502, "api_error", Some("upstream_error")).await;
    assert_eq!(tokens(chat(&s, &key, "raw/m").await).await, 4);
    let c: Vec<usize> = up.seen().iter().map(|(c, _)| *c).collect();
    assert!(c.len() == 2 && c[1] != c[0], "{c:?}");
}

#[tokio::test]
async fn kept_connections_are_reused() {
    let up = RawUpstream::start(Misbehave::CutShort).await;
    let (s, key) = with_raw(&up).await;
    let _ = chat(&s, &key, "raw/m").await;
    for _ in 0..5 {
        assert_eq!(chat(&s, &key, "raw/m").await.status(), 200);
    }
    let c: Vec<usize> = up.seen().iter().map(|(c, _)| *c).collect();
    assert_eq!(c.len(), 6);
    assert!(c[1] != c[0] && c[1..].iter().all(|x| *x == c[1]), "{c:?}");
}

#[tokio::test]
async fn tls_trusts_the_built_in_roots_and_ca_file() {
    // Row 15: a provider with its own CA is refused until ca_file names it,
    // per provider or for all in [routing].
    let mock = Mock::start_tls().await;
    let s = TestServer::start_with(|cfg| {
        use_mock(cfg, &mock, &["openrouter", "aiml"]);
        cfg.providers.get_mut("aiml").unwrap().ca_file = Some(common::raw::test_ca_path());
        cfg.routing.retries = 0;
    })
    .await;
    let (_, _, key) = s.user_with_key("alice", Some("enterprise")).await;
    let r = chat(&s, &key, "openrouter/usage:1:2").await;
    let v = assert_error_is(r, 502, "api_error", Some("upstream_error")).await;
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("UnknownIssuer") || msg.contains("certificate"),
        "{msg}"
    );
    assert_eq!(tokens(chat(&s, &key, "aiml/usage:1:2").await).await, 3);

    let s = TestServer::start_with(|cfg| {
        use_mock(cfg, &mock, &["openrouter"]);
        cfg.routing.ca_file = Some(common::raw::test_ca_path());
    })
    .await;
    let (_, _, key) = s.user_with_key("alice", Some("enterprise")).await;
    assert_eq!(
        tokens(chat(&s, &key, "openrouter/usage:2:2").await).await,
        4
    );
    // The model list goes the same way.
    let models: Value = s.get_as("/v1/models", &key).await.json().await.unwrap();
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "openrouter/openai/gpt-4o"),
        "{models}"
    );
}

#[tokio::test]
async fn a_configured_proxy_is_used_with_connect_for_https() {
    let proxy = TestProxy::start().await;
    let plain = Mock::start().await;
    let tls = Mock::start_tls().await;
    let s = TestServer::start_with(|cfg| {
        use_mock(cfg, &plain, &["openrouter"]);
        use_mock(cfg, &tls, &["aiml"]);
        cfg.routing.ca_file = Some(common::raw::test_ca_path());
        cfg.routing.proxy = Some(format!("http://user:pw@127.0.0.1:{}", proxy.port));
        // A provider's own proxy wins over [routing]'s.
        cfg.providers.get_mut("aiml").unwrap().proxy = Some(proxy.url());
    })
    .await;
    let (_, _, key) = s.user_with_key("alice", Some("enterprise")).await;
    assert_eq!(
        tokens(chat(&s, &key, "openrouter/usage:1:1").await).await,
        2
    );
    assert_eq!(tokens(chat(&s, &key, "aiml/usage:2:1").await).await, 3);
    let seen = proxy.seen();
    let plain_port = plain.url.rsplit(':').next().unwrap();
    let tls_port = tls.url.rsplit(':').next().unwrap();
    // Plain http: the whole URL in the request line, and the credentials.
    let http = seen
        .iter()
        .find(|(l, _)| l.starts_with("POST http://"))
        .unwrap_or_else(|| panic!("{seen:?}"));
    assert_eq!(
        http.0,
        format!("POST http://127.0.0.1:{plain_port}/openrouter/v1/chat/completions HTTP/1.1")
    );
    assert_eq!(http.1.as_deref(), Some("Basic dXNlcjpwdw=="));
    // https: a tunnel, inside which the proxy sees nothing.
    let connect = seen
        .iter()
        .find(|(l, _)| l.starts_with("CONNECT "))
        .unwrap_or_else(|| panic!("{seen:?}"));
    assert_eq!(connect.0, format!("CONNECT 127.0.0.1:{tls_port} HTTP/1.1"));
    assert_eq!(connect.1, None);
    assert!(!seen.iter().any(|(l, _)| l.contains("/aiml/")), "{seen:?}");
    assert_eq!(tls.generation_calls().len(), 1);
    assert_eq!(plain.generation_calls().len(), 1);
}

#[tokio::test]
async fn a_bad_ca_file_or_proxy_is_a_configuration_error() {
    let mut cfg = tollgate::config::Config::default();
    cfg.routing.ca_file = Some("/nonexistent/ca.pem".into());
    assert_eq!(cfg.validate(None).unwrap_err().key, "routing.ca_file");
    let mut cfg = tollgate::config::Config::default();
    cfg.providers.entry("aiml".into()).or_default().proxy = Some("socks5://x:1".into());
    assert_eq!(cfg.validate(None).unwrap_err().key, "providers.aiml.proxy");
    let mut cfg = tollgate::config::Config::default();
    cfg.routing.ca_file = Some(common::raw::test_ca_path());
    cfg.routing.proxy = Some("http://proxy.example:3128".into());
    assert!(cfg.validate(None).is_ok());
}
