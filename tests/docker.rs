//! The deployment files in `deploy/` and the `Dockerfile`, held to the code:
//! the Grafana dashboard queries only metrics the server exports (and
//! docs/operations.md names every one), the Dockerfile's command starts the
//! binary, the systemd unit keeps its hardening, and the image is built and
//! answers `/health` when a container engine is present (skipped with a
//! message otherwise: this test cannot build it without one).

mod common;

use common::mock::{use_mock, Mock};
use common::TestServer;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Writes past the test harness's capture, so that `cargo test` shows it.
fn tell(msg: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

/// Every `tollgate_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("tollgate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The metric names of the samples in a Prometheus text exposition
/// (`name{labels} value` or `name value`; comments skipped).
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// A histogram's samples are `NAME_bucket`, `NAME_sum`, `NAME_count`.
fn family(sample: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| sample.strip_suffix(s))
        .unwrap_or(sample)
}

/// Every string under a key named `expr`, `query` or `definition`.
fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => queries(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

/// Calls that make the server export every metric it has: a whole answer
/// (requests, duration, tokens, cost), a stream (time to first token), and
/// an upstream error that is retried.
async fn exercise(s: &TestServer, key: &str) {
    let call = |body: Value| {
        s.client
            .post(s.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let hi = json!([{"role": "user", "content": "hi"}]);
    let r = call(json!({"model": "aiml/m1", "messages": hi}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = call(json!({"model": "aiml/m1", "messages": hi, "stream": true}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap();
    let r = call(json!({"model": "aiml/error:500", "messages": hi}))
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
}

#[tokio::test]
async fn the_dashboard_queries_only_metrics_the_server_exports() {
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana-dashboard.json"))
        .expect("deploy/grafana-dashboard.json is JSON");
    assert!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion"
    );
    let vars = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    assert!(
        vars.iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "a Prometheus data source variable"
    );
    let panels = dashboard["panels"].as_array().expect("panels");
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"].as_array().expect("a panel has targets");
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
    }
    let mut texts = Vec::new();
    queries(&dashboard, &mut texts);
    let wanted: BTreeSet<String> = texts.iter().flat_map(|q| metric_names(q)).collect();
    assert!(
        !wanted.is_empty(),
        "the dashboard queries no tollgate metric"
    );

    let mock = Mock::start().await;
    let s = TestServer::start_with(|cfg| {
        use_mock(cfg, &mock, &["aiml"]);
        // A price, so that the cost counter moves.
        cfg.pricing.insert(
            "aiml/m1".into(),
            tollgate::config::PricingConfig {
                prompt: 1.0,
                completion: 2.0,
                max_output_tokens: None,
            },
        );
    })
    .await;
    let (_, _, key) = s.user_with_key("grafana", Some("enterprise")).await;
    exercise(&s, &key).await;
    let admin = s.admin_token().await;

    // Serving threads add their counts when they go idle: poll briefly.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (text, have) = loop {
        let r = s.get_as("/metrics", &admin).await;
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        let have = exported(&text);
        if wanted.is_subset(&have) || Instant::now() >= deadline {
            break (text, have);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let missing: Vec<&String> = wanted.difference(&have).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics does not export: {missing:?}\n{text}"
    );

    // The other way: every metric the server exports is on the dashboard and
    // documented in docs/operations.md.
    let families: BTreeSet<&str> = have
        .iter()
        .filter(|n| n.starts_with("tollgate_"))
        .map(|n| family(n))
        .collect();
    let charted: BTreeSet<&str> = wanted.iter().map(|n| family(n)).collect();
    let operations = read("docs/operations.md");
    for f in &families {
        assert!(charted.contains(f), "{f} is on no dashboard panel");
        assert!(
            operations.contains(&format!("`{f}`")),
            "docs/operations.md does not document {f}"
        );
    }
}

/// `ExecStart=` and the other keys of the unit, as (key, value) pairs.
fn unit_keys(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn the_systemd_unit_keeps_its_user_state_directory_and_hardening() {
    let text = read("deploy/tollgate.service");
    let keys = unit_keys(&text);
    let get = |k: &str| -> Vec<&str> {
        keys.iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let one = |k: &str| -> &str {
        let v = get(k);
        assert_eq!(v.len(), 1, "{k}= once in deploy/tollgate.service");
        v[0]
    };
    assert!(
        one("User") == "tollgate" || get("DynamicUser") == ["yes"],
        "its own user"
    );
    assert_eq!(one("StateDirectory"), "tollgate");
    for (k, v) in [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallFilter", "@system-service"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ] {
        assert_eq!(one(k), v, "{k}");
    }
    assert_eq!(get("CapabilityBoundingSet"), [""], "no capability");
    assert!(one("RestrictAddressFamilies").contains("AF_INET"));
    assert!(one("LimitNOFILE").parse::<u64>().is_ok());
    let exec = one("ExecStart");
    assert!(
        exec.contains(" serve ")
            && exec.contains("--config /etc/tollgate/config.toml")
            && exec.contains("--db /var/lib/tollgate/"),
        "{exec}"
    );

    // systemd's own check, where it is installed, pointed at this build.
    if Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        let dir = tempfile::tempdir().unwrap();
        let unit = dir.path().join("tollgate.service");
        std::fs::write(
            &unit,
            text.replace("/usr/local/bin/tollgate", env!("CARGO_BIN_EXE_tollgate")),
        )
        .unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&unit)
            .output()
            .unwrap();
        // A complaint about the file names it and a line (`PATH:12: Unknown key …`);
        // complaints about the host (no systemd running here) do not.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let at = format!("{}:", unit.display());
        let about_the_file: Vec<&str> = stderr.lines().filter(|l| l.contains(&at)).collect();
        assert!(about_the_file.is_empty(), "{}", about_the_file.join("\n"));
    } else {
        tell("note: systemd-analyze is not installed; the unit was checked by its keys only");
    }
}

/// The `CMD` of the Dockerfile as a list of words.
fn dockerfile_cmd() -> Vec<String> {
    let text = read("Dockerfile");
    let line = text
        .lines()
        .rfind(|l| l.starts_with("CMD "))
        .expect("the Dockerfile has a CMD");
    serde_json::from_str(line.trim_start_matches("CMD ").trim()).expect("CMD in its JSON form")
}

/// `GET /health` over a plain TCP connection: (status line, body).
fn health(addr: &str) -> Option<(String, String)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let req = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_owned(), body.to_owned()))
}

fn wait_healthy(addr: &str, within: Duration, mut alive: impl FnMut() -> bool) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Some((status, body)) = health(addr) {
            if status.starts_with("HTTP/1.1 200") {
                return body;
            }
        }
        assert!(alive(), "the server exited before /health answered");
        assert!(
            Instant::now() < deadline,
            "/health did not answer 200 at {addr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The image's command, run here: its flags must be ones the binary takes.
#[test]
fn the_dockerfile_command_starts_the_server() {
    let cmd = dockerfile_cmd();
    assert_eq!(cmd.first().map(String::as_str), Some("serve"), "{cmd:?}");
    assert!(cmd.iter().any(|w| w == "0.0.0.0:8000"), "{cmd:?}");
    let dir = tempfile::tempdir().unwrap();
    let port = common::process::free_port();
    let args: Vec<String> = cmd
        .iter()
        .map(|w| {
            w.replace("0.0.0.0:8000", &format!("127.0.0.1:{port}"))
                .replace("/var/lib/tollgate", dir.path().to_str().unwrap())
        })
        .collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(&args)
        .current_dir(dir.path())
        .env("TOLLGATE_ADMIN_PASSWORD", "docker-cmd-password")
        .env_remove("TOLLGATE_LISTEN")
        .env_remove("TOLLGATE_DB")
        .env_remove("TOLLGATE_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tollgate");
    let body = wait_healthy(
        &format!("127.0.0.1:{port}"),
        Duration::from_secs(30),
        || child.try_wait().ok().flatten().is_none(),
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(body.contains("\"ok\""), "{body}");
    assert!(
        dir.path().join("tollgate.db").exists(),
        "the database is where the CMD says"
    );
}

/// The first of docker and podman whose `info` succeeds.
fn container_engine() -> Option<&'static str> {
    ["docker", "podman"].into_iter().find(|e| {
        Command::new(e)
            .arg("info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Removes the container and the image when the test ends, however it ends.
struct Cleanup {
    engine: &'static str,
    container: Option<String>,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(c) = &self.container {
            let _ = Command::new(self.engine)
                .args(["rm", "-f", c])
                .stdout(Stdio::null())
                .status();
        }
        let _ = Command::new(self.engine)
            .args(["rmi", "-f", &self.image])
            .stdout(Stdio::null())
            .status();
    }
}

fn run(engine: &str, args: &[&str]) -> String {
    let out = Command::new(engine)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("{engine} {args:?}: {e}"));
    assert!(out.status.success(), "{engine} {args:?} failed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_docker_image_builds_and_answers_health() {
    let Some(engine) = container_engine() else {
        tell(
            "SKIPPED: no container engine (docker info and podman info failed) — \
             the Dockerfile was not built",
        );
        return;
    };
    let image = format!("tollgate-test:{}", std::process::id());
    let mut cleanup = Cleanup {
        engine,
        container: None,
        image: image.clone(),
    };
    let root = repo();
    run(
        engine,
        &["build", "-t", &image, root.to_str().expect("a UTF-8 path")],
    );
    let user = run(
        engine,
        &["image", "inspect", "--format", "{{.Config.User}}", &image],
    );
    assert!(
        !user.is_empty() && !user.starts_with("0") && !user.starts_with("root"),
        "the image runs as a non-root user, not {user:?}"
    );
    let id = run(
        engine,
        &[
            "run",
            "-d",
            "-p",
            "127.0.0.1::8000",
            "-e",
            "TOLLGATE_ADMIN_PASSWORD=docker-test-password",
            &image,
        ],
    );
    cleanup.container = Some(id.clone());
    // `127.0.0.1:49153` (docker may add an IPv6 line).
    let port = run(engine, &["port", &id, "8000/tcp"]);
    let addr = port
        .lines()
        .find(|l| l.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("no published port in {port:?}"))
        .to_owned();
    let body = wait_healthy(&addr, Duration::from_secs(60), || {
        run(engine, &["inspect", "--format", "{{.State.Running}}", &id]) == "true"
    });
    assert!(body.contains("\"ok\""), "{body}");
    let logs = Command::new(engine).args(["logs", &id]).output().unwrap();
    let logs = String::from_utf8_lossy(&logs.stderr);
    assert!(
        logs.contains("/var/lib/tollgate/tollgate.db"),
        "the database is in the volume: {logs}"
    );
    drop(cleanup);
}
