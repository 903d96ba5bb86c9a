//! A provider set up wrong, as the operator sees it: a `base_url` without
//! `/v1` names the URL that answered 404 and what to check.

mod common;
use common::mock::Mock;
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn a_404_names_the_url_and_asks_about_v1() {
    let mock = Mock::start().await;
    let base = format!("{}/nov1", mock.url);
    let s = TestServer::start_with(|cfg| {
        cfg.providers.insert(
            "nov1".into(),
            tollgate::config::ProviderConfig {
                base_url: Some(base.clone()),
                ..Default::default()
            },
        );
    })
    .await;
    let (_, _, key) = s.user_with_key("alice", Some("enterprise")).await;
    let r = s
        .client
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "nov1/llama3", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.contains(&format!("POST {base}/chat/completions answered 404"))
            && m.contains("does it end in /v1?"),
        "{m}"
    );
    s.stop().await;
}
