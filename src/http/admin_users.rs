//! `/admin/users`: search, create, change plan/role/disabled/email/password,
//! delete. Disabling stops the user's keys and tokens at once. An admin cannot
//! disable, demote or delete their own account (so one always remains).

use super::extract::{double_option, AppJson, AppPath, AppQuery};
use super::views::{AdminUserView, Paging};
use crate::auth::AdminUser;
use crate::db::{self, UserChanges};
use crate::error::{ApiError, ApiResult};
use crate::service::accounts;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;

#[derive(Deserialize)]
pub struct SearchQuery {
    /// A substring of the username or email.
    q: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

pub async fn list(
    State(st): State<AppState>,
    _: AdminUser,
    AppQuery(q): AppQuery<SearchQuery>,
) -> ApiResult<impl IntoResponse> {
    let paging = Paging::parse(q.limit.as_deref(), q.before.as_deref(), 100, 1000)?;
    let rows = st
        .store
        .users_page(q.q.filter(|s| !s.is_empty()), paging.before, paging.ask())
        .await?;
    Ok(Json(paging.page(
        rows,
        |u| u.id,
        |u| AdminUserView::from(&u),
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    username: String,
    password: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    plan: Option<String>,
}

pub async fn create(
    State(st): State<AppState>,
    _: AdminUser,
    AppJson(b): AppJson<CreateUser>,
) -> ApiResult<impl IntoResponse> {
    accounts::validate_username(&b.username)?;
    let pw = b.password.clone();
    let hash = tokio::task::spawn_blocking(move || accounts::hash_password(&pw))
        .await
        .map_err(ApiError::internal)??;
    let now = db::ts(st.clock.now());
    let user = accounts::create_user(
        &st.store,
        &accounts::NewAccount {
            username: &b.username,
            password_hash: Some(&hash),
            email: b.email.as_deref(),
            role: b.role.as_deref().unwrap_or("user"),
            plan: b.plan.as_deref(),
        },
        &now,
    )
    .await?;
    st.creds.reload().await?;
    Ok((StatusCode::CREATED, Json(AdminUserView::from(&user))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[serde(default)]
    plan: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default, deserialize_with = "double_option")]
    email: Option<Option<String>>,
    #[serde(default)]
    password: Option<String>,
}

pub async fn update(
    State(st): State<AppState>,
    AdminUser(me): AdminUser,
    AppPath(id): AppPath<i64>,
    AppJson(b): AppJson<UpdateUser>,
) -> ApiResult<impl IntoResponse> {
    if id == me.user.id {
        if b.disabled == Some(true) {
            return Err(ApiError::invalid_field(
                "disabled",
                "You cannot disable your own account.",
            ));
        }
        if b.role.as_deref().is_some_and(|r| r != "admin") {
            return Err(ApiError::invalid_field(
                "role",
                "You cannot remove your own admin role.",
            ));
        }
    }
    if let Some(r) = &b.role {
        accounts::validate_role(r)?;
    }
    let hash = match b.password.clone() {
        Some(pw) => Some(
            tokio::task::spawn_blocking(move || accounts::hash_password(&pw))
                .await
                .map_err(ApiError::internal)??,
        ),
        None => None,
    };
    let changes = UserChanges {
        plan: b.plan,
        role: b.role,
        email: b.email,
        password_hash: hash,
        disabled: b.disabled,
    };
    let user = accounts::update_user(&st.store, id, changes).await?;
    st.creds.reload().await?;
    Ok(Json(AdminUserView::from(&user)))
}

pub async fn delete(
    State(st): State<AppState>,
    AdminUser(me): AdminUser,
    AppPath(id): AppPath<i64>,
) -> ApiResult<impl IntoResponse> {
    if id == me.user.id {
        return Err(ApiError::bad_request("You cannot delete your own account."));
    }
    if !st.store.delete_user(id).await? {
        return Err(ApiError::not_found(format!(
            "There is no user with id {id}."
        )));
    }
    st.creds.reload().await?;
    Ok(StatusCode::NO_CONTENT)
}
