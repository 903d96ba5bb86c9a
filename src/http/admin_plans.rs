//! `/admin/plans`: list, create, edit and delete plans (409 while in use).

use super::extract::{double_option, AppJson, AppPath};
use super::views::DataList;
use crate::auth::AdminUser;
use crate::db;
use crate::error::ApiResult;
use crate::money::Usd;
use crate::service::plans;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;

pub async fn list(State(st): State<AppState>, _: AdminUser) -> ApiResult<impl IntoResponse> {
    let rows = st.store.list_plans().await?;
    Ok(Json(DataList { data: rows }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePlan {
    name: String,
    monthly_tokens: i64,
    /// Dollars per month; null or absent: no USD limit.
    #[serde(default)]
    monthly_usd: Option<Usd>,
    requests_per_minute: i64,
    #[serde(default)]
    price_usd_month: Option<f64>,
    #[serde(default)]
    allowed_models: Option<Vec<String>>,
    #[serde(default)]
    pay_as_you_go: Option<bool>,
}

pub async fn create(
    State(st): State<AppState>,
    _: AdminUser,
    AppJson(b): AppJson<CreatePlan>,
) -> ApiResult<impl IntoResponse> {
    let new = plans::NewPlan {
        name: b.name,
        monthly_tokens: b.monthly_tokens,
        monthly_usd: b.monthly_usd,
        requests_per_minute: b.requests_per_minute,
        price_usd_month: b.price_usd_month,
        allowed_models: b.allowed_models,
        pay_as_you_go: b.pay_as_you_go,
    };
    let plan = plans::create(&st.store, new, db::ts(st.clock.now())).await?;
    st.creds.reload().await?;
    Ok((StatusCode::CREATED, Json(plan)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdatePlan {
    #[serde(default)]
    monthly_tokens: Option<i64>,
    /// null removes the USD limit.
    #[serde(default, deserialize_with = "double_option")]
    monthly_usd: Option<Option<Usd>>,
    #[serde(default)]
    requests_per_minute: Option<i64>,
    #[serde(default)]
    price_usd_month: Option<f64>,
    #[serde(default)]
    allowed_models: Option<Vec<String>>,
    #[serde(default)]
    pay_as_you_go: Option<bool>,
}

pub async fn update(
    State(st): State<AppState>,
    _: AdminUser,
    AppPath(name): AppPath<String>,
    AppJson(b): AppJson<UpdatePlan>,
) -> ApiResult<impl IntoResponse> {
    let changes = plans::PlanChanges {
        monthly_tokens: b.monthly_tokens,
        monthly_usd: b.monthly_usd,
        requests_per_minute: b.requests_per_minute,
        price_usd_month: b.price_usd_month,
        allowed_models: b.allowed_models,
        pay_as_you_go: b.pay_as_you_go,
    };
    let plan = plans::update(&st.store, &name, changes).await?;
    st.creds.reload().await?;
    Ok(Json(plan))
}

pub async fn delete(
    State(st): State<AppState>,
    _: AdminUser,
    AppPath(name): AppPath<String>,
) -> ApiResult<impl IntoResponse> {
    plans::delete(&st.store, &name).await?;
    st.creds.reload().await?;
    Ok(StatusCode::NO_CONTENT)
}
