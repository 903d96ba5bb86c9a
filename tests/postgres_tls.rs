//! TLS to PostgreSQL, with libpq's `sslmode` words and `sslrootcert`
//! (docs/operations.md). The cluster of tests/pg/start.sh serves TLS with a
//! certificate for localhost and 127.0.0.1 from a CA of its own, `ca.pem`
//! beside the server's certificate.

mod common;
use common::pg;
use std::path::PathBuf;

/// The cluster's CA file, or `None` (with a message) when it serves no TLS;
/// under `CI` it must.
async fn cluster_ca(admin: &tokio_postgres::Client) -> Option<PathBuf> {
    let ssl: String = admin.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    if ssl != "on" {
        assert!(
            std::env::var_os("CI").is_none(),
            "the test cluster serves no TLS; tests/pg/start.sh turns it on"
        );
        eprintln!("SKIPPED: the test cluster serves no TLS (tests/pg/start.sh turns it on)");
        return None;
    }
    let cert: String = admin
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .unwrap()
        .get(0);
    Some(PathBuf::from(cert).with_file_name("ca.pem"))
}

/// Whether the store's connections to `db` (application `tollgate`) are
/// encrypted: `Some(true)` all, `Some(false)` none.
async fn encrypted(admin: &tokio_postgres::Client, db: &str) -> Option<bool> {
    let rows = admin
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
              WHERE a.datname = $1 AND a.application_name = 'tollgate'",
            &[&db],
        )
        .await
        .unwrap();
    let all: Vec<bool> = rows.iter().map(|r| r.get(0)).collect();
    match (all.iter().all(|s| *s), all.iter().any(|s| *s)) {
        _ if all.is_empty() => None,
        (true, _) => Some(true),
        (_, false) => Some(false),
        _ => panic!("some connections encrypted, some not: {all:?}"),
    }
}

/// Opens a store on `url` and runs the migrations (a connection at least).
async fn open(url: &str) -> Result<tollgate::db::Store, String> {
    let mut cfg = tollgate::config::Config::default();
    cfg.database.url = Some(url.to_owned());
    let store = tollgate::db::Store::connect(&cfg.database).map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    // A pooled connection too (migrations use one of their own).
    store.needs_bootstrap().await.map_err(|e| e.to_string())?;
    Ok(store)
}

#[tokio::test]
async fn sslmode_words_encrypt_and_verify_as_libpq_does() {
    let Some(url) = pg::fresh_database("postgres_tls").await else {
        return;
    };
    let admin_url = pg::admin_url("postgres_tls").unwrap();
    let admin = pg::connect(&admin_url).await;
    let Some(ca) = cluster_ca(&admin).await else {
        return;
    };
    let db = url.rsplit('/').next().unwrap().to_owned();
    let port = url
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_owned();
    let ca = ca.display().to_string();
    let with = |q: &str| format!("{url}?{q}");

    // Each mode on a store of its own; the store's connections are then
    // looked at from the server's side.
    let cases = [
        // The default (`prefer`) uses TLS when the server offers it.
        (url.clone(), true),
        (with("sslmode=require"), true),
        (with("sslmode=disable"), false),
        (with(&format!("sslmode=verify-ca&sslrootcert={ca}")), true),
        (with(&format!("sslmode=verify-full&sslrootcert={ca}")), true),
        (
            format!(
                "postgres://postgres@localhost:{port}/{db}?sslmode=verify-full&sslrootcert={ca}"
            ),
            true,
        ),
    ];
    for (u, tls) in cases {
        let store = open(&u).await.unwrap_or_else(|e| panic!("{u}: {e}"));
        assert_eq!(encrypted(&admin, &db).await, Some(tls), "{u}");
        drop(store);
        // Connections close with the store's pool; wait for them to go
        // (up to 10 s on a loaded machine).
        for _ in 0..500 {
            if encrypted(&admin, &db).await.is_none() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    // A certificate that does not chain to the given roots (the built-in
    // public ones here) is refused, naming the cause.
    let e = open(&with("sslmode=verify-full")).await.err().unwrap();
    assert!(e.contains("invalid peer certificate"), "{e}");
    // A name the certificate does not hold: refused by verify-full, not by
    // verify-ca (hostaddr connects; the name is what is checked).
    let elsewhere = |mode: &str| {
        format!(
            "postgres://postgres@db.example:{port}/{db}?hostaddr=127.0.0.1&sslmode={mode}&sslrootcert={ca}"
        )
    };
    let e = open(&elsewhere("verify-full")).await.err().unwrap();
    assert!(e.contains("not valid for name \"db.example\""), "{e}");
    open(&elsewhere("verify-ca")).await.unwrap();
    // A missing root file is named.
    let e = open(&with("sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"))
        .await
        .err()
        .unwrap();
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    assert!(!e.contains("password"), "{e}");
}
