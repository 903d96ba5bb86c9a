//! The real binary under load, killed with SIGKILL and stopped with SIGTERM,
//! then restarted on the same database: no reservation survives, the database
//! is intact, and the calls that ended are recorded (SPEC §6).

mod common;
use common::mock::Mock;
use common::process::{self, Process};
use common::ADMIN_PASSWORD;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn write_config(dir: &Path, mock: &Mock) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        "[server]\nshutdown_grace_secs = 2\n\n[providers.aiml]\nbase_url = \"{}\"\napi_key = \"sk-test-aiml-secret\"\n",
        mock.base("aiml")
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `tollgate serve` on the SQLite file in `dir` (see `common::process`).
async fn start(dir: &Path, config: &Path) -> Process {
    let db = dir.join("tollgate.db");
    process::start(dir, "server", config, &["--db", db.to_str().unwrap()]).await
}

/// What the load produced: calls the client saw end (request id → when),
/// and the endless streams that were open.
#[derive(Default)]
struct Load {
    done: Mutex<Vec<(String, Instant)>>,
    endless: Mutex<Vec<String>>,
}

/// Starts `clients` loops of calls and `endless` open streams.
fn drive(
    url: &str,
    key: &str,
    clients: usize,
    endless: usize,
) -> (Arc<Load>, Arc<AtomicBool>, Vec<tokio::task::JoinHandle<()>>) {
    let load = Arc::new(Load::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (load, stop, url, key) = (load.clone(), stop.clone(), url.to_owned(), key.to_owned());
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                match process::complete_call(&c, &url, &key, (i + n) % 2 == 0).await {
                    Some(rid) => load.done.lock().unwrap().push((rid, Instant::now())),
                    None => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    for _ in 0..endless {
        let (load, url, key) = (load.clone(), url.to_owned(), key.to_owned());
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            let body = json!({"model": "aiml/endless", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
            let Ok(mut r) = c
                .post(format!("{url}/llm/chat/completions"))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
            else {
                return;
            };
            if r.status() != 200 {
                return;
            }
            load.endless
                .lock()
                .unwrap()
                .push(r.headers()["x-request-id"].to_str().unwrap().to_owned());
            while let Ok(Some(_)) = r.chunk().await {}
        }));
    }
    (load, stop, tasks)
}

/// Every record, by request id.
async fn records(url: &str) -> HashMap<String, Value> {
    let c = reqwest::Client::new();
    let admin = process::login(&c, url, "admin", ADMIN_PASSWORD).await;
    let mut out = HashMap::new();
    let mut before: Option<i64> = None;
    loop {
        let mut q = vec![("limit", "500".to_owned())];
        if let Some(b) = before {
            q.push(("before", b.to_string()));
        }
        let v: Value = c
            .get(format!("{url}/admin/requests"))
            .bearer_auth(&admin)
            .query(&q)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for r in v["data"].as_array().unwrap() {
            let prev = out.insert(r["request_id"].as_str().unwrap().to_owned(), r.clone());
            assert!(prev.is_none(), "two records for one request: {r}");
        }
        match v["next_before"].as_i64() {
            Some(b) if !v["data"].as_array().unwrap().is_empty() => before = Some(b),
            _ => return out,
        }
    }
}

fn integrity_ok(db: &Path) {
    let c = rusqlite::Connection::open(db).unwrap();
    let r: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(r, "ok");
}

/// After a restart: nothing reserved, and the balance is the records' sum.
async fn check_balance(url: &str, token: &str, recs: &HashMap<String, Value>) {
    let me: Value = reqwest::Client::new()
        .get(format!("{url}/subscriptions/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["tokens_reserved"], 0, "{me}");
    let charged: i64 = recs
        .values()
        .filter(|r| r["username"] == "load")
        .map(|r| r["total_tokens"].as_i64().unwrap())
        .sum();
    assert_eq!(
        me["tokens_used"], charged,
        "the balance is what the records say"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_loses_no_ended_call_and_leaks_no_reservation() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &mock);
    let mut server = start(dir.path(), &config).await;
    let (_, token, key) = process::load_user(&server.url).await;
    let (load, stop, tasks) = drive(&server.url, &key, 4, 2);
    // Let the load run, with the endless streams open.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = Instant::now();
    let mut child = server.child.take().unwrap();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let done = load.done.lock().unwrap().clone();
    let endless = load.endless.lock().unwrap().clone();
    assert!(done.len() >= 10, "the load made calls: {}", done.len());
    assert_eq!(
        endless.len(),
        2,
        "the endless streams were open at the kill"
    );
    integrity_ok(&dir.path().join("tollgate.db"));

    let server = start(dir.path(), &config).await;
    let recs = records(&server.url).await;
    check_balance(&server.url, &token, &recs).await;
    let mut checked = 0;
    for (rid, ended) in &done {
        if *ended + Duration::from_millis(100) < killed_at {
            checked += 1;
            let r = recs
                .get(rid)
                .unwrap_or_else(|| panic!("call {rid} ended before the kill but has no record"));
            assert_eq!(r["outcome"], "ok");
            assert_eq!(r["total_tokens"], 10);
        }
    }
    assert!(checked >= 10, "{checked} calls checked");
    for rid in &endless {
        assert!(
            !recs.contains_key(rid),
            "a call in flight at SIGKILL is not charged"
        );
    }
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_loses_nothing_and_exits_zero() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &mock);
    let mut server = start(dir.path(), &config).await;
    let (_, token, key) = process::load_user(&server.url).await;
    let (load, stop, tasks) = drive(&server.url, &key, 4, 2);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut child = server.child.take().unwrap();
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    // The grace period is 2 s; the endless streams hold the server until then.
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(exit.code(), Some(0), "exit status {exit:?}");
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let done = load.done.lock().unwrap().clone();
    let endless = load.endless.lock().unwrap().clone();
    assert!(done.len() >= 10, "the load made calls: {}", done.len());
    assert_eq!(endless.len(), 2);
    integrity_ok(&dir.path().join("tollgate.db"));

    let server = start(dir.path(), &config).await;
    let recs = records(&server.url).await;
    check_balance(&server.url, &token, &recs).await;
    for (rid, _) in &done {
        let r = recs
            .get(rid)
            .unwrap_or_else(|| panic!("completed call {rid} has no record after SIGTERM"));
        assert_eq!(r["outcome"], "ok");
    }
    // The streams cut at the end of the grace period are recorded too, charged
    // for what they generated.
    for rid in &endless {
        let r = recs
            .get(rid)
            .unwrap_or_else(|| panic!("stream {rid} cut at shutdown has no record"));
        assert_eq!(r["outcome"], "client_cancelled", "{r}");
        assert!(r["total_tokens"].as_i64().unwrap() > 0, "{r}");
    }
    drop(server);
}
