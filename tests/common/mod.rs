//! Test harness: a real tollgate server on 127.0.0.1:0 with a temporary SQLite
//! file (or, with `TOLLGATE_TEST_BACKEND=postgres`, a fresh PostgreSQL
//! database), and helpers to sign in and mint keys.

#![allow(dead_code)]

pub mod mock;
pub mod pg;
pub mod process;
pub mod raw;
pub mod sdk;

use serde_json::{json, Value};
use std::net::SocketAddr;
use tollgate::config::Config;
use tollgate::state::AppState;

pub const ADMIN_PASSWORD: &str = "admin-password-1";

pub struct TestServer {
    pub addr: SocketAddr,
    pub url: String,
    pub state: AppState,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// A configuration for tests: loopback listener, database in `dir`.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut cfg = Config::default();
    cfg.server.listen = "127.0.0.1:0".into();
    cfg.database.path = dir.join("tollgate.db");
    if pg::backend_is_postgres() {
        cfg.database.url = pg::fresh_database_blocking("suite");
        assert!(
            cfg.database.url.is_some(),
            "TOLLGATE_TEST_BACKEND=postgres needs TOLLGATE_TEST_PG_URL"
        );
    }
    // The mocks are on loopback: a proxy in the developer's environment
    // must not carry the tests' calls.
    cfg.routing.proxy = Some("none".into());
    cfg
}

/// The `--db` argument naming `cfg`'s database (a file or a PostgreSQL URL).
pub fn db_arg(cfg: &Config) -> String {
    match &cfg.database.url {
        Some(u) => u.clone(),
        None => cfg.database.path.to_str().unwrap().to_owned(),
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(edit: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = test_config(dir.path());
        edit(&mut cfg);
        Self::start_in(dir, cfg).await
    }

    /// Starts a server on an existing directory and config (for restarts).
    pub async fn start_in(dir: tempfile::TempDir, cfg: Config) -> TestServer {
        cfg.validate(None).expect("test config is valid");
        let (state, _) = tollgate::build_state(cfg, Some(ADMIN_PASSWORD.into()))
            .await
            .expect("state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(tollgate::serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            url: format!("http://{addr}"),
            state,
            dir,
            client: reqwest::Client::new(),
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// Stops the server gracefully and gives back its directory and config.
    pub async fn stop(mut self) -> (tempfile::TempDir, Config) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
        let cfg = (*self.state.config).clone();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (dir, cfg)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    /// Signs in and returns the access token.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let r = self
            .client
            .post(self.url("/auth/login"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "login of {username} failed");
        let v: Value = r.json().await.unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn admin_token(&self) -> String {
        self.login("admin", ADMIN_PASSWORD).await
    }

    /// Creates a user through the admin API; returns its id.
    pub async fn create_user(&self, username: &str, password: &str, plan: Option<&str>) -> i64 {
        let admin = self.admin_token().await;
        let mut body = json!({"username": username, "password": password});
        if let Some(p) = plan {
            body["plan"] = json!(p);
        }
        let r = self
            .client
            .post(self.url("/admin/users"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "creating {username}");
        r.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
    }

    /// Mints a key with `token`; returns (id, secret).
    pub async fn create_key(&self, token: &str, body: Value) -> (i64, String) {
        let r = self
            .client
            .post(self.url("/api/keys"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "creating a key");
        let v: Value = r.json().await.unwrap();
        (
            v["id"].as_i64().unwrap(),
            v["api_key"].as_str().unwrap().to_owned(),
        )
    }

    /// A user with a key: (user id, token, key).
    pub async fn user_with_key(&self, username: &str, plan: Option<&str>) -> (i64, String, String) {
        let pw = "user-password-1";
        let id = self.create_user(username, pw, plan).await;
        let token = self.login(username, pw).await;
        let (_, key) = self.create_key(&token, json!({"name": "test"})).await;
        (id, token, key)
    }
}

/// Asserts the OpenAI error shape and returns (type, code).
pub async fn assert_error(r: reqwest::Response, status: u16) -> Value {
    assert_eq!(r.status().as_u16(), status, "status");
    let v: Value = r.json().await.expect("error body is JSON");
    let e = &v["error"];
    for f in ["message", "type", "code", "param"] {
        assert!(e.get(f).is_some(), "error lacks {f}: {v}");
    }
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    v
}

/// Polls `check` every 100 ms until it returns true; panics after 5 s (SPEC §2:
/// changes by another process reach the server within 5 seconds).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if check().await {
            return;
        }
        if std::time::Instant::now() >= deadline {
            panic!("not effective within 5 s: {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

impl TestServer {
    /// GET `path` with `Authorization: Bearer <cred>`.
    pub async fn get_as(&self, path: &str, cred: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(cred)
            .send()
            .await
            .unwrap()
    }

    /// The request log as an admin reads it (`GET /admin/requests?{query}`),
    /// newest first.
    pub async fn records(&self, query: &str) -> Vec<Value> {
        let admin = self.admin_token().await;
        let v: Value = self
            .get_as(&format!("/admin/requests?{query}"), &admin)
            .await
            .json()
            .await
            .unwrap();
        v["data"]
            .as_array()
            .unwrap_or_else(|| panic!("no records: {v}"))
            .clone()
    }

    /// Status of `GET /auth/me` with `Authorization: Bearer <cred>`.
    pub async fn me_status(&self, cred: &str) -> u16 {
        self.get_as("/auth/me", cred).await.status().as_u16()
    }

    /// Moves the server clock so that it reads `target` (Unix seconds) now.
    /// The user's balance this period, once every settled call is written
    /// (replicas on PostgreSQL charge a call when its record is written).
    pub async fn balance(&self, user_id: i64) -> tollgate::metering::ledger::Balance {
        self.balances(user_id, None).await.0
    }

    /// The key's balance this period (see [`TestServer::balance`]).
    pub async fn key_balance(&self, key_id: i64) -> tollgate::metering::ledger::Balance {
        self.balances(0, Some(key_id)).await.1.unwrap()
    }

    async fn balances(
        &self,
        user_id: i64,
        key_id: Option<i64>,
    ) -> (
        tollgate::metering::ledger::Balance,
        Option<tollgate::metering::ledger::Balance>,
    ) {
        self.state.metering.writer.flush().await;
        let p = tollgate::metering::period_of(self.state.clock.now());
        let (user, key, _) = self
            .state
            .metering
            .balances(user_id, key_id, &p)
            .await
            .expect("balances");
        (user, key)
    }

    pub fn set_clock(&self, target: i64) {
        let now = self.state.clock.now().timestamp();
        self.state.clock.advance(target - now);
    }
}

/// Asserts an error with `status`, `type` and `code` (`None`: JSON null) and returns the body.
pub async fn assert_error_is(
    r: reqwest::Response,
    status: u16,
    kind: &str,
    code: Option<&str>,
) -> Value {
    let v = assert_error(r, status).await;
    assert_eq!(v["error"]["type"], json!(kind), "{v}");
    assert_eq!(v["error"]["code"], json!(code), "{v}");
    v
}
