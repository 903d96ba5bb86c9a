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
