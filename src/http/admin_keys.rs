//! `/admin/keys`: every user's keys (without secrets), and revoking any of them.

use super::extract::{AppPath, AppQuery};
use super::views::{DataList, KeyView};
use crate::auth::AdminUser;
use crate::db::{self, api_keys, users};
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
    let rows = db::run(&st.pool, move |c| {
        let Some(u) = q.user.filter(|u| !u.is_empty()) else {
            return api_keys::list_all(c);
        };
        let user = match u.parse::<i64>() {
            Ok(id) => users::find_by_id(c, id)?,
            Err(_) => users::find_by_username(c, &u)?,
        };
        match user {
            Some(user) => api_keys::list_for_user(c, user.id),
            None => Ok(Vec::new()),
        }
    })
    .await?;
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
    let found = db::run(&st.pool, move |c| api_keys::revoke(c, id)).await?;
    if !found {
        return Err(ApiError::not_found(format!(
            "There is no API key with id {id}."
        )));
    }
    st.creds.reload().await?;
    Ok(StatusCode::NO_CONTENT)
}
