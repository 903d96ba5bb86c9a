//! SPEC §1 admin CLI: every command against a real database file, `--db`
//! before and after the words, `--help`, `check-config` masking, and changes
//! made by the CLI reaching a running server within 5 seconds (SPEC §2).

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Output;

/// Runs the tollgate binary in `cwd` (a temp dir: no config.toml or .env).
async fn tollgate(cwd: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.args(args)
        .current_dir(cwd)
        .env("TOLLGATE_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for v in [
        "TOLLGATE_DB",
        "TOLLGATE_DATABASE_URL",
        "TOLLGATE_LISTEN",
        "TOLLGATE_JWT_SECRET",
        "OPENROUTER_API_KEY",
        "GLAMA_API_KEY",
        "REQUESTY_API_KEY",
        "AIML_API_KEY",
        "AIML_CLIENT_ID",
        "AIML_CLIENT_SECRET",
    ] {
        cmd.env_remove(v);
    }
    let mut child = cmd.spawn().expect("spawn tollgate");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    child.wait_with_output().await.unwrap()
}

/// [`tollgate`] with the environment variables `env` set.
async fn tollgate_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null());
    for v in [
        "TOLLGATE_DB",
        "TOLLGATE_DATABASE_URL",
        "TOLLGATE_LISTEN",
        "TOLLGATE_JWT_SECRET",
        "TOLLGATE_ADMIN_PASSWORD",
    ] {
        cmd.env_remove(v);
    }
    cmd.envs(env.iter().copied());
    cmd.output().await.unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status,
        out(o),
        err(o)
    );
    out(o)
}

#[track_caller]
fn fails(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "expected failure\nstdout: {}\nstderr: {}",
        out(o),
        err(o)
    );
    err(o)
}

/// A temp dir holding the database; the CLI runs there with `--db <abs path>`.
/// With `TOLLGATE_TEST_BACKEND=postgres`, `--db` is a fresh PostgreSQL database.
struct Db {
    dir: tempfile::TempDir,
    path: PathBuf,
    url: Option<String>,
}

impl Db {
    fn new() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tollgate.db");
        let url = common::pg::backend_is_postgres()
            .then(|| common::pg::fresh_database_blocking("cli"))
            .flatten();
        Db { dir, path, url }
    }
    fn db(&self) -> &str {
        self.url
            .as_deref()
            .unwrap_or_else(|| self.path.to_str().unwrap())
    }
    /// A server configuration on this database.
    fn config(&self) -> tollgate::config::Config {
        let mut cfg = test_config(self.dir.path());
        cfg.database.url = self.url.clone();
        cfg
    }
    async fn run(&self, args: &[&str]) -> Output {
        self.run_stdin(args, None).await
    }
    async fn run_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--db", self.db()]);
        tollgate(self.dir.path(), &a, stdin).await
    }
}

/// The row of `user list` for `name`, split on whitespace.
fn user_row(list: &str, name: &str) -> Vec<String> {
    list.lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|w| w.get(1).map(String::as_str) == Some(name))
        .unwrap_or_else(|| panic!("{name} not in:\n{list}"))
}

#[tokio::test]
async fn user_and_plan_commands() {
    let db = Db::new();
    ok(&db
        .run_stdin(
            &["user", "add", "alice", "--password-stdin"],
            Some("alice-password\n"),
        )
        .await);
    let o = ok(&db
        .run(&[
            "user",
            "add",
            "bob",
            "--password",
            "bob-password",
            "--admin",
        ])
        .await);
    assert!(o.contains("bob"), "{o}");
    ok(&db
        .run(&[
            "user",
            "add",
            "carol",
            "--password",
            "carol-password",
            "--plan",
            "pro",
        ])
        .await);

    let list = ok(&db.run(&["user", "list"]).await);
    assert_eq!(user_row(&list, "admin")[2..5], ["admin", "free", "active"]);
    assert_eq!(user_row(&list, "alice")[2..5], ["user", "free", "active"]);
    assert_eq!(user_row(&list, "bob")[2..5], ["admin", "free", "active"]);
    assert_eq!(user_row(&list, "carol")[2..5], ["user", "pro", "active"]);
    assert!(
        !list.contains("password") && !list.contains("argon2"),
        "{list}"
    );

    ok(&db.run(&["user", "set-plan", "alice", "enterprise"]).await);
    let list = ok(&db.run(&["user", "list"]).await);
    assert_eq!(user_row(&list, "alice")[3], "enterprise");

    // Failures exit non-zero with a message.
    let e = fails(
        &db.run(&["user", "add", "alice", "--password", "another-password"])
            .await,
    );
    assert!(e.contains("alice"), "{e}");
    let e = fails(&db.run(&["user", "add", "dan", "--password", "short"]).await);
    assert!(e.contains('8'), "{e}");
    fails(
        &db.run_stdin(&["user", "add", "dan", "--password-stdin"], Some(""))
            .await,
    );
    fails(&db.run(&["user", "add", "dan"]).await);
    fails(
        &db.run(&[
            "user",
            "add",
            "dan",
            "--password",
            "dan-password",
            "--password-stdin",
        ])
        .await,
    );
    let e = fails(
        &db.run(&[
            "user",
            "add",
            "dan",
            "--password",
            "dan-password",
            "--plan",
            "gold",
        ])
        .await,
    );
    assert!(e.contains("gold"), "{e}");
    fails(&db.run(&["user", "set-plan", "alice", "gold"]).await);
    fails(&db.run(&["user", "set-plan", "nobody", "pro"]).await);
    fails(
        &db.run(&[
            "user",
            "reset-password",
            "nobody",
            "--password",
            "whatever-pw",
        ])
        .await,
    );
    let list = ok(&db.run(&["user", "list"]).await);
    assert!(!list.contains("dan"), "{list}");

    ok(&db
        .run(&[
            "user",
            "reset-password",
            "carol",
            "--password",
            "carol-password-2",
        ])
        .await);
    ok(&db
        .run_stdin(
            &["user", "reset-password", "bob", "--password-stdin"],
            Some("bob-password-2\r\n"),
        )
        .await);

    let plans = ok(&db.run(&["plan", "list"]).await);
    let names: Vec<&str> = plans
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["free", "pro", "enterprise"], "{plans}");
    assert!(
        plans.contains("10000") && plans.contains("100000") && plans.contains("1000000"),
        "{plans}"
    );

    // A server on that database sees what the CLI did.
    let cfg = db.config();
    let s = TestServer::start_in(db.dir, cfg).await;
    s.login("alice", "alice-password").await;
    s.login("carol", "carol-password-2").await;
    let bob = s.login("bob", "bob-password-2").await;
    let users: Value = s.get_as("/admin/users", &bob).await.json().await.unwrap();
    let plans: Vec<(&str, &str)> = users["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["username"].as_str().unwrap(), u["plan"].as_str().unwrap()))
        .collect();
    // Newest first (SPEC §13).
    assert_eq!(
        plans,
        [
            ("carol", "pro"),
            ("bob", "free"),
            ("alice", "enterprise"),
            ("admin", "free")
        ]
    );
    let r = s
        .client
        .post(s.url("/auth/login"))
        .json(&json!({"username": "carol", "password": "carol-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the old password is gone");
}

#[tokio::test]
async fn key_commands() {
    let db = Db::new();
    ok(&db
        .run(&["user", "add", "alice", "--password", "alice-password"])
        .await);
    let o = db
        .run(&["key", "create", "--user", "alice", "--name", "ci"])
        .await;
    let stdout = ok(&o);
    let key = stdout.trim().to_owned();
    assert_eq!(
        stdout.lines().count(),
        1,
        "stdout is the key alone: {stdout}"
    );
    assert!(key.starts_with("sk_live_") && key.len() >= 51, "{key}");
    assert!(!err(&o).contains(&key), "the key is printed once");
    let default_named = ok(&db.run(&["key", "create", "--user", "alice"]).await)
        .trim()
        .to_owned();
    assert_ne!(default_named, key);

    let list = ok(&db.run(&["key", "list", "--user", "alice"]).await);
    assert!(
        !list.contains(&key) && !list.contains(&default_named),
        "secrets listed:\n{list}"
    );
    let row = list
        .lines()
        .find(|l| l.contains(" ci "))
        .unwrap_or_else(|| panic!("{list}"));
    let id: i64 = row.split_whitespace().next().unwrap().parse().unwrap();
    assert!(row.contains(&key[..12]), "prefix shown: {row}");
    assert!(row.contains("active"), "{row}");

    // The key authenticates against a server on that database; revoked, it does not.
    let cfg = db.config();
    let db_arg = db.db().to_owned();
    let cwd = tempfile::tempdir().unwrap();
    let s = TestServer::start_in(db.dir, cfg).await;
    let me: Value = s.get_as("/auth/me", &key).await.json().await.unwrap();
    assert_eq!(me["username"], "alice");

    let db_arg = db_arg.as_str();
    ok(&tollgate(
        cwd.path(),
        &["key", "revoke", &id.to_string(), "--db", db_arg],
        None,
    )
    .await);
    let list = ok(&tollgate(
        cwd.path(),
        &["key", "list", "--user", "alice", "--db", db_arg],
        None,
    )
    .await);
    let row = list.lines().find(|l| l.contains(" ci ")).unwrap();
    assert!(row.contains("revoked"), "{row}");
    eventually("CLI key revoke", || async {
        s.me_status(&key).await == 401
    })
    .await;
    assert_eq!(s.me_status(&default_named).await, 200);

    fails(
        &tollgate(
            cwd.path(),
            &["key", "revoke", "99999", "--db", db_arg],
            None,
        )
        .await,
    );
    fails(
        &tollgate(
            cwd.path(),
            &["key", "create", "--user", "nobody", "--db", db_arg],
            None,
        )
        .await,
    );
    fails(
        &tollgate(
            cwd.path(),
            &["key", "list", "--user", "nobody", "--db", db_arg],
            None,
        )
        .await,
    );
    fails(&tollgate(cwd.path(), &["key", "create", "--db", db_arg], None).await);
}

#[tokio::test]
async fn db_flag_before_and_after_the_words() {
    let db = Db::new();
    let cwd = db.dir.path();
    let p = db.db();
    ok(&tollgate(
        cwd,
        &[
            "--db",
            p,
            "user",
            "add",
            "alice",
            "--password",
            "alice-password",
        ],
        None,
    )
    .await);
    ok(&tollgate(
        cwd,
        &[
            "user",
            "--db",
            p,
            "add",
            "bob",
            "--password",
            "bob-password",
        ],
        None,
    )
    .await);
    ok(&tollgate(
        cwd,
        &[
            "user",
            "add",
            "--db",
            p,
            "carol",
            "--password",
            "carol-password",
        ],
        None,
    )
    .await);
    let lists = [
        ok(&tollgate(cwd, &["--db", p, "user", "list"], None).await),
        ok(&tollgate(cwd, &["user", "--db", p, "list"], None).await),
        ok(&tollgate(cwd, &["user", "list", "--db", p], None).await),
    ];
    for l in &lists {
        for u in ["admin", "alice", "bob", "carol"] {
            user_row(l, u);
        }
    }
    ok(&tollgate(cwd, &["--db", p, "plan", "list"], None).await);
    ok(&tollgate(cwd, &["plan", "list", "--db", p], None).await);
    ok(&tollgate(cwd, &["--db", p, "key", "list", "--user", "alice"], None).await);
    let other = tempfile::tempdir().unwrap();
    ok(&tollgate(other.path(), &["user", "list", "--db", p], None).await);
    assert!(
        !other.path().join("tollgate.db").exists(),
        "--db after the words was ignored"
    );

    // --config works in both places too, and --db overrides its path.
    let cfgdir = tempfile::tempdir().unwrap();
    let cfgfile = cfgdir.path().join("custom.toml");
    let key = if p.starts_with("postgres") {
        "url"
    } else {
        "path"
    };
    std::fs::write(&cfgfile, format!("[database]\n{key} = {p:?}\n")).unwrap();
    let c = cfgfile.to_str().unwrap();
    let l = ok(&tollgate(other.path(), &["--config", c, "user", "list"], None).await);
    user_row(&l, "carol");
    let l = ok(&tollgate(other.path(), &["user", "list", "--config", c], None).await);
    user_row(&l, "carol");
    let fresh = other.path().join("fresh.db");
    let l = ok(&tollgate(
        other.path(),
        &[
            "user",
            "list",
            "--config",
            c,
            "--db",
            fresh.to_str().unwrap(),
        ],
        None,
    )
    .await);
    assert!(!l.contains("carol") && l.contains("admin"), "{l}");
}

#[tokio::test]
async fn migrate_command() {
    let db = Db::new();
    let o = ok(&db.run(&["migrate"]).await);
    let applied: usize = o.split_whitespace().next().unwrap().parse().unwrap();
    assert!(applied >= 1, "first migrate applies the schema: {o}");
    assert!(db.url.is_some() || db.path.exists());
    let o = ok(&db.run(&["migrate"]).await);
    assert!(o.starts_with('0'), "nothing left to apply: {o}");
    // A migrated but unseeded database still gets plans and the admin on first use.
    let plans = ok(&db.run(&["plan", "list"]).await);
    assert!(plans.contains("free"), "{plans}");
}

#[tokio::test]
async fn help_works_for_every_command() {
    let cwd = tempfile::tempdir().unwrap();
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["user", "--help"],
        vec!["user", "add", "--help"],
        vec!["user", "list", "--help"],
        vec!["user", "set-plan", "--help"],
        vec!["user", "reset-password", "--help"],
        vec!["key", "--help"],
        vec!["key", "create", "--help"],
        vec!["key", "list", "--help"],
        vec!["key", "revoke", "--help"],
        vec!["plan", "--help"],
        vec!["plan", "list", "--help"],
        vec!["plan", "add", "--help"],
        vec!["plan", "set", "--help"],
        vec!["plan", "delete", "--help"],
        vec!["credits", "--help"],
        vec!["credits", "add", "--help"],
        vec!["credits", "list", "--help"],
        vec!["migrate", "--help"],
        vec!["check-config", "--help"],
        vec!["backup", "--help"],
        vec!["providers", "--help"],
        vec!["route", "--help"],
        vec!["help", "user", "add"],
    ] {
        let o = tollgate(cwd.path(), &args, None).await;
        let text = ok(&o);
        assert!(text.contains("Usage:"), "{args:?}: {text}");
        assert!(text.contains("--db"), "{args:?} documents --db: {text}");
    }
    let text = ok(&tollgate(cwd.path(), &["user", "add", "--help"], None).await);
    for flag in ["--password", "--password-stdin", "--admin", "--plan"] {
        assert!(text.contains(flag), "{flag}: {text}");
    }
    let text = ok(&tollgate(cwd.path(), &["backup", "--help"], None).await);
    assert!(
        text.contains("PATH") && text.contains("--force") && text.contains("pg_dump"),
        "{text}"
    );
    assert!(
        std::fs::read_dir(cwd.path()).unwrap().next().is_none(),
        "--help touched no files"
    );
    fails(&tollgate(cwd.path(), &["frobnicate"], None).await);
}

#[tokio::test]
async fn check_config_masks_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        r#"
[server]
listen = "127.0.0.1:9123"

[auth]
jwt_secret = "jwt-secret-in-file-0123456789abcdef"

[providers.openrouter]
api_key = "sk-or-v1-file-secret-4242"

[providers.local]
base_url = "http://127.0.0.1:11434/v1"
api_key = "local-secret-7777"

[oauth.aiml]
client_id = "client-id-visible"
client_secret = "oauth-client-secret-9999"
auth_url = "https://auth.example/authorize"
token_url = "https://auth.example/token"
userinfo_url = "https://auth.example/userinfo"
"#,
    )
    .unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
    let o = cmd
        .args(["check-config", "--config", cfg.to_str().unwrap()])
        .current_dir(dir.path())
        .env("GLAMA_API_KEY", "glama-env-secret-5555")
        .env("TOLLGATE_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env_remove("OPENROUTER_API_KEY")
        .env_remove("TOLLGATE_LISTEN")
        .env_remove("TOLLGATE_JWT_SECRET")
        .output()
        .await
        .unwrap();
    let text = ok(&o);
    let all = format!("{text}{}", err(&o));
    for secret in [
        "jwt-secret-in-file",
        "sk-or-v1-file-secret-4242",
        "local-secret-7777",
        "oauth-client-secret-9999",
        "glama-env-secret-5555",
        ADMIN_PASSWORD,
    ] {
        assert!(!all.contains(secret), "{secret} printed:\n{all}");
    }
    assert!(text.contains("***"), "{text}");
    assert!(
        text.contains("127.0.0.1:9123"),
        "prints the effective config: {text}"
    );
    assert!(text.contains("client-id-visible"), "{text}");
    // The printed config is itself a valid config file.
    assert!(
        tollgate::config::Config::parse(&text, None).is_ok(),
        "{text}"
    );
}

/// check-config shows what the server will use: the built-in providers
/// (active or not) and the plans a first start creates.
#[tokio::test]
async fn check_config_shows_the_effective_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let o = tollgate_env(
        dir.path(),
        &["check-config"],
        &[("OPENROUTER_API_KEY", "sk-or-v1-env-secret-8888")],
    )
    .await;
    let text = ok(&o);
    assert!(!text.contains("plans = []"), "{text}");
    assert!(!format!("{text}{}", err(&o)).contains("sk-or-v1-env-secret-8888"));
    let cfg = tollgate::config::Config::parse(&text, None).expect("a valid config file");
    let plans: Vec<(&str, i64)> = cfg
        .plans
        .iter()
        .map(|p| (p.name.as_str(), p.monthly_tokens))
        .collect();
    assert_eq!(
        plans,
        [
            ("free", 10_000),
            ("pro", 100_000),
            ("enterprise", 1_000_000)
        ]
    );
    for (id, name, url) in tollgate::config::BUILTIN_PROVIDERS {
        let p = &cfg.providers[*id];
        assert_eq!(
            (p.name.as_deref(), p.base_url.as_deref()),
            (Some(*name), Some(*url)),
            "{text}"
        );
    }
    assert!(
        text.contains("# openrouter: active, the default\n[providers.openrouter]"),
        "{text}"
    );
    assert!(
        text.contains("# glama: inactive: no API key: set GLAMA_API_KEY"),
        "{text}"
    );

    // Plans in the file replace the defaults; a custom provider is listed too.
    std::fs::write(
        dir.path().join("config.toml"),
        "[[plans]]\nname = \"solo\"\nmonthly_tokens = 5\n\n\
         [providers.local]\nbase_url = \"http://127.0.0.1:11434/v1\"\n\
         headers = { X-Api-Key = \"header-secret-6666\", X-Title = \"shown\" }\n",
    )
    .unwrap();
    let text = ok(&tollgate_env(dir.path(), &["check-config"], &[]).await);
    let cfg = tollgate::config::Config::parse(&text, None).expect("a valid config file");
    assert_eq!(cfg.plans.len(), 1, "{text}");
    assert_eq!(cfg.plans[0].name, "solo");
    assert_eq!(cfg.providers.len(), 5, "{text}");
    assert!(
        text.contains("# local: active\n[providers.local]"),
        "{text}"
    );
    assert!(
        !text.contains("header-secret-6666") && text.contains("shown"),
        "{text}"
    );
    assert!(
        text.contains("# openrouter: inactive, the default: no API key"),
        "{text}"
    );
}

#[tokio::test]
async fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("[server]\nmax_body_bytes = \"big\"\n", "max_body_bytes"),
        ("[server]\nlisten = \"nowhere\"\n", "server.listen"),
        ("[server]\nlisten_addr = \"127.0.0.1:1\"\n", "listen_addr"),
        (
            "[routing]\ndefault_provider = \"nope\"\n",
            "routing.default_provider",
        ),
        (
            "[[plans]]\nname = \"x\"\nmonthly_tokens = -1\n",
            "monthly_tokens",
        ),
        ("[server\n", "config.toml"),
    ] {
        let file = dir.path().join("config.toml");
        std::fs::write(&file, text).unwrap();
        // Picked up from the working directory, and named explicitly.
        for args in [
            vec!["check-config"],
            vec!["check-config", "--config", file.to_str().unwrap()],
        ] {
            let o = tollgate(dir.path(), &args, None).await;
            let e = fails(&o);
            assert!(e.contains(key), "{text:?}: stderr does not name {key}: {e}");
        }
    }
    let o = tollgate(
        dir.path(),
        &["check-config", "--config", "/nonexistent/tollgate.toml"],
        None,
    )
    .await;
    let e = fails(&o);
    assert!(e.contains("/nonexistent/tollgate.toml"), "{e}");
}

/// The row of `plan list` for `name`, split on whitespace.
fn plan_row(list: &str, name: &str) -> Option<Vec<String>> {
    list.lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|w| w.first().map(String::as_str) == Some(name))
}

#[tokio::test]
async fn plan_add_set_delete() {
    let db = Db::new();
    let o = ok(&db
        .run(&[
            "plan",
            "add",
            "team",
            "--monthly-tokens",
            "500000",
            "--rpm",
            "120",
            "--price-usd-month",
            "9.5",
            "--allowed-models",
            "aiml/*,openrouter/openai/*",
        ])
        .await);
    assert!(o.contains("team"), "{o}");
    let list = ok(&db.run(&["plan", "list"]).await);
    assert_eq!(
        plan_row(&list, "team").unwrap(),
        [
            "team",
            "500000",
            "-",
            "120",
            "9.50",
            "no",
            "aiml/*,",
            "openrouter/openai/*"
        ],
        "{list}"
    );
    // Left out: price 0 and every model.
    ok(&db
        .run(&[
            "plan",
            "add",
            "tiny",
            "--monthly-tokens",
            "10",
            "--rpm",
            "1",
        ])
        .await);
    let list = ok(&db.run(&["plan", "list"]).await);
    assert_eq!(
        plan_row(&list, "tiny").unwrap(),
        ["tiny", "10", "-", "1", "0.00", "no", "*"]
    );

    // set changes only what it names.
    ok(&db
        .run(&[
            "plan",
            "set",
            "team",
            "--rpm",
            "30",
            "--allowed-models",
            "*",
        ])
        .await);
    let list = ok(&db.run(&["plan", "list"]).await);
    assert_eq!(
        plan_row(&list, "team").unwrap(),
        ["team", "500000", "-", "30", "9.50", "no", "*"]
    );
    ok(&db
        .run(&["plan", "set", "team", "--monthly-tokens", "7"])
        .await);
    let list = ok(&db.run(&["plan", "list"]).await);
    assert_eq!(plan_row(&list, "team").unwrap()[1..4], ["7", "-", "30"]);

    // Bad values: the flag is named and nothing changes.
    for (args, says) in [
        (
            vec!["plan", "add", "x", "--monthly-tokens", "-1", "--rpm", "1"],
            "--monthly-tokens",
        ),
        (
            vec!["plan", "add", "x", "--monthly-tokens", "1", "--rpm", "0"],
            "--rpm",
        ),
        (
            vec!["plan", "add", "a/b", "--monthly-tokens", "1", "--rpm", "1"],
            "'/'",
        ),
        (
            vec![
                "plan",
                "add",
                "x",
                "--monthly-tokens",
                "1",
                "--rpm",
                "1",
                "--price-usd-month",
                "-2",
            ],
            "--price-usd-month",
        ),
        (
            vec![
                "plan",
                "add",
                "x",
                "--monthly-tokens",
                "1",
                "--rpm",
                "1",
                "--allowed-models",
                "aiml/[",
            ],
            "--allowed-models",
        ),
        (vec!["plan", "add", "x", "--rpm", "1"], "--monthly-tokens"),
        (
            vec!["plan", "add", "free", "--monthly-tokens", "1", "--rpm", "1"],
            "already exists",
        ),
        (vec!["plan", "set", "team", "--rpm", "-5"], "--rpm"),
        (vec!["plan", "set", "team"], "nothing to change"),
        (
            vec!["plan", "set", "gold", "--rpm", "5"],
            "no plan named \"gold\"",
        ),
        (vec!["plan", "delete", "gold"], "no plan named \"gold\""),
        // The admin is on free.
        (vec!["plan", "delete", "free"], "in use"),
    ] {
        let e = fails(&db.run(&args).await);
        assert!(e.contains(says), "{args:?}: {e}");
    }
    let list = ok(&db.run(&["plan", "list"]).await);
    assert!(
        plan_row(&list, "x").is_none() && plan_row(&list, "a/b").is_none(),
        "{list}"
    );
    assert_eq!(plan_row(&list, "team").unwrap()[1..4], ["7", "-", "30"]);

    ok(&db.run(&["plan", "delete", "team"]).await);
    let list = ok(&db.run(&["plan", "list"]).await);
    assert!(plan_row(&list, "team").is_none(), "{list}");
    assert!(plan_row(&list, "free").is_some(), "{list}");
}

/// A plan made or changed by the CLI reaches a running server within a second
/// or so (its credential cache reads the changes of other processes).
#[tokio::test]
async fn a_running_server_sees_cli_plan_changes() {
    let s = TestServer::start().await;
    let db = common::db_arg(&s.state.config);
    let cwd = tempfile::tempdir().unwrap();
    let (_, _, key) = s.user_with_key("alice", None).await;
    let cli = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--db", db.as_str()]);
        let cwd = cwd.path().to_owned();
        let a: Vec<String> = a.into_iter().map(str::to_owned).collect();
        async move {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            ok(&tollgate(&cwd, &a, None).await)
        }
    };
    cli(&["plan", "set", "free", "--monthly-tokens", "4321"]).await;
    eventually("CLI plan set", || async {
        let me: Value = s
            .get_as("/subscriptions/me", &key)
            .await
            .json()
            .await
            .unwrap();
        me["monthly_tokens"] == 4321
    })
    .await;
    cli(&[
        "plan",
        "add",
        "team",
        "--monthly-tokens",
        "777",
        "--rpm",
        "5",
    ])
    .await;
    cli(&["user", "set-plan", "alice", "team"]).await;
    eventually("CLI plan add", || async {
        let me: Value = s
            .get_as("/subscriptions/me", &key)
            .await
            .json()
            .await
            .unwrap();
        me["plan"] == "team" && me["monthly_tokens"] == 777
    })
    .await;
    s.stop().await;
}

/// A bad value from a flag or an environment variable is blamed on that flag
/// or variable, not on the config.toml that sits beside it.
#[tokio::test]
async fn a_bad_flag_or_variable_is_named_not_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "[server]\nlisten = \"127.0.0.1:9\"\n",
    )
    .unwrap();
    // (arguments, environment, what the error must name)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 6] = [
        (&["serve", "--listen", "nonsense"], &[], "--listen"),
        (
            &["check-config"],
            &[("TOLLGATE_LISTEN", "nonsense")],
            "environment variable TOLLGATE_LISTEN",
        ),
        (
            // The flag wins over the variable, and is the one named.
            &["serve", "--listen", "nonsense"],
            &[("TOLLGATE_LISTEN", "127.0.0.1:1")],
            "--listen",
        ),
        (
            &["check-config"],
            &[("TOLLGATE_DATABASE_URL", "mysql://me:db-pw-31337@h/d")],
            "environment variable TOLLGATE_DATABASE_URL",
        ),
        (
            &["check-config"],
            &[("TOLLGATE_DB", "postgres://me:db-pw-31337@h/d")],
            "environment variable TOLLGATE_DB",
        ),
        (
            &["check-config", "--db", "mysql://me:db-pw-31337@h/d"],
            &[],
            "--db",
        ),
    ];
    for (args, env, origin) in cases {
        let e = fails(&tollgate_env(dir.path(), args, env).await);
        assert!(
            e.contains(origin),
            "{args:?} {env:?}: does not name {origin}: {e}"
        );
        assert!(
            !e.contains("config.toml"),
            "{args:?} {env:?}: blames the file: {e}"
        );
        assert!(
            !e.contains("db-pw-31337"),
            "{args:?} {env:?}: prints a password: {e}"
        );
    }
    // A bad value in the file is still blamed on the file.
    std::fs::write(
        dir.path().join("config.toml"),
        "[server]\nlisten = \"nonsense\"\n",
    )
    .unwrap();
    let e = fails(&tollgate_env(dir.path(), &["check-config"], &[]).await);
    assert!(
        e.contains("config.toml") && e.contains("server.listen"),
        "{e}"
    );
}

#[tokio::test]
async fn cli_changes_reach_a_running_server_within_5s() {
    let s = TestServer::start().await;
    let db = common::db_arg(&s.state.config);
    let cwd = tempfile::tempdir().unwrap();
    let (_, token, key) = s.user_with_key("alice", None).await;
    let key_id = s
        .get_as("/api/keys", &token)
        .await
        .json::<Value>()
        .await
        .unwrap()["data"][0]["id"]
        .as_i64()
        .unwrap();

    // set-plan
    ok(&tollgate(
        cwd.path(),
        &["user", "set-plan", "alice", "pro", "--db", &db],
        None,
    )
    .await);
    eventually("CLI set-plan", || async {
        let me: Value = s.get_as("/auth/me", &key).await.json().await.unwrap();
        me["plan"] == "pro"
    })
    .await;

    // key revoke
    ok(&tollgate(
        cwd.path(),
        &["key", "revoke", &key_id.to_string(), "--db", &db],
        None,
    )
    .await);
    eventually("CLI key revoke", || async {
        s.me_status(&key).await == 401
    })
    .await;

    // key create: the new key works in the running server
    let new_key = ok(&tollgate(
        cwd.path(),
        &["key", "create", "--user", "alice", "--db", &db],
        None,
    )
    .await)
    .trim()
    .to_owned();
    eventually("CLI key create", || async {
        s.me_status(&new_key).await == 200
    })
    .await;

    // reset-password: earlier JWTs die, the new password signs in
    ok(&tollgate(
        cwd.path(),
        &[
            "user",
            "reset-password",
            "alice",
            "--password",
            "reset-by-cli",
            "--db",
            &db,
        ],
        None,
    )
    .await);
    eventually("CLI reset-password", || async {
        s.me_status(&token).await == 401
    })
    .await;
    s.login("alice", "reset-by-cli").await;

    // user add: the new user can sign in and use the API at once
    ok(&tollgate(
        cwd.path(),
        &[
            "user",
            "add",
            "zed",
            "--password",
            "zed-password",
            "--plan",
            "enterprise",
            "--db",
            &db,
        ],
        None,
    )
    .await);
    let t = s.login("zed", "zed-password").await;
    eventually("CLI user add", || async {
        let r = s.get_as("/auth/me", &t).await;
        r.status() == 200 && r.json::<Value>().await.unwrap()["plan"] == "enterprise"
    })
    .await;
    s.stop().await;
}

#[tokio::test]
async fn a_sign_in_right_after_a_cli_change_works_at_once() {
    // The user signs in the moment the CLI is done: the token must work on the
    // first call, not only after the server's next poll.
    let s = TestServer::start().await;
    let db = common::db_arg(&s.state.config);
    let cwd = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let name = format!("u{round}");
        ok(&tollgate(
            cwd.path(),
            &[
                "user",
                "add",
                &name,
                "--password",
                "first-password",
                "--db",
                &db,
            ],
            None,
        )
        .await);
        let t = s.login(&name, "first-password").await;
        assert_eq!(
            s.me_status(&t).await,
            200,
            "new user's first token, round {round}"
        );
        ok(&tollgate(
            cwd.path(),
            &[
                "user",
                "reset-password",
                &name,
                "--password",
                "second-password",
                "--db",
                &db,
            ],
            None,
        )
        .await);
        let t = s.login(&name, "second-password").await;
        assert_eq!(
            s.me_status(&t).await,
            200,
            "token after a CLI reset, round {round}"
        );
    }
}

/// Commands print their result and errors, not log lines (the first start's
/// migrations included); -v brings the logs back.
#[tokio::test]
async fn commands_print_no_log_lines_unless_asked() {
    let (first, second) = (Db::new(), Db::new());
    let run = |verbose: bool| {
        let db = if verbose { &second } else { &first };
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
        cmd.args(["user", "list", "--db", db.db()])
            .current_dir(db.dir.path())
            .env("TOLLGATE_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env_remove("RUST_LOG")
            .env_remove("TOLLGATE_DB")
            .env_remove("TOLLGATE_DATABASE_URL");
        if verbose {
            cmd.arg("-v");
        }
        cmd.output()
    };
    let quiet = run(false).await.unwrap();
    let (out, errs) = (
        String::from_utf8_lossy(&quiet.stdout),
        String::from_utf8_lossy(&quiet.stderr),
    );
    assert!(quiet.status.success(), "{errs}");
    assert!(out.contains("admin"), "{out}");
    for text in [&out, &errs] {
        assert!(
            !text.contains(" INFO ")
                && !text.contains("refinery")
                && !text.contains("Applying migration"),
            "log lines in the output:\n{text}"
        );
    }
    let loud = run(true).await.unwrap();
    assert!(loud.status.success());
    assert!(
        String::from_utf8_lossy(&loud.stderr).contains("INFO"),
        "-v shows logs: {}",
        String::from_utf8_lossy(&loud.stderr)
    );
}

/// `tollgate route` follows `[routing] aliases` as calls do.
#[tokio::test]
async fn route_shows_where_a_name_goes_through_its_alias() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "[routing]\naliases = { \"claude-*\" = \"aiml/claude-*\" }\n",
    )
    .unwrap();
    let o = tollgate(dir.path(), &["route", "claude-haiku-4-5"], None).await;
    let text = ok(&o);
    assert!(
        text.contains("claude-haiku-4-5 is an alias of aiml/claude-haiku-4-5"),
        "{text}"
    );
    assert!(
        text.contains("aiml/claude-haiku-4-5 -> provider aiml")
            && text.contains("upstream model claude-haiku-4-5"),
        "{text}"
    );
    let o = tollgate(dir.path(), &["route", "gpt-4"], None).await;
    let text = ok(&o);
    assert!(!text.contains("alias"), "{text}");
    assert!(text.contains("gpt-4 -> provider openrouter"), "{text}");
}
