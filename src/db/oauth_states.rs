//! OAuth sign-ins in progress: the `state` issued at `/auth/{provider}/login`
//! with its PKCE verifier, where to hand the token back, and the browser it is
//! bound to. Rows are taken (read and deleted) exactly once.

use super::DbResult;
use rusqlite::{params, Connection, OptionalExtension};

#[derive(Debug, Clone)]
pub struct StateRow {
    pub state: String,
    pub provider: String,
    pub pkce_verifier: String,
    pub redirect_uri: Option<String>,
    pub link_user_id: Option<i64>,
    pub browser_hash: String,
    pub created_at: String,
}

pub fn insert(conn: &Connection, s: &StateRow) -> DbResult<()> {
    conn.execute(
        "INSERT INTO oauth_states (state, provider, pkce_verifier, redirect_uri, link_user_id, browser_hash, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            s.state,
            s.provider,
            s.pkce_verifier,
            s.redirect_uri,
            s.link_user_id,
            s.browser_hash,
            s.created_at
        ],
    )?;
    Ok(())
}

/// Reads and deletes the row of `state`, so it can be used once only.
pub fn take(conn: &Connection, state: &str) -> DbResult<Option<StateRow>> {
    Ok(conn
        .query_row(
            "DELETE FROM oauth_states WHERE state = ?1
             RETURNING state, provider, pkce_verifier, redirect_uri, link_user_id, browser_hash, created_at",
            [state],
            |r| {
                Ok(StateRow {
                    state: r.get(0)?,
                    provider: r.get(1)?,
                    pkce_verifier: r.get(2)?,
                    redirect_uri: r.get(3)?,
                    link_user_id: r.get(4)?,
                    browser_hash: r.get(5)?,
                    created_at: r.get(6)?,
                })
            },
        )
        .optional()?)
}

/// Deletes the states created before `cutoff` (a stored timestamp); returns how many.
pub fn purge_created_before(conn: &Connection, cutoff: &str) -> DbResult<usize> {
    Ok(conn.execute("DELETE FROM oauth_states WHERE created_at < ?1", [cutoff])?)
}
