//! Plans: token allowance, request rate, price and allowed models.

use super::{json_list, on_constraint, parse_json_list, DbError, DbResult};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Plan {
    pub name: String,
    pub monthly_tokens: i64,
    pub requests_per_minute: i64,
    pub price_usd_month: f64,
    pub allowed_models: Vec<String>,
}

const COLUMNS: &str = "name, monthly_tokens, requests_per_minute, price_usd_month, allowed_models";

fn from_row(r: &Row) -> rusqlite::Result<Plan> {
    Ok(Plan {
        name: r.get(0)?,
        monthly_tokens: r.get(1)?,
        requests_per_minute: r.get(2)?,
        price_usd_month: r.get(3)?,
        allowed_models: parse_json_list(&r.get::<_, String>(4)?),
    })
}

pub fn insert(conn: &Connection, p: &Plan, now: &str) -> DbResult<Plan> {
    conn.execute(
        "INSERT INTO plans (name, monthly_tokens, requests_per_minute, price_usd_month, allowed_models, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![p.name, p.monthly_tokens, p.requests_per_minute, p.price_usd_month, json_list(&p.allowed_models), now],
    )
    .map_err(|e| on_constraint(e, &format!("A plan named {:?} already exists.", p.name)))?;
    Ok(p.clone())
}

pub fn list(conn: &Connection) -> DbResult<Vec<Plan>> {
    let mut st = conn.prepare(&format!("SELECT {COLUMNS} FROM plans ORDER BY id"))?;
    let rows = st.query_map([], from_row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

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

pub fn update(conn: &Connection, p: &Plan) -> DbResult<bool> {
    let n = conn.execute(
        "UPDATE plans SET monthly_tokens = ?2, requests_per_minute = ?3, price_usd_month = ?4, allowed_models = ?5
         WHERE name = ?1",
        params![p.name, p.monthly_tokens, p.requests_per_minute, p.price_usd_month, json_list(&p.allowed_models)],
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
