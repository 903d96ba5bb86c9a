//! OAuth sign-in bookkeeping: issuing and redeeming `state`, and finding,
//! creating or linking the user behind a provider identity.
//!
//! An identity (provider, subject) belongs to one user. A matching email never
//! links an identity to an existing account: that would hand the account to
//! whoever controls that address at any provider.

use crate::auth::oauth::{sanitize_username, Identity};
use crate::db::{oauth_states, plans, users, DbResult};
use crate::error::{ApiError, ApiResult};
use rusqlite::Connection;

/// How long a `state` may be redeemed after it was issued (SPEC §4).
pub const STATE_TTL_SECS: i64 = 600;

/// Stores a new state and drops the expired ones.
pub fn issue_state(
    conn: &Connection,
    row: &oauth_states::StateRow,
    now: chrono::DateTime<chrono::Utc>,
) -> DbResult<()> {
    let cutoff = crate::db::ts(now - chrono::Duration::seconds(STATE_TTL_SECS));
    oauth_states::purge_created_before(conn, &cutoff)?;
    oauth_states::insert(conn, row)
}

/// Redeems `state` once: it must have been issued for `provider`, to the
/// browser whose binding hashes to `browser_hash`, less than 10 minutes ago.
/// The row is deleted whatever the outcome, so a state is never tried twice.
pub fn redeem_state(
    conn: &Connection,
    state: &str,
    provider: &str,
    browser_hash: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> ApiResult<oauth_states::StateRow> {
    let invalid = |why: &str| {
        ApiError::invalid_field(
            "state",
            format!("This sign-in link {why}; start the sign-in again."),
        )
    };
    let row = oauth_states::take(conn, state)?
        .ok_or_else(|| invalid("is unknown or was already used"))?;
    if row.provider != provider {
        return Err(invalid("belongs to another provider"));
    }
    if browser_hash != Some(row.browser_hash.as_str()) {
        return Err(invalid("was started in another browser"));
    }
    let created = crate::db::parse_ts(&row.created_at).ok_or_else(|| invalid("is damaged"))?;
    if (now - created).num_seconds() >= STATE_TTL_SECS {
        return Err(invalid("has expired"));
    }
    Ok(row)
}

/// The user `identity` signs in as: the linked one, else a new account on the
/// default plan without a password. With `link_to`, the identity is linked to
/// that user instead (409 when it already belongs to someone else).
pub fn sign_in(
    conn: &mut Connection,
    provider: &str,
    identity: &Identity,
    link_to: Option<i64>,
    now: &str,
) -> ApiResult<users::UserRow> {
    let tx = conn.transaction().map_err(crate::db::DbError::from)?;
    let existing = users::find_by_identity(&tx, provider, &identity.subject)?;
    let existing_owner = existing.as_ref().map(|u| u.id);
    // A new link is made whenever the identity had no owner yet.
    let user = match (link_to, existing) {
        (Some(target), Some(owner)) if owner.id == target => owner,
        (Some(_), Some(_)) => {
            return Err(ApiError::conflict(
                "This sign-in is already linked to another account.",
            ))
        }
        (Some(target), None) => users::find_by_id(&tx, target)?
            .ok_or_else(|| ApiError::invalid_api_key("The account to link no longer exists."))?,
        (None, Some(owner)) => owner,
        (None, None) => {
            let username = free_username(&tx, provider, identity.username.as_deref())?;
            let plan =
                plans::default_plan(&tx)?.ok_or_else(|| ApiError::internal("no plan exists"))?;
            users::insert(
                &tx,
                &users::NewUser {
                    username: &username,
                    email: identity.email.as_deref(),
                    password_hash: None,
                    role: "user",
                    plan: &plan,
                },
                now,
            )?
        }
    };
    if existing_owner.is_none() {
        users::link_identity(
            &tx,
            user.id,
            provider,
            &identity.subject,
            identity.email.as_deref(),
            now,
        )?;
    }
    tx.commit().map_err(crate::db::DbError::from)?;
    Ok(user)
}

/// The provider's username made valid, with `-2`, `-3` … appended until no
/// account has it (usernames compare case-insensitively).
fn free_username(conn: &Connection, provider: &str, wanted: Option<&str>) -> ApiResult<String> {
    let mut base = wanted.map(sanitize_username).unwrap_or_default();
    if base.is_empty() {
        base = format!("{provider}-user");
        base = sanitize_username(&base);
    }
    if users::find_by_username(conn, &base)?.is_none() {
        return Ok(base);
    }
    for n in 2..10_000 {
        let candidate = format!("{base}-{n}");
        if users::find_by_username(conn, &candidate)?.is_none() {
            return Ok(candidate);
        }
    }
    Err(ApiError::conflict(format!(
        "No free username is left for {base:?}."
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, crate::db::Pool) {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::db::open(&dir.path().join("t.db")).unwrap();
        crate::db::migrate(&pool).unwrap();
        let conn = pool.get().unwrap();
        plans::insert(
            &conn,
            &plans::Plan {
                name: "free".into(),
                monthly_tokens: 1,
                requests_per_minute: 1,
                price_usd_month: 0.0,
                allowed_models: vec![],
            },
            "2026-01-01T00:00:00Z",
        )
        .unwrap();
        (dir, pool)
    }

    fn ident(sub: &str, name: &str) -> Identity {
        Identity {
            subject: sub.into(),
            username: Some(name.into()),
            email: Some("same@example.com".into()),
        }
    }

    #[test]
    fn creates_then_reuses_then_suffixes() {
        let (_d, pool) = db();
        let mut c = pool.get().unwrap();
        let now = "2026-01-01T00:00:00Z";
        let a = sign_in(&mut c, "gh", &ident("1", "Octo Cat"), None, now).unwrap();
        assert_eq!(a.username, "Octo-Cat");
        assert!(a.password_hash.is_none());
        assert_eq!(a.plan, "free");
        let again = sign_in(&mut c, "gh", &ident("1", "renamed"), None, now).unwrap();
        assert_eq!(again.id, a.id);
        let b = sign_in(&mut c, "gh", &ident("2", "octo-cat"), None, now).unwrap();
        assert_eq!(b.username, "octo-cat-2");
        let d = sign_in(&mut c, "gh", &ident("3", "OCTO CAT"), None, now).unwrap();
        assert_eq!(d.username, "OCTO-CAT-3");
        // Same email, other provider: a separate account.
        let g = sign_in(&mut c, "google", &ident("1", "x"), None, now).unwrap();
        assert_ne!(g.id, a.id);
        // Linking an identity someone else owns: 409.
        let e = sign_in(&mut c, "google", &ident("1", "x"), Some(a.id), now).unwrap_err();
        assert_eq!(e.status.as_u16(), 409);
        let linked = sign_in(&mut c, "other", &ident("9", "x"), Some(a.id), now).unwrap();
        assert_eq!(linked.id, a.id);
    }
}
