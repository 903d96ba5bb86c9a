//! `/admin/plans`: list, create, edit and delete plans (409 while in use).

use super::extract::{AppJson, AppPath};
use super::views::DataList;
use crate::auth::AdminUser;
use crate::db::{self, plans::Plan};
use crate::error::{ApiError, ApiResult};
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
    requests_per_minute: i64,
    #[serde(default)]
    price_usd_month: Option<f64>,
    #[serde(default)]
    allowed_models: Option<Vec<String>>,
}

fn validate(p: &Plan) -> ApiResult<()> {
    if p.name.trim().is_empty() || p.name.len() > 64 || p.name.contains('/') {
        return Err(ApiError::invalid_field(
            "name",
            "A plan name is 1 to 64 characters without '/'.",
        ));
    }
    if p.monthly_tokens < 0 {
        return Err(ApiError::invalid_field(
            "monthly_tokens",
            "monthly_tokens is a number ≥ 0.",
        ));
    }
    if p.requests_per_minute < 1 {
        return Err(ApiError::invalid_field(
            "requests_per_minute",
            "requests_per_minute is at least 1.",
        ));
    }
    if p.price_usd_month < 0.0 || !p.price_usd_month.is_finite() {
        return Err(ApiError::invalid_field(
            "price_usd_month",
            "price_usd_month is a number ≥ 0.",
        ));
    }
    crate::glob::Patterns::new(&p.allowed_models)
        .map_err(|m| ApiError::invalid_field("allowed_models", m))?;
    Ok(())
}

pub async fn create(
    State(st): State<AppState>,
    _: AdminUser,
    AppJson(b): AppJson<CreatePlan>,
) -> ApiResult<impl IntoResponse> {
    let plan = Plan {
        name: b.name.trim().to_owned(),
        monthly_tokens: b.monthly_tokens,
        requests_per_minute: b.requests_per_minute,
        price_usd_month: b.price_usd_month.unwrap_or(0.0),
        allowed_models: b.allowed_models.unwrap_or_else(|| vec!["*".into()]),
    };
    validate(&plan)?;
    let now = db::ts(st.clock.now());
    let plan = st.store.create_plan(plan, now).await?;
    st.creds.reload().await?;
    Ok((StatusCode::CREATED, Json(plan)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdatePlan {
    #[serde(default)]
    monthly_tokens: Option<i64>,
    #[serde(default)]
    requests_per_minute: Option<i64>,
    #[serde(default)]
    price_usd_month: Option<f64>,
    #[serde(default)]
    allowed_models: Option<Vec<String>>,
}

pub async fn update(
    State(st): State<AppState>,
    _: AdminUser,
    AppPath(name): AppPath<String>,
    AppJson(b): AppJson<UpdatePlan>,
) -> ApiResult<impl IntoResponse> {
    let mut plan = st
        .store
        .plan_by_name(name.clone())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("There is no plan named {name:?}.")))?;
    if let Some(v) = b.monthly_tokens {
        plan.monthly_tokens = v;
    }
    if let Some(v) = b.requests_per_minute {
        plan.requests_per_minute = v;
    }
    if let Some(v) = b.price_usd_month {
        plan.price_usd_month = v;
    }
    if let Some(v) = b.allowed_models {
        plan.allowed_models = v;
    }
    validate(&plan)?;
    st.store.update_plan(plan.clone()).await?;
    st.creds.reload().await?;
    Ok(Json(plan))
}

pub async fn delete(
    State(st): State<AppState>,
    _: AdminUser,
    AppPath(name): AppPath<String>,
) -> ApiResult<impl IntoResponse> {
    if !st.store.delete_plan(name.clone()).await? {
        return Err(ApiError::not_found(format!(
            "There is no plan named {name:?}."
        )));
    }
    st.creds.reload().await?;
    Ok(StatusCode::NO_CONTENT)
}
