//! A key works the moment it exists (issues 17, 18): one made behind the
//! running server's back (the CLI, another replica: here straight through
//! the store, without the API's reload) is found at its first use, on the
//! generation door and on every other route; unknown keys stay refused.

mod common;

use common::mock::{use_mock, Mock};
use common::TestServer;
use serde_json::json;

async fn new_key_behind_the_servers_back(s: &TestServer, user_id: i64) -> String {
    let (key, hash, prefix) = tollgate::auth::api_key::generate();
    s.state
        .store
        .create_key(
            tollgate::db::api_keys::NewKey {
                user_id,
                name: "made-elsewhere".into(),
                description: None,
                key_hash: hex::encode(hash),
                prefix,
                expires_at: None,
                allowed_models: None,
                monthly_token_limit: None,
                monthly_usd_limit: None,
            },
            tollgate::db::ts(chrono::Utc::now()),
        )
        .await
        .unwrap();
    key
}

#[tokio::test]
async fn a_key_made_elsewhere_works_at_its_first_use() {
    let mock = Mock::start().await;
    let s = TestServer::start_with(|cfg| use_mock(cfg, &mock, &["aiml"])).await;
    let (uid, _, _) = s.user_with_key("ann", None).await;

    // First use on the generation door.
    let key = new_key_behind_the_servers_back(&s, uid).await;
    let r = s
        .client
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "aiml/usage:4:6", "max_tokens": 10,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // First use on a route behind the authentication layer.
    let key = new_key_behind_the_servers_back(&s, uid).await;
    assert_eq!(s.me_status(&key).await, 200);
    let r = s
        .client
        .get(s.url("/v1/models"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn unknown_keys_stay_refused() {
    let s = TestServer::start().await;
    s.user_with_key("ann", None).await;
    let calls = (0..200).map(|_| {
        let (key, _, _) = tollgate::auth::api_key::generate();
        let s = &s;
        async move { s.me_status(&key).await }
    });
    let statuses = futures_util::future::join_all(calls).await;
    assert!(statuses.iter().all(|&st| st == 401), "{statuses:?}");
    // The same wrong key again, and one revoked: still refused.
    let (key, _, _) = tollgate::auth::api_key::generate();
    for _ in 0..3 {
        assert_eq!(s.me_status(&key).await, 401);
    }
}
