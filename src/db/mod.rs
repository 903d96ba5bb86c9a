//! The database: one SQLite file through an r2d2 pool (WAL, busy timeout,
//! foreign keys on), or PostgreSQL for replicas (`pg/`); schema from refinery
//! migrations embedded in the binary (`migrations/sqlite`, `migrations/postgres`).
//!
//! All SQL of the project lives under this module. The rest of tollgate
//! reaches the database only through [`Store`], whose operations are named for
//! what they do, so another backend can be added without touching handlers.

mod accounts;
pub mod api_keys;
pub mod backup;
pub mod credits;
pub mod oauth_states;
pub mod pg;
pub mod plans;
pub mod quota;
pub mod settings;
mod store;
pub mod usage;
pub mod users;

pub use store::{
    ChangeLogEntry, ChangedIds, ChangedRows, CredentialDelta, CredentialPart, CredentialRow,
    IdentitySignIn, KeyChange, Refused, Seed, Seeded, Store, UserChanges,
};

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;
use std::path::Path;
use std::time::Duration;

pub type Pool = r2d2::Pool<SqliteConnectionManager>;

mod embedded {
    refinery::embed_migrations!("migrations/sqlite");
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("connection pool: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("migration: {0}")]
    Migration(String),
    /// A uniqueness or reference rule refused the write; the text is for the client.
    #[error("{0}")]
    Conflict(String),
    #[error("database task failed: {0}")]
    Task(String),
    #[error("postgresql: {0}")]
    Postgres(String),
}

pub type DbResult<T> = Result<T, DbError>;

/// Maps a constraint violation to [`DbError::Conflict`] with `what` as the message.
pub fn on_constraint(e: rusqlite::Error, what: &str) -> DbError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        if f.code == rusqlite::ErrorCode::ConstraintViolation {
            return DbError::Conflict(what.to_owned());
        }
    }
    DbError::Sqlite(e)
}

fn init_connection(c: &mut Connection) -> rusqlite::Result<()> {
    c.busy_timeout(Duration::from_secs(10))?;
    // A transaction takes the write lock when it begins, so it waits its turn
    // (busy timeout). A deferred one that read first and then wrote after
    // another connection's write fails at once with "database is locked":
    // waiting could not help it, its snapshot is stale.
    c.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
    c.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;",
    )
}

/// Opens (creating if needed) the database file and its pool.
pub fn open(path: &Path) -> DbResult<Pool> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            DbError::Task(format!(
                "cannot create the directory {}: {e}",
                dir.display()
            ))
        })?;
    }
    let manager = SqliteConnectionManager::file(path).with_init(init_connection);
    let pool = r2d2::Pool::builder()
        .max_size(8)
        // Two connections open at start (the usage writer's and one more);
        // the rest open when concurrent requests need them. Each costs
        // memory (schema, caches) that an idle gateway does not need.
        .min_idle(Some(2))
        .connection_timeout(Duration::from_secs(30))
        .build(manager)?;
    Ok(pool)
}

/// Takes (waiting for it) the lock that one process at a time holds while it
/// migrates the database at `db`; released when the file is dropped.
fn migration_lock(db: &Path) -> DbResult<std::fs::File> {
    let mut name = db.as_os_str().to_owned();
    name.push("-migrate-lock");
    let path = std::path::PathBuf::from(name);
    // Read-only when it exists: a command run as root may have created it,
    // and a lock needs no write access.
    let file = std::fs::File::open(&path)
        .or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path),
            _ => Err(e),
        })
        .and_then(|f| f.lock().map(|()| f))
        .map_err(|e| DbError::Task(format!("cannot lock {}: {e}", path.display())))?;
    Ok(file)
}

/// Runs the embedded migrations that have not run yet; returns how many ran.
pub fn migrate(pool: &Pool) -> DbResult<usize> {
    migrate_connection(&mut *pool.get()?)
}

/// Runs the embedded migrations that have not run yet on `conn`.
fn migrate_connection(conn: &mut Connection) -> DbResult<usize> {
    // refinery reads what has run, then runs the rest: two processes
    // starting on one file (a server and a CLI command) would both run a
    // migration. An exclusive lock on a file beside the database makes the
    // second wait and find it done. (Not the database file itself: closing
    // any descriptor of it would drop SQLite's own locks.)
    let _lock = match conn.path().filter(|p| !p.is_empty()) {
        Some(db) => Some(migration_lock(Path::new(db))?),
        None => None,
    };
    let report = embedded::migrations::runner()
        .run(conn)
        .map_err(|e| DbError::Migration(e.to_string()))?;
    Ok(report.applied_migrations().len())
}

/// The current RFC 3339 UTC timestamp at second precision, as stored.
pub fn ts(t: chrono::DateTime<chrono::Utc>) -> String {
    // Every call's record is stamped: the text of the current second is
    // formatted once per thread and copied after that.
    thread_local! {
        static LAST: std::cell::RefCell<(i64, String)> =
            const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let secs = t.timestamp();
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != secs {
            last.1 = t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            last.0 = secs;
        }
        last.1.clone()
    })
}

/// Parses a stored timestamp.
pub fn parse_ts(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// Encodes a list of glob patterns for a JSON text column.
pub fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

/// Decodes a JSON text column holding a list of strings.
pub fn parse_json_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

#[cfg(test)]
mod migration_tests {
    use super::embedded;
    use rusqlite::Connection;

    const INSERT: &str = "INSERT INTO requests (request_id, user_id, username, key_id, provider, model,
        upstream_model, endpoint, prompt_tokens, completion_tokens, total_tokens, cost_usd, estimated,
        priced, http_status, outcome, latency_ms, ttft_ms, created_at)
        VALUES (?1, 1, 'u', NULL, 'p', 'm', 'm', 'chat/completions', 1, 2, 3, 0.5, 0, 1, 200, ?2, 7, NULL,
        '2026-11-26T00:00:00Z')";

    #[test]
    fn v4_keeps_records_and_the_outcome_rule() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("t.db")).unwrap();
        embedded::migrations::runner()
            .set_target(refinery::Target::Version(3))
            .run(&mut conn)
            .unwrap();
        conn.execute(INSERT, ["req_old", "ok"]).unwrap();
        embedded::migrations::runner()
            .set_target(refinery::Target::Version(4))
            .run(&mut conn)
            .unwrap();
        let (rid, tokens): (String, i64) = conn
            .query_row("SELECT request_id, total_tokens FROM requests", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((rid.as_str(), tokens), ("req_old", 3));
        for ok in ["ok", "upstream_error", "client_cancelled", "refused"] {
            conn.execute(INSERT, ["req_new", ok]).unwrap();
        }
        assert!(conn.execute(INSERT, ["req_bad", "maybe"]).is_err());
        // The check no longer builds a temporary index per insert.
        let ops: Vec<String> = conn
            .prepare(&format!("EXPLAIN {INSERT}"))
            .unwrap()
            .query_map(["x", "ok"], |r| r.get::<_, String>(1))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!ops.iter().any(|o| o == "OpenEphemeral"), "{ops:?}");
        let index: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'requests_user'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(index, 1);
    }
}

#[cfg(test)]
mod money_migration_tests {
    use super::embedded;
    use rusqlite::Connection;

    #[test]
    fn v7_turns_float_dollars_into_micro_dollars() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("t.db")).unwrap();
        embedded::migrations::runner()
            .set_target(refinery::Target::Version(6))
            .run(&mut conn)
            .unwrap();
        for (rid, cost) in [("a", 0.1), ("b", 0.2), ("c", 0.000123)] {
            conn.execute(
                "INSERT INTO requests (request_id, user_id, username, key_id, provider, model,
                    upstream_model, endpoint, prompt_tokens, completion_tokens, total_tokens, cost_usd,
                    estimated, priced, http_status, outcome, latency_ms, ttft_ms, created_at)
                 VALUES (?1, 1, 'u', 4, 'p', 'm', 'm', 'chat/completions', 1, 2, 3, ?2, 0, 1, 200, 'ok',
                    7, NULL, '2026-11-26T00:00:00Z')",
                rusqlite::params![rid, cost],
            )
            .unwrap();
        }
        conn.execute_batch(
            "INSERT INTO usage_daily (day, user_id, provider, model, tokens, requests, cost_usd)
                VALUES ('2026-11-26', 1, 'p', 'm', 9, 3, 0.300123);
             INSERT INTO usage_period (period, user_id, key_id, tokens) VALUES ('2026-11', 1, 4, 9);",
        )
        .unwrap();
        embedded::migrations::runner().run(&mut conn).unwrap();
        let micros: Vec<i64> = conn
            .prepare("SELECT cost_micros FROM requests ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(micros, [100_000, 200_000, 123]);
        let one = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
        assert_eq!(one("SELECT cost_micros FROM usage_daily"), 300_123);
        assert_eq!(one("SELECT cost_micros FROM usage_period"), 300_123);
        assert_eq!(one("SELECT credit_micros FROM usage_period"), 0);
    }
}

#[cfg(test)]
mod layout_tests {
    /// Migration versions of `migrations/<dir>`, in order.
    fn versions(dir: &str) -> Vec<String> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dir);
        let mut v: Vec<(u32, String)> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .map(|n| {
                let version = n[1..n.find("__").unwrap()].parse().unwrap();
                (version, n.split("__").nth(1).unwrap().to_owned())
            })
            .collect();
        v.sort();
        v.into_iter()
            .map(|(n, name)| format!("V{n}__{name}"))
            .collect()
    }

    #[test]
    fn both_backends_carry_the_same_migrations() {
        assert_eq!(versions("sqlite"), versions("postgres"));
        // refinery embeds a directory tree: a file beside the two would be
        // in neither backend's schema.
        let mut top: Vec<String> =
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
        top.sort();
        assert_eq!(top, ["postgres", "sqlite"]);
    }
}

#[cfg(test)]
mod ts_tests {
    use chrono::{TimeZone, Utc};

    #[test]
    fn timestamps_are_the_second_they_name() {
        let a = Utc.timestamp_opt(1_800_000_000, 100).unwrap();
        let b = Utc.timestamp_opt(1_800_000_000, 999_000_000).unwrap();
        let c = Utc.timestamp_opt(1_800_000_001, 0).unwrap();
        for t in [a, b, c, a] {
            assert_eq!(
                super::ts(t),
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
        }
        assert_eq!(super::ts(b), "2027-01-15T08:00:00Z");
        assert_ne!(super::ts(b), super::ts(c));
    }
}

#[cfg(test)]
mod open_tests {
    use super::store::Seed;

    /// Processes starting on one new file at once (a server and a CLI
    /// command, or two CLI commands) each migrate and seed it. Without a
    /// lock around the migrations, two runners both saw a migration as not
    /// applied and the second failed ("duplicate column name"); a deferred
    /// transaction that read before another connection wrote failed with
    /// "database is locked" instead of waiting.
    #[test]
    fn a_new_file_opened_at_once_by_several_processes_is_set_up_once() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..20 {
            let path = dir.path().join(format!("t{i}.db"));
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
            let opened: Vec<_> = (0..4)
                .map(|_| {
                    let (path, barrier) = (path.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        let pool = super::open(&path)?;
                        super::migrate(&pool)?;
                        let mut c = pool.get()?;
                        let seed = Seed {
                            plans: vec![super::plans::Plan::tiny("free")],
                            admin_hash: "x".into(),
                            jwt_secret: "s".into(),
                            now: "2026-12-06T00:00:00Z".into(),
                        };
                        let seeded = super::accounts::bootstrap(&mut c, &seed)?;
                        let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
                        Ok::<_, super::DbError>((mode, seeded.created_admin))
                    })
                })
                .collect();
            let mut admins = 0;
            for t in opened {
                let (mode, admin) = t.join().unwrap().unwrap();
                assert_eq!(mode, "wal", "file {i}");
                admins += admin as usize;
            }
            assert_eq!(admins, 1, "file {i}");
        }
    }
}
