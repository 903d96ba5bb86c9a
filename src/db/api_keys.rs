//! API keys: stored as a SHA-256 hash with a display prefix; the key itself never.

use super::{json_list, parse_json_list, DbResult};
use crate::money::Usd;
use rusqlite::{params, Connection, OptionalExtension, Row};

/// A key as stored (its hash, never the key).
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub description: Option<String>,
    pub key_hash: String,
    pub prefix: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub expires_at: Option<String>,
    pub revoked: bool,
    pub allowed_models: Option<Vec<String>>,
    pub monthly_token_limit: Option<i64>,
    /// Dollars the key may spend per calendar month, below the plan's
    /// (SPEC §12); `None`: only the plan's limits apply.
    pub monthly_usd_limit: Option<Usd>,
}

/// A key to store (its hash and prefix, never the key).
#[derive(Debug, Clone)]
pub struct NewKey {
    pub user_id: i64,
    pub name: String,
    pub description: Option<String>,
    pub key_hash: String,
    pub prefix: String,
    pub expires_at: Option<String>,
    pub allowed_models: Option<Vec<String>>,
    pub monthly_token_limit: Option<i64>,
    pub monthly_usd_limit: Option<Usd>,
}

/// The columns [`from_row`] reads, in its order.
const COLUMNS: &str =
    "id, user_id, name, description, key_hash, prefix, created_at, last_used_at, expires_at, \
                       revoked, allowed_models, monthly_token_limit, monthly_usd_limit_micros";

pub(crate) fn from_row(r: &Row) -> rusqlite::Result<KeyRow> {
    Ok(KeyRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        name: r.get(2)?,
        description: r.get(3)?,
        key_hash: r.get(4)?,
        prefix: r.get(5)?,
        created_at: r.get(6)?,
        last_used_at: r.get(7)?,
        expires_at: r.get(8)?,
        revoked: r.get(9)?,
        allowed_models: r.get::<_, Option<String>>(10)?.map(|s| parse_json_list(&s)),
        monthly_token_limit: r.get(11)?,
        monthly_usd_limit: r.get::<_, Option<i64>>(12)?.map(Usd),
    })
}

pub fn insert(conn: &Connection, k: &NewKey, now: &str) -> DbResult<KeyRow> {
    conn.execute(
        "INSERT INTO api_keys (user_id, name, description, key_hash, prefix, created_at, expires_at,
                               allowed_models, monthly_token_limit, monthly_usd_limit_micros)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            k.user_id,
            k.name,
            k.description,
            k.key_hash,
            k.prefix,
            now,
            k.expires_at,
            k.allowed_models.as_deref().map(json_list),
            k.monthly_token_limit,
            k.monthly_usd_limit.map(|u| u.0)
        ],
    )?;
    let id = conn.last_insert_rowid();
    find_by_id(conn, id)?.ok_or_else(|| super::DbError::Task("inserted key vanished".into()))
}

pub fn find_by_id(conn: &Connection, id: i64) -> DbResult<Option<KeyRow>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?)
}

pub fn list_for_user(conn: &Connection, user_id: i64) -> DbResult<Vec<KeyRow>> {
    let mut st = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM api_keys WHERE user_id = ?1 ORDER BY id"
    ))?;
    let rows = st
        .query_map([user_id], from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn list_all(conn: &Connection) -> DbResult<Vec<KeyRow>> {
    let mut st = conn.prepare(&format!("SELECT {COLUMNS} FROM api_keys ORDER BY id"))?;
    let rows = st.query_map([], from_row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Escapes `q` for a `LIKE '%…%' ESCAPE '\'` substring pattern.
pub fn like_pattern(q: &str) -> String {
    format!(
        "%{}%",
        q.replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    )
}

/// Which keys a page lists, newest first (SPEC §13).
#[derive(Debug, Clone, Default)]
pub struct KeyPage {
    /// Only this user's keys.
    pub user_id: Option<i64>,
    /// A substring of the key's name or of its owner's username or email.
    pub q: Option<String>,
    /// Only keys with a smaller id.
    pub before: Option<i64>,
    pub limit: i64,
}

/// A page of keys, newest first.
pub fn page(conn: &Connection, f: &KeyPage) -> DbResult<Vec<KeyRow>> {
    use rusqlite::types::Value;
    let mut w = vec!["1 = 1".to_owned()];
    let mut p: Vec<Value> = Vec::new();
    let mut join = "";
    if let Some(u) = f.user_id {
        p.push(Value::Integer(u));
        w.push(format!("k.user_id = ?{}", p.len()));
    }
    if let Some(b) = f.before {
        p.push(Value::Integer(b));
        w.push(format!("k.id < ?{}", p.len()));
    }
    if let Some(q) = f.q.as_deref().filter(|q| !q.is_empty()) {
        join = "JOIN users u ON u.id = k.user_id";
        p.push(Value::Text(like_pattern(q)));
        let n = p.len();
        w.push(format!(
            "(k.name LIKE ?{n} ESCAPE '\\' OR u.username LIKE ?{n} ESCAPE '\\' \
             OR COALESCE(u.email, '') LIKE ?{n} ESCAPE '\\')"
        ));
    }
    p.push(Value::Integer(f.limit));
    let cols: Vec<String> = COLUMNS
        .split(", ")
        .map(|c| format!("k.{}", c.trim()))
        .collect();
    let sql = format!(
        "SELECT {} FROM api_keys k {join} WHERE {} ORDER BY k.id DESC LIMIT ?{}",
        cols.join(", "),
        w.join(" AND "),
        p.len()
    );
    let mut st = conn.prepare(&sql)?;
    let rows = st
        .query_map(rusqlite::params_from_iter(p), from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Keys that can still authenticate (not revoked); expiry is checked per request.
pub fn list_usable(conn: &Connection) -> DbResult<Vec<KeyRow>> {
    let mut st = conn.prepare(&format!("SELECT {COLUMNS} FROM api_keys WHERE revoked = 0"))?;
    let rows = st.query_map([], from_row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Whether a key with this hash exists and is not revoked.
pub fn usable_hash_exists(conn: &Connection, key_hash: &str) -> DbResult<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM api_keys WHERE key_hash = ?1 AND revoked = 0",
            [key_hash],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Writes every editable field of `k` back.
pub fn update(conn: &Connection, k: &KeyRow) -> DbResult<bool> {
    Ok(conn.execute(
        "UPDATE api_keys SET name = ?2, description = ?3, expires_at = ?4, allowed_models = ?5,
                             monthly_token_limit = ?6, monthly_usd_limit_micros = ?7
         WHERE id = ?1",
        params![
            k.id,
            k.name,
            k.description,
            k.expires_at,
            k.allowed_models.as_deref().map(json_list),
            k.monthly_token_limit,
            k.monthly_usd_limit.map(|u| u.0)
        ],
    )? > 0)
}

pub fn revoke(conn: &Connection, id: i64) -> DbResult<bool> {
    Ok(conn.execute("UPDATE api_keys SET revoked = 1 WHERE id = ?1", [id])? > 0)
}

/// Records last-use times gathered in memory, in one transaction.
pub fn record_last_used(conn: &mut Connection, uses: &[(i64, String)]) -> DbResult<()> {
    let tx = conn.transaction()?;
    {
        let mut st = tx.prepare(
            "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
        )?;
        for (id, at) in uses {
            st.execute(params![id, at])?;
        }
    }
    tx.commit()?;
    Ok(())
}
