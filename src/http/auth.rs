//! `/auth/*`: register, login (JSON or form), me, password change, and the
//! list of enabled OAuth providers.

use super::extract::{client_addr, AppJson, JsonOrForm, Peer};
use super::views::UserView;
use crate::auth::{password, CurrentUser, SessionUser};
use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::service::accounts;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
pub struct RegisterBody {
    username: String,
    password: String,
    #[serde(default)]
    email: Option<String>,
}

pub async fn register(
    State(st): State<AppState>,
    AppJson(b): AppJson<RegisterBody>,
) -> ApiResult<impl IntoResponse> {
    if !st.config.auth.allow_registration {
        return Err(ApiError::forbidden_code(
            "registration_disabled",
            "Self-service registration is turned off on this server; ask an administrator for an account.",
        ));
    }
    accounts::validate_username(&b.username)?;
    let hash = tokio::task::spawn_blocking({
        let pw = b.password.clone();
        move || accounts::hash_password(&pw)
    })
    .await
    .map_err(ApiError::internal)??;
    let now = db::ts(st.clock.now());
    let a = accounts::NewAccount {
        username: &b.username,
        password_hash: Some(&hash),
        email: b.email.as_deref(),
        role: "user",
        plan: None,
    };
    let user = accounts::create_user(&st.store, &a, &now).await?;
    st.creds.reload().await?;
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
}

#[derive(Deserialize)]
pub struct LoginBody {
    username: String,
    password: String,
}

pub async fn login(
    State(st): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    JsonOrForm(b): JsonOrForm<LoginBody>,
) -> ApiResult<impl IntoResponse> {
    let addr = client_addr(&st, peer, &headers);
    // Counted before the password is checked (and taken back if it is right),
    // so that concurrent attempts cannot outrun the throttle.
    let at = st.clock.now().timestamp();
    if let Err(wait) = st.throttle.begin(&b.username, addr, at) {
        return Err(ApiError::rate_limited(
            format!("Too many failed sign-ins; try again in {wait} seconds."),
            wait,
        ));
    }
    let user = st.store.user_by_username(b.username.clone()).await?;
    let stored = user.as_ref().and_then(|u| u.password_hash.clone());
    let pw = b.password;
    let ok = tokio::task::spawn_blocking(move || password::verify(&pw, stored.as_deref()))
        .await
        .map_err(ApiError::internal)?;
    let user = match user {
        Some(u) if ok => u,
        _ => {
            tracing::info!(%addr, "failed sign-in");
            return Err(ApiError::invalid_credentials());
        }
    };
    st.throttle.forgive(&b.username, addr, at);
    if user.disabled {
        return Err(ApiError::forbidden_code(
            "account_disabled",
            "This account is disabled; ask an administrator.",
        ));
    }
    // The account may have just been created or reset by another process (the
    // CLI); bring the cache up to date so the token works on its first use
    // rather than after the next poll.
    let current = st
        .creds
        .snapshot()
        .users
        .get(&user.id)
        .is_some_and(|u| u.token_version == user.token_version && !u.disabled);
    if !current {
        st.creds.reload().await?;
    }
    Ok(Json(token_response(&st, user.id, user.token_version)))
}

/// `{"access_token","token_type":"bearer","expires_in"}` for a user.
pub fn token_response(st: &AppState, user_id: i64, token_version: i64) -> serde_json::Value {
    let token = st
        .jwt
        .issue(user_id, token_version, st.clock.now().timestamp());
    json!({"access_token": token, "token_type": "bearer", "expires_in": st.jwt.ttl_secs})
}

pub async fn me(
    State(st): State<AppState>,
    CurrentUser(p): CurrentUser,
) -> ApiResult<impl IntoResponse> {
    let id = p.user.id;
    let user = st
        .store
        .user_by_id(id)
        .await?
        .ok_or_else(|| ApiError::invalid_api_key("This account no longer exists."))?;
    Ok(Json(UserView::from(&user)))
}

#[derive(Deserialize)]
pub struct PasswordBody {
    current_password: String,
    new_password: String,
}

pub async fn change_password(
    State(st): State<AppState>,
    SessionUser(p): SessionUser,
    AppJson(b): AppJson<PasswordBody>,
) -> ApiResult<impl IntoResponse> {
    accounts::validate_password(&b.new_password).map_err(|e| e.with_param("new_password"))?;
    let id = p.user.id;
    let user = st
        .store
        .user_by_id(id)
        .await?
        .ok_or_else(|| ApiError::invalid_api_key("This account no longer exists."))?;
    let stored = user.password_hash.clone();
    let (current, new) = (b.current_password, b.new_password);
    let hash = tokio::task::spawn_blocking(move || {
        if !password::verify(&current, stored.as_deref()) {
            return Err(ApiError::invalid_credentials()
                .with_param("current_password")
                .tap_message("The current password is wrong."));
        }
        accounts::hash_password(&new)
    })
    .await
    .map_err(ApiError::internal)??;
    st.store.set_user_password(id, hash).await?;
    st.creds.reload().await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn providers(State(st): State<AppState>) -> impl IntoResponse {
    Json(crate::auth::oauth_providers_list(&st))
}

trait TapMessage {
    fn tap_message(self, m: &str) -> Self;
}

impl TapMessage for ApiError {
    fn tap_message(mut self, m: &str) -> Self {
        self.message = m.to_owned();
        self
    }
}
