//! The configured providers: the four built-ins with their defaults, every field
//! overridable in `[providers.NAME]`, plus any custom OpenAI-compatible server.

use super::conn::Target;
use crate::config::{Config, ProviderApi, Secret, BUILTIN_PROVIDERS};
use axum::http::{Method, Uri};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    OpenRouter,
    Glama,
    Requesty,
    Aiml,
    Custom,
}

#[derive(Debug)]
pub struct Provider {
    pub id: String,
    pub name: String,
    pub kind: Kind,
    /// Without a trailing `/`.
    pub base_url: String,
    pub api_key: Secret,
    pub timeout: Duration,
    pub headers: Vec<(String, String)>,
    pub models_url: String,
    pub models_ttl: Duration,
    pub cap_field: String,
    /// The dialect it speaks.
    pub api: ProviderApi,
    pub is_default: bool,
    /// Each generation endpoint, prepared once: where to connect and the
    /// headers every call carries (host, content type, user agent, the key as
    /// a bearer token, `headers`).
    pub endpoints: Vec<(&'static str, super::conn::Target)>,
    /// The model list, prepared the same way.
    pub models_target: Option<super::conn::Target>,
}

/// The generation endpoints of an OpenAI-compatible provider, relative to its base URL.
pub const ENDPOINT_PATHS: [&str; 3] = ["/chat/completions", "/completions", "/embeddings"];

/// The generation endpoint of an Anthropic provider.
pub const ANTHROPIC_PATHS: [&str; 1] = ["/messages"];

/// The `anthropic-version` sent to Anthropic providers.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

impl Provider {
    /// The prepared endpoint `path` (one of [`ENDPOINT_PATHS`]).
    pub fn endpoint(&self, path: &str) -> Option<&super::conn::Target> {
        self.endpoints
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, u)| u)
    }

    pub fn builtin(&self) -> bool {
        self.kind != Kind::Custom
    }

    /// Active: a built-in needs a key; a custom provider needs none.
    pub fn active(&self) -> bool {
        !self.builtin() || !self.api_key.is_empty()
    }

    /// Why the provider is inactive, in words that say what to do.
    pub fn inactive_reason(&self) -> Option<String> {
        (!self.active()).then(|| {
            format!(
                "no API key: set {} or api_key in [providers.{}]",
                key_env_var(&self.id),
                self.id
            )
        })
    }
}

pub fn key_env_var(id: &str) -> String {
    format!("{}_API_KEY", id.to_uppercase().replace('-', "_"))
}

fn kind_of(id: &str) -> Kind {
    match id {
        "openrouter" => Kind::OpenRouter,
        "glama" => Kind::Glama,
        "requesty" => Kind::Requesty,
        "aiml" => Kind::Aiml,
        _ => Kind::Custom,
    }
}

#[derive(Debug, Clone)]
pub struct Providers {
    pub list: Vec<Arc<Provider>>,
    by_id: HashMap<String, Arc<Provider>>,
    pub default_id: String,
    pub aliases: Aliases,
}

/// `[routing] aliases`: model names that stand for others.
#[derive(Debug, Default, Clone)]
pub struct Aliases {
    exact: HashMap<String, String>,
    /// Names with a `*`: (before it, after it, target), the longest first,
    /// so that the most specific name wins.
    patterns: Vec<(String, String, String)>,
}

impl Aliases {
    pub fn from_config(aliases: &std::collections::BTreeMap<String, String>) -> Aliases {
        let mut a = Aliases::default();
        for (name, target) in aliases {
            match name.split_once('*') {
                Some((before, after)) => {
                    a.patterns
                        .push((before.to_owned(), after.to_owned(), target.clone()))
                }
                None => {
                    a.exact.insert(name.clone(), target.clone());
                }
            }
        }
        a.patterns
            .sort_by_key(|(b, e, _)| std::cmp::Reverse(b.len() + e.len()));
        a
    }

    /// The model `model` stands for, when an alias names it.
    pub fn resolve(&self, model: &str) -> Option<String> {
        if self.exact.is_empty() && self.patterns.is_empty() {
            return None;
        }
        if let Some(t) = self.exact.get(model) {
            return Some(t.clone());
        }
        self.patterns.iter().find_map(|(before, after, target)| {
            let middle = model
                .strip_prefix(before.as_str())?
                .strip_suffix(after.as_str())?;
            Some(target.replacen('*', middle, 1))
        })
    }
}

impl Providers {
    pub fn from_config(cfg: &Config) -> Providers {
        let mut ids: Vec<String> = BUILTIN_PROVIDERS
            .iter()
            .map(|(id, _, _)| id.to_string())
            .collect();
        ids.extend(
            cfg.providers
                .keys()
                .filter(|k| !ids.contains(k))
                .cloned()
                .collect::<Vec<_>>(),
        );
        let mut list = Vec::new();
        for id in ids {
            let builtin = BUILTIN_PROVIDERS.iter().find(|(b, _, _)| *b == id);
            let section = cfg.providers.get(&id).cloned().unwrap_or_default();
            let kind = kind_of(&id);
            let default_base = builtin
                .map(|(_, _, url)| url.to_string())
                .unwrap_or_default();
            let base_url = section
                .base_url
                .clone()
                .unwrap_or(default_base.clone())
                .trim_end_matches('/')
                .to_owned();
            let models_url = match section.models_url.as_deref().filter(|s| !s.is_empty()) {
                Some(u) => u.to_owned(),
                // Glama's catalogue lives outside its OpenAI path (PROVIDERS.md).
                None if kind == Kind::Glama && base_url == default_base.trim_end_matches('/') => {
                    "https://glama.ai/api/gateway/v1/models".to_owned()
                }
                // AIML gives prices only when asked for them (PROVIDERS.md).
                None if kind == Kind::Aiml => {
                    format!("{base_url}/models?include=capabilities,pricing")
                }
                None => format!("{base_url}/models"),
            };
            let headers = match section.headers.clone() {
                Some(h) => h.0.into_iter().collect(),
                None if kind == Kind::OpenRouter => vec![
                    ("HTTP-Referer".to_owned(), cfg.server.public_url.clone()),
                    ("X-Title".to_owned(), "tollgate".to_owned()),
                ],
                None => vec![],
            };
            let api = section.api.unwrap_or_default();
            let call_headers = request_headers(&base_url, &section.api_key, &headers, api);
            let paths: &[&'static str] = match api {
                ProviderApi::OpenAI => &ENDPOINT_PATHS,
                ProviderApi::Anthropic => &ANTHROPIC_PATHS,
            };
            let reach = Reach::of(cfg, &section);
            let endpoints = match base_url.parse::<Uri>().ok().and_then(|u| reach.origin(&u)) {
                Some(origin) => paths
                    .iter()
                    .filter_map(|path| {
                        let url: Uri = format!("{base_url}{path}").parse().ok()?;
                        let t =
                            Target::new(Method::POST, &url, origin.clone(), call_headers.clone());
                        Some((*path, t))
                    })
                    .collect(),
                None => vec![],
            };
            let models_target = models_url.parse::<Uri>().ok().and_then(|url| {
                let mut h = request_headers(&models_url, &section.api_key, &headers, api);
                h.remove(axum::http::header::CONTENT_TYPE);
                Some(Target::new(Method::GET, &url, reach.origin(&url)?, h))
            });
            list.push(Arc::new(Provider {
                name: section
                    .name
                    .clone()
                    .unwrap_or_else(|| builtin.map(|b| b.1.to_string()).unwrap_or(id.clone())),
                kind,
                api_key: section.api_key.clone(),
                timeout: Duration::from_secs(section.timeout_secs.unwrap_or(600)),
                headers,
                models_url,
                models_ttl: Duration::from_secs(section.models_ttl_secs.unwrap_or(600)),
                cap_field: section
                    .cap_field
                    .clone()
                    .unwrap_or_else(|| "max_tokens".into()),
                api,
                is_default: id == cfg.routing.default_provider,
                endpoints,
                models_target,
                base_url,
                id,
            }));
        }
        let by_id = list.iter().map(|p| (p.id.clone(), p.clone())).collect();
        Providers {
            list,
            by_id,
            default_id: cfg.routing.default_provider.clone(),
            aliases: Aliases::from_config(&cfg.routing.aliases),
        }
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Provider>> {
        self.by_id.get(id)
    }

    pub fn default_provider(&self) -> &Arc<Provider> {
        // validate() guarantees the default names a provider.
        self.by_id.get(&self.default_id).unwrap_or(&self.list[0])
    }
}

/// How a provider is reached: its TLS roots and its proxy setting.
struct Reach {
    tls: Arc<rustls::ClientConfig>,
    proxy: Option<String>,
}

impl Reach {
    /// The provider's `ca_file` and `proxy`, else `[routing]`'s (validated
    /// with the configuration; a file that became unreadable since falls
    /// back to the built-in roots, with a warning).
    fn of(cfg: &Config, section: &crate::config::ProviderConfig) -> Reach {
        let ca_file = section.ca_file.as_ref().or(cfg.routing.ca_file.as_ref());
        let tls = super::conn::tls_config(ca_file.map(|p| p.as_path())).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "using the built-in TLS roots only");
            super::conn::tls_config(None).unwrap_or_else(|_| default_tls())
        });
        Reach {
            tls,
            proxy: section.proxy.clone().or_else(|| cfg.routing.proxy.clone()),
        }
    }

    fn origin(&self, url: &Uri) -> Option<Arc<super::conn::Origin>> {
        let proxy = super::conn::Proxy::for_url(url, self.proxy.as_deref()).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring a provider's proxy");
            None
        });
        super::conn::Origin::new(url, self.tls.clone(), proxy)
    }
}

/// rustls' defaults with the built-in roots, when the ring provider cannot
/// be set up (it always can; this only avoids a panic path).
fn default_tls() -> Arc<rustls::ClientConfig> {
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
            .with_no_client_auth(),
    )
}

fn request_headers(
    base_url: &str,
    key: &Secret,
    extra: &[(String, String)],
    api: ProviderApi,
) -> axum::http::HeaderMap {
    use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
    let mut h = HeaderMap::new();
    // Host as hyper would write it (no user info, no default port), set here
    // once instead of formatted on every call.
    if let Ok(uri) = base_url.parse::<axum::http::Uri>() {
        if let Some(host) = uri.host() {
            let default = match uri.scheme_str() {
                Some("https") => 443,
                _ => 80,
            };
            let value = match uri.port_u16() {
                Some(p) if p != default => format!("{host}:{p}"),
                _ => host.to_owned(),
            };
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(header::HOST, v);
            }
        }
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::USER_AGENT,
        HeaderValue::from_static(concat!("tollgate/", env!("CARGO_PKG_VERSION"))),
    );
    if api == ProviderApi::Anthropic {
        h.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(ANTHROPIC_VERSION),
        );
    }
    if !key.is_empty() {
        let (name, value) = match api {
            ProviderApi::OpenAI => (header::AUTHORIZATION, format!("Bearer {}", key.expose())),
            ProviderApi::Anthropic => (
                HeaderName::from_static("x-api-key"),
                key.expose().to_owned(),
            ),
        };
        match HeaderValue::from_str(&value) {
            Ok(mut v) => {
                v.set_sensitive(true);
                h.insert(name, v);
            }
            Err(_) => tracing::warn!("a provider key holds characters a header cannot carry"),
        }
    }
    for (k, v) in extra {
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(k), Ok(v)) if k == header::HOST => {
                h.insert(k, v);
            }
            (Ok(k), Ok(v)) => {
                h.append(k, v);
            }
            _ => tracing::warn!(header = %k, "skipping a provider header that is not valid HTTP"),
        }
    }
    h
}

#[cfg(test)]
mod header_tests {
    use super::*;

    #[test]
    fn request_headers_carry_host_key_and_extras() {
        let key = Secret::new("sk-test");
        let host = |url: &str| {
            request_headers(url, &key, &[], ProviderApi::OpenAI)
                .get("host")
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            host("http://127.0.0.1:9000/v1").as_deref(),
            Some("127.0.0.1:9000")
        );
        assert_eq!(
            host("https://api.example.com/v1").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(
            host("https://api.example.com:443/v1").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(host("http://h:80").as_deref(), Some("h"));
        let h = request_headers(
            "https://a.example/v1",
            &key,
            &[
                ("Host".into(), "b.example".into()),
                ("X-Title".into(), "t".into()),
            ],
            ProviderApi::OpenAI,
        );
        assert_eq!(h.get_all("host").iter().count(), 1);
        assert_eq!(h["host"], "b.example");
        assert_eq!(h["authorization"], "Bearer sk-test");
        assert!(h["authorization"].is_sensitive());
        assert_eq!(h["x-title"], "t");
    }
}
