//! The server's own HTTP/1.1 front for generation calls, the hot path.
//!
//! Every connection starts here. A request that is a plain generation call —
//! an HTTP/1.1 `POST` to a generation path with a `Content-Length` body within
//! `[server] max_body_bytes`, and no `Origin`, `Expect`, `Upgrade` or
//! `Transfer-Encoding` — is read, answered and written here: a whole answer
//! costs one read and one write, with no per-request task, channel or request
//! object. Anything else (another route, a chunked body, HTTP/1.0, a malformed
//! or oversized head, HTTP/2) hands the connection, with the bytes already
//! read, to hyper and the router for the rest of its life ([`Rewind`]). So a
//! generation call gets the same answer on either side, and every other
//! request is served exactly as before.
//!
//! While an answer is awaited or streamed, the connection is watched for the
//! client closing it: the call is then dropped, which cancels the upstream
//! request and settles the call (or drains it, with `on_disconnect = "drain"`).

use crate::http::generation_call;
use crate::service::proxy::Endpoint;
use crate::state::AppState;
use axum::http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Headers a request may have here; more go to hyper (which allows 100).
const MAX_HEADERS: usize = 64;
/// A head longer than this goes to hyper, which answers it or refuses it.
const MAX_HEAD: usize = 16 * 1024;
/// At most this much of a next request is read while an answer is pending.
const MAX_AHEAD: usize = 64 * 1024;

/// A generation call's head.
#[derive(Debug)]
struct Call {
    ep: Endpoint,
    head_len: usize,
    body_len: usize,
    /// Where the path is in the head (for the log line).
    path: std::ops::Range<usize>,
    /// The client asked to close the connection after this answer.
    close: bool,
    /// Only the credential headers: nothing else is read on this path.
    creds: HeaderMap,
}

#[derive(Debug)]
enum Head {
    /// More bytes are needed.
    Partial,
    /// Not a plain generation call: hyper takes the connection.
    Other,
    Call(Call),
}

fn parse(buf: &[u8], limit: usize) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Head::Partial,
        _ => return Head::Other,
    };
    if req.method != Some("POST") || req.version != Some(1) {
        return Head::Other;
    }
    let target = req.path.unwrap_or("");
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let Some(ep) = crate::http::generation_endpoint(path) else {
        return Head::Other;
    };
    let path_start = target.as_ptr() as usize - buf.as_ptr() as usize;
    let mut body_len = None;
    let mut close = false;
    let mut creds = HeaderMap::new();
    for h in req.headers.iter() {
        let name = h.name;
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if is("content-length") {
            match (body_len, digits(h.value)) {
                (None, Some(n)) => body_len = Some(n),
                _ => return Head::Other,
            }
        } else if is("transfer-encoding") || is("origin") || is("expect") || is("upgrade") {
            return Head::Other;
        } else if is("connection") {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Head::Other;
                }
            }
        } else if is("authorization") || is("x-api-key") {
            let Ok(value) = HeaderValue::from_bytes(h.value) else {
                return Head::Other;
            };
            let name = if is("authorization") {
                AUTHORIZATION
            } else {
                HeaderName::from_static("x-api-key")
            };
            creds.append(name, value);
        }
    }
    match body_len {
        Some(body_len) if body_len <= limit => Head::Call(Call {
            ep,
            head_len,
            body_len,
            path: path_start..path_start + path.len(),
            close,
            creds,
        }),
        _ => Head::Other,
    }
}

/// A Content-Length value: digits only, and no more than a `usize` holds.
fn digits(v: &[u8]) -> Option<usize> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0usize, |n, d| {
        n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
    })
}

/// Serves the connection's generation calls. Returns the bytes read so far
/// when hyper must take the connection over, `None` when it is finished.
pub async fn serve(
    stream: &mut TcpStream,
    st: &AppState,
    stop: &mut watch::Receiver<bool>,
) -> Option<BytesMut> {
    let limit = st.config.server.max_body_bytes;
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut out = Vec::with_capacity(2 * 1024);
    // One wait for the shutdown signal for the connection's whole life: it
    // registers once, instead of once for every request.
    let mut signal = stop.clone();
    let stopping = async move {
        let _ = signal.wait_for(|s| *s).await;
    };
    tokio::pin!(stopping);
    loop {
        let call = loop {
            match parse(&buf, limit) {
                Head::Call(c) => break c,
                Head::Other => return Some(buf),
                Head::Partial => {}
            }
            let idle = buf.is_empty();
            buf.reserve(4 * 1024);
            let read = tokio::select! {
                biased;
                r = stream.read_buf(&mut buf) => r,
                // Shutting down: a connection between requests closes now.
                () = &mut stopping, if idle => return None,
            };
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        };
        let total = call.head_len + call.body_len;
        buf.reserve(total.saturating_sub(buf.len()));
        while buf.len() < total {
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
        let mut msg = buf.split_to(total);
        let body = msg.split_off(call.head_len).freeze();
        let path = std::str::from_utf8(&msg[call.path.clone()]).unwrap_or("");
        let answer = generation_call(st.clone(), call.ep, path, &call.creds, body);
        let resp = tokio::select! {
            biased;
            r = answer => r,
            // The client is gone: dropping the call cancels it.
            _ = gone(stream, &mut buf) => return None,
        };
        // The client asked to close, the server is stopping, or the answer
        // says the connection must end (a handler's `Connection: close`).
        let close = call.close
            || *stop.borrow()
            || resp
                .headers()
                .get(axum::http::header::CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        if write(stream, resp, close, &mut out, &mut buf)
            .await
            .is_err()
        {
            return None;
        }
        if close {
            let _ = stream.shutdown().await;
            return None;
        }
    }
}

/// Resolves when the client has closed the connection (or it failed). Bytes
/// it sends meanwhile (a next request) are kept in `ahead`, up to [`MAX_AHEAD`].
/// Readiness is polled (the waker sits in the socket's reader slot) rather
/// than awaited through `readable()`, which would queue and unqueue a waiter
/// on every call.
async fn gone(stream: &TcpStream, ahead: &mut BytesMut) {
    std::future::poll_fn(|cx| loop {
        if ahead.len() >= MAX_AHEAD {
            // Not read further until this answer is written; never resolves.
            return Poll::Pending;
        }
        match stream.poll_read_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(()),
            Poll::Ready(Ok(())) => {}
        }
        ahead.reserve(4 * 1024);
        match stream.try_read_buf(ahead) {
            Ok(0) => return Poll::Ready(()),
            Ok(_) => {}
            // The readiness is cleared: the next poll registers the waker.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Poll::Ready(()),
        }
    })
    .await
}

/// Writes an answer: a body of known length in one write with its head, any
/// other body (an event stream) chunked, each piece written as it comes.
async fn write(
    stream: &mut TcpStream,
    resp: Response,
    close: bool,
    out: &mut Vec<u8>,
    ahead: &mut BytesMut,
) -> io::Result<()> {
    use http_body::Body as _;
    let (parts, mut body) = resp.into_parts();
    out.clear();
    head(out, &parts, close);
    if let Some(len) = body.size_hint().exact() {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map_err(io::Error::other)?.into_data() {
                out.extend_from_slice(&data);
            }
        }
        return stream.write_all(out).await;
    }
    out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
    stream.write_all(out).await?;
    loop {
        out.clear();
        // Every piece ready now goes out in one write; then wait for the next.
        let step = std::future::poll_fn(|cx| gather(Pin::new(&mut body), cx, out));
        let step = tokio::select! {
            biased;
            s = step => s,
            _ = gone(stream, ahead) => return Err(io::ErrorKind::ConnectionReset.into()),
        };
        match step {
            Step::More => stream.write_all(out).await?,
            Step::End => {
                out.extend_from_slice(b"0\r\n\r\n");
                return stream.write_all(out).await;
            }
            // A body that fails ends the connection without the last chunk,
            // so that the client sees the answer was cut short.
            Step::Failed(e) => {
                let _ = stream.write_all(out).await;
                return Err(io::Error::other(e));
            }
        }
    }
}

/// `n` in lower-case hexadecimal, as a chunk size.
fn push_hex(out: &mut Vec<u8>, n: usize) {
    let digits = (usize::BITS - n.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        out.push(b"0123456789abcdef"[(n >> (4 * i)) & 0xf]);
    }
}

enum Step {
    More,
    End,
    Failed(axum::Error),
}

/// Appends the body's ready pieces to `out` as chunks; pending until one is.
fn gather(
    mut body: Pin<&mut axum::body::Body>,
    cx: &mut Context<'_>,
    out: &mut Vec<u8>,
) -> Poll<Step> {
    use http_body::Body as _;
    loop {
        match body.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref().filter(|d| !d.is_empty()) {
                    push_hex(out, data.len());
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(data);
                    out.extend_from_slice(b"\r\n");
                }
                if out.len() >= 64 * 1024 {
                    return Poll::Ready(Step::More);
                }
            }
            Poll::Ready(None) => return Poll::Ready(Step::End),
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Step::Failed(e)),
            Poll::Pending if out.is_empty() => return Poll::Pending,
            Poll::Pending => return Poll::Ready(Step::More),
        }
    }
}

/// The status line and headers; framing headers are this module's to write.
fn head(out: &mut Vec<u8>, parts: &axum::http::response::Parts, close: bool) {
    use axum::http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name == CONNECTION {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !parts.headers.contains_key(DATE) {
        date(out);
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
}

/// `date: <IMF-fixdate>\r\n`, formatted once a second per thread.
fn date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs || d.1.is_empty() {
            *d = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(d.1.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
}

/// A connection with bytes already read from it in front: what hyper reads
/// when it takes a connection over from [`serve`].
pub struct Rewind {
    pre: Bytes,
    io: TcpStream,
}

impl Rewind {
    pub fn new(io: TcpStream, pre: Bytes) -> Rewind {
        Rewind { pre, io }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(raw: &str) -> Head {
        parse(raw.as_bytes(), 1000)
    }

    #[test]
    fn plain_generation_calls_are_taken_and_everything_else_handed_over() {
        let call = "POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer k\r\n\
                    X-Api-Key: j\r\nConnection: keep-alive, Close\r\nContent-Length: 12\r\n\r\n{\"model\":1}";
        let Head::Call(c) = head_of(call) else {
            panic!("{:?}", head_of(call))
        };
        assert_eq!(c.ep, Endpoint::Chat);
        assert_eq!(c.body_len, 12);
        assert_eq!(&call[c.path.clone()], "/v1/chat/completions");
        assert_eq!(&call[c.head_len..], "{\"model\":1}");
        assert!(c.close);
        assert_eq!(c.creds["authorization"], "Bearer k");
        assert_eq!(c.creds["x-api-key"], "j");
        assert_eq!(c.creds.len(), 2, "only credentials are kept");
        for (path, ep) in [
            ("/llm/completions", Endpoint::Completions),
            ("/embeddings", Endpoint::Embeddings),
        ] {
            let raw = format!("POST {path} HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
            assert!(matches!(head_of(&raw), Head::Call(c) if c.ep == ep && !c.close));
        }
        // Cut anywhere in the head: more bytes are needed.
        for i in 0..call.find("\r\n\r\n").unwrap() + 3 {
            assert!(matches!(head_of(&call[..i]), Head::Partial), "{i}");
        }
        let other = [
            "GET /v1/chat/completions HTTP/1.1\r\n\r\n",
            "POST /v1/models HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.0\r\ncontent-length: 0\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\ncontent-length: +1\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\ncontent-length: 1001\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\norigin: http://a\r\ncontent-length: 0\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 0\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\nconnection: upgrade\r\ncontent-length: 0\r\n\r\n",
            "POST http://a/v1/chat/completions HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\nbad header\r\n\r\n",
        ];
        for raw in other {
            assert!(matches!(head_of(raw), Head::Other), "{raw}");
        }
        // A head that never ends is handed over once it is too long to be ours.
        let long = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nx: {}",
            "a".repeat(MAX_HEAD)
        );
        assert!(matches!(head_of(&long), Head::Other));
    }

    #[test]
    fn chunk_sizes_are_hexadecimal() {
        for n in [0, 1, 9, 10, 15, 16, 255, 256, 4095, 65536, usize::MAX] {
            let mut out = Vec::new();
            push_hex(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{n:x}"));
        }
    }

    #[test]
    fn the_head_of_an_answer_is_framed_here() {
        let resp = axum::http::Response::builder()
            .status(201)
            .header("content-type", "application/json")
            .header("content-length", "999")
            .header("connection", "keep-alive")
            .body(())
            .unwrap();
        let (parts, ()) = resp.into_parts();
        let mut out = Vec::new();
        head(&mut out, &parts, true);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ndate: ")
        );
        assert!(text.ends_with(" GMT\r\nconnection: close\r\n"), "{text}");
        assert!(
            !text.contains("999") && !text.contains("keep-alive"),
            "{text}"
        );
    }
}
