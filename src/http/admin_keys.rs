//! `/admin/keys`: every user's keys (without secrets), and revoking any of them.

use super::extract::{AppPath, AppQuery};
use super::views::{DataList, KeyView};
use crate::auth::AdminUser;
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
}

pub async fn list(
    State(st): State<AppState>,
    _: AdminUser,
    AppQuery(q): AppQuery<KeysQuery>,
) -> ApiResult<impl IntoResponse> {
    let rows = match q.user.filter(|u| !u.is_empty()) {
        None => st.store.list_keys().await?,
        Some(u) => {
            let user = match u.parse::<i64>() {
                Ok(id) => st.store.user_by_id(id).await?,
                Err(_) => st.store.user_by_username(u).await?,
            };
            match user {
                Some(user) => st.store.list_keys_for_user(user.id).await?,
                None => Vec::new(),
            }
        }
    };
    let snap = st.creds.snapshot();
    Ok(Json(DataList {
        data: rows.iter().map(|k| KeyView::new(k, &snap, true)).collect(),
    }))
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
