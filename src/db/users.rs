//! Users and their OAuth identities.

use super::{on_constraint, DbResult};
use rusqlite::{params, Connection, OptionalExtension, Row};

#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub email: Option<String>,
    pub password_hash: Option<String>,
    pub role: String,
    pub plan: String,
    pub disabled: bool,
    pub token_version: i64,
    pub created_at: String,
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub email: Option<String>,
    pub password_hash: Option<String>,
    pub role: String,
    /// `None`: the default plan.
    pub plan: Option<String>,
}

const COLUMNS: &str =
    "id, username, email, password_hash, role, plan, disabled, token_version, created_at";

pub(crate) fn from_row(r: &Row) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: r.get(0)?,
        username: r.get(1)?,
        email: r.get(2)?,
        password_hash: r.get(3)?,
        role: r.get(4)?,
        plan: r.get(5)?,
        disabled: r.get(6)?,
        token_version: r.get(7)?,
        created_at: r.get(8)?,
    })
}

/// Inserts `u` on `plan` (the caller has resolved [`NewUser::plan`]).
pub fn insert(conn: &Connection, u: &NewUser, plan: &str, now: &str) -> DbResult<UserRow> {
    conn.execute(
        "INSERT INTO users (username, email, password_hash, role, plan, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![u.username, u.email, u.password_hash, u.role, plan, now],
    )
    .map_err(|e| on_constraint(e, &format!("The username {:?} is taken.", u.username)))?;
    let id = conn.last_insert_rowid();
    find_by_id(conn, id)?.ok_or_else(|| super::DbError::Task("inserted user vanished".into()))
}

pub fn find_by_id(conn: &Connection, id: i64) -> DbResult<Option<UserRow>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM users WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?)
}

pub fn find_by_username(conn: &Connection, username: &str) -> DbResult<Option<UserRow>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM users WHERE username = ?1"),
            [username],
            from_row,
        )
        .optional()?)
}

/// Users whose username or email contains `q` (all users without `q`).
pub fn search(conn: &Connection, q: Option<&str>) -> DbResult<Vec<UserRow>> {
    let pattern = format!(
        "%{}%",
        q.unwrap_or("")
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    let mut st = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM users
         WHERE username LIKE ?1 ESCAPE '\\' OR COALESCE(email, '') LIKE ?1 ESCAPE '\\'
         ORDER BY id"
    ))?;
    let rows = st
        .query_map([pattern], from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// A page of users whose username or email contains `q`, newest first.
pub fn page(
    conn: &Connection,
    q: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> DbResult<Vec<UserRow>> {
    let pattern = super::api_keys::like_pattern(q.unwrap_or(""));
    let mut st = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM users
         WHERE id < ?2 AND (?1 = '%%' OR username LIKE ?1 ESCAPE '\\' OR COALESCE(email, '') LIKE ?1 ESCAPE '\\')
         ORDER BY id DESC LIMIT ?3"
    ))?;
    let rows = st
        .query_map(
            params![pattern, before.unwrap_or(i64::MAX), limit],
            from_row,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn list_all(conn: &Connection) -> DbResult<Vec<UserRow>> {
    search(conn, None)
}

pub fn count(conn: &Connection) -> DbResult<i64> {
    Ok(conn.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?)
}

pub fn set_plan(conn: &Connection, id: i64, plan: &str) -> DbResult<bool> {
    Ok(conn.execute(
        "UPDATE users SET plan = ?2 WHERE id = ?1",
        params![id, plan],
    )? > 0)
}

pub fn set_role(conn: &Connection, id: i64, role: &str) -> DbResult<bool> {
    Ok(conn.execute(
        "UPDATE users SET role = ?2 WHERE id = ?1",
        params![id, role],
    )? > 0)
}

pub fn set_email(conn: &Connection, id: i64, email: Option<&str>) -> DbResult<bool> {
    Ok(conn.execute(
        "UPDATE users SET email = ?2 WHERE id = ?1",
        params![id, email],
    )? > 0)
}

/// Disabling bumps the token version, so tokens issued before stay invalid after re-enabling.
pub fn set_disabled(conn: &Connection, id: i64, disabled: bool) -> DbResult<bool> {
    let sql = if disabled {
        "UPDATE users SET disabled = 1, token_version = token_version + 1 WHERE id = ?1 AND disabled = 0"
    } else {
        "UPDATE users SET disabled = 0 WHERE id = ?1"
    };
    conn.execute(sql, [id])?;
    Ok(find_by_id(conn, id)?.is_some())
}

/// Sets a new password hash and bumps the token version (earlier JWTs stop working).
pub fn set_password(conn: &Connection, id: i64, hash: &str) -> DbResult<bool> {
    Ok(conn.execute(
        "UPDATE users SET password_hash = ?2, token_version = token_version + 1 WHERE id = ?1",
        params![id, hash],
    )? > 0)
}

pub fn delete(conn: &Connection, id: i64) -> DbResult<bool> {
    Ok(conn.execute("DELETE FROM users WHERE id = ?1", [id])? > 0)
}

/// The user linked to an OAuth identity.
pub fn find_by_identity(
    conn: &Connection,
    provider: &str,
    subject: &str,
) -> DbResult<Option<UserRow>> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {} FROM users u JOIN oauth_identities i ON i.user_id = u.id
                 WHERE i.provider = ?1 AND i.subject = ?2",
                COLUMNS
                    .split(", ")
                    .map(|c| format!("u.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            params![provider, subject],
            from_row,
        )
        .optional()?)
}

pub fn link_identity(
    conn: &Connection,
    user_id: i64,
    provider: &str,
    subject: &str,
    email: Option<&str>,
    now: &str,
) -> DbResult<()> {
    conn.execute(
        "INSERT INTO oauth_identities (user_id, provider, subject, email, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![user_id, provider, subject, email, now],
    )
    .map_err(|e| on_constraint(e, "This sign-in is already linked to an account."))?;
    Ok(())
}
