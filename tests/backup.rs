//! `tollgate backup PATH` (SQLite's online backup) against the real binary
//! while calls are being recorded: the copy is a sound database holding
//! every record committed before the backup began, and one point in time
//! (its raw records and their roll-ups agree). An existing PATH is kept
//! unless `--force`. On PostgreSQL the command points at pg_dump instead.

mod common;
use common::mock::Mock;
use common::process::{self, Process};
use rusqlite::{Connection, OpenFlags};

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn write_config(dir: &Path, mock: &Mock) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        "[providers.aiml]\nbase_url = \"{}\"\napi_key = \"sk-test-aiml-secret\"\n",
        mock.base("aiml")
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `tollgate ARGS` in `dir`: (success, stdout, stderr).
fn tollgate(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .current_dir(dir)
        .env_remove("TOLLGATE_DATABASE_URL")
        .env_remove("TOLLGATE_DB")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

type Done = Arc<Mutex<Vec<String>>>;

/// Calls from `clients` loops until `stop`.
fn drive(
    url: &str,
    key: &str,
    clients: usize,
) -> (Done, Arc<AtomicBool>, Vec<tokio::task::JoinHandle<()>>) {
    let done = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = (0..clients)
        .map(|i| {
            let (done, stop, url, key) =
                (done.clone(), stop.clone(), url.to_owned(), key.to_owned());
            tokio::spawn(async move {
                let c = reqwest::Client::new();
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    match process::complete_call(&c, &url, &key, (i + n) % 2 == 0).await {
                        Some(rid) => done.lock().unwrap().push(rid),
                        None => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        })
        .collect();
    (done, stop, tasks)
}

fn request_ids(c: &Connection) -> HashSet<String> {
    let mut q = c.prepare("SELECT request_id FROM requests").unwrap();
    let ids = q
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    ids
}

/// Opens the live database beside the server (WAL: readers do not block it).
fn open_live(db: &Path) -> Connection {
    let c = Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

async fn start(dir: &Path, config: &Path) -> Process {
    let db = dir.join("tollgate.db");
    process::start(dir, "server", config, &["--db", db.to_str().unwrap()]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_while_calls_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    if common::pg::backend_is_postgres() {
        return points_at_pg_dump(d);
    }
    let mock = Mock::start().await;
    let config = write_config(d, &mock);
    let server = start(d, &config).await;
    let db = d.join("tollgate.db");
    let (_, _, key) = process::load_user(&server.url).await;

    // Some megabytes, so that the copy takes several steps while the
    // server writes between them.
    open_live(&db)
        .execute_batch(
            "CREATE TABLE test_padding (b BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
             INSERT INTO test_padding SELECT randomblob(4000) FROM n;",
        )
        .unwrap();

    let (done, stop, tasks) = drive(&server.url, &key, 4);
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // The calls that ended so far, once the writer has committed them all.
    let before: Vec<String> = done.lock().unwrap().clone();
    assert!(before.len() >= 10, "the load made calls: {}", before.len());
    let live = open_live(&db);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ids = request_ids(&live);
        if before.iter().all(|r| ids.contains(r)) {
            break;
        }
        assert!(Instant::now() < deadline, "records not written within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(live);

    // The backup, while the calls go on.
    let copy = d.join("backups/copy.db");
    std::fs::create_dir(d.join("backups")).unwrap();
    let calls_at_start = done.lock().unwrap().len();
    let args = [
        "backup",
        copy.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
    ];
    let dir_path = d.to_owned();
    let args_owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args_owned.iter().map(String::as_str).collect();
        tollgate(&dir_path, &args)
    })
    .await
    .unwrap();
    let calls_during = done.lock().unwrap().len() - calls_at_start;
    eprintln!("backup: {out}{err}calls ended during it: {calls_during}");
    assert!(ok, "backup failed: {out}\n{err}");
    let size = std::fs::metadata(&copy).unwrap().len();
    assert!(
        out.contains(copy.to_str().unwrap())
            && out.contains(&format!("{size} bytes"))
            && out.contains(" s"),
        "the result names the copy, its size and the time taken: {out}"
    );
    // The CLI is quiet: progress for a database of several steps, no log lines.
    assert!(err.contains("backing up:"), "progress: {err:?}");
    for level in ["INFO", "WARN", "ERROR", "DEBUG", "tollgate::"] {
        assert!(!err.contains(level), "a log line on stderr: {err:?}");
    }

    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    drop(server);

    // The copy: sound, one file, holding everything committed before.
    let c = Connection::open_with_flags(&copy, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete");
    let ids = request_ids(&c);
    let missing: Vec<&String> = before.iter().filter(|r| !ids.contains(*r)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} committed records missing from the copy (calls during the backup: {calls_during})",
        missing.len(),
        before.len()
    );
    // One point in time: the raw records and the roll-ups written in the
    // same transactions agree.
    let raw: i64 = c
        .query_row(
            "SELECT coalesce(sum(total_tokens), 0) FROM requests",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let daily: i64 = c
        .query_row(
            "SELECT coalesce(sum(tokens), 0) FROM usage_daily",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let period: i64 = c
        .query_row(
            "SELECT coalesce(sum(tokens), 0) FROM usage_period",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!((daily, period), (raw, raw), "roll-ups and records differ");
    let padding: i64 = c
        .query_row("SELECT count(*) FROM test_padding", [], |r| r.get(0))
        .unwrap();
    assert_eq!(padding, 5000);
    assert!(
        std::fs::read_dir(d.join("backups")).unwrap().count() == 1,
        "only the copy is left in its directory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_keeps_an_existing_file_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    if common::pg::backend_is_postgres() {
        return points_at_pg_dump(d);
    }
    let mock = Mock::start().await;
    let config = write_config(d, &mock);
    let server = start(d, &config).await;
    let db = d.join("tollgate.db");
    let db = db.to_str().unwrap();
    let copy = d.join("copy.db");
    std::fs::write(&copy, "an older backup").unwrap();
    let path = copy.to_str().unwrap();

    let (ok, out, err) = tollgate(d, &["backup", path, "--db", db]);
    assert!(!ok, "overwrote an existing file: {out}");
    assert!(
        err.contains(path) && err.contains("exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), "an older backup");

    let (ok, _, err) = tollgate(d, &["backup", path, "--db", db, "--force"]);
    assert!(ok, "{err}");
    let c = Connection::open_with_flags(&copy, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let users: i64 = c
        .query_row(
            "SELECT count(*) FROM users WHERE username = 'admin'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(users, 1);

    // A database that is not there is an error, and is not created.
    let none = d.join("none.db");
    let (ok, _, err) = tollgate(
        d,
        &[
            "backup",
            d.join("x.db").to_str().unwrap(),
            "--db",
            none.to_str().unwrap(),
        ],
    );
    assert!(!ok && err.contains("no database"), "{err}");
    assert!(!none.exists() && !d.join("x.db").exists());
    drop(server);
}

/// On PostgreSQL: a non-zero exit with the pg_dump command to use, the
/// password left out, and no file written.
fn points_at_pg_dump(d: &Path) {
    let cfg = common::test_config(d);
    let url = common::db_arg(&cfg);
    let copy = d.join("copy.dump");
    let (ok, out, err) = tollgate(d, &["backup", copy.to_str().unwrap(), "--db", &url]);
    assert!(!ok, "backup on PostgreSQL succeeded: {out}");
    assert!(
        err.contains("PostgreSQL")
            && err.contains(&format!(
                "pg_dump --format=custom --file='{}'",
                copy.display()
            )),
        "{err}"
    );
    let after_scheme = url.split_once("://").unwrap().1;
    if let Some((userinfo, _)) = after_scheme.split_once('@') {
        if let Some((_, pw)) = userinfo.split_once(':') {
            assert!(
                pw.is_empty() || !err.contains(pw),
                "the password is shown: {err}"
            );
        }
    }
    assert!(!copy.exists());
}
