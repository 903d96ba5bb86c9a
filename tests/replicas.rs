//! Several replicas of the real binary on one PostgreSQL database (SPEC §11):
//! quotas exact across replicas, requests per minute shared, a dead replica's
//! reservations released after the lease, changes seen everywhere within 5 s.
//!
//! These tests need a PostgreSQL server (`TOLLGATE_TEST_PG_URL`, see
//! `tests/pg/start.sh`); without one they say so and pass, except under `CI`,
//! where they fail.

mod common;
use common::mock::Mock;
use common::process::{self, Process};
use common::{pg, ADMIN_PASSWORD};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LEASE_SECS: u64 = 2;

struct Cluster {
    mock: Mock,
    dir: tempfile::TempDir,
    config: PathBuf,
    db_url: String,
    replicas: Vec<Process>,
    c: reqwest::Client,
}

fn write_config(dir: &Path, mock: &Mock, db_url: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        "[server]\nshutdown_grace_secs = 2\n\n[database]\nurl = \"{db_url}\"\nreservation_lease_secs = {LEASE_SECS}\n\n\
         [providers.aiml]\nbase_url = \"{}\"\napi_key = \"sk-test-aiml-secret\"\n",
        mock.base("aiml")
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `n` replicas on a fresh database, or `None` without PostgreSQL.
async fn cluster(name: &str, n: usize) -> Option<Cluster> {
    let db_url = pg::fresh_database(name).await?;
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &mock, &db_url);
    // Started together, as an orchestrator would: the first start's
    // migrations and seeding must not race.
    let starts = (0..n).map(|i| {
        let (d, c) = (dir.path().to_owned(), config.clone());
        async move { process::start(&d, &format!("replica{i}"), &c, &[]).await }
    });
    let replicas = futures_util::future::join_all(starts).await;
    Some(Cluster {
        mock,
        dir,
        config,
        db_url,
        replicas,
        c: reqwest::Client::new(),
    })
}

impl Cluster {
    async fn login(&self, r: usize, user: &str, pw: &str) -> String {
        let v: Value = self
            .c
            .post(self.replicas[r].url("/auth/login"))
            .json(&json!({"username": user, "password": pw}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {v}"))
            .to_owned()
    }

    /// A plan, a user on it and a key, made through replica 0: (user id, user token, key id, key).
    async fn user_with_key(&self, plan: Value) -> (i64, String, i64, String) {
        let admin = self.login(0, "admin", ADMIN_PASSWORD).await;
        let r = self
            .c
            .post(self.replicas[0].url("/admin/plans"))
            .bearer_auth(&admin)
            .json(&plan)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let r = self
            .c
            .post(self.replicas[0].url("/admin/users"))
            .bearer_auth(&admin)
            .json(&json!({"username": "team", "password": "team-password-1", "plan": plan["name"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let uid = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
        let token = self.login(0, "team", "team-password-1").await;
        let v: Value = self
            .c
            .post(self.replicas[0].url("/api/keys"))
            .bearer_auth(&token)
            .json(&json!({"name": "k"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key = v["api_key"].as_str().unwrap().to_owned();
        self.until_known(&key).await;
        (uid, token, v["id"].as_i64().unwrap(), key)
    }

    /// Waits until every replica knows `key`: within 5 s (SPEC §11).
    async fn until_known(&self, key: &str) {
        let start = std::time::Instant::now();
        for r in &self.replicas {
            loop {
                let s = self
                    .c
                    .get(r.url("/subscriptions/me"))
                    .bearer_auth(key)
                    .send()
                    .await
                    .unwrap()
                    .status();
                if s == 200 {
                    break;
                }
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(5),
                    "a new key is unknown to {} after 5 s ({s})",
                    r.url
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }

    async fn call(&self, r: usize, key: &str, model: &str) -> reqwest::Response {
        self.c
            .post(self.replicas[r].url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap()
    }

    async fn me(&self, r: usize, cred: &str) -> Value {
        self.c
            .get(self.replicas[r].url("/subscriptions/me"))
            .bearer_auth(cred)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Every record, through replica `r`, page by page.
    async fn records(&self, r: usize) -> Vec<Value> {
        let admin = self.login(r, "admin", ADMIN_PASSWORD).await;
        let mut all = Vec::new();
        let mut before: Option<i64> = None;
        loop {
            let mut q = vec![("limit", "500".to_owned())];
            if let Some(b) = before {
                q.push(("before", b.to_string()));
            }
            let v: Value = self
                .c
                .get(self.replicas[r].url("/admin/requests"))
                .bearer_auth(&admin)
                .query(&q)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            all.extend(
                v["data"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{v}"))
                    .clone(),
            );
            match v["next_before"].as_i64() {
                Some(b) => before = Some(b),
                None => return all,
            }
        }
    }
}

/// Slices (reservation rows) of the user, one per replica holding one.
async fn slices(db: &tokio_postgres::Client, uid: i64) -> i64 {
    db.query_one(
        "SELECT COUNT(*) FROM reservations WHERE user_id = $1",
        &[&uid],
    )
    .await
    .unwrap()
    .get(0)
}

/// The user's tokens charged plus held by live slices, read from the
/// database in one statement.
async fn committed(db: &tokio_postgres::Client, uid: i64) -> (i64, i64) {
    let row = db
        .query_one(
            "SELECT (SELECT COALESCE(SUM(tokens), 0)::BIGINT FROM usage_period WHERE user_id = $1),
                    (SELECT COALESCE(SUM(tokens), 0)::BIGINT FROM reservations
                      WHERE user_id = $1 AND expires_at > clock_timestamp())",
            &[&uid],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_never_grant_more_than_the_plan() {
    let Some(cl) = cluster("quota", 2).await else {
        return;
    };
    // Each call is charged 10 tokens (the mock's usage): the plan allows 20.
    let plan = json!({"name": "twenty", "monthly_tokens": 200, "requests_per_minute": 10000});
    let (uid, token, _, key) = cl.user_with_key(plan).await;
    let db = pg::connect(&cl.db_url).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (stop, url) = (stop.clone(), cl.db_url.clone());
        tokio::spawn(async move {
            let db = pg::connect(&url).await;
            let mut max = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let (used, held) = committed(&db, uid).await;
                max = max.max(used + held);
            }
            max
        })
    };
    let calls = (0..100).map(|i| {
        let (cl, key) = (&cl, &key);
        async move {
            let r = cl.call(i % 2, key, "aiml/usage:5:5+delay:150").await;
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (i % 2, status, body)
        }
    });
    let results = futures_util::future::join_all(calls).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let max = watcher.await.unwrap();

    let mut ok = [0, 0];
    for (replica, status, body) in &results {
        match status {
            200 => {
                assert_eq!(body["_usage_info"]["tokens_used"], 10, "{body}");
                ok[*replica] += 1;
            }
            429 => assert_eq!(body["error"]["code"], "insufficient_quota", "{body}"),
            _ => panic!("unexpected {status}: {body}"),
        }
    }
    let served = ok[0] + ok[1];
    assert!(ok[0] > 0 && ok[1] > 0, "both replicas served calls: {ok:?}");
    assert!(
        served <= 20,
        "{served} calls served of the 20 the plan allows"
    );
    assert!(max <= 200, "charged + reserved reached {max} of 200");

    // Once every record is written nothing is held, and the charges are
    // exactly what the upstream reported for the calls served.
    let t0 = Instant::now();
    loop {
        let (used, held) = committed(&db, uid).await;
        if held == 0 && used == 10 * served as i64 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "charged {used}, held {held}, served {served}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recs = cl.records(1).await;
    let charged: i64 = recs
        .iter()
        .filter(|r| r["username"] == "team")
        .map(|r| r["total_tokens"].as_i64().unwrap())
        .sum();
    assert_eq!(charged, 10 * served as i64, "the records hold every charge");
    for r in 0..2 {
        let me = cl.me(r, &token).await;
        assert_eq!(me["tokens_used"], 10 * served as i64, "replica {r}: {me}");
        assert_eq!(me["tokens_reserved"], 0, "replica {r}: {me}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_per_minute_are_counted_across_replicas() {
    let Some(cl) = cluster("rate", 2).await else {
        return;
    };
    let plan = json!({"name": "slow", "monthly_tokens": 100000, "requests_per_minute": 4});
    let (_, _, _, key) = cl.user_with_key(plan).await;
    for i in 0..4 {
        let r = cl.call(i % 2, &key, "aiml/usage:5:5").await;
        assert_eq!(r.status(), 200, "call {i}");
    }
    for r in 0..2 {
        let resp = cl.call(r, &key, "aiml/usage:5:5").await;
        assert_eq!(resp.status(), 429, "replica {r}");
        let wait: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=15).contains(&wait), "retry after {wait}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_replica_releases_its_reservations_within_the_lease() {
    let Some(mut cl) = cluster("lease", 2).await else {
        return;
    };
    let plan = json!({"name": "roomy", "monthly_tokens": 100000, "requests_per_minute": 10000});
    let (uid, token, _, key) = cl.user_with_key(plan).await;
    let db = pg::connect(&cl.db_url).await;

    // A finished call on replica 0, then one held open when it dies.
    let r = cl.call(0, &key, "aiml/usage:5:5").await;
    assert_eq!(r.status(), 200);
    let finished = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let open = {
        let (c, url, key) = (
            cl.c.clone(),
            cl.replicas[0].url("/v1/chat/completions"),
            key.clone(),
        );
        tokio::spawn(async move {
            let body = json!({"model": "aiml/endless", "stream": true, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
            let r = c.post(url).bearer_auth(key).json(&body).send().await;
            if let Ok(mut r) = r {
                while let Ok(Some(_)) = r.chunk().await {}
            }
        })
    };
    // A stream on replica 1 that outlives the lease keeps its reservation.
    let long = {
        let (c, url, key) = (
            cl.c.clone(),
            cl.replicas[1].url("/v1/chat/completions"),
            key.clone(),
        );
        tokio::spawn(async move {
            let body = json!({"model": "aiml/usage:5:5+delay:4000", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
            c.post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    // Each replica holds a slice of the user's allowance.
    let t0 = Instant::now();
    loop {
        let n = slices(&db, uid).await;
        if n == 2 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "{n} slices");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    cl.replicas[0].kill();
    let killed = Instant::now();
    open.abort();

    // Within the lease (and a heartbeat), only the live replica's slice is
    // held.
    loop {
        let (_, held) = committed(&db, uid).await;
        let me = cl.me(1, &token).await;
        // Replica 1 counts its own idle slice out: what is left reserved is
        // its live call alone.
        let reserved = me["tokens_reserved"].as_i64().unwrap();
        if slices(&db, uid).await == 1 && (1..30).contains(&reserved) && reserved <= held {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(LEASE_SECS + 2),
            "still held after the lease: {me}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The other replica keeps serving, and its long call settles normally.
    let r = cl.call(1, &key, "aiml/usage:5:5").await;
    assert_eq!(r.status(), 200);
    assert_eq!(long.await.unwrap(), 200);
    let recs = cl.records(1).await;
    assert!(
        recs.iter().any(|r| r["request_id"] == finished.as_str()),
        "the call that finished on the killed replica is recorded"
    );
    // The live replica gives its idle slice back within about a second.
    let t0 = Instant::now();
    let me = loop {
        let me = cl.me(1, &token).await;
        if me["tokens_reserved"] == 0 {
            break me;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "still held: {me}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let charged: i64 = recs
        .iter()
        .filter(|r| r["username"] == "team")
        .map(|r| r["total_tokens"].as_i64().unwrap())
        .sum();
    assert_eq!(me["tokens_used"], charged, "{me}");
    drop(cl.mock);
}

/// A replica stopped past its lease (SIGSTOP here; a frozen VM, a debugger)
/// wakes to find its slice released and the allowance spent by the other
/// replica: it gives its slices up rather than spend their room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_stopped_past_its_lease_does_not_spend_its_lost_slice() {
    let Some(cl) = cluster("stall", 2).await else {
        return;
    };
    let plan = json!({"name": "small", "monthly_tokens": 300, "requests_per_minute": 10000});
    let (uid, token, _, key) = cl.user_with_key(plan).await;
    let db = pg::connect(&cl.db_url).await;

    // A call held open on replica 0 keeps its slice in use (never idle).
    let body = json!({"model": "aiml/gated+usage:5:5", "stream": true, "max_tokens": 10,
                      "messages": [{"role": "user", "content": "hi"}]});
    let mut held =
        cl.c.post(cl.replicas[0].url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
    assert_eq!(held.status(), 200);
    held.chunk().await.unwrap().unwrap();
    assert_eq!(slices(&db, uid).await, 1);

    cl.replicas[0].signal("STOP");
    let stopped = Instant::now();
    while slices(&db, uid).await > 0 {
        assert!(
            stopped.elapsed() < Duration::from_secs(LEASE_SECS + 3),
            "the stopped replica's slice outlived its lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Replica 1 spends the whole allowance meanwhile.
    let mut served = 0;
    loop {
        let r = cl.call(1, &key, "aiml/usage:5:5").await;
        match r.status().as_u16() {
            200 => served += 1,
            429 => break,
            s => panic!("unexpected {s}: {}", r.text().await.unwrap()),
        }
        assert!(served < 100, "no end to the allowance");
    }
    assert!(served >= 25, "{served} calls of 10 tokens in 300");

    cl.replicas[0].signal("CONT");
    let r = cl.call(0, &key, "aiml/usage:5:5").await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 429, "the woken replica spent a slice it lost: {v}");
    assert_eq!(v["error"]["code"], "insufficient_quota", "{v}");

    // The held call ends and is charged: what was in flight at the stop is
    // all that can go over.
    cl.mock.state.gate.notify_one();
    while held.chunk().await.unwrap().is_some() {}
    let t0 = Instant::now();
    loop {
        let (used, reserved) = committed(&db, uid).await;
        if reserved == 0 && used == 10 * (served + 1) {
            assert!(used <= 300 + 10, "{used}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(LEASE_SECS + 5),
            "charged {used}, held {reserved}, served {served} + 1"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for r in 0..2 {
        let me = cl.me(r, &token).await;
        assert_eq!(me["tokens_used"], 10 * (served + 1), "replica {r}: {me}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_revoked_on_one_replica_is_refused_by_the_other_within_5_s() {
    let Some(cl) = cluster("revoke", 2).await else {
        return;
    };
    let plan = json!({"name": "any", "monthly_tokens": 100000, "requests_per_minute": 10000});
    let (_, token, kid, key) = cl.user_with_key(plan).await;
    // The key made on replica 0 works on replica 1 once its change is seen.
    let t0 = Instant::now();
    while cl.me(1, &key).await["plan"] != "any" {
        assert!(t0.elapsed() < Duration::from_secs(5), "key not seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r =
        cl.c.delete(cl.replicas[0].url(&format!("/api/keys/{kid}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let revoked = Instant::now();
    let r = cl.call(0, &key, "aiml/usage:5:5").await;
    assert_eq!(r.status(), 401, "refused at once where it was revoked");
    loop {
        let r = cl.call(1, &key, "aiml/usage:5:5").await;
        if r.status() == 401 {
            break;
        }
        assert_eq!(r.status(), 200);
        assert!(
            revoked.elapsed() < Duration::from_secs(5),
            "replica 1 still accepts the revoked key"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = (&cl.dir, &cl.config);
}

/// `tollgate_grow` grants what its rule says, and `tollgate_return` gives it
/// back: tokens, money (a USD limit, prepaid credit) and requests per minute.
#[tokio::test]
async fn the_database_grants_slices_by_its_rule() {
    use tollgate::db::quota::{Growth, SliceReturn};
    let Some((url, store)) = pg::fresh_store("grow").await else {
        return;
    };
    let base = Growth {
        user_id: 1,
        period: "2026-12".into(),
        user_limit: 1000,
        rpm: 1_000_000,
        instance: "a".into(),
        lease_secs: 60.0,
        ..Default::default()
    };
    let grow = |need: i64, want: i64| {
        let g = Growth {
            need,
            want,
            ..base.clone()
        };
        let store = store.clone();
        async move { store.grow(g).await.unwrap() }
    };
    // Plenty left: the wanted headroom, at most a quarter of what is left.
    let g = grow(10, 320).await;
    assert_eq!((g.tokens, g.avail, g.avail_usd), (250, 1000, None));
    let g = grow(10, 320).await;
    assert_eq!((g.tokens, g.avail), (187, 750));
    // Short: all that is left, up to what the call needs.
    let g = grow(900, 900).await;
    assert_eq!((g.tokens, g.avail), (563, 563));
    let g = grow(10, 10).await;
    assert_eq!((g.tokens, g.avail), (0, 0));
    // Another replica sees the same allowance taken; given back, it is free.
    let other = Growth {
        instance: "b".into(),
        need: 5,
        want: 5,
        ..base.clone()
    };
    assert_eq!(store.grow(other.clone()).await.unwrap().tokens, 0);
    let back = |user_id: i64, tokens: i64, rate_secs: f64| SliceReturn {
        user_id,
        key_id: None,
        period: "2026-12".into(),
        tokens,
        micros: 0,
        rate_secs,
    };
    store
        .return_slices("a".into(), vec![back(1, 100, 0.0)])
        .await
        .unwrap();
    let g = store.grow(other).await.unwrap();
    assert_eq!((g.tokens, g.avail), (5, 100));
    // Two returns of one slice in a batch both count.
    let held = |user| {
        let store = store.clone();
        async move { store.held(user, None, "2026-12".into()).await.unwrap() }
    };
    let before = held(1).await.user.reserved;
    store
        .return_slices("a".into(), vec![back(1, 30, 0.0), back(1, 20, 0.0)])
        .await
        .unwrap();
    assert_eq!(held(1).await.user.reserved, before - 50);

    // Requests per minute: arrivals are granted while they fit.
    let rate = Growth {
        user_id: 2,
        rpm: 4,
        arrivals: 3,
        ..base.clone()
    };
    assert_eq!(store.grow(rate.clone()).await.unwrap().arrivals, 3);
    let g = store.grow(rate.clone()).await.unwrap();
    assert_eq!((g.arrivals, g.wait_secs), (1, None));
    let g = store.grow(rate.clone()).await.unwrap();
    assert_eq!(g.arrivals, 0);
    assert!(g.wait_secs.is_some_and(|w| (1..=15).contains(&w)), "{g:?}");
    // Two unused arrivals given back (15 s each at 4 a minute) fit again.
    store
        .return_slices("a".into(), vec![back(2, 0, 30.0)])
        .await
        .unwrap();
    assert_eq!(store.grow(rate).await.unwrap().arrivals, 2);

    // Money: a USD limit, and a key's lower one.
    let usd = Growth {
        user_id: 3,
        key_id: Some(7),
        user_usd: Some(1_000),
        need_usd: 10,
        want_usd: 100,
        ..base.clone()
    };
    let g = store.grow(usd.clone()).await.unwrap();
    assert_eq!((g.micros, g.avail_usd), (100, Some(1_000)));
    let g = store
        .grow(Growth {
            key_usd: Some(120),
            ..usd.clone()
        })
        .await
        .unwrap();
    assert_eq!((g.micros, g.avail_usd), (10, Some(20)));

    // Pay-as-you-go: the credit ledger's entries, less what was spent.
    let db = pg::connect(&url).await;
    db.batch_execute(
        "INSERT INTO plans (name, monthly_tokens, requests_per_minute, created_at)
            VALUES ('payg', 1000000, 100, 'now');
         INSERT INTO users (id, username, plan, created_at) VALUES (4, 'p', 'payg', 'now');
         INSERT INTO credits (user_id, amount_micros, note, created_at) VALUES (4, 5000, 'top-up', 'now');
         INSERT INTO credits (user_id, amount_micros, note, created_at) VALUES (4, -1000, 'refund', 'now');
         INSERT INTO usage_period (period, user_id, key_id, tokens, cost_micros, credit_micros)
            VALUES ('2026-11', 4, 0, 10, 1500, 1500);",
    )
    .await
    .unwrap();
    let payg = Growth {
        user_id: 4,
        payg: true,
        need_usd: 3_000,
        want_usd: 3_000,
        ..base.clone()
    };
    let g = store.grow(payg.clone()).await.unwrap();
    assert_eq!((g.micros, g.avail_usd), (2_500, Some(2_500)));
    let g = store.grow(payg).await.unwrap();
    assert_eq!((g.micros, g.avail_usd), (0, Some(0)));
    let held = store.held(4, None, "2026-12".into()).await.unwrap();
    assert_eq!((held.credit_left, held.usd_held_all), (2_500, 2_500));
}

/// Every statement on the slices takes its row locks in one order (V9): a
/// replica's give-backs, its usage writer, its lease renewals and grants of
/// the same users, all at once and each listing the users in its own order,
/// never deadlock (PostgreSQL would cancel one after deadlock_timeout, 1 s,
/// with every call of those users waiting meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slice_statements_at_once_never_deadlock() {
    use tollgate::db::quota::{Growth, SliceReturn};
    use tollgate::db::usage::{SliceCharge, UsageRecord};
    let Some((_, store)) = pg::fresh_store("lockorder").await else {
        return;
    };
    const USERS: i64 = 24;
    let grant = |user_id: i64, want: i64| Growth {
        user_id,
        period: "2026-12".into(),
        user_limit: 1_000_000_000,
        rpm: 1_000_000,
        arrivals: 1,
        need: 1,
        want,
        instance: "a".into(),
        lease_secs: 60.0,
        ..Default::default()
    };
    for u in 1..=USERS {
        assert_eq!(store.grow(grant(u, 1000)).await.unwrap().tokens, 1000);
    }
    let until = Instant::now() + Duration::from_secs(3);
    let (instance, period): (std::sync::Arc<str>, std::sync::Arc<str>) =
        ("a".into(), "2026-12".into());

    // Give-backs, the users in descending order, with unused arrivals.
    let s = store.clone();
    let give_back = tokio::spawn(async move {
        let mut n = 0;
        while Instant::now() < until {
            let back = (1..=USERS)
                .rev()
                .map(|user_id| SliceReturn {
                    user_id,
                    key_id: None,
                    period: "2026-12".into(),
                    tokens: 1,
                    micros: 0,
                    rate_secs: 0.001,
                })
                .collect();
            s.return_slices("a".into(), back).await?;
            n += 1;
        }
        Ok::<_, tollgate::db::DbError>(n)
    });
    // The usage writer: one record of each user per batch, in ascending order.
    let s = store.clone();
    let write = tokio::task::spawn_blocking(move || {
        let mut n = 0;
        while Instant::now() < until {
            let batch: Vec<UsageRecord> = (1..=USERS)
                .map(|user_id| UsageRecord {
                    id: 0,
                    request_id: format!("req-{n}-{user_id}"),
                    user_id,
                    username: format!("u{user_id}"),
                    key_id: None,
                    provider: "mock".into(),
                    model: "m".into(),
                    upstream_model: "m".into(),
                    endpoint: "chat/completions".into(),
                    prompt_tokens: 1,
                    completion_tokens: 0,
                    total_tokens: 1,
                    cost_micros: 0,
                    credit_micros: 0,
                    estimated: false,
                    priced: false,
                    http_status: 200,
                    outcome: "ok".into(),
                    latency_ms: 1,
                    ttft_ms: None,
                    created_at: "2026-12-06T00:00:00Z".into(),
                    slice: Some(SliceCharge {
                        instance: instance.clone(),
                        period: period.clone(),
                        tokens: 1,
                        micros: 0,
                    }),
                    seq: 0,
                })
                .collect();
            s.write_usage_batch_blocking(&batch)?;
            n += 1;
        }
        Ok::<_, tollgate::db::DbError>(n)
    });
    // Grants: each user in turn (a rate row, then a slice).
    let s = store.clone();
    let grow = tokio::spawn(async move {
        let mut n = 0;
        while Instant::now() < until {
            for u in (1..=USERS).step_by(5).chain((2..=USERS).step_by(5)) {
                s.grow(grant(u, 2)).await?;
                n += 1;
            }
        }
        Ok::<_, tollgate::db::DbError>(n)
    });
    // Lease renewals.
    let s = store.clone();
    let renew = tokio::spawn(async move {
        let mut n = 0;
        while Instant::now() < until {
            s.renew_reservations("a".into(), 60.0).await?;
            n += 1;
        }
        Ok::<_, tollgate::db::DbError>(n)
    });
    let counts = [
        ("give-backs", give_back.await.unwrap()),
        ("usage batches", write.await.unwrap()),
        ("grants", grow.await.unwrap()),
        ("renewals", renew.await.unwrap()),
    ];
    for (what, r) in counts {
        match r {
            Ok(n) => assert!(n > 10, "only {n} {what} in 3 s"),
            Err(e) => panic!("{what} failed: {e}"),
        }
    }
}
