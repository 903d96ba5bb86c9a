//! `/api/keys`: a user's own API keys — create (the secret shown once), list,
//! edit, revoke. Another user's key id answers 404.

use super::extract::{double_option, AppJson, AppPath, AppQuery};
use super::views::{CreatedKeyView, KeyView, Paging};
use crate::auth::{CurrentUser, SessionUser};
use crate::db::{self, api_keys};
use crate::error::{ApiError, ApiResult};
use crate::money::Usd;
use crate::service::accounts::{self, KeySpec};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    allowed_models: Option<Vec<String>>,
    #[serde(default)]
    monthly_token_limit: Option<i64>,
    /// Dollars per month (SPEC §12); null or absent: only the plan's limits.
    #[serde(default)]
    monthly_usd_limit: Option<Usd>,
}

pub async fn create(
    State(st): State<AppState>,
    SessionUser(p): SessionUser,
    AppJson(b): AppJson<CreateKey>,
) -> ApiResult<impl IntoResponse> {
    let now = db::ts(st.clock.now());
    let uid = p.user.id;
    let spec = KeySpec {
        name: b.name,
        description: b.description,
        expires_at: b.expires_at,
        allowed_models: b.allowed_models,
        monthly_token_limit: b.monthly_token_limit,
        monthly_usd_limit: b.monthly_usd_limit,
    };
    let (row, secret) = accounts::create_key(&st.store, uid, &spec, &now).await?;
    st.creds.reload().await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKeyView {
            id: row.id,
            name: row.name,
            description: row.description,
            api_key: secret,
            prefix: row.prefix,
            created_at: row.created_at,
            expires_at: row.expires_at,
            allowed_models: row.allowed_models,
            monthly_token_limit: row.monthly_token_limit,
            monthly_usd_limit: row.monthly_usd_limit,
        }),
    ))
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<String>,
    before: Option<String>,
}

/// The caller's keys, newest first, a page at a time (SPEC §13).
pub async fn list(
    State(st): State<AppState>,
    CurrentUser(p): CurrentUser,
    AppQuery(q): AppQuery<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    let paging = Paging::parse(q.limit.as_deref(), q.before.as_deref(), 100, 1000)?;
    let rows = st
        .store
        .keys_page(api_keys::KeyPage {
            user_id: Some(p.user.id),
            q: None,
            before: paging.before,
            limit: paging.ask(),
        })
        .await?;
    let snap = st.creds.snapshot();
    Ok(Json(paging.page(
        rows,
        |k| k.id,
        |k| KeyView::new(&k, &snap, false),
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    expires_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    allowed_models: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "double_option")]
    monthly_token_limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "double_option")]
    monthly_usd_limit: Option<Option<Usd>>,
}

/// The caller's key `id`, or 404 (also for another user's key).
async fn own_key(st: &AppState, user_id: i64, id: i64) -> ApiResult<api_keys::KeyRow> {
    st.store
        .key_by_id(id)
        .await?
        .filter(|k| k.user_id == user_id)
        .ok_or_else(|| ApiError::not_found(format!("You have no API key with id {id}.")))
}

pub async fn update(
    State(st): State<AppState>,
    SessionUser(p): SessionUser,
    AppPath(id): AppPath<i64>,
    AppJson(b): AppJson<UpdateKey>,
) -> ApiResult<impl IntoResponse> {
    let mut k = own_key(&st, p.user.id, id).await?;
    if let Some(n) = b.name {
        k.name = n.trim().to_owned();
    }
    if let Some(d) = b.description {
        k.description = d;
    }
    if let Some(e) = b.expires_at {
        k.expires_at = e;
    }
    if let Some(a) = b.allowed_models {
        k.allowed_models = a;
    }
    if let Some(l) = b.monthly_token_limit {
        k.monthly_token_limit = l;
    }
    if let Some(l) = b.monthly_usd_limit {
        k.monthly_usd_limit = l;
    }
    k.expires_at = accounts::validate_key_fields(
        &k.name,
        k.expires_at.as_deref(),
        k.allowed_models.as_deref(),
        k.monthly_token_limit,
        k.monthly_usd_limit,
    )?;
    let row = st
        .store
        .update_key(k)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("You have no API key with id {id}.")))?;
    st.creds.reload().await?;
    Ok(Json(KeyView::new(&row, &st.creds.snapshot(), false)))
}

pub async fn revoke(
    State(st): State<AppState>,
    SessionUser(p): SessionUser,
    AppPath(id): AppPath<i64>,
) -> ApiResult<impl IntoResponse> {
    own_key(&st, p.user.id, id).await?;
    st.store.revoke_key(id).await?;
    st.creds.reload().await?;
    Ok(StatusCode::NO_CONTENT)
}
