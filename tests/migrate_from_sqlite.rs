//! `tollgate migrate --from-sqlite PATH` (SPEC §11): a populated SQLite
//! deployment arrives whole in an empty PostgreSQL database — every user,
//! plan and usage total, and keys that still work — and a database that is
//! not empty is refused.

mod common;

use common::mock::{use_mock, Mock};
use common::{pg, test_config, TestServer};
use serde_json::{json, Value};

async fn get(s: &TestServer, path: &str, cred: &str) -> Value {
    let r = s.get_as(path, cred).await;
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

async fn call(s: &TestServer, key: &str) -> reqwest::Response {
    s.client
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "aiml/usage:5:5", "max_tokens": 10,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

/// What a user of the deployment sees of it: users, plans, keys, usage and
/// credit.
async fn snapshot(s: &TestServer, alice: &str) -> Value {
    let admin = s.admin_token().await;
    let mut keys = get(s, "/admin/keys", &admin).await;
    // Last use is written in the background; it is not part of what must match.
    for k in keys["data"].as_array_mut().into_iter().flatten() {
        k.as_object_mut().unwrap().remove("last_used_at");
    }
    json!({
        "users": get(s, "/admin/users", &admin).await,
        "plans": get(s, "/admin/plans", &admin).await,
        "keys": keys,
        "usage": get(s, "/admin/usage?group_by=user", &admin).await,
        "alice": get(s, "/subscriptions/me", alice).await,
        "alice_credits": get(s, "/subscriptions/credits", alice).await,
    })
}

async fn tollgate(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .env_remove("TOLLGATE_DB")
        .env_remove("TOLLGATE_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_deployment_arrives_whole_and_a_used_database_is_refused() {
    let Some(url) = pg::fresh_database("fromsqlite").await else {
        return;
    };
    let mock = Mock::start().await;

    // A SQLite deployment with plans, users, keys and usage.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.database.url = None;
    use_mock(&mut cfg, &mock, &["aiml"]);
    let s = TestServer::start_in(dir, cfg).await;
    let admin = s.admin_token().await;
    let r = s
        .client
        .post(s.url("/admin/plans"))
        .bearer_auth(&admin)
        .json(&json!({"name": "gold", "monthly_tokens": 5000, "requests_per_minute": 100}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // A plan and a key with USD limits (SPEC §12), which no call below uses.
    let r = s
        .client
        .post(s.url("/admin/plans"))
        .bearer_auth(&admin)
        .json(
            &json!({"name": "prepaid", "monthly_tokens": 10, "requests_per_minute": 1,
                      "monthly_usd": 12.345678, "pay_as_you_go": true}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let alice_id = s
        .create_user("alice", "alice-password-1", Some("gold"))
        .await;
    let alice = s.login("alice", "alice-password-1").await;
    let (_, alice_key) = s.create_key(&alice, json!({"name": "laptop"})).await;
    s.create_key(
        &alice,
        json!({"name": "budget", "monthly_usd_limit": "0.000001"}),
    )
    .await;
    for (amount, note) in [("7.25", "prepaid"), ("-0.25", "correction")] {
        let r = s
            .client
            .post(s.url(&format!("/admin/users/{alice_id}/credits")))
            .bearer_auth(&admin)
            .json(&json!({"amount_usd": amount, "note": note}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let (_, bob, bob_key) = s.user_with_key("bob", None).await;
    for _ in 0..3 {
        assert_eq!(call(&s, &alice_key).await.status(), 200);
    }
    assert_eq!(call(&s, &bob_key).await.status(), 200);
    let (old_id, revoked) = s.create_key(&bob, json!({"name": "old"})).await;
    let r = s
        .client
        .delete(s.url(&format!("/api/keys/{old_id}")))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    s.state.metering.writer.flush().await;
    let before = snapshot(&s, &alice).await;
    assert_eq!(before["alice"]["tokens_used"], 30, "{before}");
    assert_eq!(before["alice_credits"]["credit_usd"], json!(7), "{before}");
    assert_eq!(before["alice_credits"]["data"][1]["note"], "prepaid");
    let plans = before["plans"]["data"].as_array().unwrap();
    let prepaid = plans.iter().find(|p| p["name"] == "prepaid").unwrap();
    assert_eq!(prepaid["monthly_usd"], json!(12.345678), "{prepaid}");
    assert_eq!(prepaid["pay_as_you_go"], true, "{prepaid}");
    let budget = before["keys"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "budget");
    assert_eq!(
        budget.unwrap()["monthly_usd_limit"],
        json!(0.000001),
        "{before}"
    );
    let (dir, cfg) = s.stop().await;
    let db_path = cfg.database.path.clone();

    // The copy.
    let out = tollgate(&[
        "migrate",
        "--from-sqlite",
        db_path.to_str().unwrap(),
        "--db",
        &url,
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("users: 3 row(s)"), "{stdout}");
    assert!(stdout.contains("requests: 4 row(s)"), "{stdout}");
    assert!(stdout.contains("credits: 2 row(s)"), "{stdout}");
    assert!(
        stderr.contains("copying api_keys: 4/4"),
        "progress: {stderr}"
    );
    assert!(!stdout.contains(&url), "the URL's password is not printed");

    // The same deployment served from PostgreSQL.
    let mut pg_cfg = cfg.clone();
    pg_cfg.database.url = Some(url.clone());
    let s = TestServer::start_in(tempfile::tempdir().unwrap(), pg_cfg).await;
    let alice = s.login("alice", "alice-password-1").await;
    let after = snapshot(&s, &alice).await;
    assert_eq!(after, before);
    // Keys still work (the hashes arrived), a revoked one stays revoked, and
    // new rows get ids after the copied ones.
    let r = call(&s, &alice_key).await;
    assert_eq!(r.status(), 200);
    let r = call(&s, &revoked).await;
    assert_eq!(r.status(), 401);
    assert_eq!(s.me_status(&bob_key).await, 200);
    let carol = s.create_user("carol", "carol-password-1", None).await;
    assert_eq!(carol, 4);
    let r = s
        .client
        .post(s.url(&format!("/admin/users/{alice_id}/credits")))
        .bearer_auth(&s.admin_token().await)
        .json(&json!({"amount_usd": 1, "note": "after the move"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let added: Value = r.json().await.unwrap();
    assert_eq!(
        (added["id"].as_i64(), &added["credit_usd"]),
        (Some(3), &json!(8))
    );
    s.state.metering.writer.flush().await;
    let me = get(&s, "/subscriptions/me", &alice).await;
    assert_eq!(me["tokens_used"], 40, "{me}");
    s.stop().await;
    drop(dir);

    // A database that holds a deployment is refused, and left as it was.
    let other = tempfile::tempdir().unwrap();
    let mut cfg2 = test_config(other.path());
    cfg2.database.url = None;
    let s2 = TestServer::start_in(other, cfg2).await;
    let (_other, cfg2) = s2.stop().await;
    let out = tollgate(&[
        "migrate",
        "--from-sqlite",
        cfg2.database.path.to_str().unwrap(),
        "--db",
        &url,
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("is not empty"), "{stderr}");
    let db = pg::connect(&url).await;
    let users: i64 = db
        .query_one("SELECT COUNT(*) FROM users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(users, 4);

    // Without a PostgreSQL target the command says what to set.
    let out = tollgate(&[
        "migrate",
        "--from-sqlite",
        "x.db",
        "--db",
        db_path.to_str().unwrap(),
    ])
    .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("TOLLGATE_DATABASE_URL"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
