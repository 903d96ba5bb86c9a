//! The proxy environment (SPEC §9): without a configured `proxy`, providers
//! are reached through `HTTPS_PROXY` / `HTTP_PROXY`, except hosts in
//! `NO_PROXY`, as curl does. One test in its own binary: it sets the
//! process environment.

mod common;
use common::mock::{use_mock, Mock};
use common::raw::TestProxy;
use common::*;
use serde_json::{json, Value};

async fn call(s: &TestServer, key: &str, model: &str) -> Value {
    let r = s
        .client
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn the_proxy_environment_is_honoured_like_curls() {
    let proxy = TestProxy::start().await;
    let plain = Mock::start().await;
    let tls = Mock::start_tls().await;
    let setup = |cfg: &mut tollgate::config::Config| {
        use_mock(cfg, &plain, &["openrouter"]);
        use_mock(cfg, &tls, &["aiml"]);
        cfg.routing.ca_file = Some(common::raw::test_ca_path());
        // The harness connects directly; here the environment decides.
        cfg.routing.proxy = None;
    };
    std::env::set_var("HTTP_PROXY", proxy.url());
    std::env::set_var("HTTPS_PROXY", proxy.url());
    std::env::remove_var("NO_PROXY");
    std::env::remove_var("no_proxy");
    let s = TestServer::start_with(setup).await;
    let (_, _, key) = s.user_with_key("alice", Some("enterprise")).await;
    call(&s, &key, "openrouter/usage:1:1").await;
    call(&s, &key, "aiml/usage:1:1").await;
    let seen: Vec<String> = proxy.seen().into_iter().map(|(l, _)| l).collect();
    assert!(
        seen.iter().any(|l| l.starts_with("POST http://127.0.0.1:")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|l| l.starts_with("CONNECT 127.0.0.1:")),
        "{seen:?}"
    );

    // NO_PROXY names the host: connected directly.
    std::env::set_var("NO_PROXY", "localhost,127.0.0.1");
    let before = proxy.seen().len();
    let s = TestServer::start_with(setup).await;
    let (_, _, key) = s.user_with_key("bob", Some("enterprise")).await;
    call(&s, &key, "openrouter/usage:1:1").await;
    call(&s, &key, "aiml/usage:1:1").await;
    assert_eq!(proxy.seen().len(), before, "{:?}", proxy.seen());
    assert_eq!(plain.generation_calls().len(), 2);
    assert_eq!(tls.generation_calls().len(), 2);
}
