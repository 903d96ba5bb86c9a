//! A provider set up wrong or gone away, as the operator sees it: a
//! `base_url` without `/v1` names the URL that answered 404 and what to check
//! (in a call's error and in `providers --probe`, printed once), and an
//! unreachable provider's model list is logged when it fails and when it
//! recovers, not at every retry.

mod common;
use common::mock::Mock;
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// A config whose provider `nov1` points at the mock without the `/v1`.
fn nov1_config(mock: &Mock) -> String {
    format!(
        "[providers.nov1]\nbase_url = \"{}/nov1\"\n\n[routing]\nproxy = \"none\"\n",
        mock.url
    )
}

#[tokio::test]
async fn a_404_names_the_url_and_asks_about_v1() {
    let mock = Mock::start().await;
    let base = format!("{}/nov1", mock.url);
    let s = TestServer::start_with(|cfg| {
        cfg.providers.insert(
            "nov1".into(),
            tollgate::config::ProviderConfig {
                base_url: Some(base.clone()),
                ..Default::default()
            },
        );
    })
    .await;
    let (_, _, key) = s.user_with_key("alice", Some("enterprise")).await;
    let r = s
        .client
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "nov1/llama3", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.contains(&format!("POST {base}/chat/completions answered 404"))
            && m.contains("does it end in /v1?"),
        "{m}"
    );
    s.stop().await;
}

#[tokio::test]
async fn probe_names_the_url_that_answered_404_once() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, nov1_config(&mock)).unwrap();
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["providers", "--probe", "--config", cfg.to_str().unwrap()])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env_remove("OPENROUTER_API_KEY")
        .env_remove("GLAMA_API_KEY")
        .env_remove("REQUESTY_API_KEY")
        .env_remove("AIML_API_KEY")
        .output()
        .await
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{all}");
    let url = format!("GET {}/nov1/models answered 404", mock.url);
    assert_eq!(all.matches(&url).count(), 1, "said once: {all}");
    assert!(all.contains("does it end in /v1?"), "{all}");
}

/// The `tollgate serve` log lines about model lists.
fn model_list_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("model list"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn an_unreachable_provider_is_logged_once_and_its_recovery_once() {
    let dead = process::free_port();
    let back = process::free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[providers.dead]\nbase_url = \"http://127.0.0.1:{dead}/v1\"\n\n\
             [providers.back]\nbase_url = \"http://127.0.0.1:{back}/v1\"\n\n\
             [routing]\nproxy = \"none\"\n"
        ),
    )
    .unwrap();
    let db = dir.path().join("tollgate.db");
    let server = process::start(dir.path(), "serve", &cfg, &["--db", db.to_str().unwrap()]).await;

    // Both fail at the first fetch; then `back` comes up.
    eventually("both lists fail", || async {
        let lines = model_list_lines(&server.log);
        ["provider=dead", "provider=back"]
            .iter()
            .all(|p| lines.iter().any(|l| l.contains(p)))
    })
    .await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", back))
        .await
        .unwrap();
    let app = axum::Router::new().route(
        "/v1/models",
        axum::routing::get(|| async { axum::Json(json!({"data": [{"id": "m1"}]})) }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    // The retries 5 s after the first failure: the dead one fails again
    // (not logged), the other recovers (logged).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let lines = model_list_lines(&server.log);
    let about = |p: &str| -> Vec<&String> {
        lines
            .iter()
            .filter(|l| l.contains(&format!("provider={p}")))
            .collect()
    };
    let dead_lines = about("dead");
    assert_eq!(
        dead_lines.len(),
        1,
        "one warning for the dead one: {lines:#?}"
    );
    assert!(dead_lines[0].contains("WARN"), "{lines:#?}");
    let back_lines = about("back");
    assert_eq!(back_lines.len(), 2, "failed, then recovered: {lines:#?}");
    assert!(
        back_lines[1].contains("INFO") && back_lines[1].contains("available again"),
        "{lines:#?}"
    );
}

/// A provider whose model list fails is asked again when its backoff is
/// over, not by every `GET /v1/models` meanwhile (a slow or dead provider
/// would otherwise hold up every listing and be hammered by them).
#[tokio::test]
async fn a_failing_model_list_is_not_fetched_for_every_listing() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let counted = hits.clone();
    let app = axum::Router::new().route(
        "/v1/models",
        axum::routing::get(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async {
                (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "down for maintenance",
                )
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let s = TestServer::start_with(|cfg| {
        cfg.providers.insert(
            "flaky".into(),
            tollgate::config::ProviderConfig {
                base_url: Some(format!("http://127.0.0.1:{port}/v1")),
                ..Default::default()
            },
        );
    })
    .await;
    let (_, _, key) = s.user_with_key("alice", Some("enterprise")).await;
    let list = || async {
        let r = s
            .client
            .get(s.url("/v1/models"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    };
    // The first failure (the background refresh's or this listing's)
    // starts the 5 s backoff; the listings after it do not fetch.
    list().await;
    eventually("the list failed once", || async {
        hits.load(Ordering::SeqCst) >= 1
    })
    .await;
    let before = hits.load(Ordering::SeqCst);
    for _ in 0..5 {
        list().await;
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before,
        "listings fetched the failing list"
    );
    s.stop().await;
}
