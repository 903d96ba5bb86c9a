//! Upstreams and proxies that tests drive byte by byte: a provider that
//! misbehaves on purpose (stray bytes after an answer, ambiguous framing,
//! answers cut short), a TLS provider with the test CA's certificate, and an
//! HTTP proxy that records what it was asked.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The test CA's certificate (PEM), which signed the `localhost` /
/// `127.0.0.1` certificate the TLS servers here present.
pub fn test_ca_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/test-ca.pem")
}

/// Reads one request (head and `Content-Length` body) from `s`; `None` at
/// the end of the connection.
pub async fn read_request<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let whole = String::from_utf8_lossy(&buf[..end + 4 + len]).to_string();
                buf.drain(..end + 4 + len);
                return Some(whole);
            }
        }
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A chat completion whose usage is `p` prompt and `c` completion tokens.
pub fn completion(p: u64, c: u64) -> String {
    format!(
        r#"{{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{{"index":0,"message":{{"role":"assistant","content":"answer {p}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{p},"completion_tokens":{c},"total_tokens":{}}}}}"#,
        p + c
    )
}

/// What a misbehaving provider does after (or instead of) a normal answer
/// to the first request of its first connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehave {
    /// Answers, then 300 ms later writes a second, unasked answer.
    StrayAnswer,
    /// Answers with both `Content-Length` and `Transfer-Encoding: chunked`.
    LengthAndChunked,
    /// Announces 200 bytes and sends 40, then closes.
    CutShort,
}

/// A provider on 127.0.0.1 answering every POST on every connection with
/// [`completion`] (the n-th overall gets usage `n`, `n`), except the first,
/// as `how` says; a GET (the model list) gets an empty list. Records
/// `(connection number, request line)` of each POST.
pub struct RawUpstream {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<(usize, String)>>>,
}

impl RawUpstream {
    pub async fn start(how: Misbehave) -> RawUpstream {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
        let log = seen.clone();
        tokio::spawn(async move {
            let mut conn_no = 0;
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                conn_no += 1;
                let log = log.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while let Some(req) = read_request(&mut s, &mut buf).await {
                        let line = req.lines().next().unwrap_or("").to_owned();
                        if line.starts_with("GET ") {
                            // The model list: empty, and not counted.
                            let list = r#"{"object":"list","data":[]}"#;
                            let ok = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{list}",
                                list.len()
                            );
                            if s.write_all(ok.as_bytes()).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        let n = {
                            let mut log = log.lock().unwrap();
                            log.push((conn_no, line));
                            log.len() as u64
                        };
                        let body = completion(n, n);
                        let special = n == 1;
                        match how {
                            Misbehave::StrayAnswer if special => {
                                let ok = format!(
                                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                                    body.len()
                                );
                                s.write_all(ok.as_bytes()).await.unwrap();
                                tokio::time::sleep(Duration::from_millis(300)).await;
                                let forged = completion(900, 900);
                                let stray = format!(
                                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{forged}",
                                    forged.len()
                                );
                                let _ = s.write_all(stray.as_bytes()).await;
                            }
                            Misbehave::LengthAndChunked if special => {
                                let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
                                let head = format!(
                                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\ntransfer-encoding: chunked\r\n\r\n",
                                    body.len()
                                );
                                s.write_all(head.as_bytes()).await.unwrap();
                                s.write_all(chunked.as_bytes()).await.unwrap();
                            }
                            Misbehave::CutShort if special => {
                                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n";
                                s.write_all(head.as_bytes()).await.unwrap();
                                s.write_all(&body.as_bytes()[..40]).await.unwrap();
                                return;
                            }
                            _ => {
                                let ok = format!(
                                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                                    body.len()
                                );
                                if s.write_all(ok.as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        RawUpstream { port, seen }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    pub fn seen(&self) -> Vec<(usize, String)> {
        self.seen.lock().unwrap().clone()
    }
}

/// A TLS acceptor with the test certificate for `localhost` and `127.0.0.1`.
pub fn test_tls_acceptor() -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata");
    let cert = CertificateDer::from_pem_file(dir.join("test-localhost.pem")).unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("test-localhost.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// Serves `app` over TLS on 127.0.0.1; returns the port.
pub async fn serve_tls(app: axum::Router) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let acceptor = test_tls_acceptor();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    port
}

/// Request lines a proxy saw, each with its `Proxy-Authorization`.
type ProxyLog = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// An HTTP proxy on 127.0.0.1: `CONNECT host:port` opens a tunnel; a request
/// with an absolute URL is passed on to its host. Records each request line
/// with its `Proxy-Authorization`.
pub struct TestProxy {
    pub port: u16,
    pub seen: ProxyLog,
}

impl TestProxy {
    pub async fn start() -> TestProxy {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let seen: ProxyLog = Arc::default();
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                tokio::spawn(proxy_connection(s, log.clone()));
            }
        });
        TestProxy { port, seen }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn seen(&self) -> Vec<(String, Option<String>)> {
        self.seen.lock().unwrap().clone()
    }
}

async fn proxy_connection(mut client: TcpStream, log: ProxyLog) {
    let mut buf = Vec::new();
    let Some(req) = read_request(&mut client, &mut buf).await else {
        return;
    };
    let line = req.lines().next().unwrap_or("").to_owned();
    let auth = req.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case("proxy-authorization")
            .then(|| v.trim().to_owned())
    });
    log.lock().unwrap().push((line.clone(), auth));
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method == "CONNECT" {
        let Ok(mut up) = TcpStream::connect(target).await else {
            let _ = client
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                .await;
            return;
        };
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .unwrap();
        let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
        return;
    }
    // An absolute URL: forwarded in origin form, this request and the rest.
    let Ok(uri) = target.parse::<axum::http::Uri>() else {
        return;
    };
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let Ok(mut up) = TcpStream::connect(authority.as_str()).await else {
        return;
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let rest = req.split_once("\r\n").map_or("", |(_, r)| r);
    let forwarded = format!("{method} {path} HTTP/1.1\r\n{rest}");
    up.write_all(forwarded.as_bytes()).await.unwrap();
    up.write_all(&buf).await.unwrap();
    let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
}
