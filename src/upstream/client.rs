//! Calls to providers: generation calls ([`post_json`]) and model lists
//! ([`get_models`]), over the connections of [`super::conn`], each with the
//! provider's deadline, and their answers read with a bound.

use super::conn::{self, Conn, Origin, SendFailure, Target};
use super::providers::Provider;
use axum::http::{header, StatusCode};
use bytes::{Bytes, BytesMut};
use http_body::Body as _;
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// A provider's answer; its body must arrive before the call's deadline (the
/// provider's `timeout_secs`, counted from the send).
pub struct UpResponse {
    head: axum::http::response::Parts,
    body: BodyStream,
}

/// Why an answer's body could not be read.
#[derive(Debug)]
pub struct BodyError {
    timeout: bool,
    too_large: bool,
    message: String,
}

impl BodyError {
    pub fn is_timeout(&self) -> bool {
        self.timeout
    }

    /// The body grew past the limit it was read with.
    pub fn is_too_large(&self) -> bool {
        self.too_large
    }

    fn broken(message: String) -> BodyError {
        BodyError {
            timeout: false,
            too_large: false,
            message,
        }
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl UpResponse {
    pub fn status(&self) -> StatusCode {
        self.head.status
    }

    /// The answer is a Server-Sent Events stream.
    pub fn is_event_stream(&self) -> bool {
        self.head
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .get(..17)
                    .is_some_and(|t| t.eq_ignore_ascii_case("text/event-stream"))
            })
    }

    pub fn retry_after(&self) -> Option<&str> {
        self.head
            .headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    }

    /// The whole body, refused past `limit` bytes (reading stops there and
    /// the connection is closed).
    pub async fn bytes(self, limit: usize) -> Result<Bytes, BodyError> {
        use futures_util::StreamExt;
        let mut body = self.body;
        // One piece (the usual case) is returned as it is, without a copy.
        let mut single: Option<Bytes> = None;
        let mut all = BytesMut::new();
        let mut size = 0usize;
        while let Some(piece) = body.next().await {
            let piece = piece?;
            size += piece.len();
            if size > limit {
                return Err(BodyError {
                    timeout: false,
                    too_large: true,
                    message: format!("the answer is larger than {limit} bytes"),
                });
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
        Ok(single.unwrap_or_else(|| all.freeze()))
    }

    /// The body as it arrives.
    pub fn bytes_stream(self) -> BodyStream {
        self.body
    }
}

/// An answer's body as it arrives. Read to its end, its connection goes
/// back to the pool (when the answer's framing allows); dropped earlier, the
/// connection is closed, which tells the provider to stop.
pub struct BodyStream {
    body: Incoming,
    /// The connection, its origin, and whether it may carry another call.
    conn: Option<(Conn, Arc<Origin>, bool)>,
    timer: Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl BodyStream {
    fn end(&mut self) {
        self.done = true;
        if let Some((conn, origin, reusable)) = self.conn.take() {
            conn::release(&origin, conn, reusable);
        }
    }
}

impl futures_util::Stream for BodyStream {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers
                    };
                    if self.body.is_end_stream() {
                        self.end();
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Poll::Ready(None) => {
                    self.end();
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    self.conn = None;
                    return Poll::Ready(Some(Err(BodyError::broken(conn::describe(&e)))));
                }
                Poll::Pending => {}
            }
            if self.timer.as_mut().poll(cx).is_ready() {
                self.done = true;
                self.conn = None;
                return Poll::Ready(Some(Err(BodyError {
                    timeout: true,
                    too_large: false,
                    message: "timed out".into(),
                })));
            }
            return Poll::Pending;
        }
    }
}

/// Why a request got no HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Could not connect (refused, DNS, TLS, proxy): safe to retry.
    Connect(String),
    Timeout,
    /// Reset or broken after connecting.
    Broken(String),
}

/// Sends `body` to `target` within `timeout` (the whole call: connecting,
/// sending, and later reading the body).
async fn call(
    target: &Target,
    body: Bytes,
    accept_events: bool,
    timeout: Duration,
    extra: &conn::Extra,
) -> Result<UpResponse, SendError> {
    let deadline = tokio::time::Instant::now() + timeout;
    match tokio::time::timeout_at(deadline, conn::send(target, body, accept_events, extra)).await {
        Ok(Ok((resp, c))) => {
            let (head, body) = resp.into_parts();
            let reusable = conn::reusable_after(&head.headers);
            let mut stream = BodyStream {
                body,
                conn: Some((c, target.origin.clone(), reusable)),
                timer: Box::pin(tokio::time::sleep_until(deadline)),
                done: false,
            };
            if stream.body.is_end_stream() {
                stream.end();
            }
            Ok(UpResponse { head, body: stream })
        }
        Ok(Err(SendFailure::Connect(m))) => Err(SendError::Connect(m)),
        Ok(Err(SendFailure::Broken(m))) => Err(SendError::Broken(m)),
        Err(_) => Err(SendError::Timeout),
    }
}

/// POSTs a JSON body to the provider's endpoint `path` (one of
/// [`ENDPOINT_PATHS`](super::providers::ENDPOINT_PATHS)).
pub async fn post_json(
    p: &Provider,
    path: &str,
    body: Bytes,
    stream: bool,
    extra: &conn::Extra,
) -> Result<UpResponse, SendError> {
    let target = p.endpoint(path).ok_or_else(|| {
        SendError::Connect("the provider's base_url is not a valid http(s) URL".into())
    })?;
    call(target, body, stream, p.timeout, extra).await
}

/// GETs the provider's model list (at most `limit` bytes); its body on
/// success, a reason otherwise.
pub async fn get_models(p: &Provider, limit: usize) -> Result<Bytes, String> {
    let target = p
        .models_target
        .as_ref()
        .ok_or("the provider's models_url is not a valid http(s) URL")?;
    let resp = call(
        target,
        Bytes::new(),
        false,
        p.timeout.min(Duration::from_secs(30)),
        &[],
    )
    .await
    .map_err(|e| match e {
        SendError::Timeout => "the model list timed out".to_owned(),
        SendError::Connect(m) | SendError::Broken(m) => {
            format!("cannot fetch the model list: {m}")
        }
    })?;
    let status = resp.status();
    let body = resp
        .bytes(limit)
        .await
        .map_err(|e| format!("cannot read the model list: {e}"))?;
    if status == StatusCode::NOT_FOUND {
        return Err(super::errors::not_found_at(
            "GET",
            &p.models_url,
            &p.base_url,
        ));
    }
    if !status.is_success() {
        let n = super::errors::normalize(&p.name, status.as_u16(), None, &body, p.api_key.expose());
        return Err(format!(
            "the model list answered HTTP {}: {}",
            status.as_u16(),
            n.message
        ));
    }
    Ok(body)
}
