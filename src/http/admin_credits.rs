//! `/admin/users/{id}/credits`: an admin tops up or deducts a user's prepaid
//! credit (a ledger entry each) and reads their ledger (SPEC §12).

use super::extract::{AppJson, AppPath, AppQuery};
use super::views::{AddedCredit, CreditList, Paging};
use crate::auth::AdminUser;
use crate::db;
use crate::error::ApiResult;
use crate::money::Usd;
use crate::service::credits;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;

/// The body of `POST /admin/users/{id}/credits`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddCredit {
    /// Positive: a top-up; negative: a deduction. Up to 6 decimals.
    amount_usd: Usd,
    /// Why; shown in the ledger. Absent or null: empty.
    #[serde(default)]
    note: Option<String>,
}

/// Adds a ledger entry: 201 with the entry and the new `credit_usd`.
pub async fn add(
    State(st): State<AppState>,
    AdminUser(me): AdminUser,
    AppPath(id): AppPath<i64>,
    AppJson(b): AppJson<AddCredit>,
) -> ApiResult<impl IntoResponse> {
    // Credit spent by calls whose records still wait counts against a deduction.
    st.metering.writer.flush().await;
    let (entry, balance) = credits::add(
        &st.store,
        id,
        b.amount_usd.0,
        b.note.as_deref().unwrap_or(""),
        Some(me.user.username.clone()),
        db::ts(st.clock.now()),
    )
    .await?;
    // The in-memory ledger takes the entry now rather than at its next look.
    if let Err(e) = st.metering.quotas.sync_credits().await {
        tracing::warn!(error = %e, "cannot read the new credit entry into the ledger; it is retried every second");
    }
    Ok((StatusCode::CREATED, Json(AddedCredit::new(entry, balance))))
}

/// `?limit=` (default 100, at most 1000) and `?before=` (an entry id).
#[derive(Deserialize)]
pub struct LedgerQuery {
    limit: Option<String>,
    before: Option<String>,
}

/// The user's ledger, newest first, a page at a time, with their balance.
pub async fn list(
    State(st): State<AppState>,
    _: AdminUser,
    AppPath(id): AppPath<i64>,
    AppQuery(q): AppQuery<LedgerQuery>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(ledger(&st, id, &q).await?))
}

/// A page of user `user_id`'s ledger with their balance; 404 for no such user.
pub async fn ledger(st: &AppState, user_id: i64, q: &LedgerQuery) -> ApiResult<CreditList> {
    let paging = Paging::parse(q.limit.as_deref(), q.before.as_deref(), 100, 1000)?;
    st.metering.writer.flush().await;
    let (rows, balance) = credits::ledger(&st.store, user_id, paging.before, paging.ask()).await?;
    let page = paging.page(rows, |e| e.id, |e| e);
    Ok(CreditList {
        data: page.data,
        next_before: page.next_before,
        credit_usd: Usd(balance),
    })
}
