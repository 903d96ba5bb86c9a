//! The official Python SDKs (`anthropic`, `openai`) as clients: scripts in
//! `tests/sdk/` drive the gateway and print, as one JSON object, what the SDK
//! made of its answers. The SDKs live in `tests/sdk/.venv`, made by
//! `bash tests/sdk/install.sh` (CI runs it; a developer without it sees the
//! SDK tests skipped).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// How long one script may run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk")
}

/// The venv's Python, or `None` (after saying so) when the venv is missing.
/// Under CI a missing venv is a failure, not a skip.
pub fn python() -> Option<PathBuf> {
    let py = sdk_dir().join(".venv/bin/python");
    if py.exists() {
        return Some(py);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{} is missing: run `bash tests/sdk/install.sh` before the tests",
            py.display()
        );
    }
    eprintln!(
        "skipped: the SDK venv {} is missing (run `bash tests/sdk/install.sh`)",
        py.display()
    );
    None
}

/// Runs `tests/sdk/{script}.py` with `env` and returns what it printed, as
/// JSON. Panics, showing the script's stderr, when it fails or outlives
/// [`SCRIPT_TIMEOUT`]; with `SDK_DUMP` set, also shows what it printed.
/// Async so that the server under test, on the same
/// runtime, keeps answering while the script waits.
pub async fn run(python: &Path, script: &str, env: &[(&str, &str)]) -> Value {
    let path = sdk_dir().join(format!("{script}.py"));
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // The SDKs read their keys, base URLs and proxies from the environment
    // too: only what the test gives may steer them, and loopback stays direct.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        let upper = k.to_ascii_uppercase();
        if upper.starts_with("ANTHROPIC_")
            || upper.starts_with("OPENAI_")
            || upper.ends_with("_PROXY")
        {
            cmd.env_remove(&k);
        }
    }
    cmd.env("NO_PROXY", "*")
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd.envs(env.iter().copied());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", path.display()));
    let out = match tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output()).await {
        Ok(out) => out.unwrap_or_else(|e| panic!("running {script}.py: {e}")),
        Err(_) => panic!("{script}.py ran longer than {SCRIPT_TIMEOUT:?}"),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script}.py {env:?} failed ({}):\n{stderr}\nstdout: {stdout}",
        out.status
    );
    if std::env::var_os("SDK_DUMP").is_some() {
        eprintln!("{script}.py {env:?} printed:\n{stdout}");
    }
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("{script}.py printed no JSON ({e}):\n{stdout}\nstderr: {stderr}")
    })
}
