//! Paged and searchable lists (SPEC §13): `GET /api/keys`, `/admin/keys` and
//! `/admin/users` answer newest first, `limit` (default 100, at most 1000)
//! rows at a time, with `next_before` for the next page (`null` on the last).

mod common;

use common::TestServer;
use serde_json::Value;
use std::collections::HashSet;

/// Makes `n` keys for `user_id` straight through the store (the API would
/// be slower and is tested elsewhere); returns their ids.
async fn keys(s: &TestServer, user_id: i64, n: usize, name: &str) -> Vec<i64> {
    let now = tollgate::db::ts(chrono::Utc::now());
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let (_, hash, prefix) = tollgate::auth::api_key::generate();
        let k = s
            .state
            .store
            .create_key(
                tollgate::db::api_keys::NewKey {
                    user_id,
                    name: format!("{name}-{i}"),
                    description: None,
                    key_hash: hex::encode(hash),
                    prefix,
                    expires_at: None,
                    allowed_models: None,
                    monthly_token_limit: None,
                    monthly_usd_limit: None,
                },
                now.clone(),
            )
            .await
            .unwrap();
        ids.push(k.id);
    }
    ids
}

/// Every row of a paged list, walking `next_before`; checks each page.
async fn walk(s: &TestServer, path: &str, cred: &str, limit: usize) -> Vec<Value> {
    let mut all = Vec::new();
    let mut before: Option<i64> = None;
    let sep = if path.contains('?') { '&' } else { '?' };
    loop {
        let mut url = format!("{path}{sep}limit={limit}");
        if let Some(b) = before {
            url.push_str(&format!("&before={b}"));
        }
        let r = s.get_as(&url, cred).await;
        assert_eq!(r.status(), 200, "{url}");
        let v: Value = r.json().await.unwrap();
        let page = v["data"].as_array().unwrap().clone();
        assert!(page.len() <= limit, "{url}: {} rows", page.len());
        match v["next_before"].as_i64() {
            Some(b) => {
                assert_eq!(page.len(), limit, "{url}: a page before the last is full");
                assert_eq!(page.last().unwrap()["id"].as_i64(), Some(b));
                before = Some(b);
                all.extend(page);
            }
            None => {
                assert!(v["next_before"].is_null(), "{v}");
                all.extend(page);
                return all;
            }
        }
    }
}

fn ids(rows: &[Value]) -> Vec<i64> {
    rows.iter().map(|r| r["id"].as_i64().unwrap()).collect()
}

/// Each id once, newest first.
fn assert_walk(got: &[i64], want: &HashSet<i64>) {
    assert_eq!(got.len(), want.len(), "every row, once");
    assert_eq!(
        got.iter().collect::<HashSet<_>>().len(),
        got.len(),
        "no row twice"
    );
    assert!(
        got.iter().all(|i| want.contains(i)),
        "only the rows asked for"
    );
    assert!(got.windows(2).all(|w| w[0] > w[1]), "newest first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_walk_of_2500_keys_returns_each_exactly_once() {
    let s = TestServer::start().await;
    let (alice, token, _) = s.user_with_key("alice", None).await;
    let (bob, bob_token, _) = s.user_with_key("bob", None).await;
    let bob_first = ids(s
        .get_as("/api/keys", &bob_token)
        .await
        .json::<Value>()
        .await
        .unwrap()["data"]
        .as_array()
        .unwrap());
    let mut mine: HashSet<i64> = ids(s
        .get_as("/api/keys", &token)
        .await
        .json::<Value>()
        .await
        .unwrap()["data"]
        .as_array()
        .unwrap())
    .into_iter()
    .collect();
    mine.extend(keys(&s, alice, 2499, "bulk").await);
    let theirs = keys(&s, bob, 30, "other").await;
    assert_eq!(mine.len(), 2500);

    // The user's own list, at the largest page and at the default one.
    assert_walk(&ids(&walk(&s, "/api/keys", &token, 1000).await), &mine);
    let first: Value = s.get_as("/api/keys", &token).await.json().await.unwrap();
    assert_eq!(
        first["data"].as_array().unwrap().len(),
        100,
        "default limit"
    );
    assert!(first["next_before"].is_i64());

    // The admin's list of everyone's keys, and a search.
    let admin = s.admin_token().await;
    let mut everyone = mine.clone();
    everyone.extend(&theirs);
    everyone.extend(&bob_first);
    assert_walk(&ids(&walk(&s, "/admin/keys", &admin, 250).await), &everyone);
    let found = walk(&s, "/admin/keys?q=OTHER-2", &admin, 7).await;
    let want: HashSet<i64> = theirs
        .iter()
        .enumerate()
        .filter(|(i, _)| format!("other-{i}").contains("other-2"))
        .map(|(_, id)| *id)
        .collect();
    assert_walk(&ids(&found), &want);
    // q also finds a key by its owner's name; `user` narrows to one owner.
    let bobs = walk(&s, "/admin/keys?q=bob", &admin, 1000).await;
    let all_bobs: HashSet<i64> = theirs.iter().chain(&bob_first).copied().collect();
    assert_walk(&ids(&bobs), &all_bobs);
    let by_user = walk(&s, "/admin/keys?user=bob&q=other-1", &admin, 1000).await;
    assert!(by_user
        .iter()
        .all(|k| k["user_id"] == bob && k["name"].as_str().unwrap().contains("other-1")));
    assert_eq!(by_user.len(), 11);
}

#[tokio::test]
async fn users_page_and_search_newest_first() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let mut made = HashSet::new();
    made.insert(1); // admin
    for i in 0..25 {
        made.insert(
            s.create_user(&format!("user{i:02}"), "user-password-1", None)
                .await,
        );
    }
    assert_walk(&ids(&walk(&s, "/admin/users", &admin, 4).await), &made);
    let found = walk(&s, "/admin/users?q=USER1", &admin, 3).await;
    let names: Vec<&str> = found
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "user19", "user18", "user17", "user16", "user15", "user14", "user13", "user12",
            "user11", "user10"
        ]
    );
    // A LIKE wildcard in q is a plain character.
    let v: Value = s
        .get_as("/admin/users?q=%25", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"], serde_json::json!([]));
}

#[tokio::test]
async fn bad_paging_parameters_are_refused_with_the_rule() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    for path in ["/api/keys", "/admin/keys", "/admin/users"] {
        for bad in ["limit=0", "limit=1001", "limit=ten", "before=x"] {
            let r = s.get_as(&format!("{path}?{bad}"), &admin).await;
            let v = common::assert_error(r, 400).await;
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(
                msg.contains("from 1 to 1000") || msg.contains("before"),
                "{path}?{bad}: {msg}"
            );
        }
        let r = s.get_as(&format!("{path}?limit=1000"), &admin).await;
        assert_eq!(r.status(), 200, "{path}: 1000 is allowed");
    }
}
