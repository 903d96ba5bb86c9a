//! Connections to providers: hyper's HTTP/1.1 client connections, under a
//! pool of idle ones per serving thread.
//!
//! hyper frames every request and answer (`hyper::client::conn::http1`); a
//! connection's task runs on the thread that opened it. A serving thread
//! keeps the idle connections its own calls opened, as nginx's workers do
//! ([`Origin`]'s `idle`). A connection goes back to the pool only when its
//! answer was read to the end and carried nothing ambiguous (SPEC §9): an
//! answer with both `Content-Length` and `Transfer-Encoding`, one cut short
//! or abandoned, or one after which the provider sent anything unasked,
//! closes the connection. Before a kept connection is reused its socket is
//! looked at: readable (stray bytes or a close) means it is dropped.
//!
//! TLS is rustls with the built-in roots plus `ca_file`; a proxy is
//! `proxy` from the configuration, else the environment's like curl's
//! (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`), with `CONNECT` for `https`.

use axum::http::{header, HeaderMap, HeaderValue, Method, Request, Response, Uri};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Idle connections older than this are closed rather than reused (providers
/// close theirs after about a minute or two).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per origin and serving thread.
const MAX_IDLE: usize = 512;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A proxy a provider is reached through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    host: String,
    port: u16,
    /// `Proxy-Authorization`, from the proxy URL's user and password.
    auth: Option<HeaderValue>,
}

impl Proxy {
    /// The proxy for `url`: `configured` (a URL such as
    /// `http://user:pass@host:3128`, or `none` for a direct connection) if
    /// given, else the environment's, as curl reads it; `None` to connect
    /// directly.
    pub fn for_url(url: &Uri, configured: Option<&str>) -> Result<Option<Proxy>, String> {
        use hyper_util::client::proxy::matcher::Matcher;
        let matcher = match configured.filter(|p| !p.is_empty()) {
            // Direct, whatever the environment says.
            Some("none") => return Ok(None),
            Some(p) => {
                // (The URL may carry a password: it is not echoed.)
                let shown = crate::config::mask_password(p);
                let uri: Uri = p.parse().map_err(|_| {
                    format!("{shown:?} is not a proxy URL such as http://host:3128")
                })?;
                if uri.scheme_str() != Some("http") || uri.host().is_none() {
                    return Err(format!(
                        "{shown:?} is not a proxy URL such as http://host:3128 (only http:// proxies are supported)"
                    ));
                }
                Matcher::builder().all(p.to_owned()).build()
            }
            None => Matcher::from_env(),
        };
        let Some(hit) = matcher.intercept(url) else {
            return Ok(None);
        };
        let uri = hit.uri();
        let Some(host) = uri.host() else {
            return Ok(None);
        };
        if uri.scheme_str().is_some_and(|s| s != "http") {
            tracing::warn!("the proxy for a provider is not an http:// proxy; connecting directly");
            return Ok(None);
        }
        Ok(Some(Proxy {
            host: unbracket(host).to_owned(),
            port: uri.port_u16().unwrap_or(80),
            auth: hit.basic_auth().cloned().map(|mut v| {
                v.set_sensitive(true);
                v
            }),
        }))
    }
}

fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Where connections go: a provider's scheme, host and port, how it is
/// reached (TLS, proxy), and this origin's idle connections per thread.
pub struct Origin {
    /// `Some` for `https`.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Without the brackets of an IPv6 literal.
    host: String,
    port: u16,
    proxy: Option<Proxy>,
    idle: thread_local::ThreadLocal<RefCell<Vec<Idle>>>,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("https", &self.tls.is_some())
            .field("host", &self.host)
            .field("port", &self.port)
            .field("proxy", &self.proxy.as_ref().map(|p| (&p.host, p.port)))
            .finish()
    }
}

impl Origin {
    /// The origin of `url` (absolute http or https), reached through `proxy`,
    /// with `tls` for https.
    pub fn new(
        url: &Uri,
        tls: Arc<rustls::ClientConfig>,
        proxy: Option<Proxy>,
    ) -> Option<Arc<Origin>> {
        let https = match url.scheme_str()? {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        Some(Arc::new(Origin {
            tls: https.then_some(tls),
            host: unbracket(url.host()?).to_owned(),
            port: url.port_u16().unwrap_or(if https { 443 } else { 80 }),
            proxy,
            idle: thread_local::ThreadLocal::new(),
        }))
    }

    /// `host:port` as a request target of `CONNECT`.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// An idle connection of this thread that is still good, if any.
    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.get()?.borrow_mut();
        while let Some(i) = idle.pop() {
            if i.since.elapsed() <= IDLE_TIMEOUT && i.conn.clean() {
                return Some(i.conn);
            }
        }
        None
    }

    fn checkin(&self, conn: Conn) {
        let mut idle = self.idle.get_or_default().borrow_mut();
        // The oldest are at the front; drop those past their time.
        let stale = idle
            .iter()
            .take_while(|c| c.since.elapsed() > IDLE_TIMEOUT)
            .count();
        idle.drain(..stale);
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// A TCP socket to a provider (or its proxy), shared by hyper's connection
/// and the pool, which asks its readiness before reusing it. Counts the
/// bytes read from it.
struct Shared {
    tcp: TcpStream,
    read: AtomicU64,
}

#[derive(Clone)]
struct Socket(Arc<Shared>);

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let s = &self.0;
        loop {
            std::task::ready!(s.tcp.poll_read_ready(cx))?;
            match s.tcp.try_read_buf(buf) {
                Ok(n) => {
                    s.read.fetch_add(n as u64, Ordering::Relaxed);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let s = &self.0;
        loop {
            std::task::ready!(s.tcp.poll_write_ready(cx))?;
            match s.tcp.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let s = &self.0;
        loop {
            std::task::ready!(s.tcp.poll_write_ready(cx))?;
            match s.tcp.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return Poll::Ready(r),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = socket2::SockRef::from(&self.0.tcp).shutdown(std::net::Shutdown::Write);
        Poll::Ready(Ok(()))
    }
}

/// The byte stream of a connection, plain or TLS.
enum Io {
    Plain(Socket),
    Tls(Box<tokio_rustls::client::TlsStream<Socket>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An open connection: hyper's handle for sending on it, and its socket.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    socket: Socket,
}

impl Conn {
    /// Still usable after idling: hyper has not seen it close, and nothing
    /// arrived on it (no close, no stray bytes). Asks the reactor's
    /// readiness, so a healthy idle connection costs no system call. (The
    /// readiness waker this registers is replaced by the connection's own as
    /// soon as a request is sent on it.)
    fn clean(&self) -> bool {
        if self.sender.is_closed() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(self.socket.0.tcp.poll_read_ready(&mut cx), Poll::Pending)
    }

    fn bytes_read(&self) -> u64 {
        self.socket.0.read.load(Ordering::Relaxed)
    }
}

/// One prepared request target: where to connect, the request's method and
/// target URI, and the headers every request to it carries (the provider key
/// among them, marked sensitive).
pub struct Target {
    pub origin: Arc<Origin>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The headers carry the provider key: never printed.
        f.debug_struct("Target")
            .field("origin", &self.origin)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// A target for `url` on `origin`. Through a plain-HTTP proxy the request
    /// names the whole URL (absolute form) and carries the proxy's
    /// credentials; otherwise only the path and query.
    pub fn new(method: Method, url: &Uri, origin: Arc<Origin>, mut headers: HeaderMap) -> Target {
        let uri = match &origin.proxy {
            Some(p) if origin.tls.is_none() => {
                if let Some(auth) = &p.auth {
                    headers.insert(header::PROXY_AUTHORIZATION, auth.clone());
                }
                url.clone()
            }
            _ => url.path_and_query().map_or_else(
                || Uri::from_static("/"),
                |pq| {
                    pq.as_str()
                        .parse()
                        .unwrap_or_else(|_| Uri::from_static("/"))
                },
            ),
        };
        Target {
            origin,
            method,
            uri,
            headers,
        }
    }

    fn request(&self, body: Bytes, accept_events: bool, extra: &Extra) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        let h = req.headers_mut();
        h.clone_from(&self.headers);
        if accept_events {
            h.insert(
                header::ACCEPT,
                HeaderValue::from_static("text/event-stream"),
            );
        }
        for (k, v) in extra {
            h.append(k.clone(), v.clone());
        }
        req
    }
}

/// Headers a call carries besides its target's (a client's `anthropic-beta`).
pub type Extra = [(axum::http::HeaderName, HeaderValue)];

/// Why a call got no answer.
#[derive(Debug)]
pub enum SendFailure {
    /// No connection could be made: nothing was sent.
    Connect(String),
    /// The request went out and the connection failed or answered nonsense.
    Broken(String),
}

/// An error's message with its causes.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let m = s.to_string();
        if !parts.contains(&m) {
            parts.push(m);
        }
        src = s.source();
    }
    parts.join(": ")
}

/// Sends `body` to `target` and waits for the answer's head. A kept
/// connection that turns out to be closed before any byte of an answer came
/// back (the provider timed it out as the request went) is replaced by a new
/// one once; any other failure after the request was sent is reported.
pub async fn send(
    target: &Target,
    body: Bytes,
    accept_events: bool,
    extra: &Extra,
) -> Result<(Response<Incoming>, Conn), SendFailure> {
    let origin = &target.origin;
    let mut pooled = origin.checkout();
    loop {
        let reused = pooled.is_some();
        let mut conn = match pooled.take() {
            Some(c) => c,
            None => connect(origin).await.map_err(SendFailure::Connect)?,
        };
        let before = conn.bytes_read();
        let sent = match conn.sender.ready().await {
            Ok(()) => conn
                .sender
                .send_request(target.request(body.clone(), accept_events, extra))
                .await
                .map_err(|e| describe(&e)),
            Err(e) => Err(describe(&e)),
        };
        match sent {
            Ok(resp) => return Ok((resp, conn)),
            Err(_) if reused && conn.bytes_read() == before => continue,
            Err(m) => return Err(SendFailure::Broken(m)),
        }
    }
}

/// Hands a connection back to its origin's pool once its answer was read
/// to the end; `reusable` is false when that answer left its framing in
/// doubt.
pub fn release(origin: &Origin, conn: Conn, reusable: bool) {
    if reusable && !conn.sender.is_closed() {
        origin.checkin(conn);
    }
}

/// Whether an answer's head leaves the connection fit for another request:
/// not with both `Content-Length` and `Transfer-Encoding` (RFC 9112 §6.3:
/// a message a proxy must not pass on as it is).
pub fn reusable_after(head: &HeaderMap) -> bool {
    !(head.contains_key(header::CONTENT_LENGTH) && head.contains_key(header::TRANSFER_ENCODING))
}

async fn tcp(host: &str, port: u16) -> Result<TcpStream, String> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| format!("connecting to {host}:{port} timed out"))?
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(30));
    let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
    Ok(tcp)
}

/// A new connection to `origin`, ready for requests.
async fn connect(origin: &Origin) -> Result<Conn, String> {
    let (host, port) = match &origin.proxy {
        Some(p) => (p.host.as_str(), p.port),
        None => (origin.host.as_str(), origin.port),
    };
    let socket = Socket(Arc::new(Shared {
        tcp: tcp(host, port).await?,
        read: AtomicU64::new(0),
    }));
    let io = match (&origin.tls, &origin.proxy) {
        (None, _) => Io::Plain(socket.clone()),
        (Some(tls), proxy) => {
            if let Some(p) = proxy {
                tunnel(socket.clone(), origin, p).await?;
            }
            let name = rustls::pki_types::ServerName::try_from(origin.host.clone())
                .map_err(|e| format!("{}: {e}", origin.host))?;
            let stream = tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio_rustls::TlsConnector::from(tls.clone()).connect(name, socket.clone()),
            )
            .await
            .map_err(|_| "the TLS handshake timed out".to_owned())?
            .map_err(|e| format!("TLS: {}", describe(&e)))?;
            Io::Tls(Box::new(stream))
        }
    };
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| describe(&e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::trace!(error = %e, "provider connection ended with an error");
        }
    });
    Ok(Conn { sender, socket })
}

/// Opens a `CONNECT` tunnel to `origin` through the proxy on `socket`, with
/// hyper framing the exchange; the socket then carries the tunnel.
async fn tunnel(socket: Socket, origin: &Origin, proxy: &Proxy) -> Result<(), String> {
    let authority = origin.authority();
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, http_body_util::Empty<Bytes>>(TokioIo::new(socket))
        .await
        .map_err(|e| describe(&e))?;
    let conn = tokio::spawn(conn.without_shutdown());
    let mut req = Request::new(http_body_util::Empty::new());
    *req.method_mut() = Method::CONNECT;
    *req.uri_mut() = authority
        .parse()
        .map_err(|_| format!("{authority} is not a host and port"))?;
    if let Ok(v) = HeaderValue::from_str(&authority) {
        req.headers_mut().insert(header::HOST, v);
    }
    if let Some(auth) = &proxy.auth {
        req.headers_mut()
            .insert(header::PROXY_AUTHORIZATION, auth.clone());
    }
    let resp = tokio::time::timeout(CONNECT_TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| "the proxy did not answer CONNECT in time".to_owned())?
        .map_err(|e| format!("proxy: {}", describe(&e)))?;
    if !resp.status().is_success() {
        return Err(format!(
            "the proxy refused to connect to {authority}: HTTP {}",
            resp.status().as_u16()
        ));
    }
    drop(sender);
    // The proxy's connection ends its HTTP part; what follows is the tunnel.
    let parts = conn
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("proxy: {}", describe(&e)))?;
    if !parts.read_buf.is_empty() {
        return Err("the proxy sent data before the tunnel was used".into());
    }
    Ok(())
}

/// The TLS settings for providers: the built-in web PKI roots (Mozilla's),
/// plus the certificates of `ca_file` (PEM), HTTP/1.1.
pub fn tls_config(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let mut n = 0;
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!("{} holds no PEM certificate", path.display()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_keep_secrets_out_of_debug_and_name_their_request() {
        let tls = tls_config(None).unwrap();
        let url: Uri = "https://[::1]/v1/chat/completions?x=1".parse().unwrap();
        let origin = Origin::new(&url, tls.clone(), None).unwrap();
        assert_eq!((origin.host.as_str(), origin.port), ("::1", 443));
        assert_eq!(origin.authority(), "[::1]:443");
        let mut h = HeaderMap::new();
        let mut key = HeaderValue::from_static("Bearer sk-secret");
        key.set_sensitive(true);
        h.insert(header::AUTHORIZATION, key);
        let t = Target::new(Method::POST, &url, origin, h.clone());
        assert_eq!(t.uri, "/v1/chat/completions?x=1");
        assert!(!format!("{t:?}").contains("sk-secret"));
        // Through a plain-HTTP proxy: the absolute URL and the proxy's credentials.
        let url: Uri = "http://api.example:8080/v1/embeddings".parse().unwrap();
        let proxy = Proxy::for_url(&url, Some("http://u:p@proxy.example:3128")).unwrap();
        assert_eq!(
            proxy.as_ref().map(|p| (p.host.as_str(), p.port)),
            Some(("proxy.example", 3128))
        );
        let t = Target::new(
            Method::POST,
            &url,
            Origin::new(&url, tls.clone(), proxy).unwrap(),
            h,
        );
        assert_eq!(t.uri, "http://api.example:8080/v1/embeddings");
        assert_eq!(t.headers[header::PROXY_AUTHORIZATION], "Basic dTpw");
        assert!(!format!("{t:?} {:?}", t.origin).contains("dTpw"));
        assert!(Origin::new(&"ftp://x/y".parse().unwrap(), tls, None).is_none());
        assert_eq!(Proxy::for_url(&url, Some("none")), Ok(None));
        for bad in ["socks5://h:1", "not a url", "https://h:1"] {
            assert!(Proxy::for_url(&url, Some(bad)).is_err(), "{bad}");
        }
    }
}
