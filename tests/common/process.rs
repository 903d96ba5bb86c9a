//! The real binary as a child process (`tollgate serve`), for tests that kill
//! it or run several of it.

use super::ADMIN_PASSWORD;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `tollgate serve`; killed if the test ends early.
pub struct Process {
    pub child: Option<Child>,
    pub url: String,
    pub log: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Process {
    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Sends `signal` (`"STOP"`, `"CONT"`, …) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{signal} {pid}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `tollgate serve --config config` in `dir` with `args` added, logging
/// to `dir/<name>.log`, and waits until `/health` answers.
pub async fn start(dir: &Path, name: &str, config: &Path, args: &[&str]) -> Process {
    start_with(dir, name, config, args, "http", &reqwest::Client::new()).await
}

/// [`start`] for a server reached at `scheme` (`https` with
/// `[server] tls_cert`) through `client` (which trusts its certificate).
pub async fn start_with(
    dir: &Path,
    name: &str,
    config: &Path,
    args: &[&str],
    scheme: &str,
    client: &reqwest::Client,
) -> Process {
    let port = free_port();
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(args)
        .current_dir(dir)
        .env("TOLLGATE_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file);
    for var in [
        "OPENROUTER_API_KEY",
        "GLAMA_API_KEY",
        "REQUESTY_API_KEY",
        "AIML_API_KEY",
        "TOLLGATE_LISTEN",
        "TOLLGATE_DB",
        "TOLLGATE_DATABASE_URL",
        "TOLLGATE_JWT_SECRET",
        "TOLLGATE_TLS_CERT",
        "TOLLGATE_TLS_KEY",
    ] {
        cmd.env_remove(var);
    }
    let child = cmd.spawn().expect("start tollgate");
    let p = Process {
        child: Some(child),
        url: format!("{scheme}://127.0.0.1:{port}"),
        log,
    };
    for _ in 0..300 {
        if let Ok(r) = client.get(p.url("/health")).send().await {
            if r.status() == 200 {
                return p;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "tollgate did not start: {}",
        std::fs::read_to_string(&p.log).unwrap_or_default()
    );
}

/// Signs in at the binary `url`; the access token.
pub async fn login(c: &reqwest::Client, url: &str, user: &str, pw: &str) -> String {
    let v: serde_json::Value = c
        .post(format!("{url}/auth/login"))
        .json(&serde_json::json!({"username": user, "password": pw}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["access_token"].as_str().expect("a token").to_owned()
}

/// Creates user `load` on the enterprise plan and a key for it, at the
/// binary `url`; returns (admin token, user token, key).
pub async fn load_user(url: &str) -> (String, String, String) {
    let c = reqwest::Client::new();
    let admin = login(&c, url, "admin", ADMIN_PASSWORD).await;
    let r = c
        .post(format!("{url}/admin/users"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"username": "load", "password": "load-password-1", "plan": "enterprise"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let token = login(&c, url, "load", "load-password-1").await;
    let v: serde_json::Value = c
        .post(format!("{url}/api/keys"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "load"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (admin, token, v["api_key"].as_str().unwrap().to_owned())
}

/// One call of `aiml/usage:5:5` (the mock's provider `aiml`), streamed or
/// not; `Some(request id)` when the client got the whole answer.
pub async fn complete_call(
    c: &reqwest::Client,
    url: &str,
    key: &str,
    stream: bool,
) -> Option<String> {
    let body = serde_json::json!({"model": "aiml/usage:5:5", "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
    let r = c
        .post(format!("{url}/llm/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    let rid = r.headers()["x-request-id"].to_str().ok()?.to_owned();
    let text = r.text().await.ok()?;
    let complete = if stream {
        text.ends_with("data: [DONE]\n\n") && !text.contains("\"error\"")
    } else {
        serde_json::from_str::<serde_json::Value>(&text)
            .is_ok_and(|v| v["_usage_info"]["tokens_used"] == 10)
    };
    complete.then_some(rid)
}
