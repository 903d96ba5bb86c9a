//! SPEC §4 API keys: create (secret once), list, patch, delete, ownership, and
//! the 401s of missing, unknown, revoked and expired keys.

mod common;
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn create_list_patch_delete() {
    let s = TestServer::start().await;
    s.create_user("alice", "alice-password", None).await;
    let t = s.login("alice", "alice-password").await;

    let r = s
        .client
        .post(s.url("/api/keys"))
        .bearer_auth(&t)
        .json(&json!({
            "name": "editor",
            "description": "VS Code",
            "expires_at": "2099-01-01T00:00:00Z",
            "allowed_models": ["aiml/*"],
            "monthly_token_limit": 5000
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let key = created["api_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk_live_"), "{key}");
    assert!(key.len() >= 8 + 43, "{key}");
    assert!(key[8..].bytes().all(|b| b.is_ascii_alphanumeric()), "{key}");
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["name"], "editor");
    assert_eq!(created["description"], "VS Code");
    assert_eq!(created["expires_at"], "2099-01-01T00:00:00Z");
    assert_eq!(created["allowed_models"], json!(["aiml/*"]));
    assert_eq!(created["monthly_token_limit"], 5000);
    let prefix = created["prefix"].as_str().unwrap();
    assert!(
        prefix.len() > "sk_live_".len() && key.starts_with(prefix),
        "{prefix}"
    );
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(s.me_status(&key).await, 200);

    let r = s.get_as("/api/keys", &t).await;
    assert_eq!(r.status(), 200);
    let list: Value = r.json().await.unwrap();
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    let k = &data[0];
    for f in [
        "id",
        "name",
        "description",
        "prefix",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked",
        "allowed_models",
        "monthly_token_limit",
    ] {
        assert!(k.get(f).is_some(), "key lacks {f}: {k}");
    }
    assert!(
        k.get("api_key").is_none() && !list.to_string().contains(&key),
        "secret in list: {list}"
    );
    assert_eq!(k["id"], id);
    assert_eq!(k["revoked"], false);
    assert!(k["last_used_at"].is_string(), "the key was used: {k}");

    let r = s
        .client
        .patch(s.url(&format!("/api/keys/{id}")))
        .bearer_auth(&t)
        .json(&json!({"name": "renamed", "description": null, "monthly_token_limit": 10, "allowed_models": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let k: Value = r.json().await.unwrap();
    assert_eq!(k["id"], id);
    assert_eq!(k["name"], "renamed");
    assert_eq!(k["description"], Value::Null);
    assert_eq!(k["monthly_token_limit"], 10);
    assert_eq!(k["allowed_models"], Value::Null);
    assert_eq!(
        k["expires_at"], "2099-01-01T00:00:00Z",
        "untouched fields are kept"
    );
    assert!(k.get("api_key").is_none());

    // A wrong-typed field: 400 naming it.
    let r = s
        .client
        .patch(s.url(&format!("/api/keys/{id}")))
        .bearer_auth(&t)
        .json(&json!({"monthly_token_limit": "lots"}))
        .send()
        .await
        .unwrap();
    let v = assert_error_is(r, 400, "invalid_request_error", None).await;
    assert_eq!(v["error"]["param"], "monthly_token_limit");

    let r = s
        .client
        .delete(s.url(&format!("/api/keys/{id}")))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // Revoked at once: 401 in OpenAI's shape, in both key forms.
    let r = s.get_as("/auth/me", &key).await;
    assert_error_is(r, 401, "invalid_request_error", Some("invalid_api_key")).await;
    let r = s
        .client
        .get(s.url("/auth/me"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_error_is(r, 401, "invalid_request_error", Some("invalid_api_key")).await;
    let list: Value = s.get_as("/api/keys", &t).await.json().await.unwrap();
    assert_eq!(list["data"][0]["revoked"], true);
}

#[tokio::test]
async fn keys_need_a_name() {
    let s = TestServer::start().await;
    let t = s.admin_token().await;
    let r = s
        .client
        .post(s.url("/api/keys"))
        .bearer_auth(&t)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let v = assert_error_is(r, 400, "invalid_request_error", None).await;
    assert_eq!(v["error"]["param"], "name");
    let r = s
        .client
        .post(s.url("/api/keys"))
        .bearer_auth(&t)
        .json(&json!({"name": "  "}))
        .send()
        .await
        .unwrap();
    let v = assert_error_is(r, 400, "invalid_request_error", None).await;
    assert_eq!(v["error"]["param"], "name");
    let r = s
        .client
        .post(s.url("/api/keys"))
        .bearer_auth(&t)
        .json(&json!({"name": "k", "expires_at": "next tuesday"}))
        .send()
        .await
        .unwrap();
    let v = assert_error_is(r, 400, "invalid_request_error", None).await;
    assert_eq!(v["error"]["param"], "expires_at");
}

#[tokio::test]
async fn missing_and_unknown_keys_are_401() {
    let s = TestServer::start().await;
    let r = s.client.get(s.url("/api/keys")).send().await.unwrap();
    assert_error_is(r, 401, "invalid_request_error", Some("invalid_api_key")).await;
    let unknown = format!("sk_live_{}", "A".repeat(43));
    let r = s.get_as("/api/keys", &unknown).await;
    assert_error_is(r, 401, "invalid_request_error", Some("invalid_api_key")).await;
    let r = s
        .client
        .get(s.url("/api/keys"))
        .header("x-api-key", &unknown)
        .send()
        .await
        .unwrap();
    assert_error_is(r, 401, "invalid_request_error", Some("invalid_api_key")).await;
}

#[tokio::test]
async fn expired_key_is_401() {
    let s = TestServer::start().await;
    let t = s.admin_token().await;
    let expires = s.state.clock.now() + chrono::Duration::seconds(60);
    let expires = expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (_, key) = s
        .create_key(&t, json!({"name": "short-lived", "expires_at": expires}))
        .await;
    assert_eq!(s.me_status(&key).await, 200);
    s.state.clock.advance(61);
    let r = s.get_as("/auth/me", &key).await;
    assert_error_is(r, 401, "invalid_request_error", Some("invalid_api_key")).await;
}

#[tokio::test]
async fn another_users_key_is_404() {
    let s = TestServer::start().await;
    let (_, alice, alice_key) = s.user_with_key("alice", None).await;
    let (_, bob, _) = s.user_with_key("bob", None).await;
    let alice_id = s
        .get_as("/api/keys", &alice)
        .await
        .json::<Value>()
        .await
        .unwrap()["data"][0]["id"]
        .as_i64()
        .unwrap();

    let r = s
        .client
        .patch(s.url(&format!("/api/keys/{alice_id}")))
        .bearer_auth(&bob)
        .json(&json!({"name": "mine now"}))
        .send()
        .await
        .unwrap();
    assert_error_is(r, 404, "invalid_request_error", Some("not_found")).await;
    let r = s
        .client
        .delete(s.url(&format!("/api/keys/{alice_id}")))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_error_is(r, 404, "invalid_request_error", Some("not_found")).await;
    // Bob sees only his own key; Alice's still works.
    let bobs: Value = s.get_as("/api/keys", &bob).await.json().await.unwrap();
    assert_eq!(bobs["data"].as_array().unwrap().len(), 1);
    assert_ne!(bobs["data"][0]["id"], alice_id);
    assert_eq!(s.me_status(&alice_key).await, 200);
    // An id that does not exist at all.
    let r = s
        .client
        .delete(s.url("/api/keys/999999"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_error_is(r, 404, "invalid_request_error", Some("not_found")).await;
}

#[tokio::test]
async fn a_key_cannot_manage_the_account() {
    // SPEC §4 "What a key may do": a restricted key tries to lift its own
    // restrictions, mint a broader key, revoke keys and change the password.
    let s = TestServer::start().await;
    let (_, jwt, _) = s.user_with_key("gina", None).await;
    let (id, key) = s
        .create_key(
            &jwt,
            json!({"name": "narrow", "allowed_models": ["local/cheap"], "monthly_token_limit": 100}),
        )
        .await;
    let as_key = |req: reqwest::RequestBuilder| req.bearer_auth(&key).send();
    let session_required =
        |r| assert_error_is(r, 403, "permission_error", Some("session_required"));

    let r = as_key(
        s.client
            .patch(s.url(&format!("/api/keys/{id}")))
            .json(&json!({"allowed_models": null, "monthly_token_limit": null})),
    )
    .await
    .unwrap();
    session_required(r).await;
    let r = as_key(
        s.client
            .post(s.url("/api/keys"))
            .json(&json!({"name": "wide"})),
    )
    .await
    .unwrap();
    session_required(r).await;
    let r = as_key(s.client.delete(s.url(&format!("/api/keys/{id}"))))
        .await
        .unwrap();
    session_required(r).await;
    let r = as_key(s.client.post(s.url("/auth/password")).json(
        &json!({"current_password": "user-password-1", "new_password": "another-password-2"}),
    ))
    .await
    .unwrap();
    session_required(r).await;
    // The X-API-Key form is refused the same way.
    let r = s
        .client
        .post(s.url("/api/keys"))
        .header("x-api-key", &key)
        .json(&json!({"name": "wide"}))
        .send()
        .await
        .unwrap();
    session_required(r).await;

    // What a key may do: read the account and its keys.
    for path in [
        "/auth/me",
        "/api/keys",
        "/subscriptions/me",
        "/subscriptions/plans",
    ] {
        assert_eq!(s.get_as(path, &key).await.status(), 200, "{path}");
    }
    // Nothing changed: the key is as narrow as before, and it is still the
    // user's only narrow key.
    let list: Value = s.get_as("/api/keys", &jwt).await.json().await.unwrap();
    let keys = list["data"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{list}");
    let narrow = keys.iter().find(|k| k["id"] == id).unwrap();
    assert_eq!(narrow["allowed_models"], json!(["local/cheap"]));
    assert_eq!(narrow["monthly_token_limit"], 100);
    assert_eq!(narrow["revoked"], false);
    assert_eq!(s.me_status(&key).await, 200);

    // The session itself may do all of it.
    let r = s
        .client
        .patch(s.url(&format!("/api/keys/{id}")))
        .bearer_auth(&jwt)
        .json(&json!({"monthly_token_limit": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_admins_key_reaches_metrics_but_no_admin_route() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let (_, key) = s.create_key(&admin, json!({"name": "scraper"})).await;
    for (method, path) in [
        ("GET", "/admin/users"),
        ("GET", "/admin/keys"),
        ("GET", "/admin/plans"),
        ("GET", "/admin/usage"),
        ("GET", "/admin/requests"),
        ("POST", "/admin/users"),
        ("DELETE", "/admin/keys/1"),
    ] {
        let r = s
            .client
            .request(method.parse().unwrap(), s.url(path))
            .bearer_auth(&key)
            .json(&json!({"username": "x", "password": "long-enough-1"}))
            .send()
            .await
            .unwrap();
        assert_error_is(r, 403, "permission_error", Some("session_required")).await;
    }
    assert_eq!(s.get_as("/admin/users", &admin).await.status(), 200);
    // Scrapers hold a key: /metrics alone accepts an admin's.
    assert_eq!(s.get_as("/metrics", &key).await.status(), 200);
    let (_, _, user_key) = s.user_with_key("hal", None).await;
    let r = s.get_as("/metrics", &user_key).await;
    assert_error_is(r, 403, "permission_error", None).await;
}
