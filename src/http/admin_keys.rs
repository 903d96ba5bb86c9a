//! `/admin/keys`: every user's keys (without secrets), and revoking any of them.

use super::extract::{AppPath, AppQuery};
use super::views::{KeyView, Page, Paging};
use crate::auth::AdminUser;
use crate::db::api_keys::KeyPage;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;

#[derive(Deserialize)]
pub struct KeysQuery {
    /// A user id or username.
    user: Option<String>,
    /// A substring of the key's name or of its owner's username or email.
    q: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

/// Every user's keys, newest first, a page at a time (SPEC §13).
pub async fn list(
    State(st): State<AppState>,
    _: AdminUser,
    AppQuery(q): AppQuery<KeysQuery>,
) -> ApiResult<impl IntoResponse> {
    let paging = Paging::parse(q.limit.as_deref(), q.before.as_deref(), 100, 1000)?;
    let user_id = match q.user.filter(|u| !u.is_empty()) {
        None => None,
        Some(u) => {
            let user = match u.parse::<i64>() {
                Ok(id) => st.store.user_by_id(id).await?,
                Err(_) => st.store.user_by_username(u).await?,
            };
            match user {
                Some(user) => Some(user.id),
                None => {
                    let none: Vec<KeyView> = Vec::new();
                    return Ok(Json(Page {
                        data: none,
                        next_before: None,
                    }));
                }
            }
        }
    };
    let rows = st
        .store
        .keys_page(KeyPage {
            user_id,
            q: q.q.filter(|s| !s.is_empty()),
            before: paging.before,
            limit: paging.ask(),
        })
        .await?;
    let snap = st.creds.snapshot();
    Ok(Json(paging.page(
        rows,
        |k| k.id,
        |k| KeyView::new(&k, &snap, true),
    )))
}

pub async fn revoke(
    State(st): State<AppState>,
    _: AdminUser,
    AppPath(id): AppPath<i64>,
) -> ApiResult<impl IntoResponse> {
    let found = st.store.revoke_key(id).await?;
    if !found {
        return Err(ApiError::not_found(format!(
            "There is no API key with id {id}."
        )));
    }
    st.creds.reload().await?;
    Ok(StatusCode::NO_CONTENT)
}
