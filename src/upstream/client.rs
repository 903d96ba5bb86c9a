//! The HTTP clients the gateway calls providers with (rustls; HTTP/1.1
//! keep-alive, HTTP/2 where the upstream offers it through ALPN).
//!
//! Generation calls, the hot path, go through [`Upstream`]: hyper's pooled
//! client with prebuilt URIs and headers, so a call parses no URL and runs no
//! redirect or proxy layer (reqwest's stack cost ~25k instructions a call).
//! Each serving thread has its own (see [`for_thread`]) so that its pooled
//! connections are driven by its own event loop. Model lists use reqwest.

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

type HyperClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<Bytes>,
>;

/// The pooled client for generation calls.
#[derive(Clone)]
pub struct Upstream {
    http: HyperClient,
}

impl Upstream {
    pub fn new() -> Upstream {
        use hyper_util::client::legacy::connect::HttpConnector;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(30)));
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        use hyper_rustls::ConfigBuilderExt;
        let tls_config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_webpki_roots().with_no_client_auth())
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "using rustls' default TLS settings for upstream calls");
            rustls::ClientConfig::builder()
                .with_webpki_roots()
                .with_no_client_auth()
        });
        let tls = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls_config);
        let connector = tls
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(512)
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .timer(hyper_util::rt::TokioTimer::new())
                .build(connector);
        Upstream { http }
    }
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream::new()
    }
}

thread_local! {
    static THREAD_CLIENT: std::cell::OnceCell<Upstream> = const { std::cell::OnceCell::new() };
}

/// Gives the calling thread (a serving worker) its own client, so that its
/// upstream connections are driven by its own event loop.
pub fn init_thread_client() {
    THREAD_CLIENT.with(|c| {
        let _ = c.set(Upstream::new());
    });
}

/// The calling thread's client if it has one, else `shared`.
pub fn for_thread(shared: &Upstream) -> Upstream {
    THREAD_CLIENT
        .with(|c| c.get().cloned())
        .unwrap_or_else(|| shared.clone())
}

/// An upstream's answer to a generation call; its body must arrive before the
/// call's deadline (the provider's `timeout_secs`, counted from the send).
pub struct UpResponse {
    inner: hyper::Response<hyper::body::Incoming>,
    deadline: tokio::time::Instant,
}

/// Why an answer's body could not be read.
#[derive(Debug)]
pub struct BodyError {
    timeout: bool,
    message: String,
}

impl BodyError {
    pub fn is_timeout(&self) -> bool {
        self.timeout
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
        self.inner.status()
    }

    pub fn headers(&self) -> &axum::http::HeaderMap {
        self.inner.headers()
    }

    /// The whole body.
    pub async fn bytes(self) -> Result<Bytes, BodyError> {
        use http_body_util::BodyExt;
        match tokio::time::timeout_at(self.deadline, self.inner.into_body().collect()).await {
            Ok(Ok(c)) => Ok(c.to_bytes()),
            Ok(Err(e)) => Err(BodyError {
                timeout: false,
                message: chain(&e),
            }),
            Err(_) => Err(BodyError {
                timeout: true,
                message: "timed out".into(),
            }),
        }
    }

    /// The body as it arrives, one network read at a time.
    pub fn bytes_stream(self) -> BodyStream {
        BodyStream {
            body: self.inner.into_body(),
            timer: Box::pin(tokio::time::sleep_until(self.deadline)),
            done: false,
        }
    }
}

pub struct BodyStream {
    body: hyper::body::Incoming,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl futures_util::Stream for BodyStream {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use http_body::Body as _;
        use std::task::Poll;
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            match std::pin::Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                    // trailers: nothing to forward
                }
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(BodyError {
                        timeout: false,
                        message: chain(&e),
                    })));
                }
                Poll::Ready(None) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => break,
            }
        }
        if std::future::Future::poll(self.timer.as_mut(), cx).is_ready() {
            self.done = true;
            return Poll::Ready(Some(Err(BodyError {
                timeout: true,
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

/// POSTs a JSON body to `<base_url><path>`.
pub async fn post_json(
    up: &Upstream,
    p: &Provider,
    path: &str,
    body: Bytes,
    stream: bool,
) -> Result<UpResponse, SendError> {
    let uri = match p.endpoint_url(path) {
        Some(u) => u.clone(),
        None => format!("{}{}", p.base_url, path)
            .parse()
            .map_err(|_| SendError::Connect("the provider's base_url is not a valid URL".into()))?,
    };
    let mut req = hyper::Request::new(http_body_util::Full::new(body));
    *req.method_mut() = axum::http::Method::POST;
    *req.uri_mut() = uri;
    *req.headers_mut() = p.request_headers.clone();
    if stream {
        req.headers_mut().insert(
            axum::http::header::ACCEPT,
            axum::http::HeaderValue::from_static("text/event-stream"),
        );
    }
    let deadline = tokio::time::Instant::now() + p.timeout;
    match tokio::time::timeout_at(deadline, up.http.request(req)).await {
        Ok(Ok(inner)) => Ok(UpResponse { inner, deadline }),
        Ok(Err(e)) if e.is_connect() => Err(SendError::Connect(upstream_error(&e))),
        Ok(Err(e)) => Err(SendError::Broken(upstream_error(&e))),
        Err(_) => Err(SendError::Timeout),
    }
}

/// A client error's causes, without the generic outer message.
fn upstream_error(e: &hyper_util::client::legacy::Error) -> String {
    match std::error::Error::source(e) {
        Some(s) => chain(s),
        None => e.to_string(),
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
