//! SPEC §7 administration: users (search, create, patch, delete), plans and
//! every user's keys; non-admins are refused with 403.

mod common;
use common::*;
use serde_json::{json, Value};

const USER_FIELDS: [&str; 7] = [
    "id",
    "username",
    "email",
    "role",
    "plan",
    "disabled",
    "created_at",
];

#[tokio::test]
async fn non_admins_get_403_on_every_admin_route() {
    let s = TestServer::start().await;
    let (uid, token, key) = s.user_with_key("alice", None).await;
    for cred in [&token, &key] {
        for (method, path, body) in [
            ("GET", "/admin/users".to_string(), None),
            (
                "POST",
                "/admin/users".to_string(),
                Some(json!({"username": "x", "password": "xxxxxxxxxx"})),
            ),
            (
                "PATCH",
                format!("/admin/users/{uid}"),
                Some(json!({"role": "admin"})),
            ),
            ("DELETE", format!("/admin/users/{uid}"), None),
            ("GET", "/admin/plans".to_string(), None),
            (
                "POST",
                "/admin/plans".to_string(),
                Some(json!({"name": "p", "monthly_tokens": 1, "requests_per_minute": 1})),
            ),
            (
                "PATCH",
                "/admin/plans/free".to_string(),
                Some(json!({"monthly_tokens": 1})),
            ),
            ("DELETE", "/admin/plans/pro".to_string(), None),
            ("GET", "/admin/keys".to_string(), None),
            ("DELETE", "/admin/keys/1".to_string(), None),
        ] {
            let mut rb = s
                .client
                .request(method.parse().unwrap(), s.url(&path))
                .bearer_auth(cred);
            if let Some(b) = body {
                rb = rb.json(&b);
            }
            let r = rb.send().await.unwrap();
            let v = assert_error(r, 403).await;
            assert_eq!(
                v["error"]["type"], "permission_error",
                "{method} {path}: {v}"
            );
        }
    }
    // Nothing changed: alice is still a user and the plans are all there.
    let admin = s.admin_token().await;
    let users: Value = s
        .get_as("/admin/users?q=alice", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(users["data"][0]["role"], "user");
    let plans: Value = s.get_as("/admin/plans", &admin).await.json().await.unwrap();
    assert_eq!(plans["data"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn list_and_search_users() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let r = s
        .client
        .post(s.url("/admin/users"))
        .bearer_auth(&admin)
        .json(&json!({"username": "alice", "password": "alice-password", "email": "alice@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    s.create_user("bob", "bob-password", None).await;

    let all: Value = s.get_as("/admin/users", &admin).await.json().await.unwrap();
    let data = all["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "{all}");
    for u in data {
        for f in USER_FIELDS {
            assert!(u.get(f).is_some(), "user lacks {f}: {u}");
        }
        assert!(
            u.get("password_hash").is_none() && !u.to_string().contains("argon2"),
            "{u}"
        );
    }
    let r = s.get_as("/admin/users?q=ali", &admin).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let names: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice"]);
    // Search covers email too.
    let v: Value = s
        .get_as("/admin/users?q=example.com", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    let v: Value = s
        .get_as("/admin/users?q=zzz", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"], json!([]));
}

#[tokio::test]
async fn create_user_answers_201_with_the_user() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let r = s
        .client
        .post(s.url("/admin/users"))
        .bearer_auth(&admin)
        .json(&json!({"username": "carol", "password": "carol-password", "email": "c@example.com", "role": "admin", "plan": "pro"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let u: Value = r.json().await.unwrap();
    for f in USER_FIELDS {
        assert!(u.get(f).is_some(), "user lacks {f}: {u}");
    }
    assert_eq!(u["username"], "carol");
    assert_eq!(u["email"], "c@example.com");
    assert_eq!(u["role"], "admin");
    assert_eq!(u["plan"], "pro");
    assert_eq!(u["disabled"], false);
    // The new admin can use admin routes.
    let t = s.login("carol", "carol-password").await;
    assert_eq!(s.get_as("/admin/users", &t).await.status(), 200);

    // Defaults: role user, plan free.
    let r = s
        .client
        .post(s.url("/admin/users"))
        .bearer_auth(&admin)
        .json(&json!({"username": "dan", "password": "dan-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let u: Value = r.json().await.unwrap();
    assert_eq!(
        (u["role"].as_str(), u["plan"].as_str(), u["email"].clone()),
        (Some("user"), Some("free"), Value::Null)
    );

    for (body, status, code, param) in [
        (
            json!({"username": "dan", "password": "dan-password"}),
            409,
            Some("conflict"),
            None,
        ),
        (
            json!({"username": "eve", "password": "short"}),
            400,
            None,
            Some("password"),
        ),
        (
            json!({"username": "eve", "password": "eve-password", "plan": "gold"}),
            400,
            None,
            Some("plan"),
        ),
        (
            json!({"username": "eve", "password": "eve-password", "role": "root"}),
            400,
            None,
            Some("role"),
        ),
        (
            json!({"password": "eve-password"}),
            400,
            None,
            Some("username"),
        ),
    ] {
        let r = s
            .client
            .post(s.url("/admin/users"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        let v = assert_error_is(r, status, "invalid_request_error", code).await;
        assert_eq!(v["error"]["param"], json!(param), "{body}: {v}");
    }
}

#[tokio::test]
async fn patch_user_fields() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let (uid, old_token, key) = s.user_with_key("alice", None).await;
    let patch = |body: Value| {
        let s = &s;
        let admin = admin.clone();
        async move {
            s.client
                .patch(s.url(&format!("/admin/users/{uid}")))
                .bearer_auth(&admin)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };

    let r = patch(json!({"plan": "enterprise"})).await;
    assert_eq!(r.status(), 200);
    let u: Value = r.json().await.unwrap();
    assert_eq!(u["plan"], "enterprise");
    assert_eq!(u["id"], uid);
    for f in USER_FIELDS {
        assert!(u.get(f).is_some(), "user lacks {f}: {u}");
    }
    // The change is in force at once for the user's own view.
    let me: Value = s.get_as("/auth/me", &key).await.json().await.unwrap();
    assert_eq!(me["plan"], "enterprise");

    let u: Value = patch(json!({"email": "alice@example.org"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(u["email"], "alice@example.org");
    let u: Value = patch(json!({"email": null})).await.json().await.unwrap();
    assert_eq!(u["email"], Value::Null);

    let u: Value = patch(json!({"role": "admin"})).await.json().await.unwrap();
    assert_eq!(u["role"], "admin");
    assert_eq!(
        s.get_as("/admin/users", &old_token).await.status(),
        200,
        "promoted at once"
    );
    // A key of an admin is still only a key (SPEC §4).
    let r = s.get_as("/admin/users", &key).await;
    assert_error_is(r, 403, "permission_error", Some("session_required")).await;
    let u: Value = patch(json!({"role": "user"})).await.json().await.unwrap();
    assert_eq!(u["role"], "user");
    assert_eq!(
        s.get_as("/admin/users", &old_token).await.status(),
        403,
        "demoted at once"
    );

    let r = patch(json!({"password": "new-alice-password"})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.me_status(&old_token).await,
        401,
        "a password reset signs the user out"
    );
    let t = s.login("alice", "new-alice-password").await;
    assert_eq!(s.me_status(&t).await, 200);

    let u: Value = patch(json!({"disabled": true})).await.json().await.unwrap();
    assert_eq!(u["disabled"], true);
    assert_eq!(s.me_status(&key).await, 403);

    for (body, param) in [
        (json!({"plan": "gold"}), "plan"),
        (json!({"role": "root"}), "role"),
        (json!({"password": "short"}), "password"),
        (json!({"disabled": "yes"}), "disabled"),
    ] {
        let r = patch(body.clone()).await;
        let v = assert_error_is(r, 400, "invalid_request_error", None).await;
        assert_eq!(v["error"]["param"], param, "{body}: {v}");
    }
    let r = s
        .client
        .patch(s.url("/admin/users/99999"))
        .bearer_auth(&admin)
        .json(&json!({"plan": "pro"}))
        .send()
        .await
        .unwrap();
    assert_error_is(r, 404, "invalid_request_error", Some("not_found")).await;
}

#[tokio::test]
async fn delete_user_kills_their_keys() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let (uid, token, key) = s.user_with_key("alice", None).await;
    let (_, _, bob_key) = s.user_with_key("bob", None).await;
    assert_eq!(s.me_status(&key).await, 200);

    let r = s
        .client
        .delete(s.url(&format!("/admin/users/{uid}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = s.get_as("/auth/me", &key).await;
    assert_error_is(r, 401, "invalid_request_error", Some("invalid_api_key")).await;
    let r = s.get_as("/auth/me", &token).await;
    assert_error_is(r, 401, "invalid_request_error", Some("invalid_api_key")).await;
    let keys: Value = s.get_as("/admin/keys", &admin).await.json().await.unwrap();
    assert!(
        keys["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["user_id"] != uid),
        "{keys}"
    );
    assert_eq!(
        s.me_status(&bob_key).await,
        200,
        "other users are untouched"
    );

    let r = s
        .client
        .delete(s.url(&format!("/admin/users/{uid}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_error_is(r, 404, "invalid_request_error", Some("not_found")).await;
    // The username is free again.
    s.create_user("alice", "alice-password-2", None).await;
}

#[tokio::test]
async fn plans_crud() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let r = s.get_as("/admin/plans", &admin).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let plans = v["data"].as_array().unwrap();
    let summary: Vec<(&str, i64, i64)> = plans
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["monthly_tokens"].as_i64().unwrap(),
                p["requests_per_minute"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("free", 10_000, 60),
            ("pro", 100_000, 60),
            ("enterprise", 1_000_000, 60)
        ]
    );
    for p in plans {
        assert_eq!(p["allowed_models"], json!(["*"]));
        assert!(p["price_usd_month"].is_number());
    }

    let r = s
        .client
        .post(s.url("/admin/plans"))
        .bearer_auth(&admin)
        .json(&json!({"name": "team", "monthly_tokens": 500, "requests_per_minute": 5, "price_usd_month": 9.5, "allowed_models": ["aiml/*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"name": "team", "monthly_tokens": 500, "monthly_usd": null, "requests_per_minute": 5,
               "price_usd_month": 9.5, "allowed_models": ["aiml/*"], "pay_as_you_go": false})
    );
    let r = s
        .client
        .post(s.url("/admin/plans"))
        .bearer_auth(&admin)
        .json(&json!({"name": "team", "monthly_tokens": 1, "requests_per_minute": 1}))
        .send()
        .await
        .unwrap();
    assert_error_is(r, 409, "invalid_request_error", Some("conflict")).await;
    let r = s
        .client
        .post(s.url("/admin/plans"))
        .bearer_auth(&admin)
        .json(&json!({"name": "x", "requests_per_minute": 1}))
        .send()
        .await
        .unwrap();
    let v = assert_error_is(r, 400, "invalid_request_error", None).await;
    assert_eq!(v["error"]["param"], "monthly_tokens");

    let r = s
        .client
        .patch(s.url("/admin/plans/team"))
        .bearer_auth(&admin)
        .json(&json!({"monthly_tokens": 700}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let p: Value = r.json().await.unwrap();
    assert_eq!(
        (
            p["monthly_tokens"].as_i64(),
            p["requests_per_minute"].as_i64()
        ),
        (Some(700), Some(5))
    );

    // In use: 409; free again: 204; gone: 404.
    let uid = s.create_user("tm", "tm-password", Some("team")).await;
    let r = s
        .client
        .delete(s.url("/admin/plans/team"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_error_is(r, 409, "invalid_request_error", Some("conflict")).await;
    let r = s
        .client
        .patch(s.url(&format!("/admin/users/{uid}")))
        .bearer_auth(&admin)
        .json(&json!({"plan": "free"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .client
        .delete(s.url("/admin/plans/team"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = s
        .client
        .delete(s.url("/admin/plans/team"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_error_is(r, 404, "invalid_request_error", Some("not_found")).await;
    let r = s
        .client
        .patch(s.url("/admin/plans/nope"))
        .bearer_auth(&admin)
        .json(&json!({"monthly_tokens": 1}))
        .send()
        .await
        .unwrap();
    assert_error_is(r, 404, "invalid_request_error", Some("not_found")).await;
}

#[tokio::test]
async fn admin_keys_list_and_revoke() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let (alice_id, _, alice_key) = s.user_with_key("alice", None).await;
    let (bob_id, _, bob_key) = s.user_with_key("bob", None).await;

    let all: Value = s.get_as("/admin/keys", &admin).await.json().await.unwrap();
    let data = all["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert!(
        !all.to_string().contains(&alice_key) && !all.to_string().contains(&bob_key),
        "secrets listed"
    );
    let owners: Vec<i64> = data
        .iter()
        .map(|k| k["user_id"].as_i64().unwrap())
        .collect();
    // Newest first (SPEC §13), with the end of the list said.
    assert_eq!(owners, [bob_id, alice_id]);
    assert_eq!(all["next_before"], Value::Null);
    for k in data {
        assert!(k.get("api_key").is_none());
        assert!(k["prefix"].is_string() && k.get("revoked").is_some());
    }

    for q in ["alice".to_string(), alice_id.to_string()] {
        let v: Value = s
            .get_as(&format!("/admin/keys?user={q}"), &admin)
            .await
            .json()
            .await
            .unwrap();
        let ids: Vec<i64> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["user_id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, [alice_id], "?user={q}");
    }

    let bob_key_id = data[0]["id"].as_i64().unwrap();
    let r = s
        .client
        .delete(s.url(&format!("/admin/keys/{bob_key_id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(s.me_status(&bob_key).await, 401);
    assert_eq!(s.me_status(&alice_key).await, 200);
    let r = s
        .client
        .delete(s.url("/admin/keys/99999"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_error_is(r, 404, "invalid_request_error", Some("not_found")).await;
}

#[tokio::test]
async fn an_admin_cannot_lock_themselves_out() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let me: Value = s.get_as("/auth/me", &admin).await.json().await.unwrap();
    let id = me["id"].as_i64().unwrap();
    for body in [json!({"disabled": true}), json!({"role": "user"})] {
        let r = s
            .client
            .patch(s.url(&format!("/admin/users/{id}")))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_error(r, 400).await;
    }
    let r = s
        .client
        .delete(s.url(&format!("/admin/users/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_error(r, 400).await;
    assert_eq!(s.me_status(&admin).await, 200);
}
