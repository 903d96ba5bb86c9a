//! Money on the account side (SPEC §12): USD limits on plans and keys, and
//! the prepaid credit ledger — `POST/GET /admin/users/{id}/credits`,
//! `GET /subscriptions/credits` and `tollgate credits add | list` — through
//! the real server and the real binary, on the suite's backend
//! (`TOLLGATE_TEST_BACKEND=postgres` runs it on PostgreSQL).

mod common;

use common::*;
use serde_json::{json, Value};

/// `POST /admin/users/{user}/credits` with `body`, as `cred`.
async fn add_credit(s: &TestServer, cred: &str, user: i64, body: Value) -> reqwest::Response {
    s.client
        .post(s.url(&format!("/admin/users/{user}/credits")))
        .bearer_auth(cred)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A credit entry that must be accepted; returns the answer's text and JSON.
async fn added(s: &TestServer, cred: &str, user: i64, body: Value) -> (String, Value) {
    let r = add_credit(s, cred, user, body.clone()).await;
    assert_eq!(r.status(), 201, "{body}");
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap();
    (text, v)
}

/// GET `path` as `cred`, which must answer 200 with JSON.
async fn get_json(s: &TestServer, path: &str, cred: &str) -> Value {
    let r = s.get_as(path, cred).await;
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

/// A PATCH or POST of `body` to `path` as `cred`.
async fn send(
    s: &TestServer,
    method: reqwest::Method,
    path: &str,
    cred: &str,
    body: Value,
) -> reqwest::Response {
    s.client
        .request(method, s.url(path))
        .bearer_auth(cred)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A 400 naming `param`, whose message contains `says`.
async fn refused(r: reqwest::Response, param: &str, says: &str) {
    let v = assert_error_is(r, 400, "invalid_request_error", None).await;
    assert_eq!(v["error"]["param"], param, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(says), "{says:?} not in {msg:?}");
}

#[tokio::test]
async fn plans_carry_a_usd_limit_and_pay_as_you_go() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let post = reqwest::Method::POST;
    let patch = reqwest::Method::PATCH;

    // The plans of a first start have neither.
    let plans = get_json(&s, "/admin/plans", &admin).await;
    for p in plans["data"].as_array().unwrap() {
        assert_eq!(
            (&p["monthly_usd"], &p["pay_as_you_go"]),
            (&Value::Null, &json!(false)),
            "{p}"
        );
    }

    let body = json!({"name": "metered", "monthly_tokens": 1000, "requests_per_minute": 10,
                      "monthly_usd": 12.5, "pay_as_you_go": true});
    let r = send(&s, post.clone(), "/admin/plans", &admin, body).await;
    assert_eq!(r.status(), 201);
    let p: Value = r.json().await.unwrap();
    assert_eq!(
        (&p["monthly_usd"], &p["pay_as_you_go"]),
        (&json!(12.5), &json!(true)),
        "{p}"
    );
    // Left out: no USD limit, not pay-as-you-go.
    let body = json!({"name": "plain", "monthly_tokens": 5, "requests_per_minute": 1});
    let r = send(&s, post.clone(), "/admin/plans", &admin, body).await;
    let p: Value = r.json().await.unwrap();
    assert_eq!(
        (&p["monthly_usd"], &p["pay_as_you_go"]),
        (&Value::Null, &json!(false)),
        "{p}"
    );

    // The smallest amount travels as written, never as 1e-6; a string works too.
    let r = send(
        &s,
        patch.clone(),
        "/admin/plans/metered",
        &admin,
        json!({"monthly_usd": "0.000001"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains(r#""monthly_usd":0.000001"#), "{text}");
    assert!(
        text.contains(r#""pay_as_you_go":true"#),
        "untouched: {text}"
    );
    // Every user sees the plans with their money fields.
    let (_, alice, alice_key) = s.user_with_key("alice", Some("metered")).await;
    for cred in [&alice, &alice_key] {
        let r = s.get_as("/subscriptions/plans", cred).await;
        let text = r.text().await.unwrap();
        let plans: Value = serde_json::from_str(&text).unwrap();
        let m = plans
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "metered")
            .unwrap();
        assert_eq!(
            (&m["monthly_usd"], &m["pay_as_you_go"]),
            (&json!(0.000001), &json!(true)),
            "{m}"
        );
        assert!(
            text.contains("0.000001") && !text.contains("1e-6"),
            "{text}"
        );
    }
    // null removes the limit; the flag turns off.
    let r = send(
        &s,
        patch.clone(),
        "/admin/plans/metered",
        &admin,
        json!({"monthly_usd": null, "pay_as_you_go": false}),
    )
    .await;
    let p: Value = r.json().await.unwrap();
    assert_eq!(
        (&p["monthly_usd"], &p["pay_as_you_go"]),
        (&Value::Null, &json!(false)),
        "{p}"
    );
    let r = send(
        &s,
        patch.clone(),
        "/admin/plans/metered",
        &admin,
        json!({"monthly_usd": 1000000}),
    )
    .await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["monthly_usd"],
        json!(1000000)
    );
    // The running server's cache holds what was saved.
    let cached = s.state.creds.snapshot().plans["metered"].plan.clone();
    assert_eq!(
        cached.monthly_usd,
        Some(tollgate::money::Usd(1_000_000_000_000))
    );

    // Refused, naming the field, and nothing changes.
    for (body, says) in [
        (json!({"monthly_usd": -1}), "≥ 0"),
        (json!({"monthly_usd": 0.0000001}), "6 decimals"),
        (json!({"monthly_usd": "ten"}), "not an amount"),
        (json!({"monthly_usd": 10000000000000_i64}), "too large"),
    ] {
        let r = send(
            &s,
            patch.clone(),
            "/admin/plans/metered",
            &admin,
            body.clone(),
        )
        .await;
        refused(r, "monthly_usd", says).await;
    }
    // An exponent moves the decimal point in the text, never through a
    // float: below a micro-dollar is still below a micro-dollar.
    let r = s
        .client
        .patch(s.url("/admin/plans/metered"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(r#"{"monthly_usd": 1e-7}"#)
        .send()
        .await
        .unwrap();
    refused(r, "monthly_usd", "6 decimals").await;
    let r = send(
        &s,
        patch.clone(),
        "/admin/plans/metered",
        &admin,
        json!({"pay_as_you_go": "yes"}),
    )
    .await;
    refused(r, "pay_as_you_go", "boolean").await;
    let body =
        json!({"name": "neg", "monthly_tokens": 1, "requests_per_minute": 1, "monthly_usd": -0.5});
    refused(
        send(&s, post, "/admin/plans", &admin, body).await,
        "monthly_usd",
        "≥ 0",
    )
    .await;
    let plans = get_json(&s, "/admin/plans", &admin).await;
    let names: Vec<&str> = plans["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"neg"), "{names:?}");
    let m = plans["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metered")
        .unwrap();
    assert_eq!(m["monthly_usd"], json!(1000000));
    s.stop().await;
}

#[tokio::test]
async fn keys_carry_a_usd_limit() {
    let s = TestServer::start().await;
    let (uid, token, _) = s.user_with_key("alice", None).await;
    let patch = reqwest::Method::PATCH;

    let r = send(
        &s,
        reqwest::Method::POST,
        "/api/keys",
        &token,
        json!({"name": "budget", "monthly_usd_limit": 2.5}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["monthly_usd_limit"], json!(2.5), "{created}");
    let (id, secret) = (
        created["id"].as_i64().unwrap(),
        created["api_key"].as_str().unwrap().to_owned(),
    );
    let list = get_json(&s, "/api/keys", &token).await;
    for k in list["data"].as_array().unwrap() {
        let want = if k["id"] == id {
            json!(2.5)
        } else {
            Value::Null
        };
        assert_eq!(k["monthly_usd_limit"], want, "{k}");
    }
    let cached = |id: i64| {
        let snap = s.state.creds.snapshot();
        let k = snap
            .keys
            .values()
            .find(|k| k.id == id)
            .map(|k| k.monthly_usd_limit);
        k.expect("the key is in the cache")
    };
    assert_eq!(cached(id), Some(2_500_000), "the cache holds micro-dollars");

    let r = send(
        &s,
        patch.clone(),
        &format!("/api/keys/{id}"),
        &token,
        json!({"monthly_usd_limit": "0.000001"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains(r#""monthly_usd_limit":0.000001"#), "{text}");
    assert_eq!(cached(id), Some(1));
    let admin = s.admin_token().await;
    let all = get_json(&s, &format!("/admin/keys?user={uid}"), &admin).await;
    let k = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .unwrap();
    assert_eq!(k["monthly_usd_limit"], json!(0.000001), "{k}");

    // A key cannot lift its own limit (SPEC §4): only the session may.
    let r = send(
        &s,
        patch.clone(),
        &format!("/api/keys/{id}"),
        &secret,
        json!({"monthly_usd_limit": null}),
    )
    .await;
    assert_error_is(r, 403, "permission_error", Some("session_required")).await;
    assert_eq!(cached(id), Some(1));

    for (body, says) in [
        (json!({"monthly_usd_limit": -1}), "≥ 0"),
        (json!({"monthly_usd_limit": "0.0000001"}), "6 decimals"),
        (json!({"monthly_usd_limit": true}), "not an amount"),
    ] {
        let r = send(&s, patch.clone(), &format!("/api/keys/{id}"), &token, body).await;
        refused(r, "monthly_usd_limit", says).await;
    }
    let r = send(
        &s,
        reqwest::Method::POST,
        "/api/keys",
        &token,
        json!({"name": "bad", "monthly_usd_limit": -3}),
    )
    .await;
    refused(r, "monthly_usd_limit", "≥ 0").await;
    assert_eq!(cached(id), Some(1), "nothing changed");

    let r = send(
        &s,
        patch,
        &format!("/api/keys/{id}"),
        &token,
        json!({"monthly_usd_limit": null}),
    )
    .await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["monthly_usd_limit"],
        Value::Null
    );
    assert_eq!(cached(id), None);
    s.stop().await;
}

#[tokio::test]
async fn admins_top_up_and_deduct_credit() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let (alice, alice_token, _) = s.user_with_key("alice", None).await;

    let (_, e) = added(
        &s,
        &admin,
        alice,
        json!({"amount_usd": 25, "note": "invoice 1042"}),
    )
    .await;
    assert_eq!(e["user_id"], alice);
    assert_eq!(e["amount_usd"], json!(25));
    assert_eq!(e["note"], "invoice 1042");
    assert_eq!(e["created_by"], "admin");
    assert_eq!(e["credit_usd"], json!(25));
    let at = e["created_at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(at).is_ok() && at.ends_with('Z'),
        "{at}"
    );
    let first = e["id"].as_i64().unwrap();

    let (_, e) = added(
        &s,
        &admin,
        alice,
        json!({"amount_usd": "-2.5", "note": "refund"}),
    )
    .await;
    assert_eq!(
        (&e["amount_usd"], &e["credit_usd"]),
        (&json!(-2.5), &json!(22.5))
    );
    // A micro-dollar, exactly; no note is an empty one. Sent as Python's
    // json.dumps writes 0.000001; answered as written out.
    let r = s
        .client
        .post(s.url(&format!("/admin/users/{alice}/credits")))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(r#"{"amount_usd": 1e-06}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let text = r.text().await.unwrap();
    let e: Value = serde_json::from_str(&text).unwrap();
    assert!(text.contains(r#""amount_usd":0.000001"#), "{text}");
    assert!(text.contains(r#""credit_usd":22.500001"#), "{text}");
    assert_eq!(e["note"], "");
    let (_, e) = added(
        &s,
        &admin,
        alice,
        json!({"amount_usd": "-0.000001", "note": null}),
    )
    .await;
    assert_eq!((&e["note"], &e["credit_usd"]), (&json!(""), &json!(22.5)));

    // The ledger, newest first, and the balance.
    let path = format!("/admin/users/{alice}/credits");
    let ledger = get_json(&s, &path, &admin).await;
    assert_eq!(ledger["credit_usd"], json!(22.5), "{ledger}");
    assert!(ledger["next_before"].is_null(), "{ledger}");
    let amounts: Vec<&Value> = ledger["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["amount_usd"])
        .collect();
    assert_eq!(
        amounts,
        [
            &json!(-0.000001),
            &json!(0.000001),
            &json!(-2.5),
            &json!(25)
        ]
    );
    let oldest = &ledger["data"][3];
    for f in [
        "id",
        "user_id",
        "amount_usd",
        "note",
        "created_by",
        "created_at",
    ] {
        assert!(oldest.get(f).is_some(), "entry lacks {f}: {oldest}");
    }
    assert_eq!(oldest["id"], first);

    // Refused, with the field named, and the ledger unchanged.
    let max = tollgate::money::MAX_MICROS / 1_000_000;
    for (body, param, says) in [
        (
            json!({"amount_usd": -22.500001, "note": "too much"}),
            "amount_usd",
            "below zero",
        ),
        (json!({"amount_usd": 0}), "amount_usd", "may not be 0"),
        (json!({"amount_usd": "0.000"}), "amount_usd", "may not be 0"),
        (json!({"amount_usd": 1.0000001}), "amount_usd", "6 decimals"),
        (
            json!({"amount_usd": format!("{}1", max)}),
            "amount_usd",
            "too large",
        ),
        (json!({"amount_usd": "1e"}), "amount_usd", "not an amount"),
        (
            json!({"amount_usd": "1e3.5"}),
            "amount_usd",
            "not an amount",
        ),
        (json!({"amount_usd": null}), "amount_usd", "null"),
        (json!({"note": "nothing"}), "amount_usd", "amount_usd"),
        (
            json!({"amount_usd": 1, "note": "x".repeat(501)}),
            "note",
            "500 characters",
        ),
        (json!({"amount_usd": 1, "note": 7}), "note", "string"),
    ] {
        let r = add_credit(&s, &admin, alice, body.clone()).await;
        refused(r, param, says).await;
    }
    let r = add_credit(&s, &admin, alice, json!({"amount_usd": 1, "by": "me"})).await;
    assert_error(r, 400).await;
    let after = get_json(&s, &path, &admin).await;
    assert_eq!(after, ledger, "refusals changed nothing");
    // The longest note is fine; a whole balance can be deducted.
    let (_, e) = added(
        &s,
        &admin,
        alice,
        json!({"amount_usd": 1, "note": "é".repeat(500)}),
    )
    .await;
    assert_eq!(e["note"].as_str().unwrap().chars().count(), 500);
    let (_, e) = added(&s, &admin, alice, json!({"amount_usd": -23.5})).await;
    assert_eq!(e["credit_usd"], json!(0));
    refused(
        add_credit(&s, &admin, alice, json!({"amount_usd": "-0.000001"})).await,
        "amount_usd",
        "below zero",
    )
    .await;

    // A balance stops at the largest amount kept.
    let (bob, _, _) = s.user_with_key("bob", None).await;
    let (_, e) = added(&s, &admin, bob, json!({"amount_usd": max})).await;
    assert_eq!(e["credit_usd"], json!(max));
    refused(
        add_credit(&s, &admin, bob, json!({"amount_usd": "0.000001"})).await,
        "amount_usd",
        "most",
    )
    .await;
    let (_, e) = added(&s, &admin, bob, json!({"amount_usd": -max})).await;
    assert_eq!(e["credit_usd"], json!(0));

    // An unknown user: 404, both ways.
    let r = add_credit(&s, &admin, 999_999, json!({"amount_usd": 1})).await;
    assert_error_is(r, 404, "invalid_request_error", Some("not_found")).await;
    let r = s.get_as("/admin/users/999999/credits", &admin).await;
    assert_error_is(r, 404, "invalid_request_error", Some("not_found")).await;
    // A path that names no id is an unknown one, as on every route.
    let r = s.get_as("/admin/users/alice/credits", &admin).await;
    assert_error(r, 404).await;
    // Deleting a user deletes their ledger with them.
    let r = s
        .client
        .delete(s.url(&format!("/admin/users/{bob}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = s
        .get_as(&format!("/admin/users/{bob}/credits"), &admin)
        .await;
    assert_eq!(r.status(), 404);
    drop(alice_token);
    s.stop().await;
}

#[tokio::test]
async fn users_see_their_own_credit_and_no_admin_route() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let (alice, alice_token, alice_key) = s.user_with_key("alice", None).await;
    let (bob, bob_token, _) = s.user_with_key("bob", None).await;
    added(
        &s,
        &admin,
        alice,
        json!({"amount_usd": 10, "note": "welcome"}),
    )
    .await;
    added(&s, &admin, bob, json!({"amount_usd": 3})).await;

    // Their own ledger, with a session or with a key (reading the account).
    for cred in [&alice_token, &alice_key] {
        let mine = get_json(&s, "/subscriptions/credits", cred).await;
        assert_eq!(mine["credit_usd"], json!(10), "{mine}");
        let data = mine["data"].as_array().unwrap();
        assert_eq!(data.len(), 1, "{mine}");
        assert_eq!(
            (&data[0]["note"], &data[0]["user_id"]),
            (&json!("welcome"), &json!(alice))
        );
        assert!(mine["next_before"].is_null());
    }
    let theirs = get_json(&s, "/subscriptions/credits", &bob_token).await;
    assert_eq!(theirs["credit_usd"], json!(3));
    assert_eq!(theirs["data"].as_array().unwrap().len(), 1);
    // Someone with no ledger has a balance of 0.
    let own = get_json(&s, "/subscriptions/credits", &admin).await;
    assert_eq!(
        own,
        json!({"data": [], "next_before": null, "credit_usd": 0})
    );

    // The admin routes are the admins'.
    let path = format!("/admin/users/{alice}/credits");
    for cred in [&alice_token, &alice_key, &bob_token] {
        let r = s.get_as(&path, cred).await;
        assert_error(r, 403).await;
        let r = add_credit(&s, cred, alice, json!({"amount_usd": 100})).await;
        assert_error(r, 403).await;
        let r = add_credit(&s, cred, bob, json!({"amount_usd": 100})).await;
        assert_error(r, 403).await;
    }
    let r = add_credit(&s, &alice_token, alice, json!({"amount_usd": 100})).await;
    assert_error_is(r, 403, "permission_error", None).await;
    // An admin's API key is not a session: it may not move money.
    let (_, admin_key) = s.create_key(&admin, json!({"name": "admin-key"})).await;
    let r = add_credit(&s, &admin_key, alice, json!({"amount_usd": 100})).await;
    assert_error_is(r, 403, "permission_error", Some("session_required")).await;
    // No credential at all.
    let r = s
        .client
        .get(s.url("/subscriptions/credits"))
        .send()
        .await
        .unwrap();
    assert_error(r, 401).await;
    let r = s
        .client
        .post(s.url(&path))
        .json(&json!({"amount_usd": 1}))
        .send()
        .await
        .unwrap();
    assert_error(r, 401).await;
    let mine = get_json(&s, "/subscriptions/credits", &alice_token).await;
    assert_eq!(mine["credit_usd"], json!(10), "nothing was added");
    s.stop().await;
}

#[tokio::test]
async fn the_ledger_pages_newest_first() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let (alice, token, _) = s.user_with_key("alice", None).await;
    for i in 1..=7 {
        added(
            &s,
            &admin,
            alice,
            json!({"amount_usd": i, "note": format!("n{i}")}),
        )
        .await;
    }
    for (path, cred) in [
        (format!("/admin/users/{alice}/credits"), &admin),
        ("/subscriptions/credits".into(), &token),
    ] {
        let mut notes = Vec::new();
        let mut before: Option<i64> = None;
        loop {
            let mut url = format!("{path}?limit=3");
            if let Some(b) = before {
                url.push_str(&format!("&before={b}"));
            }
            let page = get_json(&s, &url, cred).await;
            assert_eq!(
                page["credit_usd"],
                json!(28),
                "every page carries the balance"
            );
            let data = page["data"].as_array().unwrap();
            notes.extend(data.iter().map(|e| e["note"].as_str().unwrap().to_owned()));
            match page["next_before"].as_i64() {
                Some(b) => {
                    assert_eq!(data.len(), 3);
                    assert_eq!(data[2]["id"], b);
                    before = Some(b);
                }
                None => break,
            }
        }
        assert_eq!(notes, ["n7", "n6", "n5", "n4", "n3", "n2", "n1"], "{path}");
        for (query, param) in [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("before=x", "before"),
        ] {
            let r = s.get_as(&format!("{path}?{query}"), cred).await;
            let v = assert_error_is(r, 400, "invalid_request_error", None).await;
            assert_eq!(v["error"]["param"], param, "{v}");
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deductions_at_once_never_overdraw() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let (alice, _, _) = s.user_with_key("alice", None).await;
    added(&s, &admin, alice, json!({"amount_usd": 10})).await;
    let tries = (0..25).map(|_| add_credit(&s, &admin, alice, json!({"amount_usd": -1})));
    let statuses: Vec<u16> = futures_util::future::join_all(tries)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|&&c| c == 201).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&c| c == 400).count(),
        15,
        "{statuses:?}"
    );
    let ledger = get_json(&s, &format!("/admin/users/{alice}/credits"), &admin).await;
    assert_eq!(ledger["credit_usd"], json!(0));
    assert_eq!(ledger["data"].as_array().unwrap().len(), 11);
    s.stop().await;
}

/// Records `micros` of credit spent by `user` this period, as the usage
/// writer of a pay-as-you-go call does.
async fn spend(s: &TestServer, user: i64, micros: i64) {
    let sql =
        "INSERT INTO usage_period (period, user_id, key_id, tokens, cost_micros, credit_micros)
               VALUES ('2026-01', $1, 0, 10, $2, $2)";
    match &s.state.config.database.url {
        Some(url) => {
            let c = pg::connect(url).await;
            c.execute(sql, &[&user, &micros]).await.unwrap();
        }
        None => {
            let c = rusqlite::Connection::open(&s.state.config.database.path).unwrap();
            c.execute(&sql.replace('$', "?"), rusqlite::params![user, micros])
                .unwrap();
        }
    }
}

#[tokio::test]
async fn spent_credit_counts_against_the_balance() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let (alice, token, _) = s.user_with_key("alice", None).await;
    added(&s, &admin, alice, json!({"amount_usd": 5})).await;
    spend(&s, alice, 1_250_000).await;
    let mine = get_json(&s, "/subscriptions/credits", &token).await;
    assert_eq!(mine["credit_usd"], json!(3.75), "{mine}");
    assert_eq!(
        mine["data"].as_array().unwrap().len(),
        1,
        "spending is not a ledger entry"
    );
    let r = add_credit(&s, &admin, alice, json!({"amount_usd": -4})).await;
    refused(r, "amount_usd", "$3.75").await;
    let (_, e) = added(
        &s,
        &admin,
        alice,
        json!({"amount_usd": -3.75, "note": "closing"}),
    )
    .await;
    assert_eq!(e["credit_usd"], json!(0));
    s.stop().await;
}

// ----- the command line

/// Runs the tollgate binary with `args` and `--db db` in a fresh directory.
async fn cli(db: &str, args: &[&str]) -> std::process::Output {
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.args(args)
        .args(["--db", db])
        .current_dir(cwd.path())
        .env("TOLLGATE_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null());
    for v in ["TOLLGATE_DB", "TOLLGATE_DATABASE_URL"] {
        cmd.env_remove(v);
    }
    cmd.output().await.unwrap()
}

/// The command's stdout; it must succeed.
#[track_caller]
fn ok(o: &std::process::Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {out}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// The command's stderr; it must fail.
#[track_caller]
fn fails(o: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success(),
        "expected failure\nstdout: {}\nstderr: {err}",
        String::from_utf8_lossy(&o.stdout)
    );
    err
}

/// The whitespace-split row of a table whose first column is `first`.
fn row(table: &str, first: &str) -> Vec<String> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|w| w.first().map(String::as_str) == Some(first))
        .unwrap_or_else(|| panic!("no row {first:?} in:\n{table}"))
}

#[tokio::test]
async fn the_cli_moves_credit_and_sets_usd_limits() {
    let s = TestServer::start().await;
    let db = db_arg(&s.state.config);
    let db = db.as_str();
    let admin = s.admin_token().await;
    let (alice, token, _) = s.user_with_key("alice", None).await;

    // Plans.
    ok(&cli(
        db,
        &[
            "plan",
            "add",
            "metered",
            "--monthly-tokens",
            "100",
            "--rpm",
            "5",
            "--monthly-usd",
            "12.5",
            "--pay-as-you-go",
            "true",
        ],
    )
    .await);
    let list = ok(&cli(db, &["plan", "list"]).await);
    assert_eq!(
        row(&list, "metered"),
        ["metered", "100", "12.5", "5", "0.00", "yes", "*"],
        "{list}"
    );
    assert_eq!(
        row(&list, "free")[2..6],
        ["-", "60", "0.00", "no"],
        "{list}"
    );
    let out = ok(&cli(db, &["plan", "set", "metered", "--monthly-usd", "0.000001"]).await);
    assert!(
        out.contains("up to 0.000001 USD/month") && out.contains("pay-as-you-go"),
        "{out}"
    );
    let plans = get_json(&s, "/admin/plans", &admin).await;
    let m = plans["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metered")
        .unwrap()
        .clone();
    assert_eq!(
        (&m["monthly_usd"], &m["pay_as_you_go"]),
        (&json!(0.000001), &json!(true)),
        "{m}"
    );
    let out = ok(&cli(
        db,
        &[
            "plan",
            "set",
            "metered",
            "--no-monthly-usd",
            "--pay-as-you-go",
            "false",
        ],
    )
    .await);
    assert!(
        out.contains("no USD limit") && !out.contains("pay-as-you-go"),
        "{out}"
    );
    let list = ok(&cli(db, &["plan", "list"]).await);
    assert_eq!(
        row(&list, "metered")[2..6],
        ["-", "5", "0.00", "no"],
        "{list}"
    );
    for (args, says) in [
        (
            vec!["plan", "set", "metered", "--monthly-usd", "-1"],
            "--monthly-usd",
        ),
        (
            vec!["plan", "set", "metered", "--monthly-usd", "0.0000001"],
            "6 decimals",
        ),
        (
            vec![
                "plan",
                "set",
                "metered",
                "--monthly-usd",
                "1",
                "--no-monthly-usd",
            ],
            "cannot be used",
        ),
        (
            vec!["plan", "set", "metered", "--pay-as-you-go", "maybe"],
            "--pay-as-you-go",
        ),
        (
            vec![
                "plan",
                "add",
                "x",
                "--monthly-tokens",
                "1",
                "--rpm",
                "1",
                "--monthly-usd",
                "ten",
            ],
            "not an amount",
        ),
    ] {
        let e = fails(&cli(db, &args).await);
        assert!(e.contains(says), "{args:?}: {e}");
    }

    // Keys.
    let out = ok(&cli(
        db,
        &[
            "key",
            "create",
            "--user",
            "alice",
            "--name",
            "capped",
            "--monthly-usd-limit",
            "0.25",
            "--monthly-token-limit",
            "900",
        ],
    )
    .await);
    assert!(out.trim().starts_with("sk_live_"), "{out}");
    let keys = ok(&cli(db, &["key", "list", "--user", "alice"]).await);
    let capped = keys
        .lines()
        .find(|l| l.contains(" capped "))
        .unwrap_or_else(|| panic!("{keys}"));
    assert!(
        capped.contains(" 900 ") && capped.contains(" 0.25 "),
        "{capped}"
    );
    let listed = get_json(&s, "/api/keys", &token).await;
    let k = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "capped")
        .unwrap()
        .clone();
    assert_eq!(
        (&k["monthly_usd_limit"], &k["monthly_token_limit"]),
        (&json!(0.25), &json!(900)),
        "{k}"
    );
    let e = fails(
        &cli(
            db,
            &[
                "key",
                "create",
                "--user",
                "alice",
                "--monthly-usd-limit",
                "-1",
            ],
        )
        .await,
    );
    assert!(e.contains("--monthly-usd-limit"), "{e}");

    // Credits: by username or id, negative amounts deduct.
    let out = ok(&cli(
        db,
        &["credits", "add", "alice", "25", "--note", "invoice 7"],
    )
    .await);
    assert!(
        out.contains("added 25 USD") && out.contains("credit now 25 USD"),
        "{out}"
    );
    let out = ok(&cli(db, &["credits", "add", "alice", "-5", "--note", "refund"]).await);
    assert!(
        out.contains("deducted 5 USD") && out.contains("credit now 20 USD"),
        "{out}"
    );
    let id = alice.to_string();
    let out = ok(&cli(db, &["credits", "add", &id, "0.000001"]).await);
    assert!(out.contains("credit now 20.000001 USD"), "{out}");
    for (args, says) in [
        (vec!["credits", "add", "alice", "-100"], "below zero"),
        (vec!["credits", "add", "alice", "0"], "may not be 0"),
        (vec!["credits", "add", "alice", "1.0000001"], "6 decimals"),
        (
            vec!["credits", "add", "nobody", "1"],
            "no user named \"nobody\"",
        ),
        (vec!["credits", "add", "alice"], "AMOUNT"),
        (vec!["credits", "list", "nobody"], "no user named"),
        (vec!["credits", "list", "alice", "--limit", "0"], "--limit"),
    ] {
        let e = fails(&cli(db, &args).await);
        assert!(e.contains(says), "{args:?}: {e}");
    }
    let note = "x".repeat(501);
    let e = fails(&cli(db, &["credits", "add", "alice", "1", "--note", &note]).await);
    assert!(e.contains("--note") && e.contains("500"), "{e}");

    let list = ok(&cli(db, &["credits", "list", "alice"]).await);
    assert!(list.starts_with("alice: credit 20.000001 USD"), "{list}");
    let entries: Vec<&str> = list.lines().filter(|l| l.contains("(cli)")).collect();
    assert_eq!(entries.len(), 3, "{list}");
    assert!(
        entries[0].contains(" 0.000001 ")
            && entries[1].contains(" -5 ")
            && entries[1].contains("refund"),
        "{list}"
    );
    assert!(
        entries[2].contains(" 25 ") && entries[2].ends_with("invoice 7"),
        "{list}"
    );
    let short = ok(&cli(db, &["credits", "list", &id, "--limit", "1"]).await);
    assert_eq!(
        short.lines().filter(|l| l.contains("(cli)")).count(),
        1,
        "{short}"
    );
    let empty = ok(&cli(db, &["credits", "list", "admin"]).await);
    assert!(
        empty.contains("credit 0 USD") && empty.contains("no credit entries"),
        "{empty}"
    );

    // What the CLI wrote is what the API shows: entries without an author.
    let mine = get_json(&s, "/subscriptions/credits", &token).await;
    assert_eq!(mine["credit_usd"], json!(20.000001), "{mine}");
    let data = mine["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert!(data.iter().all(|e| e["created_by"].is_null()), "{mine}");
    assert_eq!(data[2]["note"], "invoice 7");
    s.stop().await;
}
