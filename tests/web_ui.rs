//! The web page end to end: starts the real `tollgate` binary on a free
//! loopback port with a temporary database, then runs the browser script
//! `tests/e2e/ui.mjs` (playwright-core driving Debian's Chromium) against it.
//! Screenshots land in `test-artifacts/web-ui/`.
//!
//! Needs `/usr/bin/chromium` and `tests/e2e/node_modules` (`tests/e2e/install.sh`
//! installs both). Without them the test **fails** with a message saying what
//! to install, because `cargo test` hides a passing test's output: a skip that
//! reports "ok" lets everyone believe the page was tested when it was not.
//! To skip it knowingly, set `TOLLGATE_SKIP_WEB_UI=1`; then `cargo test`
//! reports "ok" for a test that did not run, which the variable's name says
//! you asked for. Under CI (env `CI` set) a missing install fails even then.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN_PASSWORD: &str = "web-ui-admin-password";

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
        .port()
}

fn missing_prerequisites(e2e: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    if !Path::new("/usr/bin/chromium").exists() {
        missing.push("/usr/bin/chromium".to_owned());
    }
    if !e2e.join("node_modules/playwright-core").exists() {
        missing.push(format!(
            "{}",
            e2e.join("node_modules/playwright-core").display()
        ));
    }
    if Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        missing.push("node".to_owned());
    }
    missing
}

fn wait_healthy(base: &str, server: &mut Server, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = base.trim_start_matches("http://").to_owned();
    loop {
        if let Some(status) = server.0.try_wait().expect("try_wait") {
            panic!(
                "tollgate exited early ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            use std::io::{Read, Write};
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let req = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            let mut out = String::new();
            if s.write_all(req.as_bytes()).is_ok()
                && s.read_to_string(&mut out).is_ok()
                && out.starts_with("HTTP/1.1 200")
            {
                return;
            }
        }
        if Instant::now() > deadline {
            panic!(
                "tollgate did not answer /health within 30 s:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn web_page_end_to_end_in_chromium() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let e2e = root.join("tests/e2e");
    let missing = missing_prerequisites(&e2e);
    if !missing.is_empty() {
        let msg = format!(
            "web UI test needs {}; run `bash tests/e2e/install.sh` to install them",
            missing.join(", ")
        );
        if std::env::var_os("CI").is_some() {
            panic!("{msg} (under CI the web page must be tested)");
        }
        if std::env::var_os("TOLLGATE_SKIP_WEB_UI").is_none_or(|v| v != "1") {
            panic!(
                "{msg}, or set TOLLGATE_SKIP_WEB_UI=1 to skip this test knowingly \
                 (the web page is then not tested)"
            );
        }
        eprintln!("SKIPPED (TOLLGATE_SKIP_WEB_UI=1): {msg}");
        return;
    }

    // A mock upstream for the metered call the browser test makes.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mock = rt.block_on(common::mock::Mock::start());

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "[providers.aiml]\nbase_url = \"{}\"\napi_key = \"sk-e2e-provider-key\"\n\n\
             [oauth.corp]\nname = \"Corp SSO\"\nclient_id = \"e2e\"\nclient_secret = \"e2e-secret\"\n\
             auth_url = \"{0}/oauth/authorize\"\ntoken_url = \"{0}/oauth/token\"\n\
             userinfo_url = \"{0}/oauth/userinfo\"\n",
            mock.base("aiml")
        ),
    )
    .expect("config file");
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    // The page on the store the suite runs on (TOLLGATE_TEST_BACKEND).
    let db = if common::pg::backend_is_postgres() {
        common::pg::fresh_database_blocking("webui").expect("TOLLGATE_TEST_PG_URL")
    } else {
        dir.path().join("tollgate.db").to_str().unwrap().to_owned()
    };
    let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--db"])
        .arg(&db)
        // A working directory of its own: its ./config.toml points aiml at the mock.
        .current_dir(dir.path())
        .env("TOLLGATE_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env_remove("TOLLGATE_LISTEN")
        .env_remove("TOLLGATE_DB")
        .env_remove("TOLLGATE_DATABASE_URL")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log clone"))
        .stderr(log)
        .spawn()
        .expect("start tollgate");
    let mut server = Server(child);
    wait_healthy(&base, &mut server, &log_path);

    let artifacts = root.join("test-artifacts/web-ui");
    let out = Command::new("node")
        .arg(e2e.join("ui.mjs"))
        .args([&base, ADMIN_PASSWORD])
        .arg(&artifacts)
        .current_dir(&e2e)
        .stdin(Stdio::null())
        .output()
        .expect("run node tests/e2e/ui.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    drop(server);
    let upstream = mock.generation_calls();
    if out.status.success() {
        assert!(
            !upstream.is_empty(),
            "the browser test's metered call reached the mock upstream"
        );
    }
    drop(rt);
    assert!(
        out.status.success(),
        "the browser test failed ({}); screenshots in {}\n--- ui.mjs stdout\n{stdout}\n--- ui.mjs stderr\n{stderr}\n--- server log\n{}",
        out.status,
        artifacts.display(),
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
}
