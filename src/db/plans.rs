//! Plans: token and USD allowances, request rate, price and allowed models.

use super::{json_list, on_constraint, parse_json_list, DbError, DbResult};
use crate::money::Usd;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

/// A plan as stored and as the API shows it (`/admin/plans`,
/// `/subscriptions/plans`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Plan {
    pub name: String,
    pub monthly_tokens: i64,
    /// Dollars a user may spend per calendar month (UTC); `None`: no USD
    /// limit (SPEC §12). JSON: a number of dollars, or null.
    pub monthly_usd: Option<Usd>,
    pub requests_per_minute: i64,
    pub price_usd_month: f64,
    pub allowed_models: Vec<String>,
    /// Calls are paid from the user's prepaid credit (`credit_usd`) instead
    /// of a monthly allowance.
    pub pay_as_you_go: bool,
}

#[cfg(test)]
impl Plan {
    /// A plan of one token and one call a minute, for unit tests that need
    /// one to exist.
    pub fn tiny(name: &str) -> Plan {
        Plan {
            name: name.into(),
            monthly_tokens: 1,
            requests_per_minute: 1,
            price_usd_month: 0.0,
            allowed_models: vec![],
            monthly_usd: None,
            pay_as_you_go: false,
        }
    }
}

/// The columns [`from_row`] reads, in its order.
const COLUMNS: &str =
    "name, monthly_tokens, requests_per_minute, price_usd_month, allowed_models, \
                       monthly_usd_micros, pay_as_you_go";

fn from_row(r: &Row) -> rusqlite::Result<Plan> {
    Ok(Plan {
        name: r.get(0)?,
        monthly_tokens: r.get(1)?,
        requests_per_minute: r.get(2)?,
        price_usd_month: r.get(3)?,
        allowed_models: parse_json_list(&r.get::<_, String>(4)?),
        monthly_usd: r.get::<_, Option<i64>>(5)?.map(Usd),
        pay_as_you_go: r.get(6)?,
    })
}

/// Creates a plan; a taken name is [`DbError::Conflict`].
pub fn insert(conn: &Connection, p: &Plan, now: &str) -> DbResult<Plan> {
    conn.execute(
        "INSERT INTO plans (name, monthly_tokens, requests_per_minute, price_usd_month, allowed_models, created_at,
                            monthly_usd_micros, pay_as_you_go)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            p.name,
            p.monthly_tokens,
            p.requests_per_minute,
            p.price_usd_month,
            json_list(&p.allowed_models),
            now,
            p.monthly_usd.map(|u| u.0),
            p.pay_as_you_go
        ],
    )
    .map_err(|e| on_constraint(e, &format!("A plan named {:?} already exists.", p.name)))?;
    Ok(p.clone())
}

/// Every plan, oldest first.
pub fn list(conn: &Connection) -> DbResult<Vec<Plan>> {
    let mut st = conn.prepare(&format!("SELECT {COLUMNS} FROM plans ORDER BY id"))?;
    let rows = st.query_map([], from_row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The plan named `name`.
pub fn find(conn: &Connection, name: &str) -> DbResult<Option<Plan>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM plans WHERE name = ?1"),
            [name],
            from_row,
        )
        .optional()?)
}

/// The plan new users get: `free` when it exists, else the oldest plan.
pub fn default_plan(conn: &Connection) -> DbResult<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT name FROM plans ORDER BY (name = 'free') DESC, id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?)
}

/// Writes every field of `p` but its name back; false when there is no such plan.
pub fn update(conn: &Connection, p: &Plan) -> DbResult<bool> {
    let n = conn.execute(
        "UPDATE plans SET monthly_tokens = ?2, requests_per_minute = ?3, price_usd_month = ?4, allowed_models = ?5,
                          monthly_usd_micros = ?6, pay_as_you_go = ?7
         WHERE name = ?1",
        params![
            p.name,
            p.monthly_tokens,
            p.requests_per_minute,
            p.price_usd_month,
            json_list(&p.allowed_models),
            p.monthly_usd.map(|u| u.0),
            p.pay_as_you_go
        ],
    )?;
    Ok(n > 0)
}

/// Deletes a plan; [`DbError::Conflict`] while a user is on it.
pub fn delete(conn: &Connection, name: &str) -> DbResult<bool> {
    let users: i64 = conn.query_row("SELECT COUNT(*) FROM users WHERE plan = ?1", [name], |r| {
        r.get(0)
    })?;
    if users > 0 {
        return Err(DbError::Conflict(format!(
            "Plan {name:?} is in use by {users} user(s); move them to another plan first."
        )));
    }
    let n = conn
        .execute("DELETE FROM plans WHERE name = ?1", [name])
        .map_err(|e| on_constraint(e, &format!("Plan {name:?} is in use.")))?;
    Ok(n > 0)
}
