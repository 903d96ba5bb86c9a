//! `/admin/usage` (totals grouped by day, user, provider or model) and the
//! paginated request log `/admin/requests`.

use super::extract::AppQuery;
use super::subscriptions::{usage_filter, UsageQuery};
use super::views::Paging;
use crate::auth::AdminUser;
use crate::db::usage::RequestFilter;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
pub struct AdminUsageQuery {
    group_by: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

pub async fn usage(
    State(st): State<AppState>,
    _: AdminUser,
    AppQuery(q): AppQuery<AdminUsageQuery>,
) -> ApiResult<impl IntoResponse> {
    let group_by = q.group_by.unwrap_or_else(|| "day".into());
    if !["day", "user", "provider", "model"].contains(&group_by.as_str()) {
        return Err(ApiError::invalid_field(
            "group_by",
            "group_by is one of day, user, provider, model.",
        ));
    }
    let uq = UsageQuery {
        from: q.from,
        to: q.to,
        ..Default::default()
    };
    let (f, _, _) = usage_filter(&st, &uq, None)?;
    st.metering.writer.flush().await;
    let rows = st.store.usage_grouped(group_by.clone(), f).await?;
    // A struct, not `json!`: a `Value` would turn exact dollars into floats.
    #[derive(serde::Serialize)]
    struct Grouped {
        group_by: String,
        rows: Vec<crate::db::usage::GroupRow>,
    }
    Ok(Json(Grouped { group_by, rows }))
}

#[derive(Deserialize)]
pub struct RequestsQuery {
    user: Option<String>,
    provider: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

pub async fn requests(
    State(st): State<AppState>,
    _: AdminUser,
    AppQuery(q): AppQuery<RequestsQuery>,
) -> ApiResult<impl IntoResponse> {
    let paging = Paging::parse(q.limit.as_deref(), q.before.as_deref(), 50, 500)?;
    let outcome = q.status.filter(|s| !s.is_empty());
    if let Some(o) = &outcome {
        if !["ok", "upstream_error", "client_cancelled", "refused"].contains(&o.as_str()) {
            return Err(ApiError::invalid_field(
                "status",
                "status is one of ok, upstream_error, client_cancelled, refused.",
            ));
        }
    }
    st.metering.writer.flush().await;
    let user = q.user.filter(|s| !s.is_empty());
    let provider = q.provider.filter(|s| !s.is_empty());
    let user_id = match user {
        None => None,
        Some(u) => match u.parse::<i64>() {
            Ok(id) => Some(id),
            Err(_) => match st.store.user_by_username(u).await? {
                Some(row) => Some(row.id),
                None => return Ok(Json(json!({"data": [], "next_before": null})).into_response()),
            },
        },
    };
    let rows = st
        .store
        .requests_page(RequestFilter {
            user_id,
            provider,
            outcome,
            before: paging.before,
            limit: paging.ask(),
        })
        .await?;
    Ok(Json(paging.page(rows, |r| r.id, |r| r)).into_response())
}
