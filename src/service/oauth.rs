//! OAuth sign-in bookkeeping: issuing and redeeming `state`, and finding,
//! creating or linking the user behind a provider identity.
//!
//! An identity (provider, subject) belongs to one user. A matching email never
//! links an identity to an existing account: that would hand the account to
//! whoever controls that address at any provider.

use crate::auth::oauth::{sanitize_username, Identity};
use crate::db::{oauth_states, users, DbResult, IdentitySignIn, Refused, Store};
use crate::error::{ApiError, ApiResult};

/// How long a `state` may be redeemed after it was issued (SPEC §4).
pub const STATE_TTL_SECS: i64 = 600;

/// Stores a new state and drops the expired ones.
pub async fn issue_state(
    store: &Store,
    row: oauth_states::StateRow,
    now: chrono::DateTime<chrono::Utc>,
) -> DbResult<()> {
    let cutoff = crate::db::ts(now - chrono::Duration::seconds(STATE_TTL_SECS));
    store.save_oauth_state(row, cutoff).await
}

/// Redeems `state` once: it must have been issued for `provider`, to the
/// browser whose binding hashes to `browser_hash`, less than 10 minutes ago.
/// The row is deleted whatever the outcome, so a state is never tried twice.
pub async fn redeem_state(
    store: &Store,
    state: String,
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
    let row = store
        .take_oauth_state(state)
        .await?
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
/// default plan without a password, named after the provider's username (with
/// `-2`, `-3` … appended until no account has it). With `link_to`, the
/// identity is linked to that user instead (409 when it already belongs to
/// someone else).
pub async fn sign_in(
    store: &Store,
    provider: &str,
    identity: &Identity,
    link_to: Option<i64>,
    now: &str,
) -> ApiResult<users::UserRow> {
    let mut base = identity
        .username
        .as_deref()
        .map(sanitize_username)
        .unwrap_or_default();
    if base.is_empty() {
        base = sanitize_username(&format!("{provider}-user"));
    }
    let s = IdentitySignIn {
        provider: provider.to_owned(),
        subject: identity.subject.clone(),
        email: identity.email.clone(),
        username: base.clone(),
        link_to,
    };
    match store.sign_in_with_identity(s, now.to_owned()).await? {
        Ok(user) => Ok(user),
        Err(Refused::IdentityTaken) => Err(ApiError::conflict(
            "This sign-in is already linked to another account.",
        )),
        Err(Refused::UnknownUser) => Err(ApiError::invalid_api_key(
            "The account to link no longer exists.",
        )),
        Err(Refused::NoFreeUsername) => Err(ApiError::conflict(format!(
            "No free username is left for {base:?}."
        ))),
        Err(Refused::NoPlan | Refused::UnknownPlan) => Err(ApiError::internal("no plan exists")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::plans;

    async fn db() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        store.migrate().await.unwrap();
        store
            .create_plan(plans::Plan::tiny("free"), "2026-01-01T00:00:00Z".into())
            .await
            .unwrap();
        (dir, store)
    }

    fn ident(sub: &str, name: &str) -> Identity {
        Identity {
            subject: sub.into(),
            username: Some(name.into()),
            email: Some("same@example.com".into()),
        }
    }

    #[tokio::test]
    async fn creates_then_reuses_then_suffixes() {
        let (_d, c) = db().await;
        let c = &c;
        let now = "2026-01-01T00:00:00Z";
        let a = sign_in(c, "gh", &ident("1", "Octo Cat"), None, now)
            .await
            .unwrap();
        assert_eq!(a.username, "Octo-Cat");
        assert!(a.password_hash.is_none());
        assert_eq!(a.plan, "free");
        let again = sign_in(c, "gh", &ident("1", "renamed"), None, now)
            .await
            .unwrap();
        assert_eq!(again.id, a.id);
        let b = sign_in(c, "gh", &ident("2", "octo-cat"), None, now)
            .await
            .unwrap();
        assert_eq!(b.username, "octo-cat-2");
        let d = sign_in(c, "gh", &ident("3", "OCTO CAT"), None, now)
            .await
            .unwrap();
        assert_eq!(d.username, "OCTO-CAT-3");
        // Same email, other provider: a separate account.
        let g = sign_in(c, "google", &ident("1", "x"), None, now)
            .await
            .unwrap();
        assert_ne!(g.id, a.id);
        // Linking an identity someone else owns: 409.
        let e = sign_in(c, "google", &ident("1", "x"), Some(a.id), now)
            .await
            .unwrap_err();
        assert_eq!(e.status.as_u16(), 409);
        let linked = sign_in(c, "other", &ident("9", "x"), Some(a.id), now)
            .await
            .unwrap();
        assert_eq!(linked.id, a.id);
    }
}
