//! `/subscriptions/*`: plans, the caller's balance, and their usage (totals and
//! per day) from the daily roll-ups.

use super::extract::AppQuery;
use crate::auth::CurrentUser;
use crate::db::{self, usage::DailyFilter};
use crate::error::{ApiError, ApiResult};
use crate::metering::period_bounds;
use crate::money::Usd;
use crate::state::AppState;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;

pub async fn plans(State(st): State<AppState>, _: CurrentUser) -> impl IntoResponse {
    let snap = st.creds.snapshot();
    let mut plans: Vec<_> = snap.plans.values().map(|p| p.plan.clone()).collect();
    plans.sort_by(|a, b| {
        a.monthly_tokens
            .cmp(&b.monthly_tokens)
            .then(a.name.cmp(&b.name))
    });
    Json(plans)
}

/// `GET /subscriptions/me` (SPEC §6, §12). A struct rather than `json!`: a
/// `Value` would turn the exact dollar amounts into floats (`1e-6`).
#[derive(serde::Serialize)]
struct Me {
    plan: String,
    monthly_tokens: i64,
    tokens_used: i64,
    tokens_reserved: i64,
    remaining_tokens: i64,
    monthly_usd: Option<Usd>,
    usd_used: Usd,
    usd_reserved: Usd,
    remaining_usd: Option<Usd>,
    credit_usd: Usd,
    period_start: String,
    period_end: String,
}

pub async fn me(
    State(st): State<AppState>,
    CurrentUser(p): CurrentUser,
) -> ApiResult<impl IntoResponse> {
    let now = st.clock.now();
    let period = crate::metering::period_of(now);
    let (start, end) = period_bounds(now);
    let plan = p
        .plan
        .as_ref()
        .ok_or_else(|| ApiError::internal("user without a plan"))?;
    let key = p.key.as_ref();
    let (bal, kb, credit) = st
        .metering
        .balances(p.user.id, key.map(|k| k.id), &period)
        .await?;
    let mut remaining = (plan.plan.monthly_tokens - bal.used - bal.reserved).max(0);
    if let (Some(kb), Some(limit)) = (kb, key.and_then(|k| k.monthly_token_limit)) {
        remaining = remaining.min((limit - kb.used - kb.reserved).max(0));
    }
    // Money (SPEC §12): what is left under every USD limit that applies.
    let account = crate::service::proxy::account_of(&p, plan);
    let credit_left = credit.left - credit.reserved;
    let mut remaining_usd: Option<i64> = None;
    let mut bound = |m: i64| remaining_usd = Some(remaining_usd.map_or(m, |r| r.min(m)));
    if account.payg {
        bound(credit_left);
    }
    if let Some(limit) = account.user_usd {
        bound(limit - bal.usd_used - bal.usd_reserved);
    }
    if let (Some(kb), Some(limit)) = (kb, account.key_usd) {
        bound(limit - kb.usd_used - kb.usd_reserved);
    }
    Ok(Json(Me {
        plan: plan.plan.name.clone(),
        monthly_tokens: plan.plan.monthly_tokens,
        tokens_used: bal.used,
        tokens_reserved: bal.reserved,
        remaining_tokens: remaining,
        monthly_usd: account.user_usd.map(Usd),
        usd_used: Usd(bal.usd_used),
        usd_reserved: Usd(bal.usd_reserved),
        remaining_usd: remaining_usd.map(|m| Usd(m.max(0))),
        credit_usd: Usd(credit_left),
        period_start: db::ts(start),
        period_end: db::ts(end),
    }))
}

#[derive(Deserialize, Default)]
pub struct UsageQuery {
    pub provider: Option<String>,
    pub model: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// A `from`/`to` bound as a UTC day: `YYYY-MM-DD`, or RFC 3339 rounded to its
/// day (`to` rounds up, so the instant stays excluded only at midnight).
fn parse_bound(param: &str, s: &str, round_up: bool) -> ApiResult<NaiveDate> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d);
    }
    match DateTime::parse_from_rfc3339(s) {
        Ok(t) => {
            let t = t.with_timezone(&Utc);
            let d = t.date_naive();
            let midnight = t.time() == chrono::NaiveTime::MIN;
            Ok(if round_up && !midnight {
                d.succ_opt().unwrap_or(d)
            } else {
                d
            })
        }
        Err(_) => Err(ApiError::invalid_field(
            param,
            format!("`{param}` is a date (YYYY-MM-DD) or an RFC 3339 time."),
        )),
    }
}

/// The filter and the bounds it covers (the current period by default).
pub fn usage_filter(
    st: &AppState,
    q: &UsageQuery,
    user_id: Option<i64>,
) -> ApiResult<(DailyFilter, String, String)> {
    let (start, end) = period_bounds(st.clock.now());
    let from = match q.from.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => parse_bound("from", s, false)?,
        None => start.date_naive(),
    };
    let to = match q.to.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => parse_bound("to", s, true)?,
        None => end.date_naive(),
    };
    let f = DailyFilter {
        user_id,
        provider: q.provider.clone().filter(|s| !s.is_empty()),
        model: q.model.clone().filter(|s| !s.is_empty()),
        from_day: Some(from.format("%Y-%m-%d").to_string()),
        to_day: Some(to.format("%Y-%m-%d").to_string()),
    };
    let rfc = |d: NaiveDate| format!("{}T00:00:00Z", d.format("%Y-%m-%d"));
    Ok((f, rfc(from), rfc(to)))
}

pub async fn usage(
    State(st): State<AppState>,
    CurrentUser(p): CurrentUser,
    AppQuery(q): AppQuery<UsageQuery>,
) -> ApiResult<impl IntoResponse> {
    let (f, start, end) = usage_filter(&st, &q, Some(p.user.id))?;
    st.metering.writer.flush().await;
    let provider = f.provider.clone();
    let (tokens, requests, ok_tokens, cost) = st.store.usage_totals(f).await?;
    let avg = if requests > 0 {
        ok_tokens as f64 / requests as f64
    } else {
        0.0
    };
    #[derive(serde::Serialize)]
    struct Totals {
        provider: Option<String>,
        tokens_used: i64,
        requests_count: i64,
        /// Exact dollars (see [`Me`]).
        cost_total: Usd,
        average_tokens_per_request: f64,
        period_start: String,
        period_end: String,
    }
    Ok(Json(Totals {
        provider,
        tokens_used: tokens,
        requests_count: requests,
        cost_total: Usd(cost),
        average_tokens_per_request: avg,
        period_start: start,
        period_end: end,
    }))
}

pub async fn daily(
    State(st): State<AppState>,
    CurrentUser(p): CurrentUser,
    AppQuery(q): AppQuery<UsageQuery>,
) -> ApiResult<impl IntoResponse> {
    let (f, _, _) = usage_filter(&st, &q, Some(p.user.id))?;
    st.metering.writer.flush().await;
    let days = st.store.usage_daily(f).await?;
    // A struct, not `json!`: a `Value` would turn exact dollars into floats.
    #[derive(serde::Serialize)]
    struct Days {
        days: Vec<crate::db::usage::DailyRow>,
    }
    Ok(Json(Days { days }))
}

/// The caller's own credit ledger, newest first, a page at a time
/// (`?limit=`, `?before=`), with their balance: the shape of
/// `GET /admin/users/{id}/credits`.
pub async fn credits(
    State(st): State<AppState>,
    CurrentUser(p): CurrentUser,
    AppQuery(q): AppQuery<super::admin_credits::LedgerQuery>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        super::admin_credits::ledger(&st, p.user.id, &q).await?,
    ))
}
