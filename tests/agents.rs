//! The real coding agents as clients: Claude Code (`claude -p`) on
//! `/v1/messages` and the Codex CLI (`codex exec`) on `/v1/responses`, each
//! to an OpenAI-kind provider (`aiml`, translated) and an Anthropic-kind one
//! (`anth`, passed through) on the mock upstream, set up as the README's
//! "Connecting clients" says. Every call the mock received must have a usage
//! record with the usage the mock reported.
//!
//! The agents are pinned in `tests/agents/package.json` and installed by
//! `bash tests/agents/install.sh` (CI runs it; a developer without it sees
//! these tests skipped). Each runs in a temporary home with nothing of this
//! process's environment but `PATH`, and with every proxy variable pointing
//! at a sentinel that refuses and records connections: an agent that tries
//! to reach anything but the gateway on loopback (its vendor's telemetry,
//! update checks, plugin catalogues) fails the test.

mod common;
use common::mock::{use_mock, Mock, Recorded};
use common::TestServer;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tollgate::config::{ProviderApi, Secret};

const USER: &str = "dana";
const ANTH_KEY: &str = "sk-ant-test";
/// How long one agent run may take before it is killed.
const RUN_TIMEOUT: Duration = Duration::from_secs(45);

/// The installed agent `name` (`claude`, `codex`), or `None` (after saying
/// so) when it is missing. Under CI a missing agent is a failure.
fn agent(name: &str) -> Option<PathBuf> {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/agents/node_modules/.bin")
        .join(name);
    if bin.exists() {
        return Some(bin);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{} is missing: run `bash tests/agents/install.sh` before the tests",
            bin.display()
        );
    }
    eprintln!(
        "skipped: {} is missing (run `bash tests/agents/install.sh`)",
        bin.display()
    );
    None
}

/// What every proxy variable points at: it records the first line of each
/// connection (`CONNECT host:443 …`, `GET http://…`) and refuses it.
struct Sentinel {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Sentinel {
    async fn start() -> Sentinel {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(vec![]));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0; 1024];
                    let n = conn.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]);
                    let first = head.lines().next().unwrap_or("(nothing)").to_owned();
                    log.lock().unwrap().push(first);
                    let refusal =
                        "HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                    let _ = conn.write_all(refusal.as_bytes()).await;
                });
            }
        });
        Sentinel { url, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

struct Env {
    mock: Mock,
    s: TestServer,
    key: String,
    sentinel: Sentinel,
    /// The agent's home, outside the system's temporary directory (Codex
    /// declines to set up its helpers under it, and says so).
    home: tempfile::TempDir,
}

/// The gateway with `aiml` (OpenAI kind) and `anth` (Anthropic kind) on the
/// mock, a user `dana` on the enterprise plan with a key, and a home for the
/// agent.
async fn setup() -> Env {
    let mock = Mock::start().await;
    let s = TestServer::start_with(|cfg| {
        use_mock(cfg, &mock, &["aiml"]);
        let p = cfg.providers.entry("anth".into()).or_default();
        p.base_url = Some(mock.base("anth"));
        p.api_key = Secret::new(ANTH_KEY);
        p.api = Some(ProviderApi::Anthropic);
    })
    .await;
    let (_, _, key) = s.user_with_key(USER, Some("enterprise")).await;
    let home = tempfile::Builder::new()
        .prefix("agent-home")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    Env {
        mock,
        s,
        key,
        sentinel: Sentinel::start().await,
        home,
    }
}

/// How an agent run ended.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Env {
    /// Runs `bin args` in a directory of the temporary home with only `PATH`,
    /// the home, the proxies and `env` in its environment, and asserts that
    /// it succeeded without reaching past the gateway. Kills it after
    /// [`RUN_TIMEOUT`]; with `AGENT_DUMP` set, shows what it printed.
    async fn run(&self, bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
        let home = self.home.path();
        let (work, tmp) = (home.join("work"), home.join("tmp"));
        std::fs::create_dir_all(&work).unwrap();
        std::fs::create_dir_all(&tmp).unwrap();
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(args)
            .current_dir(&work)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("TMPDIR", &tmp)
            .env("LANG", "C.UTF-8")
            .env("TERM", "dumb")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that the agent's children (Codex's
            // launcher runs the native binary as one) can be ended with it.
            .process_group(0)
            .kill_on_drop(true);
        for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
            cmd.env(var, &self.sentinel.url)
                .env(var.to_ascii_lowercase(), &self.sentinel.url);
        }
        cmd.env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .envs(env.iter().copied());
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let out = collect(child.stdout.take().unwrap());
        let err = collect(child.stderr.take().unwrap());
        let pid = child.id().expect("the agent's pid");
        let status = tokio::time::timeout(RUN_TIMEOUT, child.wait()).await;
        kill_group(pid);
        let Ok(status) = status else {
            panic!(
                "{} {args:?} ran longer than {RUN_TIMEOUT:?}, killed; stdout:\n{}\nstderr:\n{}",
                bin.display(),
                out.text().await,
                err.text().await,
            );
        };
        let run = Run {
            status: status.unwrap(),
            stdout: out.text().await,
            stderr: err.text().await,
        };
        if std::env::var_os("AGENT_DUMP").is_some() {
            eprintln!(
                "{} {args:?} ({}, {:?}):\nstdout:\n{}\nstderr:\n{}",
                bin.display(),
                run.status,
                started.elapsed(),
                run.stdout,
                run.stderr
            );
        }
        assert!(
            run.status.success(),
            "{} {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            bin.display(),
            run.status,
            run.stdout,
            run.stderr
        );
        let seen = self.sentinel.seen();
        assert!(
            seen.is_empty(),
            "the agent reached past the gateway: {seen:?}"
        );
        run
    }

    /// The generation calls the mock received (at least one), each to the
    /// path of `provider`'s dialect, none carrying the user's key.
    fn upstream(&self, provider: &str) -> Vec<Recorded> {
        let calls = self.mock.generation_calls();
        assert!(!calls.is_empty(), "the mock received no call");
        let path = match provider {
            "anth" => "/messages",
            _ => "/chat/completions",
        };
        for c in &calls {
            assert_eq!(c.provider, provider, "{c:?}");
            assert_eq!(c.path, path, "{c:?}");
            for (name, v) in &c.headers {
                let v = String::from_utf8_lossy(v.as_bytes());
                assert!(
                    !v.contains(&self.key),
                    "the user's key went upstream in {name}"
                );
            }
            if provider == "anth" {
                assert_eq!(c.headers["x-api-key"], ANTH_KEY);
                assert_eq!(c.headers["anthropic-version"], "2023-06-01");
            }
        }
        calls
    }

    /// Asserts one usage record per call in `calls`, each for the model
    /// the agent named, with the usage the mock reported for it.
    async fn assert_records(&self, provider: &str, endpoint: &str, calls: &[Recorded]) {
        let admin = self.s.admin_token().await;
        let path = format!("/admin/requests?user={USER}&limit=500");
        let mut rows = vec![];
        // The writer may lag the answer by a moment.
        for _ in 0..100 {
            let v: Value = self.s.get_as(&path, &admin).await.json().await.unwrap();
            rows = v["data"].as_array().cloned().unwrap_or_default();
            if rows.len() >= calls.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut want: Vec<(String, i64, i64)> = calls
            .iter()
            .map(|c| {
                let model = c.body["model"].as_str().expect("upstream model");
                let (prompt, completion) = mock_usage(model);
                (format!("{provider}/{model}"), prompt, completion)
            })
            .collect();
        let mut got: Vec<(String, i64, i64)> = rows
            .iter()
            .map(|r| {
                assert_eq!(r["endpoint"], endpoint, "{r}");
                assert_eq!(r["provider"], provider, "{r}");
                assert_eq!(r["outcome"], "ok", "{r}");
                assert_eq!(r["http_status"], 200, "{r}");
                assert_eq!(r["estimated"], false, "{r}");
                let (p, c) = (tokens(r, "prompt_tokens"), tokens(r, "completion_tokens"));
                assert_eq!(tokens(r, "total_tokens"), p + c, "{r}");
                (r["model"].as_str().unwrap().to_owned(), p, c)
            })
            .collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "usage records against upstream calls: {rows:#?}");
    }
}

/// Ends what is left of the process group `pgid`.
fn kill_group(pgid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

fn tokens(record: &Value, field: &str) -> i64 {
    record[field]
        .as_i64()
        .unwrap_or_else(|| panic!("no {field} in {record}"))
}

/// The usage the mock reports for an upstream model: its `usage:IN:OUT`
/// flag (every model of these tests has one).
fn mock_usage(model: &str) -> (i64, i64) {
    let flag = model
        .split('+')
        .find_map(|f| f.strip_prefix("usage:"))
        .unwrap_or_else(|| panic!("{model} has no usage flag"));
    let (p, c) = flag.split_once(':').expect("usage:IN:OUT");
    (p.parse().unwrap(), c.parse().unwrap())
}

/// A pipe being read to its end in the background.
struct Collected(tokio::task::JoinHandle<Vec<u8>>, Arc<Mutex<Vec<u8>>>);

fn collect(mut pipe: impl AsyncRead + Unpin + Send + 'static) -> Collected {
    let buf = Arc::new(Mutex::new(vec![]));
    let b = buf.clone();
    let task = tokio::spawn(async move {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            b.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
        b.lock().unwrap().clone()
    });
    Collected(task, buf)
}

impl Collected {
    /// All of it once the pipe closed, or what came so far when it stays
    /// open a second after the agent ended (a grandchild may hold it).
    async fn text(self) -> String {
        let bytes = match tokio::time::timeout(Duration::from_secs(1), self.0).await {
            Ok(Ok(bytes)) => bytes,
            _ => self.1.lock().unwrap().clone(),
        };
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// One test per provider kind: `name::aiml` and `name::anth`.
macro_rules! both_providers {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn aiml() {
                super::$name("aiml").await
            }
            #[tokio::test]
            async fn anth() {
                super::$name("anth").await
            }
        }
    )*};
}

both_providers!(
    claude_code_says_hello,
    claude_code_tool_round_trip,
    codex_says_hello,
    codex_tool_round_trip,
);

// ---- Claude Code ---------------------------------------------------------

/// Runs `claude -p PROMPT --output-format json` with its models on provider
/// `p` (the main one `{p}/{model}`) and returns the result object it printed.
/// Its key goes as `ANTHROPIC_AUTH_TOKEN` (Bearer) to `anth` and as
/// `ANTHROPIC_API_KEY` (`x-api-key`) to `aiml`, so both ways are used.
async fn run_claude(e: &Env, claude: &Path, p: &str, model: &str) -> Value {
    let home = e.home.path();
    let config = home.join(".claude");
    let main = format!("{p}/{model}");
    // A background call (titles, summaries) would go to the haiku model:
    // its own usage tells its records apart.
    let haiku = format!("{p}/usage:5:6");
    let key_var = match p {
        "anth" => "ANTHROPIC_AUTH_TOKEN",
        _ => "ANTHROPIC_API_KEY",
    };
    let run = e
        .run(
            claude,
            &["-p", "Say hello", "--output-format", "json"],
            &[
                ("ANTHROPIC_BASE_URL", &e.s.url),
                (key_var, &e.key),
                ("ANTHROPIC_MODEL", &main),
                ("ANTHROPIC_DEFAULT_HAIKU_MODEL", &haiku),
                ("CLAUDE_CONFIG_DIR", config.to_str().unwrap()),
                // Telemetry, error reports and update checks would go to
                // Anthropic's hosts (the sentinel sees them without this).
                ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
                ("DISABLE_AUTOUPDATER", "1"),
            ],
        )
        .await;
    let out: Value = serde_json::from_str(run.stdout.trim()).unwrap_or_else(|err| {
        panic!(
            "claude printed no JSON ({err}):\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        )
    });
    assert_eq!(out["type"], "result", "{out}");
    assert_eq!(out["subtype"], "success", "{out}");
    assert_eq!(out["is_error"], false, "{out}");
    out
}

/// Claude Code's usage for `model`, as it read it from the gateway's answers.
fn claude_model_usage(out: &Value, model: &str) -> (i64, i64) {
    let u = &out["modelUsage"][model];
    let n = |f: &str| {
        u[f].as_i64()
            .unwrap_or_else(|| panic!("no modelUsage.{model}.{f} in {out}"))
    };
    (n("inputTokens"), n("outputTokens"))
}

/// Fields only the Responses API takes.
const RESPONSES_ONLY: [&str; 7] = [
    "input",
    "instructions",
    "include",
    "reasoning",
    "store",
    "text",
    "previous_response_id",
];
/// Fields only Anthropic's Messages API takes.
const ANTHROPIC_ONLY: [&str; 6] = [
    "system",
    "thinking",
    "context_management",
    "output_config",
    "metadata",
    "stop_sequences",
];

/// Checks the shape of a streamed request the gateway sent upstream for an
/// agent: Anthropic's for `anth`, chat completions for `aiml`, with the
/// agent's tools, and nothing the upstream's API does not take.
fn assert_upstream_shape(p: &str, body: &Value) {
    assert_eq!(body["stream"], true, "{body}");
    let tools = body["tools"].as_array().expect("the agent's tools");
    assert!(!tools.is_empty(), "{body}");
    let foreign: &[&str] = if p == "anth" {
        for t in tools {
            assert!(t["name"].is_string(), "{t}");
            assert!(t["input_schema"].is_object(), "{t}");
        }
        assert!(body["system"].is_string() || body["system"].is_array());
        &RESPONSES_ONLY
    } else {
        for t in tools {
            assert_eq!(t["type"], "function", "{t}");
            assert!(t["function"]["name"].is_string(), "{t}");
            assert!(t["function"]["parameters"].is_object(), "{t}");
        }
        assert_eq!(body["messages"][0]["role"], "system", "{body}");
        assert_eq!(body["stream_options"]["include_usage"], true, "{body}");
        &[RESPONSES_ONLY.as_slice(), ANTHROPIC_ONLY.as_slice()].concat()
    };
    for field in foreign {
        assert!(body.get(field).is_none(), "{field} went upstream: {body}");
    }
}

async fn claude_code_says_hello(p: &str) {
    let Some(claude) = agent("claude") else {
        return;
    };
    let e = setup().await;
    let out = run_claude(&e, &claude, p, "usage:12:34").await;
    assert_eq!(out["result"], "Hello world", "{out}");
    assert_eq!(out["num_turns"], 1, "{out}");
    assert_eq!(
        claude_model_usage(&out, &format!("{p}/usage:12:34")),
        (12, 34)
    );

    let calls = e.upstream(p);
    let main: Vec<_> = calls
        .iter()
        .filter(|c| c.body["model"] == "usage:12:34")
        .collect();
    assert_eq!(main.len(), 1, "{calls:#?}");
    assert_upstream_shape(p, &main[0].body);
    if p == "anth" {
        // Claude Code's betas, and the fields they enable, reach Anthropic.
        let beta = main[0]
            .headers
            .get("anthropic-beta")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no anthropic-beta upstream: {:?}", main[0].headers));
        assert!(beta.contains("claude-code-"), "anthropic-beta: {beta}");
        assert!(main[0].body["thinking"].is_object(), "{}", main[0].body);
    }
    e.assert_records(p, "messages", &calls).await;
}

/// The mock answers a call of the first tool Claude Code offers, with
/// arguments that tool does not take: Claude Code refuses them and sends
/// its error back as the tool's result, which the mock quotes.
async fn claude_code_tool_round_trip(p: &str) {
    let Some(claude) = agent("claude") else {
        return;
    };
    let e = setup().await;
    let out = run_claude(&e, &claude, p, "tool+usage:15:25").await;
    assert_eq!(out["num_turns"], 2, "{out}");
    let result = out["result"].as_str().expect("result text");
    assert!(
        result.starts_with("Tool said: <tool_use_error>"),
        "Claude Code ran the tool the mock called and sent back its error: {out}"
    );

    let calls = e.upstream(p);
    let turns: Vec<_> = calls
        .iter()
        .filter(|c| c.body["model"] == "tool+usage:15:25")
        .collect();
    assert_eq!(turns.len(), 2, "{calls:#?}");
    assert_upstream_shape(p, &turns[0].body);
    assert_tool_result_went_back(p, &turns[1].body);
    assert_eq!(
        claude_model_usage(&out, &format!("{p}/tool+usage:15:25")),
        (30, 50)
    );
    e.assert_records(p, "messages", &calls).await;
}

/// The second turn's history ends with the result of the mock's call, under
/// the id the mock gave it.
fn assert_tool_result_went_back(p: &str, body: &Value) {
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .unwrap_or_else(|| panic!("no messages in {body}"));
    if p == "anth" {
        assert_eq!(last["role"], "user", "{last}");
        let result = last["content"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["type"] == "tool_result"))
            .unwrap_or_else(|| panic!("no tool_result in {last}"));
        assert_eq!(result["tool_use_id"], "toolu_mock1", "{last}");
    } else {
        assert_eq!(last["role"], "tool", "{last}");
        assert_eq!(last["tool_call_id"], "call_mock1", "{last}");
    }
}

// ---- Codex CLI -----------------------------------------------------------

/// Runs `codex exec --json PROMPT` with the README's provider block pointing
/// at the gateway and `{p}/{model}` as its model; returns the JSON events it
/// printed.
async fn run_codex(e: &Env, codex: &Path, p: &str, model: &str) -> Vec<Value> {
    let codex_home = e.home.path().join(".codex");
    std::fs::create_dir_all(&codex_home).unwrap();
    // The README's recipe, and two switches without which Codex fetches
    // plugin catalogues (ChatGPT, GitHub) and sends analytics at startup.
    let config = format!(
        r#"model = "{p}/{model}"
model_provider = "tollgate"

[model_providers.tollgate]
name = "tollgate"
base_url = "{}/v1"
env_key = "TOLLGATE_KEY"
wire_api = "responses"

[features]
plugins = false

[analytics]
enabled = false
"#,
        e.s.url
    );
    std::fs::write(codex_home.join("config.toml"), config).unwrap();
    let run = e
        .run(
            codex,
            &[
                "exec",
                "--json",
                "--skip-git-repo-check",
                "--sandbox",
                "read-only",
                "Say hello",
            ],
            &[
                ("CODEX_HOME", codex_home.to_str().unwrap()),
                ("TOLLGATE_KEY", &e.key),
            ],
        )
        .await;
    run.stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|err| {
                panic!(
                    "codex printed a line that is not JSON ({err}): {l}\nstderr:\n{}",
                    run.stderr
                )
            })
        })
        .collect()
}

/// The texts of the agent messages among Codex's events.
fn codex_messages(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .filter(|e| e["type"] == "item.completed" && e["item"]["type"] == "agent_message")
        .map(|e| e["item"]["text"].as_str().expect("message text"))
        .collect()
}

/// The turn's usage as Codex read it from the gateway's answers.
fn codex_usage(events: &[Value]) -> (i64, i64) {
    let done = events
        .iter()
        .find(|e| e["type"] == "turn.completed")
        .unwrap_or_else(|| panic!("no turn.completed in {events:#?}"));
    let n = |f: &str| {
        done["usage"][f]
            .as_i64()
            .unwrap_or_else(|| panic!("{done}"))
    };
    (n("input_tokens"), n("output_tokens"))
}

async fn codex_says_hello(p: &str) {
    let Some(codex) = agent("codex") else { return };
    let e = setup().await;
    let events = run_codex(&e, &codex, p, "usage:12:34").await;
    assert_eq!(codex_messages(&events), ["Hello world"], "{events:#?}");
    assert_eq!(codex_usage(&events), (12, 34), "{events:#?}");

    let calls = e.upstream(p);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0].body["model"], "usage:12:34");
    assert_upstream_shape(p, &calls[0].body);
    e.assert_records(p, "responses", &calls).await;
}

/// As with Claude Code: the mock calls Codex's first tool with arguments it
/// does not take, and Codex sends the failure back as the call's output.
async fn codex_tool_round_trip(p: &str) {
    let Some(codex) = agent("codex") else { return };
    let e = setup().await;
    let events = run_codex(&e, &codex, p, "tool+usage:15:25").await;
    let said = codex_messages(&events);
    assert!(
        said.last().is_some_and(|m| m.starts_with("Tool said: ")),
        "Codex ran the tool the mock called and sent back its output: {events:#?}"
    );
    assert_eq!(codex_usage(&events), (30, 50), "{events:#?}");

    let calls = e.upstream(p);
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_upstream_shape(p, &calls[0].body);
    assert_tool_result_went_back(p, &calls[1].body);
    e.assert_records(p, "responses", &calls).await;
}
