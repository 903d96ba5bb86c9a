//! The credential cache is updated incrementally (SPEC §13): a change reaches
//! the snapshot as the changed rows, read from the change log that triggers
//! keep, not as a rebuild of every user and key. Runs on both backends.

mod common;

use common::TestServer;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tollgate::auth::cache::{CredentialCache, Snapshot};
use tollgate::db::{api_keys::NewKey, plans::Plan, users::NewUser, Store, UserChanges};
use tollgate::money::Usd;

fn now() -> String {
    tollgate::db::ts(chrono::Utc::now())
}

async fn add_user(store: &Store, name: &str, plan: &str) -> i64 {
    let u = NewUser {
        username: name.into(),
        email: None,
        password_hash: Some("x".into()),
        role: "user".into(),
        plan: Some(plan.into()),
    };
    store.create_user(u, now()).await.unwrap().unwrap().id
}

async fn add_key(store: &Store, user_id: i64, name: &str) -> i64 {
    let (_, hash, prefix) = tollgate::auth::api_key::generate();
    let k = NewKey {
        user_id,
        name: name.into(),
        description: None,
        key_hash: hex::encode(hash),
        prefix,
        expires_at: None,
        allowed_models: None,
        monthly_token_limit: Some(7),
        monthly_usd_limit: Some(Usd(2_500_000)),
    };
    store.create_key(k, now()).await.unwrap().id
}

/// Everything the request path reads from a snapshot, in a comparable form.
fn contents(s: &Snapshot) -> (BTreeMap<i64, String>, BTreeMap<String, String>, Vec<String>) {
    let users = s
        .users
        .values()
        .map(|u| {
            let desc = format!(
                "{} {:?} {} {} {}",
                u.username, u.role, u.plan, u.disabled, u.token_version
            );
            (u.id, desc)
        })
        .collect();
    let keys = s
        .keys
        .iter()
        .map(|(h, k)| {
            let desc = format!(
                "{} {} {:?} {:?} {:?} {:?}",
                k.id,
                k.user_id,
                k.expires_at,
                k.monthly_token_limit,
                k.monthly_usd_limit,
                k.allowed_models.as_ref().map(|p| &p.source)
            );
            (hex::encode(h), desc)
        })
        .collect();
    let mut plans: Vec<String> = s.plans.values().map(|p| format!("{:?}", p.plan)).collect();
    plans.sort();
    (users, keys, plans)
}

/// The server's cache, brought up to date incrementally, holds exactly what
/// a cache loaded from scratch holds.
async fn assert_same_as_a_fresh_load(s: &TestServer) {
    s.state.creds.reload().await.unwrap();
    let fresh = CredentialCache::load(s.state.store.clone()).await.unwrap();
    let (a, b) = (s.state.creds.snapshot(), fresh.snapshot());
    assert_eq!(a.counter, b.counter);
    assert_eq!(contents(&a), contents(&b));
}

#[tokio::test]
async fn a_change_reaches_the_snapshot_as_the_changed_rows_only() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let store = &s.state.store;
    let (uid, token, _) = s.user_with_key("alice", None).await;
    let mut bulk = Vec::new();
    for i in 0..200 {
        bulk.push(add_key(store, uid, &format!("bulk-{i}")).await);
    }
    s.state.creds.reload().await.unwrap();
    let before = s.state.creds.snapshot();
    let http = reqwest::Client::new();

    // A key made through the API: in the snapshot before the answer leaves,
    // and every other entry is the very same one as before (shared, not
    // rebuilt).
    let r = http
        .post(s.url("/api/keys"))
        .bearer_auth(&token)
        .json(&json!({"name": "new"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let new: Value = r.json().await.unwrap();
    let new_id = new["id"].as_i64().unwrap();
    let after = s.state.creds.snapshot();
    assert!(after.keys.values().any(|k| k.id == new_id));
    assert_eq!(after.keys.len(), before.keys.len() + 1);
    for (hash, k) in before.keys.iter() {
        assert!(
            Arc::ptr_eq(k, after.keys.get(hash).unwrap()),
            "key {} was rebuilt",
            k.id
        );
    }
    for (id, u) in before.users.iter() {
        assert!(
            Arc::ptr_eq(u, after.users.get(id).unwrap()),
            "user {id} was rebuilt"
        );
    }

    // Revoked: gone at once, the others untouched.
    let victim = bulk[7];
    let r = http
        .delete(s.url(&format!("/api/keys/{victim}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let revoked = s.state.creds.snapshot();
    assert!(!revoked.keys.values().any(|k| k.id == victim));
    assert_eq!(revoked.keys.len(), after.keys.len() - 1);
    for (hash, k) in after.keys.iter().filter(|(_, k)| k.id != victim) {
        assert!(Arc::ptr_eq(k, revoked.keys.get(hash).unwrap()));
    }

    // A user edited by an admin: only that user's entry is new.
    let bob = add_user(store, "bob", "free").await;
    s.state.creds.reload().await.unwrap();
    let pre_edit = s.state.creds.snapshot();
    let r = http
        .patch(s.url(&format!("/admin/users/{bob}")))
        .bearer_auth(&admin)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let edited = s.state.creds.snapshot();
    assert!(edited.users.get(&bob).unwrap().disabled);
    assert!(Arc::ptr_eq(
        pre_edit.users.get(&uid).unwrap(),
        edited.users.get(&uid).unwrap()
    ));
    for (hash, k) in pre_edit.keys.iter() {
        assert!(Arc::ptr_eq(k, edited.keys.get(hash).unwrap()));
    }
    assert_same_as_a_fresh_load(&s).await;
}

/// Every kind of change made behind the server's back (as the CLI or
/// another replica would), applied incrementally, ends where a fresh load is.
#[tokio::test]
async fn incremental_updates_end_where_a_fresh_load_is() {
    let s = TestServer::start().await;
    let store = s.state.store.clone();
    let plan = |name: &str, tokens: i64| Plan {
        name: name.into(),
        monthly_tokens: tokens,
        monthly_usd: None,
        requests_per_minute: 60,
        price_usd_month: 0.0,
        allowed_models: vec!["*".into()],
        pay_as_you_go: false,
    };
    store.create_plan(plan("team", 1000), now()).await.unwrap();
    let mut users = Vec::new();
    let mut keys = Vec::new();
    for i in 0..20 {
        let u = add_user(
            &store,
            &format!("u{i}"),
            if i % 2 == 0 { "team" } else { "free" },
        )
        .await;
        users.push(u);
        for j in 0..3 {
            keys.push(add_key(&store, u, &format!("k{i}-{j}")).await);
        }
        if i % 5 == 4 {
            assert_same_as_a_fresh_load(&s).await;
        }
    }
    for (n, k) in keys.iter().enumerate().filter(|(n, _)| n % 4 == 0) {
        store.revoke_key(*k).await.unwrap();
        if n % 8 == 0 {
            assert_same_as_a_fresh_load(&s).await;
        }
    }
    let changes = UserChanges {
        plan: Some("team".into()),
        role: Some("admin".into()),
        email: Some(Some("u1@example.com".into())),
        password_hash: Some("y".into()),
        disabled: Some(true),
    };
    store.update_user(users[1], changes).await.unwrap().unwrap();
    assert_same_as_a_fresh_load(&s).await;
    // A key's USD limit (SPEC §12), set and removed behind the server's back.
    let usd_of = |id: i64| {
        let snap = s.state.creds.snapshot();
        let k = snap
            .keys
            .values()
            .find(|k| k.id == id)
            .map(|k| k.monthly_usd_limit);
        k.expect("the key is in the snapshot")
    };
    let kid = keys[1];
    assert_eq!(usd_of(kid), Some(2_500_000), "loaded with the key");
    let mut row = store.key_by_id(kid).await.unwrap().unwrap();
    row.monthly_usd_limit = Some(Usd(1));
    store.update_key(row.clone()).await.unwrap();
    assert_same_as_a_fresh_load(&s).await;
    assert_eq!(usd_of(kid), Some(1));
    row.monthly_usd_limit = None;
    store.update_key(row).await.unwrap();
    assert_same_as_a_fresh_load(&s).await;
    assert_eq!(usd_of(kid), None);
    // A deleted user takes its keys along (cascades fire the triggers too).
    store.delete_user(users[2]).await.unwrap();
    store.delete_user(users[3]).await.unwrap();
    assert_same_as_a_fresh_load(&s).await;
    let team = Plan {
        monthly_usd: Some(Usd(12_500_000)),
        pay_as_you_go: true,
        ..plan("team", 5)
    };
    store.update_plan(team.clone()).await.unwrap();
    store.create_plan(plan("extra", 9), now()).await.unwrap();
    assert_same_as_a_fresh_load(&s).await;
    assert_eq!(s.state.creds.snapshot().plans["team"].plan, team);
    store.delete_plan("extra".into()).await.unwrap();
    assert_same_as_a_fresh_load(&s).await;
}

/// A log pruned past the cache's change number (a replica that was away)
/// makes the cache rebuild rather than miss a change.
#[tokio::test]
async fn a_cache_behind_a_pruned_log_rebuilds() {
    let s = TestServer::start().await;
    let store = s.state.store.clone();
    // A cache of its own: the server's polls its changes every second.
    let cache = Arc::new(CredentialCache::load(store.clone()).await.unwrap());
    let at = cache.snapshot().counter;
    let u = add_user(&store, "carol", "free").await;
    let k = add_key(&store, u, "one").await;
    assert!(store.prune_credential_changes(0).await.unwrap() >= 2);
    add_key(&store, u, "two").await;
    assert_eq!(cache.snapshot().counter, at);
    cache.reload().await.unwrap();
    let fresh = CredentialCache::load(store.clone()).await.unwrap();
    assert_eq!(contents(&cache.snapshot()), contents(&fresh.snapshot()));
    let snap = cache.snapshot();
    assert!(snap.users.contains_key(&u), "the user made before the gap");
    assert!(
        snap.keys.values().any(|e| e.id == k),
        "the key made before the gap"
    );
}
