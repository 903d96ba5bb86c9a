//! Account work of more than one statement on SQLite: first-start seeding, the
//! JWT secret, creating and editing users, OAuth sign-in and the credential
//! snapshot. Each runs on one connection, in a transaction where the work must
//! be all or nothing; the store runs them on the blocking pool.

use super::store::{
    ChangedIds, ChangedRows, CredentialDelta, CredentialPart, CredentialRow, IdentitySignIn,
    KeyChange, Refused, Seed, Seeded, UserChanges,
};
use super::{api_keys, plans, settings, users, DbResult};
use rusqlite::Connection;

/// Seeds an empty database once: plans, the `admin` user, the JWT secret, and
/// the `initialized` mark. Later calls change nothing.
pub fn bootstrap(conn: &mut Connection, seed: &Seed) -> DbResult<Seeded> {
    let tx = conn.transaction()?;
    let mut out = Seeded::default();
    if settings::get(&tx, "initialized")?.is_some() {
        return Ok(out);
    }
    if plans::list(&tx)?.is_empty() {
        for p in &seed.plans {
            plans::insert(&tx, p, &seed.now)?;
            out.created_plans += 1;
        }
    }
    if users::find_by_username(&tx, "admin")?.is_none() {
        let plan = plans::default_plan(&tx)?.unwrap_or_else(|| "free".into());
        let admin = users::NewUser {
            username: "admin".into(),
            email: None,
            password_hash: Some(seed.admin_hash.clone()),
            role: "admin".into(),
            plan: None,
        };
        users::insert(&tx, &admin, &plan, &seed.now)?;
        out.created_admin = true;
    }
    if settings::get(&tx, "jwt_secret")?.is_none() {
        settings::set(&tx, "jwt_secret", &seed.jwt_secret)?;
    }
    settings::set(&tx, "initialized", &seed.now)?;
    tx.commit()?;
    Ok(out)
}

/// The stored JWT secret; `candidate` is stored and returned when there is none.
pub fn jwt_secret(conn: &Connection, candidate: &str) -> DbResult<String> {
    match settings::get(conn, "jwt_secret")? {
        Some(s) => Ok(s),
        None => {
            settings::set(conn, "jwt_secret", candidate)?;
            Ok(candidate.to_owned())
        }
    }
}

/// Creates `u` on its plan (which must exist) or on the default plan.
pub fn create_user(
    conn: &Connection,
    u: &users::NewUser,
    now: &str,
) -> DbResult<Result<users::UserRow, Refused>> {
    let plan = match &u.plan {
        Some(p) => {
            if plans::find(conn, p)?.is_none() {
                return Ok(Err(Refused::UnknownPlan));
            }
            p.clone()
        }
        None => match plans::default_plan(conn)? {
            Some(p) => p,
            None => return Ok(Err(Refused::NoPlan)),
        },
    };
    Ok(Ok(users::insert(conn, u, &plan, now)?))
}

/// Applies `ch` to user `id` in one transaction: all of it or, when the user
/// or the new plan does not exist, none of it.
pub fn update_user(
    conn: &mut Connection,
    id: i64,
    ch: &UserChanges,
) -> DbResult<Result<users::UserRow, Refused>> {
    let tx = conn.transaction()?;
    if users::find_by_id(&tx, id)?.is_none() {
        return Ok(Err(Refused::UnknownUser));
    }
    if let Some(plan) = &ch.plan {
        if plans::find(&tx, plan)?.is_none() {
            return Ok(Err(Refused::UnknownPlan));
        }
        users::set_plan(&tx, id, plan)?;
    }
    if let Some(role) = &ch.role {
        users::set_role(&tx, id, role)?;
    }
    if let Some(email) = &ch.email {
        users::set_email(&tx, id, email.as_deref())?;
    }
    if let Some(hash) = &ch.password_hash {
        users::set_password(&tx, id, hash)?;
    }
    if let Some(d) = ch.disabled {
        users::set_disabled(&tx, id, d)?;
    }
    let user = users::find_by_id(&tx, id)?;
    tx.commit()?;
    Ok(user.ok_or(Refused::UnknownUser))
}

/// The user an OAuth identity signs in as, in one transaction: the linked one,
/// else a new account on the default plan without a password. With `link_to`,
/// the identity is linked to that user instead.
pub fn sign_in(
    conn: &mut Connection,
    s: &IdentitySignIn,
    now: &str,
) -> DbResult<Result<users::UserRow, Refused>> {
    let tx = conn.transaction()?;
    let existing = users::find_by_identity(&tx, &s.provider, &s.subject)?;
    let existing_owner = existing.as_ref().map(|u| u.id);
    // A new link is made whenever the identity had no owner yet.
    let user = match (s.link_to, existing) {
        (Some(target), Some(owner)) if owner.id == target => owner,
        (Some(_), Some(_)) => return Ok(Err(Refused::IdentityTaken)),
        (Some(target), None) => match users::find_by_id(&tx, target)? {
            Some(u) => u,
            None => return Ok(Err(Refused::UnknownUser)),
        },
        (None, Some(owner)) => owner,
        (None, None) => {
            let Some(username) = free_username(&tx, &s.username)? else {
                return Ok(Err(Refused::NoFreeUsername));
            };
            let Some(plan) = plans::default_plan(&tx)? else {
                return Ok(Err(Refused::NoPlan));
            };
            let new = users::NewUser {
                username,
                email: s.email.clone(),
                password_hash: None,
                role: "user".into(),
                plan: None,
            };
            users::insert(&tx, &new, &plan, now)?
        }
    };
    if existing_owner.is_none() {
        users::link_identity(
            &tx,
            user.id,
            &s.provider,
            &s.subject,
            s.email.as_deref(),
            now,
        )?;
    }
    tx.commit()?;
    Ok(Ok(user))
}

/// `base`, or `base` with `-2`, `-3` … appended, whichever no account has yet
/// (usernames compare case-insensitively); `None` when all are taken.
fn free_username(conn: &Connection, base: &str) -> DbResult<Option<String>> {
    if users::find_by_username(conn, base)?.is_none() {
        return Ok(Some(base.to_owned()));
    }
    for n in 2..10_000 {
        let candidate = format!("{base}-{n}");
        if users::find_by_username(conn, &candidate)?.is_none() {
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}

/// Every user, usable key and plan, with the change counter, read in one
/// transaction so that they agree with each other.
/// The columns of users and keys that the credential cache keeps, in the
/// order of `users::COLUMNS` and `api_keys::COLUMNS`, the others left empty.
pub(crate) const CACHE_USERS: &str =
    "SELECT id, username, NULL, NULL, role, plan, disabled, token_version, '' FROM users";
pub(crate) const CACHE_KEYS: &str =
    "SELECT id, user_id, '', NULL, key_hash, '', '', last_used_at, \
     expires_at, revoked, allowed_models, monthly_token_limit, monthly_usd_limit_micros \
     FROM api_keys WHERE revoked = 0";

pub fn load_credentials(
    conn: &mut Connection,
    part: CredentialPart,
    each: &mut dyn FnMut(CredentialRow),
) -> DbResult<i64> {
    // A read-only snapshot: it need not wait for the write lock.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
    let counter = settings::change_counter(&tx)?;
    match part {
        CredentialPart::UsersAndPlans => {
            for p in plans::list(&tx)? {
                each(CredentialRow::Plan(p));
            }
            let mut st = tx.prepare(CACHE_USERS)?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                each(CredentialRow::User(users::from_row(r)?));
            }
        }
        CredentialPart::Keys => {
            let mut st = tx.prepare(CACHE_KEYS)?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                each(CredentialRow::Key(api_keys::from_row(r)?));
            }
        }
    }
    drop(tx); // read only: nothing to commit
    Ok(counter)
}

/// The rows changed after change number `since` (at most `max` changes), read
/// in one transaction with the log that names them.
pub fn credential_changes(
    conn: &mut Connection,
    since: i64,
    max: i64,
) -> DbResult<CredentialDelta> {
    // A read-only snapshot: it need not wait for the write lock.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
    let counter = settings::change_counter(&tx)?;
    if counter == since {
        return Ok(CredentialDelta::Unchanged);
    }
    if counter < since || counter - since > max {
        return Ok(CredentialDelta::Reload);
    }
    let log = {
        let mut st = tx.prepare_cached(
            "SELECT seq, tbl, row_id, key_hash FROM credential_changes
             WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
        )?;
        let rows = st.query_map([since, counter], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    let Some(ids) = ChangedIds::of(since, counter, log) else {
        return Ok(CredentialDelta::Reload);
    };
    let mut out = ChangedRows {
        counter,
        ..Default::default()
    };
    for id in ids.users {
        out.users.push((id, users::find_by_id(&tx, id)?));
    }
    for (id, old_hashes) in ids.keys {
        let row = api_keys::find_by_id(&tx, id)?;
        out.keys.push(KeyChange {
            id,
            old_hashes,
            row,
        });
    }
    if ids.plans {
        out.plans = Some(plans::list(&tx)?);
    }
    tx.commit()?;
    Ok(CredentialDelta::Changed(out))
}

/// Deletes change-log entries more than `keep` numbers behind the counter.
pub fn prune_credential_changes(conn: &mut Connection, keep: i64) -> DbResult<u64> {
    let n = conn.execute(
        "DELETE FROM credential_changes WHERE seq <= (SELECT n FROM change_counter WHERE id = 1) - ?1",
        [keep],
    )?;
    Ok(n as u64)
}
