//! The HTTP clients the gateway calls providers with (rustls, keep-alive).
//!
//! Generation calls, the hot path, go through [`post_json`] and the HTTP/1.1
//! client in [`super::h1`]: prebuilt request heads, keep-alive connections
//! pooled per serving thread and read by the call's own task. Model lists
//! and OAuth use reqwest.

use super::h1;
use super::providers::Provider;
use bytes::Bytes;
use std::time::Duration;

pub fn build_client() -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        // An API answer is never a redirect to follow; skipping the policy layer saves work per call.
        .redirect(reqwest::redirect::Policy::none())
        // Upstreams are reached directly: no per-call proxy matching (which
        // re-parses the URL) and no surprise from HTTP_PROXY in the environment.
        .no_proxy()
        .pool_max_idle_per_host(512)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .tcp_keepalive(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// An upstream's answer to a generation call; its body must arrive before the
/// call's deadline (the provider's `timeout_secs`, counted from the send).
pub struct UpResponse {
    head: h1::Head,
    body: h1::Body,
    deadline: tokio::time::Instant,
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
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        parts.push(s.to_string());
        src = s.source();
    }
    parts.join(": ")
}

impl UpResponse {
    pub fn status(&self) -> axum::http::StatusCode {
        axum::http::StatusCode::from_u16(self.head.status)
            .unwrap_or(axum::http::StatusCode::BAD_GATEWAY)
    }

    /// The answer is a Server-Sent Events stream.
    pub fn is_event_stream(&self) -> bool {
        self.head.event_stream
    }

    pub fn retry_after(&self) -> Option<&str> {
        self.head.retry_after.as_deref()
    }

    /// The whole body, refused past `limit` bytes (reading stops there).
    pub async fn bytes(self, limit: usize) -> Result<Bytes, BodyError> {
        match tokio::time::timeout_at(self.deadline, self.body.collect(limit)).await {
            Ok(Ok(Some(b))) => Ok(b),
            Ok(Ok(None)) => Err(BodyError {
                timeout: false,
                too_large: true,
                message: format!("the answer is larger than {limit} bytes"),
            }),
            Ok(Err(message)) => Err(BodyError {
                timeout: false,
                too_large: false,
                message,
            }),
            Err(_) => Err(BodyError {
                timeout: true,
                too_large: false,
                message: "timed out".into(),
            }),
        }
    }

    /// The body as it arrives: what each network read brought, decoded.
    pub fn bytes_stream(self) -> BodyStream {
        BodyStream {
            body: self.body,
            timer: Box::pin(tokio::time::sleep_until(self.deadline)),
            done: false,
        }
    }
}

pub struct BodyStream {
    body: h1::Body,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl futures_util::Stream for BodyStream {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.done {
            return Poll::Ready(None);
        }
        match self.body.poll_data(cx) {
            Poll::Ready(Ok(Some(data))) => return Poll::Ready(Some(Ok(data))),
            Poll::Ready(Ok(None)) => {
                self.done = true;
                return Poll::Ready(None);
            }
            Poll::Ready(Err(message)) => {
                self.done = true;
                return Poll::Ready(Some(Err(BodyError {
                    timeout: false,
                    too_large: false,
                    message,
                })));
            }
            Poll::Pending => {}
        }
        if std::future::Future::poll(self.timer.as_mut(), cx).is_ready() {
            self.done = true;
            return Poll::Ready(Some(Err(BodyError {
                timeout: true,
                too_large: false,
                message: "timed out".into(),
            })));
        }
        Poll::Pending
    }
}

/// Why a request got no HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Could not connect (refused, DNS, TLS): safe to retry.
    Connect(String),
    Timeout,
    /// Reset or broken after connecting.
    Broken(String),
}

impl SendError {
    fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            SendError::Timeout
        } else if e.is_connect() {
            SendError::Connect(describe(&e))
        } else {
            SendError::Broken(describe(&e))
        }
    }
}

/// An error's message chain without the URL (which may carry a key in a query).
pub fn describe(e: &reqwest::Error) -> String {
    match std::error::Error::source(e) {
        Some(s) => chain(s),
        None => {
            let s = e.to_string();
            match e.url() {
                Some(u) => s.replace(u.as_str(), "<upstream>"),
                None => s,
            }
        }
    }
}

fn authorised(mut req: reqwest::RequestBuilder, p: &Provider) -> reqwest::RequestBuilder {
    if !p.api_key.is_empty() {
        req = req.bearer_auth(p.api_key.expose());
    }
    for (k, v) in &p.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    req
}

/// POSTs a JSON body to `<base_url><path>` (`path` one of
/// [`ENDPOINT_PATHS`](super::providers::ENDPOINT_PATHS)).
pub async fn post_json(
    p: &Provider,
    path: &str,
    body: Bytes,
    stream: bool,
) -> Result<UpResponse, SendError> {
    let target = p.endpoint(path).ok_or_else(|| {
        SendError::Connect("the provider's base_url is not a valid http(s) URL".into())
    })?;
    let deadline = tokio::time::Instant::now() + p.timeout;
    match tokio::time::timeout_at(deadline, h1::send(target, &body, stream)).await {
        Ok(Ok((head, body))) => Ok(UpResponse {
            head,
            body,
            deadline,
        }),
        Ok(Err(h1::SendFailure::Connect(e))) => Err(SendError::Connect(chain(&e))),
        Ok(Err(h1::SendFailure::Broken(m))) => Err(SendError::Broken(m)),
        Err(_) => Err(SendError::Timeout),
    }
}

/// GETs the provider's model list; its body on success, a reason otherwise.
pub async fn get_models(client: &reqwest::Client, p: &Provider) -> Result<Bytes, String> {
    let req = client
        .get(&p.models_url)
        .timeout(p.timeout.min(Duration::from_secs(30)));
    let resp = authorised(req, p)
        .send()
        .await
        .map_err(|e| match SendError::from_reqwest(e) {
            SendError::Timeout => "the model list timed out".to_owned(),
            SendError::Connect(m) | SendError::Broken(m) => {
                format!("cannot fetch the model list: {m}")
            }
        })?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("cannot read the model list: {}", describe(&e)))?;
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
