//! PostgreSQL for the tests (SPEC §11): a fresh database per test on the
//! cluster named by `TOLLGATE_TEST_PG_URL` (`.ci/run` starts one with
//! tests/pg/start.sh). Without it these tests skip with a message, except
//! under `CI`, where a missing server is a failure.
//!
//! `TOLLGATE_TEST_BACKEND=postgres` runs the whole HTTP suite on PostgreSQL:
//! every [`super::TestServer`] then gets a database of its own.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Whether the suite runs with PostgreSQL as the store.
pub fn backend_is_postgres() -> bool {
    std::env::var("TOLLGATE_TEST_BACKEND").is_ok_and(|v| v == "postgres")
}

/// The admin URL of the test cluster, or `None` (with a message) when there
/// is none; panics under `CI`, where the cluster must be there.
pub fn admin_url(test: &str) -> Option<String> {
    match std::env::var("TOLLGATE_TEST_PG_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{test}: TOLLGATE_TEST_PG_URL is not set; .ci/run starts a cluster with tests/pg/start.sh")
        }
        _ => {
            eprintln!(
                "SKIPPED {test}: no PostgreSQL. Run `export TOLLGATE_TEST_PG_URL=$(bash tests/pg/start.sh /tmp/tollgate-pg)` to run it."
            );
            None
        }
    }
}

/// `admin` with its database name replaced by `db`.
fn with_database(admin: &str, db: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{base}/{db}{query}")
}

/// A fresh database, migrated, with the store on it and its URL (`None`: no
/// cluster): for tests that call the store's operations directly.
pub async fn fresh_store(test: &str) -> Option<(String, tollgate::db::Store)> {
    let url = fresh_database(test).await?;
    let mut cfg = tollgate::config::Config::default();
    cfg.database.url = Some(url.clone());
    let store = tollgate::db::Store::connect(&cfg.database).unwrap();
    store.migrate().await.unwrap();
    Some((url, store))
}

/// Creates a new empty database and returns its URL (`None`: no cluster).
pub async fn fresh_database(test: &str) -> Option<String> {
    let admin = admin_url(test)?;
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "tg_{}_{}_{}",
        test.chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(24)
            .collect::<String>()
            .to_lowercase(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let c = connect(&admin).await;
    c.batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create the test database");
    Some(with_database(&admin, &name))
}

/// [`fresh_database`] for synchronous code (test configurations).
pub fn fresh_database_blocking(test: &str) -> Option<String> {
    let test = test.to_owned();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(fresh_database(&test))
    })
    .join()
    .unwrap()
}

/// A client of `url`, its connection driven on the current runtime.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test cluster");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}
