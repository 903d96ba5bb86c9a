//! The one pooled HTTP client shared by every provider (rustls; HTTP/1.1
//! keep-alive, HTTP/2 where the upstream offers it through ALPN), and the
//! requests the gateway makes with it.

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
    let mut parts = Vec::new();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        parts.push(s.to_string());
        src = s.source();
    }
    if parts.is_empty() {
        parts.push(e.without_url_ref().to_string());
    }
    parts.join(": ")
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let s = self.to_string();
        match self.url() {
            Some(u) => s.replace(u.as_str(), "<upstream>"),
            None => s,
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
    client: &reqwest::Client,
    p: &Provider,
    path: &str,
    body: Bytes,
    stream: bool,
) -> Result<reqwest::Response, SendError> {
    let req = match p.endpoint_url(path) {
        Some(url) => client.post(url.clone()),
        None => client.post(format!("{}{}", p.base_url, path)),
    };
    let mut req = req
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .timeout(p.timeout)
        .body(body);
    if stream {
        req = req.header(reqwest::header::ACCEPT, "text/event-stream");
    }
    authorised(req, p)
        .send()
        .await
        .map_err(SendError::from_reqwest)
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
