//! The HTTP/1.1 client of generation calls: keep-alive connections pooled per
//! serving thread and driven by the task of the call that uses them.
//!
//! A call writes its prebuilt request head and body in one write, parses the
//! answer's head with `httparse`, and reads the body itself (length-delimited,
//! chunked or up to the close). There is no connection task, so an answer's
//! bytes reach the call without crossing a channel, and no shared pool: a
//! serving thread keeps the idle connections its own calls opened, as nginx's
//! workers do. A connection whose answer was not read to its end is closed,
//! which is also how a cancelled call tells the provider to stop generating.

use bytes::{Buf, Bytes, BytesMut};
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Idle connections older than this are closed rather than reused (providers
/// close theirs after about a minute or two).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per origin and serving thread.
const MAX_IDLE: usize = 512;
/// An answer head larger than this is refused.
const MAX_HEAD: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_CHUNK: usize = 8 * 1024;

/// Where to connect: scheme, host and port of a provider's base URL.
#[derive(Debug, PartialEq, Eq)]
pub struct Origin {
    tls: bool,
    /// Without the brackets of an IPv6 literal.
    host: String,
    port: u16,
    /// `scheme://host:port`, the pool's key.
    key: Box<str>,
}

/// One endpoint of one provider, prepared once: where to connect and the
/// request head (request line and fixed headers, including the provider key).
pub struct Target {
    pub origin: Arc<Origin>,
    head: Box<[u8]>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The head carries the provider key: never printed.
        f.debug_struct("Target")
            .field("origin", &self.origin.key)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// The target of `url` with `headers` (written in their order, names in
    /// lower case as hyper writes them). `None` if `url` is not an absolute
    /// http(s) URL.
    pub fn new(url: &str, headers: &axum::http::HeaderMap) -> Option<Target> {
        let uri: axum::http::Uri = url.parse().ok()?;
        let tls = match uri.scheme_str()? {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        let host = uri.host()?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let key = format!(
            "{}://{}:{port}",
            if tls { "https" } else { "http" },
            uri.host()?
        )
        .into_boxed_str();
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut head = Vec::with_capacity(256);
        head.extend_from_slice(b"POST ");
        head.extend_from_slice(path.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in headers {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        Some(Target {
            origin: Arc::new(Origin {
                tls,
                host,
                port,
                key,
            }),
            head: head.into_boxed_slice(),
        })
    }

    /// The whole request: head, `Accept` for a stream, length, body.
    fn request(&self, body: &[u8], stream: bool) -> Vec<u8> {
        let mut msg = Vec::with_capacity(self.head.len() + 64 + body.len());
        msg.extend_from_slice(&self.head);
        if stream {
            msg.extend_from_slice(b"accept: text/event-stream\r\n");
        }
        msg.extend_from_slice(b"content-length: ");
        msg.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        msg.extend_from_slice(b"\r\n\r\n");
        msg.extend_from_slice(body);
        msg
    }
}

/// A byte stream to a provider, plain or TLS.
enum Io {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Io {
    fn tcp(&self) -> &TcpStream {
        match self {
            Io::Tcp(s) => s,
            Io::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_read(cx, buf),
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
            Io::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A connection with its read buffer.
struct Conn {
    io: Io,
    buf: BytesMut,
    idle_since: Instant,
}

impl Conn {
    /// Still usable after idling: nothing arrived on it (no close, no stray
    /// bytes). Asks the reactor's readiness first, so a healthy idle
    /// connection costs no system call.
    fn alive(&mut self) -> bool {
        if self.idle_since.elapsed() > IDLE_TIMEOUT {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.io.tcp().poll_read_ready(&mut cx) {
            Poll::Pending => return true,
            Poll::Ready(Err(_)) => return false,
            Poll::Ready(Ok(())) => {}
        }
        // Readable: a close, stray bytes, or readiness left from the last answer.
        let mut probe = [0u8; 1];
        let mut rb = ReadBuf::new(&mut probe);
        matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut rb),
            Poll::Pending
        )
    }

    async fn fill(&mut self) -> io::Result<usize> {
        use tokio::io::AsyncReadExt;
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(READ_CHUNK);
        }
        self.io.read_buf(&mut self.buf).await
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }
}

thread_local! {
    static POOL: RefCell<hashbrown::HashMap<Box<str>, Vec<Conn>>> = RefCell::new(hashbrown::HashMap::new());
}

fn checkout(origin: &Origin) -> Option<Conn> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let idle = p.get_mut(&origin.key)?;
        while let Some(mut c) = idle.pop() {
            if c.alive() {
                return Some(c);
            }
        }
        None
    })
}

fn checkin(origin: &Origin, mut conn: Conn) {
    conn.idle_since = Instant::now();
    // A reused buffer is cheaper than a fresh one, unless an answer still holds it.
    conn.buf.clear();
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let idle = match p.get_mut(&origin.key) {
            Some(v) => v,
            None => p.entry(origin.key.clone()).or_default(),
        };
        // The oldest are at the front; drop those past their time.
        let stale = idle
            .iter()
            .take_while(|c| c.idle_since.elapsed() > IDLE_TIMEOUT)
            .count();
        idle.drain(..stale);
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    });
}

fn client_config(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|b| {
        b.with_root_certificates(roots.clone())
            .with_no_client_auth()
    })
    .unwrap_or_else(|e| {
        tracing::warn!(error = %e, "using rustls' default TLS settings for upstream calls");
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth()
    });
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

#[cfg(test)]
thread_local! {
    /// A test's own roots (its test CA) instead of the public ones.
    static TEST_TLS: RefCell<Option<Arc<rustls::ClientConfig>>> = const { RefCell::new(None) };
}

/// TLS settings: the public web PKI roots (Mozilla's, built in), HTTP/1.1.
fn tls_config() -> Arc<rustls::ClientConfig> {
    #[cfg(test)]
    if let Some(c) = TEST_TLS.with(|t| t.borrow().clone()) {
        return c;
    }
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            client_config(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
        })
        .clone()
}

async fn connect(origin: &Origin) -> io::Result<Io> {
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((origin.host.as_str(), origin.port)),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connecting timed out"))??;
    tcp.set_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(30));
    let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
    if !origin.tls {
        return Ok(Io::Tcp(tcp));
    }
    let name = rustls::pki_types::ServerName::try_from(origin.host.clone())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let tls = tokio_rustls::TlsConnector::from(tls_config())
        .connect(name, tcp)
        .await?;
    Ok(Io::Tls(Box::new(tls)))
}

/// Why a call got no answer.
#[derive(Debug)]
pub enum SendFailure {
    /// No connection could be made: nothing was sent.
    Connect(io::Error),
    /// The request went out and the connection failed or answered nonsense.
    Broken(String),
}

/// An answer's head; its body follows in [`Body`].
pub struct Head {
    pub status: u16,
    /// `Content-Type: text/event-stream` (the only use of the type).
    pub event_stream: bool,
    pub retry_after: Option<String>,
}

/// Sends `body` to `target` and reads the answer's head. A kept-alive
/// connection that turns out to be closed before any byte of an answer (the
/// provider timed it out as the request went) is replaced by a new one once.
pub async fn send(target: &Target, body: &[u8], stream: bool) -> Result<(Head, Body), SendFailure> {
    let msg = target.request(body, stream);
    let mut pooled = checkout(&target.origin);
    loop {
        let reused = pooled.is_some();
        let mut conn = match pooled.take() {
            Some(c) => c,
            None => Conn {
                io: connect(&target.origin)
                    .await
                    .map_err(SendFailure::Connect)?,
                buf: BytesMut::with_capacity(READ_CHUNK),
                idle_since: Instant::now(),
            },
        };
        let written = match conn.io.write_all(&msg).await {
            Ok(()) => conn.io.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            if reused {
                continue;
            }
            return Err(SendFailure::Broken(format!("cannot send the request: {e}")));
        }
        match read_head(&mut conn).await {
            Ok((head, framing, keep_alive)) => {
                return Ok((
                    head,
                    Body {
                        conn: Some(conn),
                        framing,
                        keep_alive,
                        origin: target.origin.clone(),
                    },
                ))
            }
            Err(HeadError::Closed) if reused => continue,
            Err(HeadError::Closed) => {
                return Err(SendFailure::Broken(
                    "the provider closed the connection without answering".into(),
                ))
            }
            Err(HeadError::Other(m)) => return Err(SendFailure::Broken(m)),
        }
    }
}

enum HeadError {
    /// Closed or reset before the first byte of an answer.
    Closed,
    Other(String),
}

/// How an answer's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes remain.
    Length(u64),
    Chunked(ChunkState),
    /// Up to the connection's close.
    Close,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data, at its CRLF.
    DataEnd,
    /// After the last chunk, at the trailer lines.
    Trailers,
}

async fn read_head(conn: &mut Conn) -> Result<(Head, Framing, bool), HeadError> {
    let mut got_any = false;
    loop {
        if !conn.buf.is_empty() {
            got_any = true;
            let mut headers = [httparse::EMPTY_HEADER; 96];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&conn.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = resp.code.unwrap_or(0);
                    if (100..200).contains(&status) && status != 101 {
                        // An interim answer (100 Continue, 103 Early Hints): the real one follows.
                        conn.buf.advance(n);
                        continue;
                    }
                    let parsed = interpret(&resp).map_err(HeadError::Other)?;
                    conn.buf.advance(n);
                    return Ok(parsed);
                }
                Ok(httparse::Status::Partial) if conn.buf.len() > MAX_HEAD => {
                    return Err(HeadError::Other(
                        "the provider's answer head is too large".into(),
                    ))
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => {
                    return Err(HeadError::Other(format!(
                        "the provider's answer is not HTTP/1.1: {e}"
                    )))
                }
            }
        }
        match conn.fill().await {
            Ok(0) if !got_any => return Err(HeadError::Closed),
            Ok(0) => {
                return Err(HeadError::Other(
                    "the provider closed the connection in the middle of its answer".into(),
                ))
            }
            Ok(_) => {}
            Err(e)
                if !got_any
                    && matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                    ) =>
            {
                return Err(HeadError::Closed)
            }
            Err(e) => return Err(HeadError::Other(e.to_string())),
        }
    }
}

fn interpret(resp: &httparse::Response<'_, '_>) -> Result<(Head, Framing, bool), String> {
    let status = resp.code.unwrap_or(0);
    let mut head = Head {
        status,
        event_stream: false,
        retry_after: None,
    };
    let mut length: Option<u64> = None;
    let mut chunked = false;
    // Any Transfer-Encoding overrides Content-Length (RFC 9112 §6.3).
    let mut coded = false;
    let mut keep_alive = resp.version == Some(1);
    for h in resp.headers.iter() {
        let value = || String::from_utf8_lossy(h.value).trim().to_owned();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|c| c.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or("the provider sent an invalid Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("the provider sent conflicting Content-Length headers".into());
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            coded = true;
            chunked = value()
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            if !chunked {
                // Another coding last: the body runs to the close (RFC 9112 §6.3).
                keep_alive = false;
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = value();
            for token in v.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && resp.version == Some(0) {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("content-type") {
            let v = h.value.trim_ascii_start();
            head.event_stream = v.len() >= 17 && v[..17].eq_ignore_ascii_case(b"text/event-stream");
        } else if h.name.eq_ignore_ascii_case("retry-after") {
            head.retry_after = Some(value());
        }
    }
    let framing = if status == 204 || status == 304 {
        Framing::Done
    } else if chunked {
        Framing::Chunked(ChunkState::Size)
    } else if let Some(n) = length.filter(|_| !coded) {
        if n == 0 {
            Framing::Done
        } else {
            Framing::Length(n)
        }
    } else {
        keep_alive = false;
        Framing::Close
    };
    Ok((head, framing, keep_alive))
}

/// An answer's body, read from its connection as it arrives. Read to its end,
/// the connection goes back to the pool; dropped earlier, it is closed.
pub struct Body {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    origin: Arc<Origin>,
}

/// What the buffer yields next.
enum Step {
    Data(BytesMut),
    /// Framing consumed (a chunk header or trailer); look again.
    Again,
    NeedMore,
    End,
}

impl Body {
    /// Decodes the next piece of the body from the buffered bytes.
    fn step(&mut self) -> Result<Step, String> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Step::End);
        };
        let buf = &mut conn.buf;
        match self.framing {
            Framing::Done => Ok(Step::End),
            Framing::Close => {
                if buf.is_empty() {
                    Ok(Step::NeedMore)
                } else {
                    Ok(Step::Data(buf.split()))
                }
            }
            Framing::Length(left) => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let n = (buf.len() as u64).min(left) as usize;
                let data = buf.split_to(n);
                self.framing = if left == n as u64 {
                    Framing::Done
                } else {
                    Framing::Length(left - n as u64)
                };
                Ok(Step::Data(data))
            }
            Framing::Chunked(ChunkState::Size) => match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((used, size))) => {
                    buf.advance(used);
                    self.framing = Framing::Chunked(if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    });
                    Ok(Step::Again)
                }
                Ok(httparse::Status::Partial) if buf.len() > 4096 => {
                    Err("the provider sent an invalid chunk size".into())
                }
                Ok(httparse::Status::Partial) => Ok(Step::NeedMore),
                Err(_) => Err("the provider sent an invalid chunk size".into()),
            },
            Framing::Chunked(ChunkState::Data(left)) => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let n = (buf.len() as u64).min(left) as usize;
                let data = buf.split_to(n);
                self.framing = Framing::Chunked(if left == n as u64 {
                    ChunkState::DataEnd
                } else {
                    ChunkState::Data(left - n as u64)
                });
                Ok(Step::Data(data))
            }
            Framing::Chunked(ChunkState::DataEnd) => {
                if buf.len() < 2 {
                    return Ok(Step::NeedMore);
                }
                if &buf[..2] != b"\r\n" {
                    return Err("the provider sent a malformed chunk".into());
                }
                buf.advance(2);
                self.framing = Framing::Chunked(ChunkState::Size);
                Ok(Step::Again)
            }
            Framing::Chunked(ChunkState::Trailers) => {
                // Trailer lines, each ended by CRLF, then an empty line.
                let Some(eol) = memchr::memmem::find(buf, b"\r\n") else {
                    return if buf.len() > MAX_HEAD {
                        Err("the provider's trailers are too large".into())
                    } else {
                        Ok(Step::NeedMore)
                    };
                };
                buf.advance(eol + 2);
                if eol == 0 {
                    self.framing = Framing::Done;
                }
                Ok(Step::Again)
            }
        }
    }

    /// The end was reached: hand the connection back when it can carry
    /// another call.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.keep_alive && self.framing == Framing::Done && conn.buf.is_empty() {
                checkin(&self.origin, conn);
            }
        }
    }

    /// Every piece of the body that is already buffered, as one; `Ok(None)`
    /// at the end; `Poll::Pending` until something arrives.
    pub fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, String>> {
        let mut out: Option<BytesMut> = None;
        loop {
            match self.step()? {
                Step::Data(d) => match out.as_mut() {
                    None => out = Some(d),
                    Some(o) => o.extend_from_slice(&d),
                },
                Step::Again => {}
                Step::End => {
                    self.finish();
                    return Poll::Ready(Ok(out.map(BytesMut::freeze)));
                }
                Step::NeedMore => {
                    if let Some(o) = out {
                        return Poll::Ready(Ok(Some(o.freeze())));
                    }
                    let Some(conn) = self.conn.as_mut() else {
                        return Poll::Ready(Ok(None));
                    };
                    match conn.poll_fill(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(0)) if self.framing == Framing::Close => {
                            self.framing = Framing::Done;
                            self.keep_alive = false;
                        }
                        Poll::Ready(Ok(0)) => {
                            self.conn = None;
                            return Poll::Ready(Err(
                                "the provider closed the connection before the answer's end".into(),
                            ));
                        }
                        Poll::Ready(Ok(_)) => {}
                        Poll::Ready(Err(e)) => {
                            self.conn = None;
                            return Poll::Ready(Err(e.to_string()));
                        }
                    }
                }
            }
        }
    }

    /// The rest of the body; `None` once it grows past `limit` bytes.
    pub async fn collect(mut self, limit: usize) -> Result<Option<Bytes>, String> {
        // One piece (the usual case) is returned as it is, without a copy.
        let mut single: Option<Bytes> = None;
        let mut all = BytesMut::new();
        let mut size = 0usize;
        loop {
            match std::future::poll_fn(|cx| self.poll_data(cx)).await? {
                Some(piece) => {
                    size += piece.len();
                    if size > limit {
                        return Ok(None);
                    }
                    if single.is_none() && all.is_empty() {
                        single = Some(piece);
                    } else {
                        if let Some(s) = single.take() {
                            all.extend_from_slice(&s);
                        }
                        all.extend_from_slice(&piece);
                    }
                }
                None => return Ok(Some(single.unwrap_or_else(|| all.freeze()))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn target(port: u16) -> Target {
        let mut h = axum::http::HeaderMap::new();
        h.insert("host", format!("127.0.0.1:{port}").parse().unwrap());
        Target::new(&format!("http://127.0.0.1:{port}/v1/chat/completions"), &h).unwrap()
    }

    /// Sends `body` to `t` and reads the whole answer.
    async fn fetch(t: &Target, body: &[u8], stream: bool) -> (Head, Bytes) {
        let (h, b) = send(t, body, stream).await.unwrap();
        (h, b.collect(usize::MAX).await.unwrap().unwrap())
    }

    type Log = Arc<std::sync::Mutex<Vec<String>>>;
    type Answers = Arc<std::sync::Mutex<std::vec::IntoIter<&'static [u8]>>>;

    /// A server that answers each request on each connection with the next
    /// of `answers` (raw bytes; empty: close without answering), and records
    /// the requests with their connection's number. With `tls`, it speaks
    /// TLS with the test certificate for `localhost`.
    async fn serve(answers: Vec<&'static [u8]>, tls: bool) -> (u16, Log) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let seen: Log = Arc::default();
        let log = seen.clone();
        let acceptor = tls.then(test_acceptor);
        tokio::spawn(async move {
            let answers: Answers = Arc::new(std::sync::Mutex::new(answers.into_iter()));
            let mut conn_no = 0;
            loop {
                let (s, _) = l.accept().await.unwrap();
                conn_no += 1;
                let (answers, log) = (answers.clone(), log.clone());
                match &acceptor {
                    Some(a) => {
                        let a = a.clone();
                        tokio::spawn(async move {
                            if let Ok(s) = a.accept(s).await {
                                answer(s, conn_no, answers, log).await;
                            }
                        });
                    }
                    None => {
                        tokio::spawn(answer(s, conn_no, answers, log));
                    }
                }
            }
        });
        (port, seen)
    }

    async fn server(answers: Vec<&'static [u8]>) -> (u16, Log) {
        serve(answers, false).await
    }

    async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
        mut s: S,
        conn_no: usize,
        answers: Answers,
        log: Log,
    ) {
        let mut buf = Vec::new();
        loop {
            let mut tmp = [0u8; 4096];
            let n = s.read(&mut tmp).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&tmp[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            let Some(end) = text.find("\r\n\r\n") else {
                continue;
            };
            let len: usize = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.parse().unwrap());
            if buf.len() < end + 4 + len {
                continue;
            }
            log.lock()
                .unwrap()
                .push(format!("conn {conn_no}: {}", &text[..end + 4 + len]));
            buf.drain(..end + 4 + len);
            let next = answers.lock().unwrap().next();
            match next {
                Some(b"") => return, // close without answering
                Some(a) => {
                    s.write_all(a).await.unwrap();
                    s.flush().await.unwrap();
                    if a.windows(17).any(|w| w == b"Connection: close") {
                        return;
                    }
                }
                None => return,
            }
        }
    }

    fn test_acceptor() -> tokio_rustls::TlsAcceptor {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let cert =
            CertificateDer::from_pem_slice(include_bytes!("testdata/test-localhost.pem")).unwrap();
        let key =
            PrivateKeyDer::from_pem_slice(include_bytes!("testdata/test-localhost.key")).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    #[tokio::test]
    async fn tls_answers_are_read_and_the_connection_kept() {
        use rustls::pki_types::pem::PemObject;
        let ca = rustls::pki_types::CertificateDer::from_pem_slice(include_bytes!(
            "testdata/test-ca.pem"
        ))
        .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        TEST_TLS.with(|t| *t.borrow_mut() = Some(client_config(roots)));
        let (port, seen) = serve(
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nsecond\r\n0\r\n\r\n",
            ],
            true,
        )
        .await;
        let mut h = axum::http::HeaderMap::new();
        h.insert("host", format!("localhost:{port}").parse().unwrap());
        let t = Target::new(&format!("https://localhost:{port}/v1/embeddings"), &h).unwrap();
        assert_eq!(fetch(&t, b"{}", false).await.1, &b"first"[..]);
        assert_eq!(fetch(&t, b"{}", false).await.1, &b"second"[..]);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        assert!(
            seen[1].starts_with("conn 1: POST /v1/embeddings HTTP/1.1\r\n"),
            "{seen:?}"
        );
        // A certificate the client does not trust is refused: a connect error.
        TEST_TLS.with(|t| *t.borrow_mut() = None);
        let (port, seen) = serve(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], true).await;
        let t = Target::new(&format!("https://localhost:{port}/v1/embeddings"), &h).unwrap();
        assert!(matches!(
            send(&t, b"{}", false).await,
            Err(SendFailure::Connect(_))
        ));
        assert!(seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn length_chunked_and_close_delimited_bodies() {
        let (port, seen) = server(vec![
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 429 Too Many\r\nRetry-After: 3\r\nContent-Type:  Text/Event-Stream; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nab\r\n\r\n3\r\ncde\r\n0\r\nX-Trailer: t\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it",
        ])
        .await;
        let t = target(port);
        let (h, body) = fetch(&t, b"{}", false).await;
        assert_eq!(h.status, 200);
        assert!(!h.event_stream);
        assert_eq!(body, &b"{\"a\":1}"[..]);
        let (h, body) = fetch(&t, b"{\"x\":2}", true).await;
        assert_eq!(h.status, 429);
        assert_eq!(h.retry_after.as_deref(), Some("3"));
        assert!(h.event_stream);
        assert_eq!(body, &b"ab\r\ncde"[..]);
        assert_eq!(fetch(&t, b"{}", false).await.1, &b"all of it"[..]);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3);
        // The first two answers kept the connection; the requests are whole.
        assert!(
            seen[0].starts_with("conn 1: POST /v1/chat/completions HTTP/1.1\r\n"),
            "{}",
            seen[0]
        );
        assert!(
            seen[0].ends_with("content-length: 2\r\n\r\n{}"),
            "{}",
            seen[0]
        );
        assert!(seen[1].starts_with("conn 1: "), "{}", seen[1]);
        assert!(seen[1].contains("accept: text/event-stream\r\n"));
        assert!(seen[1].ends_with("{\"x\":2}"));
        assert!(seen[2].starts_with("conn 1: "));
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced() {
        // The server answers once, then closes the connection without answering the next.
        let (port, seen) = server(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nagain",
        ])
        .await;
        let t = target(port);
        assert_eq!(fetch(&t, b"{}", false).await.1, &b"ok"[..]);
        assert_eq!(fetch(&t, b"{}", false).await.1, &b"again"[..]);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3);
        assert!(seen[2].starts_with("conn 2: "), "{seen:?}");
    }

    #[tokio::test]
    async fn framing_follows_rfc_9112() {
        // A Transfer-Encoding other than chunked overrides Content-Length:
        // the body runs to the close, and the connection is not kept.
        let (port, seen) = server(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nContent-Length: 2\r\nConnection: close\r\n\r\nlonger than two",
            b"HTTP/1.1 204 No Content\r\n\r\n",
        ])
        .await;
        let t = target(port);
        assert_eq!(fetch(&t, b"{}", false).await.1, &b"longer than two"[..]);
        // A 204 has no body, whatever follows.
        let (h, body) = fetch(&t, b"{}", false).await;
        assert_eq!(h.status, 204);
        assert_eq!(body, &b""[..]);
        assert!(seen.lock().unwrap()[1].starts_with("conn 2: "));
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
        ] {
            let (port, _) = server(vec![bad]).await;
            let r = match send(&target(port), b"{}", false).await {
                Ok((_, b)) => b.collect(usize::MAX).await.err(),
                Err(SendFailure::Broken(m)) => Some(m),
                Err(e) => panic!("{e:?}"),
            };
            assert!(r.is_some(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[tokio::test]
    async fn an_answer_cut_short_is_an_error_and_its_connection_is_not_reused() {
        let (port, seen) =
            server(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"]).await;
        let t = target(port);
        let (_, mut b) = send(&t, b"{}", false).await.unwrap();
        let first = std::future::poll_fn(|cx| b.poll_data(cx)).await.unwrap();
        assert_eq!(first.as_deref(), Some(&b"short"[..]));
        drop(b);
        // Not read to its end: the next call opens a new connection.
        let r = send(&t, b"{}", false).await;
        assert!(r.is_err());
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        assert!(seen[1].starts_with("conn 2: "), "{seen:?}");
        // Garbage instead of HTTP is reported, not a panic.
        let (port, _) = server(vec![b"SSH-2.0-OpenSSH\r\n\r\n"]).await;
        match send(&target(port), b"{}", false).await {
            Err(SendFailure::Broken(m)) => assert!(m.contains("not HTTP"), "{m}"),
            other => panic!("{:?}", other.err()),
        }
        // Nobody listening: a connect failure.
        let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        assert!(matches!(
            send(&target(port), b"{}", false).await,
            Err(SendFailure::Connect(_))
        ));
    }

    #[test]
    fn targets_parse_their_url_and_keep_the_key_out_of_debug() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("authorization", "Bearer sk-secret".parse().unwrap());
        let t = Target::new("https://[::1]/v1/chat/completions?x=1", &h).unwrap();
        assert!(t.origin.tls);
        assert_eq!(t.origin.host, "::1");
        assert_eq!(t.origin.port, 443);
        assert_eq!(&*t.origin.key, "https://[::1]:443");
        let head = String::from_utf8(t.head.to_vec()).unwrap();
        assert_eq!(
            head,
            "POST /v1/chat/completions?x=1 HTTP/1.1\r\nauthorization: Bearer sk-secret\r\n"
        );
        assert!(!format!("{t:?}").contains("sk-secret"));
        assert!(Target::new("ftp://x/y", &h).is_none());
        assert!(Target::new("not a url", &h).is_none());
    }
}
