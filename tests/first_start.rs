//! TOLLGATE_ADMIN_PASSWORD counts on the first start only; a later start with
//! it set says so, with how to change the password, instead of ignoring it in
//! silence (the README's login would otherwise fail without a word).

mod common;

use common::process;

#[tokio::test]
async fn an_ignored_admin_password_is_reported_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let db = dir.path().join("tollgate.db");
    std::fs::write(&config, format!("[database]\npath = {:?}\n", db)).unwrap();

    let mut first = process::start(dir.path(), "first", &config, &[]).await;
    first.kill();
    let log = std::fs::read_to_string(&first.log).unwrap();
    assert!(log.contains("First start"), "{log}");
    assert!(!log.contains("is set but ignored"), "{log}");

    let mut second = process::start(dir.path(), "second", &config, &[]).await;
    second.kill();
    let log = std::fs::read_to_string(&second.log).unwrap();
    assert!(
        log.contains("TOLLGATE_ADMIN_PASSWORD is set but ignored")
            && log.contains("tollgate user reset-password admin"),
        "{log}"
    );
}
