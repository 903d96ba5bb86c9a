//! The credit ledger (SPEC §12): one entry per top-up (positive) or
//! deduction (negative) of a user's prepaid `credit_usd`. A balance is the
//! sum of the user's entries minus what their pay-as-you-go calls spent
//! (`usage_period.credit_micros`, every period).

use super::DbResult;
use crate::money::{Usd, MAX_MICROS};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use serde::Serialize;

/// One ledger entry as stored and as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CreditEntry {
    pub id: i64,
    pub user_id: i64,
    /// Positive: a top-up; negative: a deduction.
    pub amount_usd: Usd,
    pub note: String,
    /// The admin who made the entry; `None`: the CLI.
    pub created_by: Option<String>,
    pub created_at: String,
}

/// An entry to add (see [`add`]).
#[derive(Debug, Clone)]
pub struct NewCredit {
    pub user_id: i64,
    /// Micro-dollars, not 0.
    pub amount_micros: i64,
    pub note: String,
    pub created_by: Option<String>,
}

/// Why an entry was not added; the caller words the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditRefused {
    /// The user does not exist (any more).
    UnknownUser,
    /// The deduction is larger than the balance (micro-dollars) it would
    /// come from: a balance never goes below zero by a deduction.
    Overdrawn { balance: i64 },
    /// The balance would pass [`MAX_MICROS`].
    TooLarge { balance: i64 },
}

/// The columns [`from_row`] reads, in its order.
const COLUMNS: &str = "id, user_id, amount_micros, note, created_by, created_at";

fn from_row(r: &Row) -> rusqlite::Result<CreditEntry> {
    Ok(CreditEntry {
        id: r.get(0)?,
        user_id: r.get(1)?,
        amount_usd: Usd(r.get(2)?),
        note: r.get(3)?,
        created_by: r.get(4)?,
        created_at: r.get(5)?,
    })
}

/// The user's credit left, in micro-dollars.
pub fn balance(conn: &Connection, user_id: i64) -> DbResult<i64> {
    let mut st = conn.prepare_cached(
        "SELECT (SELECT COALESCE(SUM(amount_micros), 0) FROM credits WHERE user_id = ?1)
              - (SELECT COALESCE(SUM(credit_micros), 0) FROM usage_period
                 WHERE user_id = ?1 AND credit_micros <> 0)",
    )?;
    Ok(st.query_row([user_id], |r| r.get(0))?)
}

/// Whether the change `amount` to `balance` is refused.
pub fn refusal(balance: i64, amount: i64) -> Option<CreditRefused> {
    let after = balance.saturating_add(amount);
    if amount < 0 && after < 0 {
        return Some(CreditRefused::Overdrawn { balance });
    }
    if amount > 0 && after > MAX_MICROS {
        return Some(CreditRefused::TooLarge { balance });
    }
    None
}

/// Adds an entry and returns it with the new balance. The balance is read
/// and the entry written under SQLite's write lock, so two deductions at
/// once cannot both pass the check.
pub fn add(
    conn: &mut Connection,
    c: &NewCredit,
    now: &str,
) -> DbResult<Result<(CreditEntry, i64), CreditRefused>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let exists = tx
        .query_row("SELECT 1 FROM users WHERE id = ?1", [c.user_id], |_| Ok(()))
        .optional()?
        .is_some();
    if !exists {
        return Ok(Err(CreditRefused::UnknownUser));
    }
    let before = balance(&tx, c.user_id)?;
    if let Some(r) = refusal(before, c.amount_micros) {
        return Ok(Err(r));
    }
    let entry = tx.query_row(
        &format!(
            "INSERT INTO credits (user_id, amount_micros, note, created_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING {COLUMNS}"
        ),
        params![c.user_id, c.amount_micros, c.note, c.created_by, now],
        from_row,
    )?;
    tx.commit()?;
    Ok(Ok((entry, before + c.amount_micros)))
}

/// A page of the user's entries, newest first: those with an id below `before`.
pub fn page(
    conn: &Connection,
    user_id: i64,
    before: Option<i64>,
    limit: i64,
) -> DbResult<Vec<CreditEntry>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM credits WHERE user_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3"
    ))?;
    let rows = st
        .query_map(
            params![user_id, before.unwrap_or(i64::MAX), limit],
            from_row,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
