//! `/auth/{provider}/login` and `/auth/{provider}/callback`: OAuth sign-in with
//! the authorization-code flow and PKCE (S256).
//!
//! The `state` is stored in the database and bound to the browser by a
//! cookie holding a random value whose hash is stored with it. The access
//! token is handed back in a URL fragment (never a query string, never the
//! log), or as JSON when the caller accepts only JSON. Errors on this
//! browser-facing side are a readable HTML page when the request accepts HTML.

use super::extract::{AppPath, AppQuery};
use crate::auth::extract::authenticate;
use crate::auth::oauth::{self, Provider};
use crate::db::{self, oauth_states::StateRow};
use crate::error::ApiError;
use crate::service::oauth as svc;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The cookie binding a sign-in in progress to the browser that started it.
const BINDING_COOKIE: &str = "tollgate_oauth";

#[derive(Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    redirect_uri: Option<String>,
    #[serde(default)]
    link: Option<String>,
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// `GET /auth/{provider}/login[?redirect_uri=][&link=1]`: 302 to the provider.
pub async fn login(
    State(st): State<AppState>,
    AppPath(id): AppPath<String>,
    AppQuery(q): AppQuery<LoginQuery>,
    headers: HeaderMap,
) -> Response {
    let html = accepts_html(&headers);
    match start(&st, &id, q, &headers).await {
        Ok(r) => r,
        Err(e) => error_response(html, e),
    }
}

async fn start(
    st: &AppState,
    id: &str,
    q: LoginQuery,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let provider = find_provider(st, id)?;
    let redirect_uri = q.redirect_uri.filter(|r| !r.is_empty());
    if let Some(r) = &redirect_uri {
        if !st
            .config
            .server
            .oauth_redirect_allowlist
            .iter()
            .any(|a| a == r)
        {
            return Err(ApiError::invalid_field(
                "redirect_uri",
                "This redirect_uri is not in the server's oauth_redirect_allowlist (entries must match exactly).",
            ));
        }
    }
    // A credential on the request (or `link=1`) links the new identity to
    // the caller instead of signing in.
    let wants_link = q.link.as_deref().is_some_and(|l| l != "0" && l != "false");
    let link_user_id = if wants_link || headers.contains_key(header::AUTHORIZATION) {
        // Linking an identity changes the account: a session only, never a
        // key (the identity would sign in to a session and so mint keys).
        let p = authenticate(st, headers)?;
        p.require_session()?;
        Some(p.user.id)
    } else {
        None
    };
    let binding = cookie(headers, BINDING_COOKIE)
        .filter(|v| valid_token(v))
        .unwrap_or_else(random_token);
    let state = random_token();
    let (url, verifier) = provider.authorize_url(&st.config.server.public_url, &state)?;
    let now = st.clock.now();
    let row = StateRow {
        state,
        provider: provider.id.clone(),
        pkce_verifier: verifier.secret().clone(),
        redirect_uri,
        link_user_id,
        browser_hash: hash(&binding),
        created_at: db::ts(now),
    };
    svc::issue_state(&st.store, row, now).await?;
    let secure = if st.config.server.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let set_cookie = format!(
        "{BINDING_COOKIE}={binding}; HttpOnly; SameSite=Lax; Path=/auth; Max-Age={}{secure}",
        svc::STATE_TTL_SECS
    );
    Ok(redirect(&url, Some(&set_cookie)))
}

/// `GET /auth/{provider}/callback?code=&state=`: finishes the sign-in.
pub async fn callback(
    State(st): State<AppState>,
    AppPath(id): AppPath<String>,
    AppQuery(q): AppQuery<CallbackQuery>,
    headers: HeaderMap,
) -> Response {
    let html = accepts_html(&headers);
    match finish(&st, &id, q, &headers).await {
        Ok(r) => r,
        Err(e) => error_response(html, e),
    }
}

async fn finish(
    st: &AppState,
    id: &str,
    q: CallbackQuery,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let provider = find_provider(st, id)?;
    let binding = cookie(headers, BINDING_COOKIE).map(|b| hash(&b));
    let now = st.clock.now();
    let redeem =
        |state: String| svc::redeem_state(&st.store, state, &provider.id, binding.as_deref(), now);
    if let Some(err) = q.error {
        // The provider sent the browser back without a code (the user said no,
        // or the provider refused). Spend the state so it cannot be replayed.
        if let Some(state) = q.state {
            let _ = redeem(state).await;
        }
        return Err(provider_error(
            &provider,
            &err,
            q.error_description.as_deref(),
        ));
    }
    let state = q.state.filter(|s| !s.is_empty()).ok_or_else(|| {
        ApiError::invalid_field(
            "state",
            "The sign-in answer has no state; start the sign-in again.",
        )
    })?;
    let row = redeem(state).await?;
    let code = q.code.filter(|c| !c.is_empty()).ok_or_else(|| {
        ApiError::invalid_field(
            "code",
            "The sign-in answer has no code; start the sign-in again.",
        )
    })?;
    let public_url = &st.config.server.public_url;
    let access = provider
        .exchange(&st.oauth_http, public_url, &code, &row.pkce_verifier)
        .await?;
    let identity = provider.userinfo(&st.oauth_http, &access).await?;
    let (pid, link_to, stamp) = (provider.id.clone(), row.link_user_id, db::ts(now));
    let user = svc::sign_in(&st.store, &pid, &identity, link_to, &stamp).await?;
    if user.disabled {
        return Err(ApiError::forbidden_code(
            "account_disabled",
            "This account is disabled; ask an administrator.",
        ));
    }
    let cached = st
        .creds
        .snapshot()
        .users
        .get(&user.id)
        .is_some_and(|u| u.token_version == user.token_version && !u.disabled);
    if !cached {
        st.creds.reload().await?;
    }
    tracing::info!(provider = %provider.id, user_id = user.id, linked = link_to.is_some(), "OAuth sign-in");
    let token = super::auth::token_response(st, user.id, user.token_version);
    if accepts_only_json(headers) {
        return Ok(Json(token).into_response());
    }
    let fragment = format!(
        "access_token={}&token_type=bearer&expires_in={}",
        token["access_token"].as_str().unwrap_or_default(),
        st.jwt.ttl_secs
    );
    let target = match row.redirect_uri {
        Some(r) if r.contains('#') => format!("{r}&{fragment}"),
        Some(r) => format!("{r}#{fragment}"),
        None => format!("/ui/#{fragment}"),
    };
    Ok(redirect(&target, None))
}

fn find_provider(st: &AppState, id: &str) -> Result<Provider, ApiError> {
    oauth::find(&st.config, id)
        .ok_or_else(|| ApiError::not_found(format!("No OAuth provider {id:?} is enabled here.")))
}

fn provider_error(p: &Provider, err: &str, desc: Option<&str>) -> ApiError {
    let code: String = err
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect();
    let what = desc.filter(|d| !d.trim().is_empty()).unwrap_or(err);
    let what: String = what.chars().take(300).collect();
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        Some(if code.is_empty() {
            "oauth_error"
        } else {
            &code
        }),
        format!("{} did not sign you in: {what}", p.name),
    )
}

/// A 302 that no cache keeps (the Location may carry a token in its fragment).
fn redirect(location: &str, set_cookie: Option<&str>) -> Response {
    let mut resp = StatusCode::FOUND.into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(c).ok()) {
        h.insert(header::SET_COOKIE, c);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

fn error_response(html: bool, e: ApiError) -> Response {
    if !html {
        return e.into_response();
    }
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Sign-in failed · tollgate</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;line-height:1.5}}</style>\
         </head><body><h1>Sign-in failed</h1><p>{}</p><p><a href=\"/ui/#/login\">Back to sign-in</a></p></body></html>\n",
        escape_html(&e.message)
    );
    let mut resp = (e.status, Html(page)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The media types of `Accept`, parameters dropped.
fn accept_types(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|t| !t.is_empty())
        .collect()
}

fn accepts_html(headers: &HeaderMap) -> bool {
    accept_types(headers).iter().any(|t| t == "text/html")
}

fn accepts_only_json(headers: &HeaderMap) -> bool {
    let types = accept_types(headers);
    !types.is_empty() && types.iter().all(|t| t == "application/json")
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn random_token() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    Alphanumeric.sample_string(&mut rand::rngs::OsRng, 43)
}

fn valid_token(v: &str) -> bool {
    v.len() == 43 && v.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn hash(v: &str) -> String {
    hex::encode(Sha256::digest(v.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_parsing() {
        let mut h = HeaderMap::new();
        assert!(!accepts_html(&h) && !accepts_only_json(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(accepts_only_json(&h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"),
        );
        assert!(accepts_html(&h) && !accepts_only_json(&h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, */*"),
        );
        assert!(!accepts_only_json(&h));
    }

    #[test]
    fn cookies_and_escaping() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; tollgate_oauth=xyz"),
        );
        assert_eq!(cookie(&h, "tollgate_oauth").as_deref(), Some("xyz"));
        assert_eq!(cookie(&h, "b"), None);
        assert_eq!(
            escape_html("<a href=\"x\">&"),
            "&lt;a href=&quot;x&quot;&gt;&amp;"
        );
        assert!(valid_token(&random_token()));
    }
}
