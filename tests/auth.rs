//! SPEC §4 authentication: register, login (JSON and form), me, password change,
//! the three credential forms, login throttling, JWT expiry, disabled users.

mod common;
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn register_is_refused_when_registration_is_off() {
    let s = TestServer::start().await;
    let r = s
        .client
        .post(s.url("/auth/register"))
        .json(&json!({"username": "alice", "password": "alice-password"}))
        .send()
        .await
        .unwrap();
    assert_error_is(r, 403, "permission_error", Some("registration_disabled")).await;
    // No account was created.
    let r = s
        .client
        .post(s.url("/auth/login"))
        .json(&json!({"username": "alice", "password": "alice-password"}))
        .send()
        .await
        .unwrap();
    assert_error_is(r, 401, "invalid_request_error", Some("invalid_credentials")).await;
}

#[tokio::test]
async fn register_creates_a_user_on_the_free_plan() {
    let s = TestServer::start_with(|c| c.auth.allow_registration = true).await;
    let r = s
        .client
        .post(s.url("/auth/register"))
        .json(&json!({"username": "alice", "password": "alice-password", "email": "alice@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert!(v["id"].is_i64(), "{v}");
    assert_eq!(v["username"], "alice");
    assert_eq!(v["email"], "alice@example.com");
    assert_eq!(v["role"], "user");
    assert_eq!(v["plan"], "free");

    // Duplicate username (also in another case): 409 conflict.
    for name in ["alice", "ALICE"] {
        let r = s
            .client
            .post(s.url("/auth/register"))
            .json(&json!({"username": name, "password": "other-password"}))
            .send()
            .await
            .unwrap();
        assert_error_is(r, 409, "invalid_request_error", Some("conflict")).await;
    }

    // Short password: 400 naming the field.
    let r = s
        .client
        .post(s.url("/auth/register"))
        .json(&json!({"username": "bob", "password": "short"}))
        .send()
        .await
        .unwrap();
    let v = assert_error_is(r, 400, "invalid_request_error", None).await;
    assert_eq!(v["error"]["param"], "password");

    let t = s.login("alice", "alice-password").await;
    let me: Value = s.get_as("/auth/me", &t).await.json().await.unwrap();
    assert_eq!(me["username"], "alice");
    assert_eq!(me["plan"], "free");
}

#[tokio::test]
async fn login_accepts_json_and_form() {
    let s = TestServer::start().await;
    let r = s
        .client
        .post(s.url("/auth/login"))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token_type"], "bearer");
    assert_eq!(v["expires_in"], 3600);
    let json_token = v["access_token"].as_str().unwrap().to_owned();
    assert_eq!(s.me_status(&json_token).await, 200);

    let r = s
        .client
        .post(s.url("/auth/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("username=admin&password={ADMIN_PASSWORD}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token_type"], "bearer");
    assert_eq!(v["expires_in"], 3600);
    let form_token = v["access_token"].as_str().unwrap();
    let me: Value = s.get_as("/auth/me", form_token).await.json().await.unwrap();
    assert_eq!(me["username"], "admin");
    assert_eq!(me["role"], "admin");
    assert_eq!(me["plan"], "free");
    assert!(me["id"].is_i64());
    assert!(me.get("email").is_some(), "{me}");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_invalid_credentials() {
    let s = TestServer::start().await;
    for (u, p) in [
        ("admin", "not-the-password"),
        ("nobody", "whatever-password"),
    ] {
        let r = s
            .client
            .post(s.url("/auth/login"))
            .json(&json!({"username": u, "password": p}))
            .send()
            .await
            .unwrap();
        assert_error_is(r, 401, "invalid_request_error", Some("invalid_credentials")).await;
    }
    let r = s
        .client
        .post(s.url("/auth/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=admin&password=nope-nope-nope")
        .send()
        .await
        .unwrap();
    assert_error_is(r, 401, "invalid_request_error", Some("invalid_credentials")).await;
}

#[tokio::test]
async fn me_needs_a_credential() {
    let s = TestServer::start().await;
    let r = s.client.get(s.url("/auth/me")).send().await.unwrap();
    assert!(r.headers().contains_key("x-request-id"));
    assert_error_is(r, 401, "invalid_request_error", Some("invalid_api_key")).await;
    let r = s.get_as("/auth/me", "not-a-jwt").await;
    assert_error_is(r, 401, "invalid_request_error", Some("invalid_api_key")).await;
    // A JWT signed with another secret.
    let other = tollgate::auth::jwt::JwtKeys::new(b"another-secret-another-secret-32", 3600);
    let forged = other.issue(1, 0, s.state.clock.now().timestamp());
    let r = s.get_as("/auth/me", &forged).await;
    assert_error_is(r, 401, "invalid_request_error", Some("invalid_api_key")).await;
}

#[tokio::test]
async fn all_three_credential_forms_work() {
    let s = TestServer::start().await;
    let (uid, token, key) = s.user_with_key("carol", None).await;

    let r = s
        .client
        .get(s.url("/auth/me"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["id"], uid);

    let r = s
        .client
        .get(s.url("/auth/me"))
        .header("authorization", format!("Bearer {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["id"], uid);

    let r = s
        .client
        .get(s.url("/auth/me"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["username"], "carol");

    // A wrong key in each form is 401 invalid_api_key.
    // Another last character (a fixed one would be the key itself now and then).
    let last = if key.ends_with('x') { 'y' } else { 'x' };
    let bad = format!("{}{last}", &key[..key.len() - 1]);
    let r = s
        .client
        .get(s.url("/auth/me"))
        .header("x-api-key", &bad)
        .send()
        .await
        .unwrap();
    assert_error_is(r, 401, "invalid_request_error", Some("invalid_api_key")).await;
    let r = s.get_as("/auth/me", &bad).await;
    assert_error_is(r, 401, "invalid_request_error", Some("invalid_api_key")).await;
}

#[tokio::test]
async fn password_change_invalidates_earlier_tokens() {
    let s = TestServer::start().await;
    s.create_user("dave", "dave-password-1", None).await;
    let old = s.login("dave", "dave-password-1").await;
    let (_, key) = s.create_key(&old, json!({"name": "k"})).await;

    // Short new password: 400 naming new_password.
    let r = s
        .client
        .post(s.url("/auth/password"))
        .bearer_auth(&old)
        .json(&json!({"current_password": "dave-password-1", "new_password": "short"}))
        .send()
        .await
        .unwrap();
    let v = assert_error(r, 400).await;
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["param"], "new_password");

    // Wrong current password: refused, nothing changes.
    let r = s
        .client
        .post(s.url("/auth/password"))
        .bearer_auth(&old)
        .json(&json!({"current_password": "wrong-password", "new_password": "dave-password-2"}))
        .send()
        .await
        .unwrap();
    let v = assert_error(r, 401).await;
    assert_eq!(v["error"]["param"], "current_password");
    assert_eq!(s.me_status(&old).await, 200);

    let r = s
        .client
        .post(s.url("/auth/password"))
        .bearer_auth(&old)
        .json(&json!({"current_password": "dave-password-1", "new_password": "dave-password-2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers().contains_key("x-request-id"));

    let r = s.get_as("/auth/me", &old).await;
    assert_error_is(r, 401, "invalid_request_error", Some("invalid_api_key")).await;
    let r = s
        .client
        .post(s.url("/auth/login"))
        .json(&json!({"username": "dave", "password": "dave-password-1"}))
        .send()
        .await
        .unwrap();
    assert_error_is(r, 401, "invalid_request_error", Some("invalid_credentials")).await;
    let new = s.login("dave", "dave-password-2").await;
    assert_eq!(s.me_status(&new).await, 200);
    // API keys are not tied to the password.
    assert_eq!(s.me_status(&key).await, 200);
}

#[tokio::test]
async fn jwt_expires_exactly_at_exp() {
    let s = TestServer::start_with(|c| c.auth.access_token_ttl_secs = 120).await;
    // Learn exp: the token's iat is the server clock's second at login.
    let (token, exp) = loop {
        let before = s.state.clock.now().timestamp();
        let t = s.admin_token().await;
        if s.state.clock.now().timestamp() == before {
            break (t, before + 120);
        }
    };
    // Work within one wall-clock second so the two checks land on exp-1 and exp.
    let ms = chrono::Utc::now().timestamp_subsec_millis() as u64;
    tokio::time::sleep(std::time::Duration::from_millis(1000 - ms + 20)).await;
    s.set_clock(exp - 1);
    assert_eq!(
        s.me_status(&token).await,
        200,
        "valid one second before exp"
    );
    s.set_clock(exp);
    let r = s.get_as("/auth/me", &token).await;
    assert_error_is(r, 401, "invalid_request_error", Some("invalid_api_key")).await;
}

#[tokio::test]
async fn login_throttling_after_ten_failures() {
    let s = TestServer::start().await;
    s.create_user("erin", "erin-password-1", None).await;
    for i in 0..10 {
        let r = s
            .client
            .post(s.url("/auth/login"))
            .json(&json!({"username": "erin", "password": format!("wrong-{i}")}))
            .send()
            .await
            .unwrap();
        assert_error_is(r, 401, "invalid_request_error", Some("invalid_credentials")).await;
    }
    // The 11th attempt, even with the right password, is 429 with Retry-After.
    for pw in ["wrong-again", "erin-password-1"] {
        let r = s
            .client
            .post(s.url("/auth/login"))
            .json(&json!({"username": "erin", "password": pw}))
            .send()
            .await
            .unwrap();
        let ra: u64 = r
            .headers()
            .get("retry-after")
            .expect("Retry-After")
            .to_str()
            .unwrap()
            .parse()
            .expect("Retry-After is seconds");
        assert!(ra > 0 && ra <= 900, "{ra}");
        assert_error_is(r, 429, "rate_limit_error", Some("rate_limit_exceeded")).await;
    }
    // Throttling is per username: another account from the same address still signs in.
    assert!(!s.admin_token().await.is_empty());

    // Still refused just before the window passes, accepted once it has.
    s.state.clock.advance(15 * 60 - 5);
    let r = s
        .client
        .post(s.url("/auth/login"))
        .json(&json!({"username": "erin", "password": "erin-password-1"}))
        .send()
        .await
        .unwrap();
    let ra: i64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=6).contains(&ra), "Retry-After counts down: {ra}");
    assert_error_is(r, 429, "rate_limit_error", Some("rate_limit_exceeded")).await;
    s.state.clock.advance(ra);
    s.login("erin", "erin-password-1").await;
}

#[tokio::test]
async fn concurrent_wrong_passwords_are_throttled_before_they_are_checked() {
    // 45 simultaneous wrong passwords for one user: each is counted before its
    // (slow) hash is checked, so at most 10 are evaluated; the rest are 429.
    let s = TestServer::start().await;
    s.create_user("ivy", "ivy-password-1", None).await;
    let attempts = (0..45).map(|i| {
        s.client
            .post(s.url("/auth/login"))
            .json(&json!({"username": "ivy", "password": format!("wrong-{i}")}))
            .send()
    });
    let statuses: Vec<u16> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    let evaluated = statuses.iter().filter(|s| **s == 401).count();
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(evaluated + throttled, 45, "{statuses:?}");
    assert!(
        evaluated <= 10,
        "{evaluated} wrong passwords were evaluated"
    );
    // A right password does not use up the allowance of another user's
    // attempts, and a success is not counted as a failure.
    for _ in 0..12 {
        s.admin_token().await;
    }
}

async fn failed_login_from(s: &TestServer, user: &str, xff: &str) -> u16 {
    s.client
        .post(s.url("/auth/login"))
        .header("x-forwarded-for", xff)
        .json(&json!({"username": user, "password": "wrong-password"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn x_forwarded_for_is_ignored_from_untrusted_peers() {
    let s = TestServer::start().await;
    for _ in 0..10 {
        assert_eq!(failed_login_from(&s, "admin", "203.0.113.1").await, 401);
    }
    // A different forwarded address does not escape: the peer is what counts.
    assert_eq!(failed_login_from(&s, "admin", "203.0.113.2").await, 429);
}

#[tokio::test]
async fn x_forwarded_for_is_honoured_from_trusted_proxies() {
    let s = TestServer::start_with(|c| c.server.trusted_proxies = vec!["127.0.0.1".into()]).await;
    for _ in 0..10 {
        assert_eq!(failed_login_from(&s, "admin", "203.0.113.1").await, 401);
    }
    assert_eq!(failed_login_from(&s, "admin", "203.0.113.1").await, 429);
    // Another client behind the same proxy is not locked out, with the right password either.
    assert_eq!(failed_login_from(&s, "admin", "203.0.113.2").await, 401);
    let r = s
        .client
        .post(s.url("/auth/login"))
        .header("x-forwarded-for", "203.0.113.3")
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A range names the proxies (a container network); the client is the
/// right-most address that is not one of them.
#[tokio::test]
async fn trusted_proxies_may_be_ranges() {
    let s = TestServer::start_with(|c| c.server.trusted_proxies = vec!["127.0.0.0/8".into()]).await;
    let chain = "198.51.100.7, 203.0.113.1, 127.0.0.9";
    for _ in 0..10 {
        assert_eq!(failed_login_from(&s, "admin", chain).await, 401);
    }
    assert_eq!(failed_login_from(&s, "admin", "203.0.113.1").await, 429);
    assert_eq!(failed_login_from(&s, "admin", "198.51.100.7").await, 401);
}

#[tokio::test]
async fn disabled_user_is_refused_and_old_tokens_stay_dead() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let (uid, token, key) = s.user_with_key("frank", None).await;

    let r = s
        .client
        .patch(s.url(&format!("/admin/users/{uid}")))
        .bearer_auth(&admin)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["disabled"], true);

    let r = s
        .client
        .get(s.url("/auth/me"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_error_is(r, 403, "permission_error", Some("account_disabled")).await;
    let r = s.get_as("/api/keys", &key).await;
    assert_error_is(r, 403, "permission_error", Some("account_disabled")).await;
    let r = s.get_as("/auth/me", &token).await;
    assert_error_is(r, 403, "permission_error", Some("account_disabled")).await;
    // Signing in while disabled is refused too.
    let r = s
        .client
        .post(s.url("/auth/login"))
        .json(&json!({"username": "frank", "password": "user-password-1"}))
        .send()
        .await
        .unwrap();
    assert_error(r, 403).await;

    let r = s
        .client
        .patch(s.url(&format!("/admin/users/{uid}")))
        .bearer_auth(&admin)
        .json(&json!({"disabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["disabled"], false);

    assert_eq!(
        s.me_status(&key).await,
        200,
        "keys work again after re-enabling"
    );
    let r = s.get_as("/auth/me", &token).await;
    assert_error_is(r, 401, "invalid_request_error", Some("invalid_api_key")).await;
    let fresh = s.login("frank", "user-password-1").await;
    assert_eq!(s.me_status(&fresh).await, 200);
}

#[tokio::test]
async fn auth_providers_is_public() {
    let s = TestServer::start().await;
    let r = s.client.get(s.url("/auth/providers")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.unwrap().is_array());
}

#[tokio::test]
async fn fifty_failures_from_one_address_lock_it_out() {
    let s = TestServer::start().await;
    for i in 0..50 {
        let r = s
            .client
            .post(s.url("/auth/login"))
            .json(&json!({"username": format!("user{i}"), "password": "wrong-password"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "attempt {i}");
    }
    // The 51st failure-prone attempt from this address, for any username, is 429 —
    // the admin with the right password included.
    let r = s
        .client
        .post(s.url("/auth/login"))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("retry-after"));
    assert_error_is(r, 429, "rate_limit_error", Some("rate_limit_exceeded")).await;
}
