//! SPEC §3: no log line ever contains a provider key, a user's API key, a JWT or
//! a password. Runs the real binary at RUST_LOG=debug, exercises sign-in and
//! keys, stops it with SIGTERM and searches everything it printed.

mod common;
use common::assert_error;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::AsyncReadExt;

const ADMIN_PW: &str = "admin-secret-pw-31337";
const PROVIDER_KEY: &str = "sk-or-v1-FAKE-provider-key-8c1d2e3f";
const JWT_SECRET: &str = "jwt-signing-secret-0f9e8d7c6b5a";
const USER_PW: &str = "user-secret-pw-1234";
const USER_PW2: &str = "user-new-secret-5678";
const WRONG_PW: &str = "wrong-secret-pw-0000";
const DB_PW: &str = "db-secret-pw-4242";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn no_secret_reaches_the_output() {
    let dir = tempfile::tempdir().unwrap();
    // On PostgreSQL (TOLLGATE_TEST_BACKEND) the URL carries a password too:
    // the test cluster trusts loopback, so any password connects.
    let db = if common::pg::backend_is_postgres() {
        let url = common::pg::fresh_database("secrets")
            .await
            .expect("TOLLGATE_TEST_PG_URL");
        url.replacen(
            "postgres://postgres@",
            &format!("postgres://postgres:{DB_PW}@"),
            1,
        )
    } else {
        dir.path().join("tollgate.db").to_str().unwrap().to_owned()
    };
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "serve",
            "--db",
            &db,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .current_dir(dir.path())
        .env("RUST_LOG", "debug")
        .env("TOLLGATE_ADMIN_PASSWORD", ADMIN_PW)
        .env("OPENROUTER_API_KEY", PROVIDER_KEY)
        .env("TOLLGATE_JWT_SECRET", JWT_SECRET)
        .env_remove("TOLLGATE_DB")
        .env_remove("TOLLGATE_DATABASE_URL")
        .env_remove("TOLLGATE_LISTEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tollgate serve");
    // Drain both pipes while the server runs so it never blocks on a full pipe.
    let mut stderr = child.stderr.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let err_task = tokio::spawn(async move {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b).await;
        b
    });
    let out_task = tokio::spawn(async move {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b).await;
        b
    });

    let c = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = c.get(format!("{base}/health")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server did not come up"
        );
        assert!(child.try_wait().unwrap().is_none(), "server exited early");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut secrets: Vec<String> = vec![
        ADMIN_PW.into(),
        PROVIDER_KEY.into(),
        JWT_SECRET.into(),
        USER_PW.into(),
        USER_PW2.into(),
        WRONG_PW.into(),
        DB_PW.into(),
    ];

    let login = |user: &'static str, pw: &'static str| {
        let c = c.clone();
        let base = base.clone();
        async move {
            c.post(format!("{base}/auth/login"))
                .json(&json!({"username": user, "password": pw}))
                .send()
                .await
                .unwrap()
        }
    };

    let r = login("admin", ADMIN_PW).await;
    assert_eq!(r.status(), 200);
    let admin = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    secrets.push(admin.clone());

    let r = c
        .post(format!("{base}/admin/users"))
        .bearer_auth(&admin)
        .json(&json!({"username": "alice", "password": USER_PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Form sign-in carries the password in the body as text.
    let r = c
        .post(format!("{base}/auth/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("username=alice&password={USER_PW}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    secrets.push(token.clone());

    let r = c
        .post(format!("{base}/api/keys"))
        .bearer_auth(&token)
        .json(&json!({"name": "editor"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let key = created["api_key"].as_str().unwrap().to_owned();
    let key_id = created["id"].as_i64().unwrap();
    secrets.push(key.clone());
    // Its stored hash too: a database driver logging statement parameters
    // would print it.
    secrets.push(hex::encode(tollgate::auth::api_key::hash(&key)));

    // Use the key both ways, on good and bad paths (query strings included).
    assert_eq!(
        c.get(format!("{base}/api/keys"))
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{base}/auth/me"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = c
        .get(format!("{base}/no/such/path?api_key={key}&token={token}"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_error(r, 404).await;
    // Another last character (a fixed 'Z' was the key itself one time in 62).
    let last = if key.ends_with('Z') { 'Y' } else { 'Z' };
    let bad_key = format!("{}{last}", &key[..key.len() - 1]);
    secrets.push(bad_key.clone());
    assert_error(
        c.get(format!("{base}/auth/me"))
            .bearer_auth(&bad_key)
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;

    let r = c
        .post(format!("{base}/auth/password"))
        .bearer_auth(&token)
        .json(&json!({"current_password": USER_PW, "new_password": USER_PW2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // The old token is now refused; that refusal must not log it either.
    assert_error(
        c.get(format!("{base}/auth/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
    // A wrong current password, a short new one, a failed sign-in.
    let r = c
        .post(format!("{base}/auth/password"))
        .bearer_auth(&admin)
        .json(&json!({"current_password": WRONG_PW, "new_password": USER_PW2}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    assert_error(login("alice", WRONG_PW).await, 401).await;
    assert_error(login(WRONG_PW, USER_PW2).await, 401).await;
    let r = login("alice", USER_PW2).await;
    assert_eq!(r.status(), 200);
    let token2 = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    secrets.push(token2.clone());
    // A key may not revoke keys (403); the session may.
    let r = c
        .delete(format!("{base}/api/keys/{key_id}"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_error(r, 403).await;
    let r = c
        .delete(format!("{base}/api/keys/{key_id}"))
        .bearer_auth(&token2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_error(
        c.get(format!("{base}/auth/me"))
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;

    // SIGTERM, then wait for a clean exit.
    let pid = child.id().expect("pid").to_string();
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(st.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status:?}");

    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&err_task.await.unwrap()),
        String::from_utf8_lossy(&out_task.await.unwrap())
    );
    // The capture is real: debug request lines are there.
    assert!(output.contains("listening"), "{output}");
    assert!(
        output.contains("/auth/login") && output.contains("/api/keys"),
        "debug request log missing:\n{output}"
    );
    for s in &secrets {
        assert!(
            !output.contains(s.as_str()),
            "secret {s:.12}… found in the output:\n{output}"
        );
        // Neither a recognisable part of it (a JWT's signature, a key's body).
        let tail = &s[s.len() - 16..];
        assert!(
            !output.contains(tail),
            "the end of secret {s:.12}… found in the output:\n{output}"
        );
    }
}
