//! Key/value settings (the generated JWT secret, the first-start mark) and the
//! change counter that other processes bump through triggers.

use super::DbResult;
use rusqlite::{params, Connection, OptionalExtension};

pub fn get(conn: &Connection, key: &str) -> DbResult<Option<String>> {
    Ok(conn
        .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()?)
}

pub fn set(conn: &Connection, key: &str, value: &str) -> DbResult<()> {
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// The counter bumped on every change to users, keys or plans.
pub fn change_counter(conn: &Connection) -> DbResult<i64> {
    Ok(
        conn.query_row("SELECT n FROM change_counter WHERE id = 1", [], |r| {
            r.get(0)
        })?,
    )
}
