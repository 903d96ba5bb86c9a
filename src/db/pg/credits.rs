//! The credit ledger on PostgreSQL: the same operations and rules as
//! `db/credits.rs`.

use super::Pg;
use crate::db::credits::{refusal, CreditEntry, CreditRefused, NewCredit};
use crate::db::DbResult;
use crate::money::Usd;
use tokio_postgres::{GenericClient, Row};

/// The columns [`entry`] reads, in its order.
const COLUMNS: &str = "id, user_id, amount_micros, note, created_by, created_at";

fn entry(r: &Row) -> CreditEntry {
    CreditEntry {
        id: r.get(0),
        user_id: r.get(1),
        amount_usd: Usd(r.get(2)),
        note: r.get(3),
        created_by: r.get(4),
        created_at: r.get(5),
    }
}

/// The user's credit left, in micro-dollars.
async fn balance<C: GenericClient>(c: &C, user_id: i64) -> DbResult<i64> {
    let sql =
        "SELECT (SELECT COALESCE(SUM(amount_micros), 0) FROM credits WHERE user_id = $1)::BIGINT
                    - (SELECT COALESCE(SUM(credit_micros), 0) FROM usage_period
                       WHERE user_id = $1 AND credit_micros <> 0)::BIGINT";
    Ok(c.query_one(sql, &[&user_id]).await?.get(0))
}

impl Pg {
    pub async fn credit_balance(&self, user_id: i64) -> DbResult<i64> {
        balance(&**self.client().await?, user_id).await
    }

    /// Adds an entry and returns it with the new balance. The user's row is
    /// locked while the balance is read and the entry written, so two
    /// deductions at once (on any replicas) cannot both pass the check.
    pub async fn add_credit(
        &self,
        c: NewCredit,
        now: String,
    ) -> DbResult<Result<(CreditEntry, i64), CreditRefused>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if tx
            .query_opt(
                "SELECT id FROM users WHERE id = $1 FOR UPDATE",
                &[&c.user_id],
            )
            .await?
            .is_none()
        {
            return Ok(Err(CreditRefused::UnknownUser));
        }
        let before = balance(&*tx, c.user_id).await?;
        if let Some(r) = refusal(before, c.amount_micros) {
            return Ok(Err(r));
        }
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO credits (user_id, amount_micros, note, created_by, created_at)
                     VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
                ),
                &[&c.user_id, &c.amount_micros, &c.note, &c.created_by, &now],
            )
            .await?;
        tx.commit().await?;
        Ok(Ok((entry(&row), before + c.amount_micros)))
    }

    /// A page of the user's entries, newest first: those with an id below `before`.
    pub async fn credits_page(
        &self,
        user_id: i64,
        before: Option<i64>,
        limit: i64,
    ) -> DbResult<Vec<CreditEntry>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM credits WHERE user_id = $1 AND id < $2
                 ORDER BY id DESC LIMIT $3"
            ))
            .await?;
        Ok(
            c.query(&st, &[&user_id, &before.unwrap_or(i64::MAX), &limit])
                .await?
                .iter()
                .map(entry)
                .collect(),
        )
    }
}
