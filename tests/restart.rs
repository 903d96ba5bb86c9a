//! SPEC §1/§2 persistence: a restart keeps users, keys and the JWT secret, and a
//! second start seeds nothing (plans and the admin stay as they were).

mod common;
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn restart_keeps_users_keys_and_tokens() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let (uid, token, key) = s.user_with_key("alice", Some("pro")).await;
    let admin_id = s
        .get_as("/auth/me", &admin)
        .await
        .json::<Value>()
        .await
        .unwrap()["id"]
        .clone();

    // Change what a re-seed would undo: the admin's password and the plans.
    let r = s
        .client
        .post(s.url("/auth/password"))
        .bearer_auth(&admin)
        .json(&json!({"current_password": ADMIN_PASSWORD, "new_password": "changed-admin-pw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let admin = s.login("admin", "changed-admin-pw").await;
    let r = s
        .client
        .delete(s.url("/admin/plans/enterprise"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = s
        .client
        .patch(s.url("/admin/plans/free"))
        .bearer_auth(&admin)
        .json(&json!({"monthly_tokens": 123}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.me_status(&key).await, 200, "mark the key as used");

    let (dir, mut cfg) = s.stop().await;
    // Plans in the config only matter on the first start.
    cfg.plans = vec![tollgate::config::PlanConfig {
        name: "late".into(),
        monthly_tokens: 1,
        requests_per_minute: 1,
        price_usd_month: 0.0,
        allowed_models: vec!["*".into()],
        monthly_usd: None,
        pay_as_you_go: false,
    }];
    let s = TestServer::start_in(dir, cfg).await;

    // Tokens issued before the restart still verify: the secret was kept.
    let me: Value = s.get_as("/auth/me", &token).await.json().await.unwrap();
    assert_eq!(me["id"], uid);
    assert_eq!(me["plan"], "pro");
    assert_eq!(s.me_status(&admin).await, 200);
    assert_eq!(s.me_status(&key).await, 200);
    let keys: Value = s.get_as("/api/keys", &token).await.json().await.unwrap();
    assert_eq!(keys["data"].as_array().unwrap().len(), 1);
    assert!(
        keys["data"][0]["last_used_at"].is_string(),
        "last use was written at shutdown: {keys}"
    );

    // The admin was not re-created: the changed password holds, the env one does not.
    let r = s
        .client
        .post(s.url("/auth/login"))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_error_is(r, 401, "invalid_request_error", Some("invalid_credentials")).await;
    let admin = s.login("admin", "changed-admin-pw").await;
    let users: Value = s.get_as("/admin/users", &admin).await.json().await.unwrap();
    let names: Vec<&str> = users["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "admin"], "newest first");
    assert_eq!(users["data"][1]["id"], admin_id);

    let plans: Value = s.get_as("/admin/plans", &admin).await.json().await.unwrap();
    let plans: Vec<(&str, i64)> = plans["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["monthly_tokens"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(plans, [("free", 123), ("pro", 100_000)]);
    s.stop().await;
}

#[tokio::test]
async fn configured_plans_are_created_on_first_start() {
    let s = TestServer::start_with(|c| {
        c.plans = vec![
            tollgate::config::PlanConfig {
                name: "basic".into(),
                monthly_tokens: 50,
                requests_per_minute: 2,
                price_usd_month: 1.5,
                allowed_models: vec!["local/*".into()],
                monthly_usd: Some(tollgate::money::Usd(2_500_001)),
                pay_as_you_go: true,
            },
            tollgate::config::PlanConfig {
                name: "free".into(),
                monthly_tokens: 5,
                requests_per_minute: 1,
                price_usd_month: 0.0,
                allowed_models: vec!["*".into()],
                monthly_usd: None,
                pay_as_you_go: false,
            },
        ]
    })
    .await;
    let admin = s.admin_token().await;
    let plans: Value = s.get_as("/admin/plans", &admin).await.json().await.unwrap();
    assert_eq!(
        plans["data"],
        json!([
            {"name": "basic", "monthly_tokens": 50, "monthly_usd": 2.500001, "requests_per_minute": 2,
             "price_usd_month": 1.5, "allowed_models": ["local/*"], "pay_as_you_go": true},
            {"name": "free", "monthly_tokens": 5, "monthly_usd": null, "requests_per_minute": 1,
             "price_usd_month": 0.0, "allowed_models": ["*"], "pay_as_you_go": false}
        ])
    );
    // New users get free.
    let id = s.create_user("bob", "bob-password", None).await;
    let users: Value = s
        .get_as("/admin/users?q=bob", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(users["data"][0]["id"], id);
    assert_eq!(users["data"][0]["plan"], "free");
}
