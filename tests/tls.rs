//! HTTPS without a proxy (`[server] tls_cert` and `tls_key`): the real binary
//! serves TLS with certificates made at test time, takes a new certificate on
//! SIGHUP and when its files change, keeps the old one when the new pair does
//! not load, refuses plain HTTP and slow handshakes, and will not start with
//! half of the pair. On both backends (`common::db_arg`).

mod common;
use common::process::{self, Process};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A self-signed certificate for `localhost` and 127.0.0.1, and its key.
struct TestCert {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

fn make_cert(cn: &str, serial: u64) -> TestCert {
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.serial_number = Some(rcgen::SerialNumber::from(serial));
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    TestCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

/// Replaces `path` whole (a reader never sees half a file).
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn install(dir: &Path, c: &TestCert) {
    replace(&dir.join("cert.pem"), &c.cert_pem);
    replace(&dir.join("key.pem"), &c.key_pem);
}

/// A config serving HTTPS with `dir/cert.pem` and `dir/key.pem`.
fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        "[server]\ntls_cert = {:?}\ntls_key = {:?}\n{extra}",
        dir.join("cert.pem").to_str().unwrap(),
        dir.join("key.pem").to_str().unwrap(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A client trusting only `roots`, reporting the peer's certificate; each
/// one opens its own connections.
fn client(roots: &[&TestCert]) -> reqwest::ClientBuilder {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_info(true)
        .no_proxy()
        .timeout(Duration::from_secs(10));
    for r in roots {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(r.cert_pem.as_bytes()).unwrap());
    }
    b
}

/// The certificate a new connection to `p` is served.
async fn served_cert(p: &Process, roots: &[&TestCert]) -> Vec<u8> {
    let r = client(roots)
        .build()
        .unwrap()
        .get(p.url("/health"))
        .send()
        .await
        .expect("an HTTPS request");
    assert_eq!(r.status(), 200);
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("the server's certificate")
        .to_vec()
}

/// Starts `tollgate serve` over HTTPS in `dir` on a database of its own.
async fn start(dir: &Path, config: &Path, trusted: &TestCert) -> Process {
    let db = common::db_arg(&common::test_config(dir));
    let c = client(&[trusted]).build().unwrap();
    process::start_with(dir, "server", config, &["--db", &db], "https", &c).await
}

fn log(p: &Process) -> String {
    std::fs::read_to_string(&p.log).unwrap_or_default()
}

fn signal(p: &Process, sig: &str) {
    let pid = p.child.as_ref().unwrap().id().to_string();
    let st = Command::new("kill").arg(sig).arg(pid).status().unwrap();
    assert!(st.success());
}

/// Polls until a new connection is served `want`, for up to `within`.
async fn until_served(
    p: &Process,
    roots: &[&TestCert],
    want: &TestCert,
    within: Duration,
    what: &str,
) {
    let deadline = Instant::now() + within;
    loop {
        if served_cert(p, roots).await == want.der {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the new certificate is not served after {within:?}; log:\n{}",
            log(p)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_and_reloads_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        make_cert("tollgate test A", 1),
        make_cert("tollgate test B", 2),
        make_cert("tollgate test C", 3),
    );
    install(dir.path(), &a);
    let config = write_config(dir.path(), "shutdown_grace_secs = 2\n");
    let mut p = start(dir.path(), &config, &a).await;
    assert!(p.url.starts_with("https://"));
    assert!(log(&p).contains("listening on https://"), "{}", log(&p));

    // Served by rustls with certificate A; HTTP/2 by ALPN, HTTP/1.1 too.
    assert_eq!(served_cert(&p, &[&a]).await, a.der);
    let h2 = client(&[&a]).build().unwrap();
    let r = h2
        .post(p.url("/auth/login"))
        .json(&json!({"username": "admin", "password": common::ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200, "a real route over HTTPS");
    let h1 = client(&[&a]).http1_only().build().unwrap();
    let r = h1.get(p.url("/health")).send().await.unwrap();
    assert_eq!(
        (r.version(), r.status().as_u16()),
        (reqwest::Version::HTTP_11, 200)
    );
    // A client that does not trust the certificate is refused.
    assert!(client(&[&b])
        .build()
        .unwrap()
        .get(p.url("/health"))
        .send()
        .await
        .is_err());

    // SIGHUP: the next connection gets B (well before the 2 s poll would).
    install(dir.path(), &b);
    signal(&p, "-HUP");
    until_served(&p, &[&a, &b], &b, Duration::from_secs(5), "SIGHUP").await;
    // A connection made before keeps working.
    assert_eq!(h1.get(p.url("/health")).send().await.unwrap().status(), 200);

    // No signal: the changed files are found by the poll.
    install(dir.path(), &c);
    until_served(&p, &[&a, &b, &c], &c, Duration::from_secs(8), "file change").await;

    // A pair that does not load (a certificate without its key) is refused
    // with a warning, and C stays in use.
    replace(&dir.path().join("cert.pem"), &a.cert_pem);
    signal(&p, "-HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log(&p).contains("cannot reload the TLS certificate") {
        assert!(Instant::now() < deadline, "no warning; log:\n{}", log(&p));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served_cert(&p, &[&a, &b, &c]).await, c.der);
    replace(&dir.path().join("cert.pem"), "not a certificate\n");
    tokio::time::sleep(tollgate::server::tls::POLL + Duration::from_millis(500)).await;
    assert_eq!(served_cert(&p, &[&a, &b, &c]).await, c.der);

    // SIGTERM still ends the server gracefully.
    signal(&p, "-TERM");
    let mut child = p.child.take().unwrap();
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(exit.code(), Some(0), "{}", log(&p));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_and_slow_handshakes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = make_cert("tollgate test A", 1);
    install(dir.path(), &a);
    let config = write_config(dir.path(), "header_timeout_secs = 1\n");
    let p = start(dir.path(), &config, &a).await;
    let addr = p.url.trim_start_matches("https://").to_owned();

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = plain.get(format!("http://{addr}/health")).send().await;
    assert!(r.is_err(), "plain HTTP was answered: {r:?}");
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(
        !got.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );

    // A client that connects and sends nothing, or half a ClientHello, is
    // closed after header_timeout_secs, while others are served.
    for sent in [&b""[..], &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..]] {
        let started = Instant::now();
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(sent).await.unwrap();
        assert_eq!(served_cert(&p, &[&a]).await, a.der);
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the server closes a stalled handshake");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "closed after {took:?}"
        );
    }
}

/// `tollgate ARGS` in `dir`; (success, stdout, stderr).
fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.args(args).current_dir(dir);
    for v in [
        "TOLLGATE_TLS_CERT",
        "TOLLGATE_TLS_KEY",
        "TOLLGATE_DATABASE_URL",
    ] {
        cmd.env_remove(v);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn half_a_pair_or_a_wrong_key_fails_validation() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        make_cert("tollgate test A", 1),
        make_cert("tollgate test B", 2),
    );
    install(dir.path(), &a);
    let d = dir.path();
    let cert = d.join("cert.pem").to_str().unwrap().to_owned();
    let key = d.join("key.pem").to_str().unwrap().to_owned();
    let db = common::db_arg(&common::test_config(d));

    let only_cert = d.join("only-cert.toml");
    std::fs::write(&only_cert, format!("[server]\ntls_cert = {cert:?}\n")).unwrap();
    let c = only_cert.to_str().unwrap();
    for args in [
        &["check-config", "--config", c][..],
        &["serve", "--config", c, "--db", &db][..],
    ] {
        let (ok, _, err) = run(d, args, &[]);
        assert!(!ok, "{args:?} accepted half a pair");
        assert!(err.contains("server.tls_key"), "{args:?}: {err}");
    }
    // The same from the environment.
    let empty = d.join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let e = empty.to_str().unwrap();
    let (ok, _, err) = run(
        d,
        &["check-config", "--config", e],
        &[("TOLLGATE_TLS_KEY", &key)],
    );
    assert!(!ok && err.contains("server.tls_cert"), "{err}");

    // Both: check-config shows them and loads the pair.
    let (ok, out, err) = run(
        d,
        &["check-config", "--config", e],
        &[("TOLLGATE_TLS_CERT", &cert), ("TOLLGATE_TLS_KEY", &key)],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("tls_cert = {cert:?}"))
            && out.contains(&format!("tls_key = {key:?}")),
        "{out}"
    );
    // A key that is not the certificate's is found before a restart.
    replace(&d.join("key.pem"), &b.key_pem);
    let (ok, _, err) = run(
        d,
        &["check-config", "--config", e],
        &[("TOLLGATE_TLS_CERT", &cert), ("TOLLGATE_TLS_KEY", &key)],
    );
    assert!(!ok && err.contains("server.tls_key"), "{err}");
}

/// `systemctl reload` sends SIGHUP whether or not TLS is configured: a
/// plain-HTTP server logs it and goes on serving (the signal's default
/// action would end the process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_without_tls_is_only_logged() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let db = dir.path().join("t.db");
    let p = process::start(
        dir.path(),
        "plain",
        &config,
        &["--db", db.to_str().unwrap()],
    )
    .await;
    signal(&p, "-HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log(&p).contains("nothing to reload") {
        assert!(
            Instant::now() < deadline,
            "SIGHUP not logged; log:\n{}",
            log(&p)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = reqwest::get(p.url("/health")).await.unwrap();
    assert_eq!(r.status(), 200, "the server stopped on SIGHUP");
}
