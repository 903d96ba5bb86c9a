//! A database that refuses writes (SPEC §13): usage records wait in memory up
//! to `[metering] max_pending_records`, past it metered calls are refused with
//! 503 `usage_unavailable` and `Retry-After`, `/health` degrades with the
//! reason and a metric counts the records; when writes succeed again every
//! record is written, in order, and calls are served again.
//!
//! The database refuses through a trigger the test installs on the records
//! table (on SQLite and on PostgreSQL alike): a read-only file does not stop
//! root, and a full filesystem needs a mount the test may not make.

mod common;

use common::mock::{use_mock, Mock};
use common::TestServer;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const MAX_PENDING: u64 = 20;

/// Makes the records table refuse inserts (`on`), or take them again.
async fn refuse_writes(s: &TestServer, on: bool) {
    match &s.state.config.database.url {
        Some(url) => {
            let db = common::pg::connect(url).await;
            let sql = if on {
                "CREATE FUNCTION refuse_usage() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'; END $$;
                 CREATE TRIGGER refuse_usage BEFORE INSERT ON requests
                 FOR EACH STATEMENT EXECUTE FUNCTION refuse_usage();"
            } else {
                "DROP TRIGGER refuse_usage ON requests; DROP FUNCTION refuse_usage();"
            };
            db.batch_execute(sql).await.unwrap();
        }
        None => {
            let c = rusqlite::Connection::open(&s.state.config.database.path).unwrap();
            c.busy_timeout(Duration::from_secs(10)).unwrap();
            let sql = if on {
                "CREATE TRIGGER refuse_usage BEFORE INSERT ON requests
                 BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;"
            } else {
                "DROP TRIGGER refuse_usage;"
            };
            c.execute_batch(sql).unwrap();
        }
    }
}

async fn chat(s: &TestServer, key: &str) -> reqwest::Response {
    s.client
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "aiml/usage:4:6", "max_tokens": 10,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

async fn health(s: &TestServer) -> (u16, Value) {
    let r = s.client.get(s.url("/health")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_wait_for_the_database_up_to_the_limit_and_no_record_is_lost() {
    let mock = Mock::start().await;
    let s = TestServer::start_with(|cfg| {
        use_mock(cfg, &mock, &["aiml"]);
        cfg.metering.max_pending_records = MAX_PENDING;
    })
    .await;
    let (uid, _, key) = s.user_with_key("ann", Some("pro")).await;
    let admin = s.admin_token().await;
    let mut served = Vec::new();
    for _ in 0..2 {
        let r = chat(&s, &key).await;
        assert_eq!(r.status(), 200);
        served.push(r.headers()["x-request-id"].to_str().unwrap().to_owned());
    }
    s.state.metering.writer.flush().await;
    assert_eq!(health(&s).await.0, 200);

    // The database refuses: calls are served while their records fit in
    // memory, then refused before anything is sent upstream.
    refuse_writes(&s, true).await;
    let upstream_before = mock.generation_calls().len();
    let mut refused = None;
    for _ in 0..(MAX_PENDING + 10) {
        let r = chat(&s, &key).await;
        match r.status().as_u16() {
            200 => served.push(r.headers()["x-request-id"].to_str().unwrap().to_owned()),
            503 => {
                refused = Some(r);
                break;
            }
            other => panic!("unexpected {other}: {}", r.text().await.unwrap()),
        }
    }
    let r = refused.expect("calls are refused once the records waiting reach the limit");
    assert_eq!(
        served.len() as u64,
        2 + MAX_PENDING,
        "served until the limit, not past it"
    );
    assert_eq!(
        mock.generation_calls().len() - upstream_before,
        MAX_PENDING as usize
    );
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "usage_unavailable", "{body}");
    // In the caller's dialect on the Messages route.
    let r = s
        .client
        .post(s.url("/v1/messages"))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "aiml/usage:4:6", "max_tokens": 10,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");

    let (status, h) = health(&s).await;
    assert_eq!(status, 503, "{h}");
    assert_eq!(h["status"], "degraded");
    let reason = h["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("{MAX_PENDING} usage record")),
        "{reason}"
    );
    let metrics = s.get_as("/metrics", &admin).await.text().await.unwrap();
    assert!(
        metrics.contains(&format!("tollgate_usage_records_pending {MAX_PENDING}")),
        "{metrics}"
    );

    // The database takes writes again: every waiting record is written, in
    // the order of the calls, and calls are served again.
    refuse_writes(&s, false).await;
    let t0 = Instant::now();
    while health(&s).await.0 != 200 {
        assert!(t0.elapsed() < Duration::from_secs(10), "still degraded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = chat(&s, &key).await;
    assert_eq!(r.status(), 200);
    served.push(r.headers()["x-request-id"].to_str().unwrap().to_owned());
    s.state.metering.writer.flush().await;
    let v: Value = s
        .get_as("/admin/requests?user=ann&limit=500", &admin)
        .await
        .json()
        .await
        .unwrap();
    let mut recorded: Vec<String> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["request_id"].as_str().unwrap().to_owned())
        .collect();
    recorded.reverse();
    assert_eq!(
        recorded, served,
        "every served call recorded once, in order"
    );
    let b = s.balance(uid).await;
    assert_eq!((b.used, b.reserved), (10 * served.len() as i64, 0));
    let metrics = s.get_as("/metrics", &admin).await.text().await.unwrap();
    assert!(
        metrics.contains("tollgate_usage_records_pending 0"),
        "{metrics}"
    );
}
