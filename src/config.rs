//! Configuration: the keys of SPEC §2, layered defaults < `config.toml` < `.env`
//! < environment < command-line flags, validated before anything starts.
//!
//! Secrets are [`Secret`], whose `Debug` and `Serialize` print `***`, so a log
//! line or `tollgate check-config` cannot leak them.

use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A string that never prints itself.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
}

/// A URL printed with its password masked (`http://user:***@host:3128`).
fn masked_url<S: Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(u) => s.serialize_str(&mask_password(u)),
        None => s.serialize_none(),
    }
}

/// A provider's extra headers (`[providers.x.headers]`). They may carry a
/// credential (`Authorization`, `X-Api-Key`): wherever they are printed
/// (`Debug`, `check-config`), the value of a header whose name suggests one
/// is `***`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Headers(pub BTreeMap<String, String>);

impl Headers {
    /// Whether a header of this name may carry a credential.
    pub fn is_secret(name: &str) -> bool {
        let n = name.to_ascii_lowercase();
        ["auth", "key", "token", "secret", "cookie", "password"]
            .iter()
            .any(|w| n.contains(w))
    }

    fn masked(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| match Self::is_secret(k) {
            true => (k.as_str(), "***"),
            false => (k.as_str(), v.as_str()),
        })
    }
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.masked()).finish()
    }
}

impl Serialize for Headers {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.masked())
    }
}

/// `url` with the password of its user information replaced by `***`.
pub fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split_once(':').map_or(user, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..])
        }
        None => url.to_owned(),
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub routing: RoutingConfig,
    pub metering: MeteringConfig,
    pub providers: BTreeMap<String, ProviderConfig>,
    pub plans: Vec<PlanConfig>,
    pub oauth: BTreeMap<String, OAuthConfig>,
    pub pricing: BTreeMap<String, PricingConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    pub public_url: String,
    pub max_body_bytes: usize,
    pub cors_allowed_origins: Vec<String>,
    pub oauth_redirect_allowlist: Vec<String>,
    pub trusted_proxies: Vec<String>,
    pub metrics: MetricsAccess,
    pub shutdown_grace_secs: u64,
    /// Threads serving connections, each with its own event loop and upstream
    /// connection pool; 0 means one per CPU.
    pub workers: usize,
    /// The longest a request head may take to arrive, from its first byte
    /// (on a new connection: from the connect).
    pub header_timeout_secs: u64,
    /// The longest wait for the next piece of a request body.
    pub body_timeout_secs: u64,
    /// How long a connection may sit idle between requests.
    pub keep_alive_secs: u64,
    /// Open connections in all; more are refused at once.
    pub max_connections: usize,
    /// Open connections from one peer address; more are refused at once.
    pub max_connections_per_ip: usize,
    /// HTTPS: the certificate chain (PEM, the server's certificate first).
    /// With `tls_key`, tollgate serves HTTPS instead of plain HTTP; both are
    /// read again on SIGHUP and when either file changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// HTTPS: the private key of `tls_cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8000".into(),
            public_url: "http://localhost:8000".into(),
            max_body_bytes: 4 * 1024 * 1024,
            cors_allowed_origins: vec![],
            oauth_redirect_allowlist: vec![],
            trusted_proxies: vec![],
            metrics: MetricsAccess::Admin,
            shutdown_grace_secs: 30,
            workers: 0,
            header_timeout_secs: 10,
            body_timeout_secs: 30,
            keep_alive_secs: 75,
            max_connections: 4096,
            max_connections_per_ip: 256,
            tls_cert: None,
            tls_key: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsAccess {
    Admin,
    Public,
    Off,
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// The SQLite file (the default backend).
    pub path: PathBuf,
    /// A PostgreSQL URL (`postgres://user:password@host:5432/tollgate`):
    /// selects PostgreSQL instead of `path`, for one or many replicas.
    #[serde(serialize_with = "masked_url", skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// How long a replica's reservations outlive it when it dies without
    /// settling them (SPEC §11). Default: the longest provider
    /// `timeout_secs` plus 60.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservation_lease_secs: Option<u64>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            path: PathBuf::from("tollgate.db"),
            url: None,
            reservation_lease_secs: None,
        }
    }
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("path", &self.path)
            .field("url", &self.url.as_deref().map(mask_password))
            .field("reservation_lease_secs", &self.reservation_lease_secs)
            .finish()
    }
}

/// `[server] listen`: an address and port, or a host name and port
/// (`localhost:8000`), whose IPv4 address is preferred when it has one, as
/// the README's URLs (`http://127.0.0.1:8000`) assume.
pub fn resolve_listen(listen: &str) -> Option<SocketAddr> {
    if let Ok(a) = listen.parse::<SocketAddr>() {
        return Some(a);
    }
    use std::net::ToSocketAddrs;
    let all: Vec<SocketAddr> = listen.to_socket_addrs().ok()?.collect();
    all.iter()
        .find(|a| a.is_ipv4())
        .or_else(|| all.first())
        .copied()
}

/// Whether `s` names a PostgreSQL database rather than a SQLite file.
pub fn is_postgres_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub jwt_secret: Secret,
    pub access_token_ttl_secs: u64,
    pub allow_registration: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: Secret::default(),
            access_token_ttl_secs: 3600,
            allow_registration: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    pub default_provider: String,
    pub retries: u32,
    pub fallbacks: BTreeMap<String, Vec<String>>,
    /// Model names that stand for others: `"gpt-simple" = "aiml/gpt-4o"`, or
    /// with one `*` (`"claude-*" = "anthropic/claude-*"`, the target's `*`
    /// being what the name's matched).
    pub aliases: BTreeMap<String, String>,
    /// A whole (non-streaming) upstream answer larger than this is a 502.
    pub max_response_bytes: usize,
    /// A single SSE event larger than this ends the stream with a 502 error event.
    pub max_event_bytes: usize,
    /// Extra trusted root certificates (PEM) for every provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// An HTTP proxy for every provider; without one, the environment's
    /// (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`) is used.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "masked_url")]
    pub proxy: Option<String>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            default_provider: "openrouter".into(),
            retries: 1,
            fallbacks: BTreeMap::new(),
            aliases: BTreeMap::new(),
            max_response_bytes: 64 * 1024 * 1024,
            max_event_bytes: 8 * 1024 * 1024,
            ca_file: None,
            proxy: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeteringConfig {
    pub default_max_tokens: u64,
    pub min_completion_tokens: u64,
    pub on_disconnect: OnDisconnect,
    pub usage_retention_days: u64,
    /// Usage records that may wait in memory while the database refuses
    /// writes; past it metered calls are refused with 503 (SPEC §13).
    pub max_pending_records: u64,
    /// A model with no known price, under a USD limit or prepaid credit:
    /// refused with 403 `model_not_priced`, or allowed at no cost (SPEC §12).
    pub unpriced: Unpriced,
}

/// `[metering] unpriced`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unpriced {
    #[default]
    Refuse,
    Allow,
}

impl Default for MeteringConfig {
    fn default() -> Self {
        MeteringConfig {
            default_max_tokens: 4096,
            min_completion_tokens: 16,
            on_disconnect: OnDisconnect::Cancel,
            usage_retention_days: 90,
            max_pending_records: 1_000_000,
            unpriced: Unpriced::Refuse,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDisconnect {
    Cancel,
    Drain,
}

/// The API a provider speaks (`api = "openai" | "anthropic"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderApi {
    #[default]
    OpenAI,
    Anthropic,
}

/// A `[providers.NAME]` section. Every field is optional: for the built-ins
/// what is left out keeps its default (see `upstream::providers`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    /// Display name (defaults to the built-in's or the section name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    pub api_key: Secret,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models_ttl_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cap_field: Option<String>,
    /// The dialect the provider speaks: OpenAI's chat completions (the
    /// default) or Anthropic's Messages API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<ProviderApi>,
    /// Extra trusted root certificates (PEM) for this provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// An HTTP proxy for this provider (overrides `[routing] proxy`).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "masked_url")]
    pub proxy: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    pub name: String,
    pub monthly_tokens: i64,
    /// Dollars a user may spend per month (SPEC §12); absent: no USD limit.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "toml_usd")]
    pub monthly_usd: Option<crate::money::Usd>,
    #[serde(default = "default_rpm")]
    pub requests_per_minute: i64,
    #[serde(default)]
    pub price_usd_month: f64,
    #[serde(default = "all_models")]
    pub allowed_models: Vec<String>,
    /// Calls are paid from the user's prepaid credit.
    #[serde(default)]
    pub pay_as_you_go: bool,
}

/// An amount of dollars in the config file: a TOML integer or float
/// (`25`, `12.5`) or a string (`"0.000001"`), read exactly to the
/// micro-dollar. A float is read from its shortest decimal text, which is
/// the text written for any amount with up to 15 digits.
mod toml_usd {
    use crate::money::{format_usd, parse_usd, Usd, MICROS};
    use serde::{de, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Usd>, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Option<Usd>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an amount of US dollars with at most 6 decimals, e.g. 25 or 12.5")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                parse_usd(&v.to_string())
                    .map(|m| Some(Usd(m)))
                    .map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                parse_usd(&v.to_string())
                    .map(|m| Some(Usd(m)))
                    .map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                if !v.is_finite() {
                    return Err(E::custom("expected a finite amount of US dollars"));
                }
                // Rust writes a float's shortest decimal text, never an exponent.
                parse_usd(&v.to_string())
                    .map(|m| Some(Usd(m)))
                    .map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_usd(v.trim()).map(|m| Some(Usd(m))).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }

    /// Whole dollars as an integer; other amounts as a float when it reads
    /// back exactly, else as a string.
    pub fn serialize<S: Serializer>(v: &Option<Usd>, s: S) -> Result<S::Ok, S::Error> {
        let Some(Usd(m)) = *v else {
            return s.serialize_none();
        };
        if m % MICROS == 0 {
            return s.serialize_i64(m / MICROS);
        }
        let text = format_usd(m);
        match text.parse::<f64>() {
            Ok(f) if f.to_string() == text => s.serialize_f64(f),
            _ => s.serialize_str(&text),
        }
    }
}

fn default_rpm() -> i64 {
    60
}

fn all_models() -> Vec<String> {
    vec!["*".into()]
}

/// The plans created on first start when the config lists none (SPEC §2).
pub fn default_plans() -> Vec<PlanConfig> {
    [
        ("free", 10_000),
        ("pro", 100_000),
        ("enterprise", 1_000_000),
    ]
    .into_iter()
    .map(|(name, tokens)| PlanConfig {
        name: name.into(),
        monthly_tokens: tokens,
        monthly_usd: None,
        requests_per_minute: 60,
        price_usd_month: 0.0,
        allowed_models: all_models(),
        pay_as_you_go: false,
    })
    .collect()
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub client_id: String,
    pub client_secret: Secret,
    pub auth_url: String,
    pub token_url: String,
    pub userinfo_url: String,
    pub scopes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username_field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_field: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PricingConfig {
    /// USD per million prompt tokens.
    pub prompt: f64,
    /// USD per million completion tokens.
    pub completion: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
}

/// The built-in providers: name, display name, default base URL.
pub const BUILTIN_PROVIDERS: &[(&str, &str, &str)] = &[
    ("openrouter", "OpenRouter", "https://openrouter.ai/api/v1"),
    ("glama", "Glama", "https://glama.ai/api/gateway/openai/v1"),
    ("requesty", "Requesty", "https://router.requesty.ai/v1"),
    ("aiml", "AIML API", "https://api.aimlapi.com/v1"),
];

/// A configuration problem: where the value came from (a file, or the flag or
/// environment variable that set it), which key, what was expected.
#[derive(Debug, thiserror::Error)]
#[error("configuration error{}: {message}", self.place())]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    /// The flag (`--listen`) or environment variable that set the bad value,
    /// when it did not come from `file`.
    pub origin: Option<String>,
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(file: Option<&Path>, key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.map(Path::to_path_buf),
            origin: None,
            key: key.into(),
            message: message.into(),
        }
    }

    fn place(&self) -> String {
        match (&self.origin, &self.file) {
            (Some(o), _) => format!(" in {o} (key `{}`)", self.key),
            (None, Some(f)) => format!(" in {}: key `{}`", f.display(), self.key),
            (None, None) => format!(": key `{}`", self.key),
        }
    }
}

/// What the command line may override.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub listen: Option<String>,
    pub db: Option<PathBuf>,
}

impl Config {
    /// Loads the layered configuration: defaults < file < `.env` < environment < flags.
    pub fn load(ov: &Overrides) -> Result<Config, ConfigError> {
        // `.env` never overrides a variable the environment already has, which is
        // exactly ".env < environment".
        let _ = dotenvy::dotenv();
        let path = match &ov.config {
            Some(p) => Some(p.clone()),
            None => Some(PathBuf::from("config.toml")).filter(|p| p.exists()),
        };
        let mut cfg = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    ConfigError::new(Some(p), "(file)", format!("cannot read the file: {e}"))
                })?;
                Config::parse(&text, Some(p))?
            }
            None => Config::default(),
        };
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        cfg.apply_env(env);
        // Where each overridden key came from, the last one winning, so that
        // an error names the variable or flag rather than the file.
        let mut origins: Vec<(&str, String)> = [
            ("server.listen", "TOLLGATE_LISTEN"),
            ("database.path", "TOLLGATE_DB"),
            ("database.url", "TOLLGATE_DATABASE_URL"),
        ]
        .into_iter()
        .filter(|(_, var)| env(var).is_some())
        .map(|(key, var)| (key, format!("the environment variable {var}")))
        .collect();
        if let Some(l) = &ov.listen {
            cfg.server.listen = l.clone();
            origins.push(("server.listen", "--listen".into()));
        }
        if let Some(d) = &ov.db {
            cfg.apply_db_flag(d);
            let key = if d.to_str().is_some_and(is_postgres_url) {
                "database.url"
            } else {
                "database.path"
            };
            origins.push((key, "--db".into()));
        }
        cfg.validate(path.as_deref()).map_err(|mut e| {
            e.origin = origins
                .iter()
                .rev()
                .find(|(key, _)| *key == e.key)
                .map(|(_, o)| o.clone());
            e
        })?;
        Ok(cfg)
    }

    /// `--db`: a SQLite file, or a PostgreSQL URL; either replaces the other.
    pub fn apply_db_flag(&mut self, d: &Path) {
        match d.to_str().filter(|d| is_postgres_url(d)) {
            Some(url) => self.database.url = Some(url.to_owned()),
            None => {
                self.database.path = d.to_owned();
                self.database.url = None;
            }
        }
    }

    /// Parses TOML text; an error names the key and what was expected.
    pub fn parse(text: &str, file: Option<&Path>) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let msg = inner.message().to_string();
            let at = inner
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            let key = if key == "." || key.is_empty() {
                "(top level)".to_string()
            } else {
                key
            };
            ConfigError::new(file, key, format!("{msg}{at}"))
        })
    }

    /// Applies environment variables (SPEC §1) through `get`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(v) = get("TOLLGATE_LISTEN") {
            self.server.listen = v;
        }
        if let Some(v) = get("TOLLGATE_TLS_CERT") {
            self.server.tls_cert = Some(PathBuf::from(v));
        }
        if let Some(v) = get("TOLLGATE_TLS_KEY") {
            self.server.tls_key = Some(PathBuf::from(v));
        }
        if let Some(v) = get("TOLLGATE_DB") {
            self.database.path = PathBuf::from(v);
        }
        if let Some(v) = get("TOLLGATE_DATABASE_URL") {
            self.database.url = Some(v);
        }
        if let Some(v) = get("TOLLGATE_JWT_SECRET") {
            self.auth.jwt_secret = Secret::new(v);
        }
        let mut names: Vec<String> = BUILTIN_PROVIDERS
            .iter()
            .map(|(n, _, _)| n.to_string())
            .collect();
        names.extend(self.providers.keys().cloned());
        for name in names {
            let var = format!("{}_API_KEY", name.to_uppercase().replace('-', "_"));
            if let Some(key) = get(&var) {
                self.providers.entry(name).or_default().api_key = Secret::new(key);
            }
        }
        if let Some(id) = get("AIML_CLIENT_ID") {
            self.oauth.entry("aiml".into()).or_default().client_id = id;
        }
        if let Some(secret) = get("AIML_CLIENT_SECRET") {
            self.oauth.entry("aiml".into()).or_default().client_secret = Secret::new(secret);
        }
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self, file: Option<&Path>) -> Result<(), ConfigError> {
        let err = |k: &str, m: String| Err(ConfigError::new(file, k, m));
        if resolve_listen(&self.server.listen).is_none() {
            return err(
                "server.listen",
                format!(
                    "expected an address or host name and a port such as \"127.0.0.1:8000\" or \"localhost:8000\", got {:?}",
                    self.server.listen
                ),
            );
        }
        if !self.server.public_url.starts_with("http://")
            && !self.server.public_url.starts_with("https://")
        {
            return err(
                "server.public_url",
                format!("expected an http(s) URL, got {:?}", self.server.public_url),
            );
        }
        // The files themselves are read by `serve` (and `check-config`), not
        // here: the other commands run as users that may not read the key.
        match (&self.server.tls_cert, &self.server.tls_key) {
            (Some(_), None) => {
                return err(
                    "server.tls_key",
                    "server.tls_cert is set but server.tls_key is not: HTTPS needs both, \
                     the certificate chain and its private key (PEM files)"
                        .into(),
                )
            }
            (None, Some(_)) => {
                return err(
                    "server.tls_cert",
                    "server.tls_key is set but server.tls_cert is not: HTTPS needs both, \
                     the certificate chain and its private key (PEM files)"
                        .into(),
                )
            }
            _ => {}
        }
        for (k, v) in [
            ("server.tls_cert", &self.server.tls_cert),
            ("server.tls_key", &self.server.tls_key),
        ] {
            if v.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return err(k, "expected a file path".into());
            }
        }
        if self.server.max_body_bytes < 1024 {
            return err("server.max_body_bytes", "expected at least 1024".into());
        }
        for (k, v) in [
            (
                "server.header_timeout_secs",
                self.server.header_timeout_secs,
            ),
            ("server.body_timeout_secs", self.server.body_timeout_secs),
            ("server.keep_alive_secs", self.server.keep_alive_secs),
            ("server.max_connections", self.server.max_connections as u64),
            (
                "server.max_connections_per_ip",
                self.server.max_connections_per_ip as u64,
            ),
        ] {
            if v == 0 {
                return err(k, "expected a number above 0".into());
            }
        }
        for (i, p) in self.server.cors_allowed_origins.iter().enumerate() {
            if let Err(e) = globset::Glob::new(p) {
                return err(
                    &format!("server.cors_allowed_origins[{i}]"),
                    format!("not a glob pattern: {e}"),
                );
            }
        }
        for (i, p) in self.server.trusted_proxies.iter().enumerate() {
            if crate::http::extract::TrustedProxies::entry(p).is_none() {
                return err(
                    &format!("server.trusted_proxies[{i}]"),
                    format!(
                        "expected an IP address or a CIDR range such as \"10.0.0.0/8\", got {p:?}"
                    ),
                );
            }
        }
        if self.database.path.as_os_str().is_empty() {
            return err("database.path", "expected a file path".into());
        }
        // (With a PostgreSQL URL the path is not used.)
        let path_url = self.database.path.to_str().filter(|p| p.contains("://"));
        if let Some(url) = path_url.filter(|_| self.database.url.is_none()) {
            return err(
                "database.path",
                format!(
                    "expected a SQLite file path, got the URL {:?}; a PostgreSQL URL goes in \
                     [database] url, TOLLGATE_DATABASE_URL or --db",
                    mask_password(url)
                ),
            );
        }
        if let Some(url) = &self.database.url {
            if !is_postgres_url(url) {
                return err(
                    "database.url",
                    format!(
                        "expected a PostgreSQL URL such as postgres://user:password@host:5432/tollgate, got {:?}",
                        mask_password(url)
                    ),
                );
            }
        }
        if self.database.reservation_lease_secs == Some(0) {
            return err(
                "database.reservation_lease_secs",
                "expected a number of seconds above 0".into(),
            );
        }
        if self.auth.access_token_ttl_secs == 0 {
            return err(
                "auth.access_token_ttl_secs",
                "expected a number of seconds above 0".into(),
            );
        }
        let known = |n: &str| {
            BUILTIN_PROVIDERS.iter().any(|(b, _, _)| *b == n) || self.providers.contains_key(n)
        };
        if !known(&self.routing.default_provider) {
            return err(
                "routing.default_provider",
                format!(
                    "names no provider: {:?} is neither built in nor a [providers.*] section",
                    self.routing.default_provider
                ),
            );
        }
        for (name, p) in &self.providers {
            if name.is_empty() || name.contains('/') {
                return err(
                    &format!("providers.{name}"),
                    "a provider name must be non-empty and contain no '/'".into(),
                );
            }
            let builtin = BUILTIN_PROVIDERS.iter().any(|(b, _, _)| b == name);
            match &p.base_url {
                Some(u) if !u.starts_with("http://") && !u.starts_with("https://") => {
                    return err(
                        &format!("providers.{name}.base_url"),
                        format!("expected an http(s) URL, got {u:?}"),
                    );
                }
                None if !builtin => {
                    return err(
                        &format!("providers.{name}.base_url"),
                        "a custom provider needs a base_url such as \"http://127.0.0.1:11434/v1\""
                            .into(),
                    );
                }
                _ => {}
            }
            if p.timeout_secs == Some(0) {
                return err(
                    &format!("providers.{name}.timeout_secs"),
                    "expected a number of seconds above 0".into(),
                );
            }
            if let Some(f) = &p.cap_field {
                if f != "max_tokens" && f != "max_completion_tokens" {
                    return err(
                        &format!("providers.{name}.cap_field"),
                        format!("expected \"max_tokens\" or \"max_completion_tokens\", got {f:?}"),
                    );
                }
            }
        }
        for (k, v) in [
            (
                "routing.max_response_bytes",
                self.routing.max_response_bytes,
            ),
            ("routing.max_event_bytes", self.routing.max_event_bytes),
        ] {
            if v < 1024 {
                return err(k, "expected at least 1024 bytes".into());
            }
        }
        let tls_ok = |k: &str, f: &Option<PathBuf>| match f {
            Some(path) => crate::upstream::conn::tls_config(Some(path))
                .map(|_| ())
                .map_err(|e| ConfigError::new(file, k, e)),
            None => Ok(()),
        };
        let proxy_ok = |k: &str, p: &Option<String>| match p.as_deref() {
            Some(p) => {
                let any = axum::http::Uri::from_static("https://example.com/");
                crate::upstream::conn::Proxy::for_url(&any, Some(p))
                    .map(|_| ())
                    .map_err(|e| ConfigError::new(file, k, e))
            }
            None => Ok(()),
        };
        tls_ok("routing.ca_file", &self.routing.ca_file)?;
        proxy_ok("routing.proxy", &self.routing.proxy)?;
        for (name, p) in &self.providers {
            tls_ok(&format!("providers.{name}.ca_file"), &p.ca_file)?;
            proxy_ok(&format!("providers.{name}.proxy"), &p.proxy)?;
        }
        for (model, alts) in &self.routing.fallbacks {
            if alts.is_empty() {
                return err(
                    &format!("routing.fallbacks.{model}"),
                    "expected a non-empty list of model names".into(),
                );
            }
        }
        for (name, target) in &self.routing.aliases {
            let stars = |s: &str| s.matches('*').count();
            let problem = if name.is_empty() || target.is_empty() {
                Some("expected a model name for a model name".to_owned())
            } else if stars(name) > 1 {
                Some("a name may hold one `*`, not more".to_owned())
            } else if stars(target) > stars(name) {
                Some(format!(
                    "the target {target:?} has a `*` that the name has not"
                ))
            } else if self.routing.aliases.contains_key(target) {
                Some(format!(
                    "the target {target:?} is itself an alias; name the model directly"
                ))
            } else {
                None
            };
            if let Some(p) = problem {
                return err(&format!("routing.aliases.{name:?}"), p);
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, plan) in self.plans.iter().enumerate() {
            if plan.name.trim().is_empty() {
                return err(
                    &format!("plans[{i}].name"),
                    "expected a non-empty name".into(),
                );
            }
            if !seen.insert(plan.name.as_str()) {
                return err(
                    &format!("plans[{i}].name"),
                    format!("plan {:?} is listed twice", plan.name),
                );
            }
            if plan.monthly_tokens < 0 {
                return err(
                    &format!("plans[{i}].monthly_tokens"),
                    "expected a number of tokens ≥ 0".into(),
                );
            }
            if plan.monthly_usd.is_some_and(|u| u.0 < 0) {
                return err(
                    &format!("plans[{i}].monthly_usd"),
                    "expected an amount of US dollars ≥ 0 (leave it out for no USD limit)".into(),
                );
            }
            if plan.requests_per_minute < 1 {
                return err(
                    &format!("plans[{i}].requests_per_minute"),
                    "expected at least 1".into(),
                );
            }
            for (j, g) in plan.allowed_models.iter().enumerate() {
                if let Err(e) = globset::Glob::new(g) {
                    return err(
                        &format!("plans[{i}].allowed_models[{j}]"),
                        format!("not a glob pattern: {e}"),
                    );
                }
            }
        }
        for (name, o) in &self.oauth {
            let enabled = !o.client_id.is_empty() && !o.client_secret.is_empty();
            let preset = name == "github" || name == "google";
            if enabled && !preset {
                for (k, v) in [
                    ("auth_url", &o.auth_url),
                    ("token_url", &o.token_url),
                    ("userinfo_url", &o.userinfo_url),
                ] {
                    if !v.starts_with("http://") && !v.starts_with("https://") {
                        return err(
                            &format!("oauth.{name}.{k}"),
                            format!("expected an http(s) URL (the provider's {k}); got {v:?}"),
                        );
                    }
                }
            }
        }
        for (model, p) in &self.pricing {
            if p.prompt < 0.0 || p.completion < 0.0 {
                return err(
                    &format!("pricing.{model}"),
                    "prices must be ≥ 0 (USD per million tokens)".into(),
                );
            }
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> SocketAddr {
        // validate() checked that it resolves.
        resolve_listen(&self.server.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8000)))
    }

    /// The effective configuration as TOML, secrets masked (`check-config`).
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
    }

    /// How long a dead replica's reservations are kept (SPEC §11).
    pub fn reservation_lease(&self) -> std::time::Duration {
        let secs = self.database.reservation_lease_secs.unwrap_or_else(|| {
            let longest = self
                .providers
                .values()
                .filter_map(|p| p.timeout_secs)
                .chain(std::iter::once(600))
                .max()
                .unwrap_or(600);
            longest + 60
        });
        std::time::Duration::from_secs(secs)
    }

    /// The plans to create on first start.
    pub fn initial_plans(&self) -> Vec<PlanConfig> {
        if self.plans.is_empty() {
            default_plans()
        } else {
            self.plans.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_headers_never_print() {
        let text = "[providers.local]\nbase_url = \"http://127.0.0.1:9/v1\"\n\
                    [providers.local.headers]\nAuthorization = \"Bearer sk-hdr-secret\"\n\
                    X-Api-Key = \"k-hdr-secret\"\nX-Title = \"team-gw\"\n";
        let cfg = Config::parse(text, None).unwrap();
        let h = &cfg.providers["local"].headers.as_ref().unwrap().0;
        assert_eq!(
            h["Authorization"], "Bearer sk-hdr-secret",
            "sent as written"
        );
        for printed in [format!("{cfg:?}"), cfg.to_masked_toml()] {
            assert!(!printed.contains("hdr-secret"), "{printed}");
            assert!(printed.contains("team-gw"), "{printed}");
        }
    }

    #[test]
    fn example_file_parses_and_validates() {
        let text = include_str!("../config.toml.example");
        let cfg = Config::parse(text, None).expect("config.toml.example parses");
        cfg.validate(None).expect("config.toml.example validates");
        let d = Config::default();
        assert_eq!(cfg.server.listen, d.server.listen);
        assert_eq!(cfg.server.max_body_bytes, d.server.max_body_bytes);
        assert_eq!(
            cfg.metering.default_max_tokens,
            d.metering.default_max_tokens
        );
        assert_eq!(cfg.auth.access_token_ttl_secs, d.auth.access_token_ttl_secs);
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = Config::parse(
            "[server]\nmax_body_bytes = \"big\"\n",
            Some(Path::new("c.toml")),
        )
        .unwrap_err();
        assert_eq!(e.key, "server.max_body_bytes");
        assert!(e.to_string().contains("c.toml"), "{e}");
        let e = Config::parse("[server]\nlisten_on = 1\n", None).unwrap_err();
        assert!(e.to_string().contains("listen_on"), "{e}");
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = Config::default();
        c.server.listen = "nowhere".into();
        assert_eq!(c.validate(None).unwrap_err().key, "server.listen");
        let mut c = Config::default();
        c.routing.default_provider = "nope".into();
        assert_eq!(
            c.validate(None).unwrap_err().key,
            "routing.default_provider"
        );
        let mut c = Config::default();
        c.server.trusted_proxies = vec!["10.0.0.0/8".into(), "::1".into(), "10.0.0.0/33".into()];
        let e = c.validate(None).unwrap_err();
        assert_eq!(e.key, "server.trusted_proxies[2]");
        assert!(e.to_string().contains("CIDR range"), "{e}");
    }

    #[test]
    fn env_overrides_file() {
        let mut c = Config::parse("[server]\nlisten = \"127.0.0.1:1\"\n[providers.local]\nbase_url = \"http://127.0.0.1:2/v1\"\n", None).unwrap();
        c.apply_env(|k| match k {
            "TOLLGATE_LISTEN" => Some("127.0.0.1:9".into()),
            "OPENROUTER_API_KEY" => Some("sk-or-x".into()),
            "LOCAL_API_KEY" => Some("k".into()),
            _ => None,
        });
        assert_eq!(c.server.listen, "127.0.0.1:9");
        assert_eq!(c.providers["openrouter"].api_key.expose(), "sk-or-x");
        assert_eq!(c.providers["local"].api_key.expose(), "k");
        c.routing.proxy = Some("http://me:hunter22@proxy.example:3128".into());
        c.providers.get_mut("local").unwrap().proxy = Some("http://px:secret-pw@p:1/".into());
        let printed = c.to_masked_toml();
        assert!(
            !printed.contains("hunter22") && !printed.contains("secret-pw"),
            "{printed}"
        );
        assert!(
            printed.contains("http://me:***@proxy.example:3128"),
            "{printed}"
        );
        assert!(!printed.contains("sk-or-x"), "{printed}");
        assert!(format!("{c:?}").find("sk-or-x").is_none());
    }

    #[test]
    fn the_database_is_a_file_or_a_postgres_url() {
        let text =
            "[database]\nurl = \"postgres://u:pw-123@db:5432/t\"\nreservation_lease_secs = 90\n";
        let mut c = Config::parse(text, None).unwrap();
        c.validate(None).unwrap();
        assert_eq!(c.reservation_lease(), std::time::Duration::from_secs(90));
        let printed = c.to_masked_toml();
        assert!(!printed.contains("pw-123"), "{printed}");
        assert!(printed.contains("postgres://u:***@db:5432/t"), "{printed}");
        assert!(!format!("{c:?}").contains("pw-123"), "{c:?}");

        c.apply_env(|k| (k == "TOLLGATE_DATABASE_URL").then(|| "postgresql://x@h/d".into()));
        assert_eq!(c.database.url.as_deref(), Some("postgresql://x@h/d"));
        c.apply_db_flag(Path::new("/srv/t.db"));
        assert_eq!(
            (c.database.url.as_deref(), c.database.path.to_str()),
            (None, Some("/srv/t.db"))
        );
        c.apply_db_flag(Path::new("postgres://a@b/c"));
        assert_eq!(c.database.url.as_deref(), Some("postgres://a@b/c"));

        // The lease outlives the longest call a provider may make.
        let mut d = Config::default();
        assert_eq!(d.reservation_lease(), std::time::Duration::from_secs(660));
        d = Config::parse(
            "[providers.slow]\nbase_url = \"http://h/v1\"\ntimeout_secs = 1800\n",
            None,
        )
        .unwrap();
        assert_eq!(d.reservation_lease(), std::time::Duration::from_secs(1860));

        let bad = Config::parse("[database]\nurl = \"mysql://u:pw-456@h/d\"\n", None).unwrap();
        let e = bad.validate(None).unwrap_err().to_string();
        assert!(e.contains("database.url") && !e.contains("pw-456"), "{e}");
        let zero = Config::parse("[database]\nreservation_lease_secs = 0\n", None).unwrap();
        let e = zero.validate(None).unwrap_err().to_string();
        assert!(e.contains("database.reservation_lease_secs"), "{e}");
    }

    #[test]
    fn listen_takes_a_host_name() {
        let mut c = Config::default();
        c.server.listen = "localhost:8123".into();
        c.validate(None).unwrap();
        assert_eq!(c.listen_addr(), "127.0.0.1:8123".parse().unwrap());
        c.server.listen = "localhost".into();
        let e = c.validate(None).unwrap_err().to_string();
        assert!(
            e.contains("server.listen") && e.contains("localhost:8000"),
            "{e}"
        );
        c.server.listen = "[::1]:9".into();
        c.validate(None).unwrap();
    }

    #[test]
    fn tls_needs_both_files() {
        let c = Config::parse("[server]\ntls_cert = \"/etc/t/cert.pem\"\n", None).unwrap();
        let e = c.validate(None).unwrap_err();
        assert_eq!(e.key, "server.tls_key", "{e}");
        let mut c = Config::default();
        c.apply_env(|k| (k == "TOLLGATE_TLS_KEY").then(|| "/etc/t/key.pem".into()));
        let e = c.validate(None).unwrap_err();
        assert_eq!(e.key, "server.tls_cert", "{e}");
        c.apply_env(|k| (k == "TOLLGATE_TLS_CERT").then(|| "/etc/t/cert.pem".into()));
        c.validate(None).unwrap();
        let printed = c.to_masked_toml();
        assert!(
            printed.contains("tls_cert = \"/etc/t/cert.pem\"")
                && printed.contains("tls_key = \"/etc/t/key.pem\""),
            "{printed}"
        );
        assert!(!Config::default().to_masked_toml().contains("tls_"));
    }

    #[test]
    fn plan_usd_limits_are_read_exactly_and_print_back() {
        use crate::money::Usd;
        let text = "[[plans]]\nname = \"a\"\nmonthly_tokens = 1\nmonthly_usd = 25\n\
                    [[plans]]\nname = \"b\"\nmonthly_tokens = 1\nmonthly_usd = 0.1\npay_as_you_go = true\n\
                    [[plans]]\nname = \"c\"\nmonthly_tokens = 1\nmonthly_usd = \"0.000001\"\n\
                    [[plans]]\nname = \"d\"\nmonthly_tokens = 1\n";
        let c = Config::parse(text, None).unwrap();
        c.validate(None).unwrap();
        let got: Vec<_> = c
            .plans
            .iter()
            .map(|p| (p.monthly_usd, p.pay_as_you_go))
            .collect();
        let want = [
            (Some(Usd(25_000_000)), false),
            (Some(Usd(100_000)), true),
            (Some(Usd(1)), false),
            (None, false),
        ];
        assert_eq!(got, want);
        // check-config's output reads back as the same amounts.
        let again = Config::parse(&c.to_masked_toml(), None).unwrap();
        let back: Vec<_> = again.plans.iter().map(|p| p.monthly_usd).collect();
        assert_eq!(back, want.map(|w| w.0));

        for (value, says) in [
            ("0.0000001", "6 decimals"),
            ("\"ten\"", "not an amount"),
            ("true", "amount of US dollars"),
        ] {
            let t = format!("[[plans]]\nname = \"x\"\nmonthly_tokens = 1\nmonthly_usd = {value}\n");
            let e = Config::parse(&t, None).unwrap_err();
            assert!(
                e.key == "plans[0].monthly_usd" && e.to_string().contains(says),
                "{value}: {e}"
            );
        }
        let t = "[[plans]]\nname = \"x\"\nmonthly_tokens = 1\nmonthly_usd = -5\n";
        let e = Config::parse(t, None).unwrap().validate(None).unwrap_err();
        assert_eq!(e.key, "plans[0].monthly_usd", "{e}");
    }
}
