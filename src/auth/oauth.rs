//! OAuth sign-in providers: which `[oauth.NAME]` sections are enabled, the
//! github and google presets, the `oauth2` client for a provider, the token
//! exchange (authorization code + PKCE S256) and reading the userinfo endpoint.

use crate::config::{Config, OAuthConfig, Secret};
use crate::error::ApiError;
use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope, TokenResponse,
    TokenUrl,
};
use serde_json::Value;
use std::time::Duration;

/// The `oauth2` client of one provider: authorize and token URLs set.
type Client = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// An enabled OAuth provider with its preset filled in.
#[derive(Debug, Clone)]
pub struct Provider {
    pub id: String,
    pub name: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub auth_url: String,
    pub token_url: String,
    pub userinfo_url: String,
    pub scopes: Vec<String>,
    pub subject_field: String,
    /// Userinfo fields tried in order for the username.
    pub username_fields: Vec<String>,
    pub email_field: String,
}

/// Defaults of a preset provider; the config overrides any of them.
struct Preset {
    name: &'static str,
    auth_url: &'static str,
    token_url: &'static str,
    userinfo_url: &'static str,
    scopes: &'static [&'static str],
    subject: &'static str,
    username: &'static [&'static str],
    email: &'static str,
}

const GITHUB: Preset = Preset {
    name: "GitHub",
    auth_url: "https://github.com/login/oauth/authorize",
    token_url: "https://github.com/login/oauth/access_token",
    userinfo_url: "https://api.github.com/user",
    scopes: &["read:user", "user:email"],
    subject: "id",
    username: &["login"],
    email: "email",
};

const GOOGLE: Preset = Preset {
    name: "Google",
    auth_url: "https://accounts.google.com/o/oauth2/v2/auth",
    token_url: "https://oauth2.googleapis.com/token",
    userinfo_url: "https://openidconnect.googleapis.com/v1/userinfo",
    scopes: &["openid", "email", "profile"],
    subject: "sub",
    username: &["email", "name"],
    email: "email",
};

fn preset(id: &str) -> Option<&'static Preset> {
    match id {
        "github" => Some(&GITHUB),
        "google" => Some(&GOOGLE),
        _ => None,
    }
}

fn default_name(id: &str) -> String {
    match id {
        "aiml" => "AIML API".into(),
        _ => preset(id).map_or_else(|| id.to_owned(), |p| p.name.to_owned()),
    }
}

fn or_preset(configured: &str, preset: Option<&str>) -> String {
    if configured.is_empty() {
        preset.unwrap_or_default().to_owned()
    } else {
        configured.to_owned()
    }
}

impl Provider {
    /// The provider of a section, when it has a client id and secret.
    pub fn from_config(id: &str, c: &OAuthConfig) -> Option<Provider> {
        if c.client_id.is_empty() || c.client_secret.is_empty() {
            return None;
        }
        let p = preset(id);
        let scopes = if c.scopes.is_empty() {
            p.map(|p| p.scopes.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default()
        } else {
            c.scopes.clone()
        };
        let username_fields = match (&c.username_field, p) {
            (Some(f), _) => vec![f.clone()],
            (None, Some(p)) => p.username.iter().map(|s| s.to_string()).collect(),
            (None, None) => vec!["login".into()],
        };
        Some(Provider {
            id: id.to_owned(),
            name: c
                .name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| default_name(id)),
            client_id: c.client_id.clone(),
            client_secret: c.client_secret.clone(),
            auth_url: or_preset(&c.auth_url, p.map(|p| p.auth_url)),
            token_url: or_preset(&c.token_url, p.map(|p| p.token_url)),
            userinfo_url: or_preset(&c.userinfo_url, p.map(|p| p.userinfo_url)),
            scopes,
            subject_field: c
                .subject_field
                .clone()
                .unwrap_or_else(|| p.map_or("id", |p| p.subject).to_owned()),
            username_fields,
            email_field: c
                .email_field
                .clone()
                .unwrap_or_else(|| p.map_or("email", |p| p.email).to_owned()),
        })
    }

    /// `<public_url>/auth/<id>/callback`, the redirect URI registered with the provider.
    pub fn callback_url(&self, public_url: &str) -> String {
        format!(
            "{}/auth/{}/callback",
            public_url.trim_end_matches('/'),
            self.id
        )
    }

    fn client(&self, public_url: &str) -> Result<Client, ApiError> {
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            ApiError::internal(format!("oauth.{}: {what} is not a URL: {e}", self.id))
        };
        Ok(BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_client_secret(ClientSecret::new(self.client_secret.expose().to_owned()))
            .set_auth_uri(AuthUrl::new(self.auth_url.clone()).map_err(|e| bad("auth_url", &e))?)
            .set_token_uri(TokenUrl::new(self.token_url.clone()).map_err(|e| bad("token_url", &e))?)
            .set_redirect_uri(
                RedirectUrl::new(self.callback_url(public_url))
                    .map_err(|e| bad("server.public_url", &e))?,
            ))
    }

    /// The provider's authorize URL for `state`, and the PKCE verifier to keep.
    pub fn authorize_url(
        &self,
        public_url: &str,
        state: &str,
    ) -> Result<(String, PkceCodeVerifier), ApiError> {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = state.to_owned();
        let (url, _) = self
            .client(public_url)?
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(self.scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(challenge)
            .url();
        Ok((url.to_string(), verifier))
    }

    /// Exchanges an authorization code (with its PKCE verifier) for an access token.
    pub async fn exchange(
        &self,
        http: &reqwest::Client,
        public_url: &str,
        code: &str,
        verifier: &str,
    ) -> Result<String, ApiError> {
        let resp = self
            .client(public_url)?
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
            .request_async(http)
            .await;
        match resp {
            Ok(t) => Ok(t.access_token().secret().clone()),
            Err(RequestTokenError::ServerResponse(e)) => Err(self.token_refused(
                e.error().as_ref(),
                e.error_description().map(String::as_str),
            )),
            // GitHub answers errors with 200 and `{"error": …}`, which does not
            // parse as a token response.
            Err(RequestTokenError::Parse(_, body)) => {
                match serde_json::from_slice::<Value>(&body)
                    .ok()
                    .as_ref()
                    .and_then(|v| {
                        let code = v.get("error")?.as_str()?;
                        Some((code, v.get("error_description").and_then(Value::as_str)))
                    }) {
                    Some((code, desc)) => Err(self.token_refused(code, desc)),
                    None => Err(ApiError::upstream(format!(
                        "{} answered the token request with something that is not a token.",
                        self.name
                    ))),
                }
            }
            Err(RequestTokenError::Request(e)) => {
                tracing::warn!(provider = %self.id, error = %e, "OAuth token request failed");
                Err(ApiError::upstream(format!(
                    "Could not reach {} to finish the sign-in.",
                    self.name
                )))
            }
            Err(RequestTokenError::Other(m)) => {
                tracing::warn!(provider = %self.id, error = %m, "OAuth token request failed");
                Err(ApiError::upstream(format!(
                    "{} answered the token request unexpectedly.",
                    self.name
                )))
            }
        }
    }

    /// The provider refused the code. A refused client (our id or secret) is
    /// the operator's problem: 502 `upstream_auth_error`. A refused grant
    /// (code used, expired, or PKCE verifier mismatch) is 400.
    fn token_refused(&self, code: &str, desc: Option<&str>) -> ApiError {
        let detail = desc.map(|d| format!(": {d}")).unwrap_or_default();
        tracing::info!(provider = %self.id, error = %code, "OAuth token request refused");
        let client_problem = [
            BasicErrorResponseType::InvalidClient.as_ref(),
            BasicErrorResponseType::UnauthorizedClient.as_ref(),
            "incorrect_client_credentials",
        ];
        if client_problem.contains(&code) {
            ApiError::upstream_auth(format!(
                "{} refused this server's OAuth client ({code}{detail}); check oauth.{}.client_id and client_secret.",
                self.name, self.id
            ))
        } else {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("invalid_grant"),
                format!(
                    "{} refused the sign-in code ({code}{detail}); start the sign-in again.",
                    self.name
                ),
            )
        }
    }

    /// Reads the userinfo endpoint with the provider's access token.
    pub async fn userinfo(
        &self,
        http: &reqwest::Client,
        access_token: &str,
    ) -> Result<Identity, ApiError> {
        let resp = http
            .get(&self.userinfo_url)
            .bearer_auth(access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(provider = %self.id, error = %e, "OAuth userinfo request failed");
                if e.is_timeout() {
                    ApiError::upstream_timeout(format!("{} did not answer in time.", self.name))
                } else {
                    ApiError::upstream(format!(
                        "Could not reach {} to read the account.",
                        self.name
                    ))
                }
            })?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(ApiError::upstream_auth(format!(
                "{} refused to tell who signed in (userinfo answered {status}).",
                self.name
            )));
        }
        if !status.is_success() {
            return Err(ApiError::upstream(format!(
                "{}'s userinfo endpoint answered {status}.",
                self.name
            )));
        }
        let body: Value = resp.json().await.map_err(|_| {
            ApiError::upstream(format!("{}'s userinfo answer is not JSON.", self.name))
        })?;
        self.identity(&body)
    }

    /// The identity in a userinfo document.
    pub fn identity(&self, v: &Value) -> Result<Identity, ApiError> {
        let subject = field_text(v, &self.subject_field).ok_or_else(|| {
            ApiError::upstream(format!(
                "{}'s userinfo has no {:?} field to identify the account (oauth.{}.subject_field).",
                self.name, self.subject_field, self.id
            ))
        })?;
        let username = self
            .username_fields
            .iter()
            .find_map(|f| field_text(v, f))
            .or_else(|| field_text(v, &self.email_field));
        let email = field_text(v, &self.email_field).filter(|e| e.contains('@'));
        Ok(Identity {
            subject,
            username,
            email,
        })
    }
}

/// A string or number field as text (subjects are numbers at GitHub).
fn field_text(v: &Value, field: &str) -> Option<String> {
    match v.get(field)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Who signed in, as the provider says.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub subject: String,
    pub username: Option<String>,
    pub email: Option<String>,
}

/// Every enabled provider, in section order.
pub fn enabled(cfg: &Config) -> Vec<Provider> {
    cfg.oauth
        .iter()
        .filter_map(|(id, c)| Provider::from_config(id, c))
        .collect()
}

/// The enabled provider `id`.
pub fn find(cfg: &Config, id: &str) -> Option<Provider> {
    cfg.oauth.get(id).and_then(|c| Provider::from_config(id, c))
}

/// The HTTP client for token and userinfo calls: `oauth2` requires that it
/// does not follow redirects (a redirected token request could leak the code).
pub fn build_http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// A username made of the characters usernames allow, at most 56 of them so a
/// `-N` suffix still fits in 64.
pub fn sanitize_username(raw: &str) -> String {
    let ok = |c: char| c.is_alphanumeric() || "._-@+".contains(c);
    let mut out = String::new();
    for c in raw.trim().chars() {
        let c = if ok(c) { c } else { '-' };
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
    }
    let out: String = out.trim_matches('-').chars().take(56).collect();
    out.trim_end_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(id: &str) -> OAuthConfig {
        let mut c = OAuthConfig {
            client_id: "id".into(),
            client_secret: Secret::new("secret"),
            ..Default::default()
        };
        if preset(id).is_none() {
            c.auth_url = "https://idp.example/auth".into();
            c.token_url = "https://idp.example/token".into();
            c.userinfo_url = "https://idp.example/me".into();
        }
        c
    }

    #[test]
    fn presets_and_defaults() {
        let g = Provider::from_config("github", &cfg("github")).unwrap();
        assert_eq!(g.name, "GitHub");
        assert_eq!(g.token_url, GITHUB.token_url);
        assert_eq!(g.scopes, ["read:user", "user:email"]);
        let go = Provider::from_config("google", &cfg("google")).unwrap();
        assert_eq!(go.subject_field, "sub");
        assert_eq!(go.username_fields, ["email", "name"]);
        let a = Provider::from_config("aiml", &cfg("aiml")).unwrap();
        assert_eq!(a.name, "AIML API");
        assert_eq!(
            (a.subject_field.as_str(), a.email_field.as_str()),
            ("id", "email")
        );
        let other = Provider::from_config("corp", &cfg("corp")).unwrap();
        assert_eq!(other.name, "corp");
        assert!(Provider::from_config("github", &OAuthConfig::default()).is_none());
        let mut over = cfg("github");
        over.token_url = "http://127.0.0.1:1/token".into();
        over.name = Some("Company GitHub".into());
        let g = Provider::from_config("github", &over).unwrap();
        assert_eq!(g.token_url, "http://127.0.0.1:1/token");
        assert_eq!(g.auth_url, GITHUB.auth_url);
        assert_eq!(g.name, "Company GitHub");
    }

    #[test]
    fn authorize_url_carries_pkce_and_state() {
        let g = Provider::from_config("github", &cfg("github")).unwrap();
        let (url, verifier) = g.authorize_url("http://localhost:8000/", "st4te").unwrap();
        let u = oauth2::url::Url::parse(&url).unwrap();
        let q: std::collections::HashMap<_, _> = u.query_pairs().into_owned().collect();
        assert_eq!(q["state"], "st4te");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(
            q["code_challenge"],
            PkceCodeChallenge::from_code_verifier_sha256(&verifier).as_str()
        );
        assert_eq!(
            q["redirect_uri"],
            "http://localhost:8000/auth/github/callback"
        );
        assert_eq!(q["scope"], "read:user user:email");
        assert_eq!(q["response_type"], "code");
    }

    #[test]
    fn identity_from_userinfo() {
        let g = Provider::from_config("github", &cfg("github")).unwrap();
        let id = g
            .identity(&json!({"id": 42, "login": "octo cat", "email": null}))
            .unwrap();
        assert_eq!(id.subject, "42");
        assert_eq!(id.username.as_deref(), Some("octo cat"));
        assert_eq!(id.email, None);
        assert!(g.identity(&json!({"login": "x"})).is_err());
        let go = Provider::from_config("google", &cfg("google")).unwrap();
        let id = go
            .identity(&json!({"sub": "1001", "name": "Ann Lee"}))
            .unwrap();
        assert_eq!(id.username.as_deref(), Some("Ann Lee"));
    }

    #[test]
    fn usernames_are_sanitised() {
        assert_eq!(sanitize_username("Ann Lee"), "Ann-Lee");
        assert_eq!(sanitize_username("  a//b  "), "a-b");
        assert_eq!(sanitize_username("ann@example.com"), "ann@example.com");
        assert_eq!(sanitize_username("!!!"), "");
        assert_eq!(sanitize_username(&"x".repeat(100)).len(), 56);
    }
}
