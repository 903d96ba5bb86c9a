//! Accounts on PostgreSQL: users and their identities, keys, plans, settings,
//! OAuth states, first-start seeding and the credential snapshot. The same
//! operations and rules as the SQLite modules beside `pg/`.

use super::{on_constraint, Pg, BOOTSTRAP_LOCK};
use crate::db::api_keys::{KeyRow, NewKey};
use crate::db::oauth_states::StateRow;
use crate::db::plans::Plan;
use crate::db::users::{NewUser, UserRow};
use crate::db::{json_list, parse_json_list, DbError, DbResult};
use crate::db::{
    ChangedIds, ChangedRows, CredentialDelta, CredentialPart, CredentialRow, IdentitySignIn,
    KeyChange, Refused, Seed, Seeded, UserChanges,
};
use crate::money::Usd;
use tokio_postgres::{GenericClient, Row};

const USER_COLUMNS: &str =
    "id, username, email, password_hash, role, plan, disabled, token_version, created_at";
const KEY_COLUMNS: &str = "id, user_id, name, description, key_hash, prefix, created_at, \
    last_used_at, expires_at, revoked, allowed_models, monthly_token_limit, monthly_usd_limit_micros";
const PLAN_COLUMNS: &str = "name, monthly_tokens, requests_per_minute, price_usd_month, \
    allowed_models, monthly_usd_micros, pay_as_you_go";
/// Usernames compare without regard to ASCII case (the unique index's expression).
const SAME_USERNAME: &str = "lower(username COLLATE \"C\") = lower($1 COLLATE \"C\")";

/// A read-only repeatable-read transaction (every statement sees one
/// snapshot) and the change counter of that snapshot.
async fn read_at_one_moment(
    c: &mut tokio_postgres::Client,
) -> DbResult<(tokio_postgres::Transaction<'_>, i64)> {
    let tx = c
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let counter: i64 = tx
        .query_one("SELECT n FROM change_counter WHERE id = 1", &[])
        .await?
        .get(0);
    Ok((tx, counter))
}

fn user(r: &Row) -> UserRow {
    UserRow {
        id: r.get(0),
        username: r.get(1),
        email: r.get(2),
        password_hash: r.get(3),
        role: r.get(4),
        plan: r.get(5),
        disabled: r.get(6),
        token_version: r.get(7),
        created_at: r.get(8),
    }
}

fn key(r: &Row) -> KeyRow {
    KeyRow {
        id: r.get(0),
        user_id: r.get(1),
        name: r.get(2),
        description: r.get(3),
        key_hash: r.get(4),
        prefix: r.get(5),
        created_at: r.get(6),
        last_used_at: r.get(7),
        expires_at: r.get(8),
        revoked: r.get(9),
        allowed_models: r.get::<_, Option<String>>(10).map(|s| parse_json_list(&s)),
        monthly_token_limit: r.get(11),
        monthly_usd_limit: r.get::<_, Option<i64>>(12).map(Usd),
    }
}

fn plan(r: &Row) -> Plan {
    Plan {
        name: r.get(0),
        monthly_tokens: r.get(1),
        requests_per_minute: r.get(2),
        price_usd_month: r.get(3),
        allowed_models: parse_json_list(&r.get::<_, String>(4)),
        monthly_usd: r.get::<_, Option<i64>>(5).map(Usd),
        pay_as_you_go: r.get(6),
    }
}

// ----- statements on any client or transaction

async fn setting<C: GenericClient>(c: &C, k: &str) -> DbResult<Option<String>> {
    Ok(
        c.query_opt("SELECT value FROM settings WHERE key = $1", &[&k])
            .await?
            .map(|r| r.get(0)),
    )
}

async fn set_setting<C: GenericClient>(c: &C, k: &str, v: &str) -> DbResult<()> {
    c.execute(
        "INSERT INTO settings (key, value) VALUES ($1, $2)
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        &[&k, &v],
    )
    .await?;
    Ok(())
}

async fn user_by_id<C: GenericClient>(c: &C, id: i64) -> DbResult<Option<UserRow>> {
    Ok(c.query_opt(
        &format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"),
        &[&id],
    )
    .await?
    .map(|r| user(&r)))
}

async fn user_by_name<C: GenericClient>(c: &C, name: &str) -> DbResult<Option<UserRow>> {
    Ok(c.query_opt(
        &format!("SELECT {USER_COLUMNS} FROM users WHERE {SAME_USERNAME}"),
        &[&name],
    )
    .await?
    .map(|r| user(&r)))
}

async fn insert_user<C: GenericClient>(
    c: &C,
    u: &NewUser,
    plan: &str,
    now: &str,
) -> DbResult<UserRow> {
    let r = c
        .query_one(
            &format!(
                "INSERT INTO users (username, email, password_hash, role, plan, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING {USER_COLUMNS}"
            ),
            &[
                &u.username,
                &u.email,
                &u.password_hash,
                &u.role,
                &plan,
                &now,
            ],
        )
        .await
        .map_err(|e| on_constraint(e, &format!("The username {:?} is taken.", u.username)))?;
    Ok(user(&r))
}

async fn find_plan<C: GenericClient>(c: &C, name: &str) -> DbResult<Option<Plan>> {
    Ok(c.query_opt(
        &format!("SELECT {PLAN_COLUMNS} FROM plans WHERE name = $1"),
        &[&name],
    )
    .await?
    .map(|r| plan(&r)))
}

async fn list_plans<C: GenericClient>(c: &C) -> DbResult<Vec<Plan>> {
    Ok(c.query(
        &format!("SELECT {PLAN_COLUMNS} FROM plans ORDER BY id"),
        &[],
    )
    .await?
    .iter()
    .map(plan)
    .collect())
}

/// The plan new users get: `free` when it exists, else the oldest plan.
async fn default_plan<C: GenericClient>(c: &C) -> DbResult<Option<String>> {
    Ok(c.query_opt(
        "SELECT name FROM plans ORDER BY (name = 'free') DESC, id LIMIT 1",
        &[],
    )
    .await?
    .map(|r| r.get(0)))
}

async fn insert_plan<C: GenericClient>(c: &C, p: &Plan, now: &str) -> DbResult<Plan> {
    c.execute(
        "INSERT INTO plans (name, monthly_tokens, requests_per_minute, price_usd_month, allowed_models, created_at,
                            monthly_usd_micros, pay_as_you_go)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &p.name,
            &p.monthly_tokens,
            &p.requests_per_minute,
            &p.price_usd_month,
            &json_list(&p.allowed_models),
            &now,
            &p.monthly_usd.map(|u| u.0),
            &p.pay_as_you_go,
        ],
    )
    .await
    .map_err(|e| on_constraint(e, &format!("A plan named {:?} already exists.", p.name)))?;
    Ok(p.clone())
}

async fn key_by_id<C: GenericClient>(c: &C, id: i64) -> DbResult<Option<KeyRow>> {
    Ok(c.query_opt(
        &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"),
        &[&id],
    )
    .await?
    .map(|r| key(&r)))
}

/// `base`, or `base` with `-2`, `-3` … appended, whichever no account has yet.
async fn free_username<C: GenericClient>(c: &C, base: &str) -> DbResult<Option<String>> {
    if user_by_name(c, base).await?.is_none() {
        return Ok(Some(base.to_owned()));
    }
    for n in 2..10_000 {
        let candidate = format!("{base}-{n}");
        if user_by_name(c, &candidate).await?.is_none() {
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}

impl Pg {
    // ----- settings and first start

    pub async fn needs_bootstrap(&self) -> DbResult<bool> {
        Ok(setting(&**self.client().await?, "initialized")
            .await?
            .is_none())
    }

    /// Seeds an empty database once. Replicas starting together take turns
    /// (an advisory lock) and the later ones find it seeded.
    pub async fn bootstrap(&self, seed: Seed) -> DbResult<Seeded> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&BOOTSTRAP_LOCK])
            .await?;
        let mut out = Seeded::default();
        if setting(&*tx, "initialized").await?.is_some() {
            return Ok(out);
        }
        if list_plans(&*tx).await?.is_empty() {
            for p in &seed.plans {
                insert_plan(&*tx, p, &seed.now).await?;
                out.created_plans += 1;
            }
        }
        if user_by_name(&*tx, "admin").await?.is_none() {
            let plan = default_plan(&*tx).await?.unwrap_or_else(|| "free".into());
            let admin = NewUser {
                username: "admin".into(),
                email: None,
                password_hash: Some(seed.admin_hash.clone()),
                role: "admin".into(),
                plan: None,
            };
            insert_user(&*tx, &admin, &plan, &seed.now).await?;
            out.created_admin = true;
        }
        if setting(&*tx, "jwt_secret").await?.is_none() {
            set_setting(&*tx, "jwt_secret", &seed.jwt_secret).await?;
        }
        set_setting(&*tx, "initialized", &seed.now).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// The stored JWT secret; `candidate` is stored when there is none (the
    /// first replica to store one wins, and every replica reads that one).
    pub async fn jwt_secret(&self, candidate: String) -> DbResult<String> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO settings (key, value) VALUES ('jwt_secret', $1) ON CONFLICT (key) DO NOTHING",
            &[&candidate],
        )
        .await?;
        setting(&**c, "jwt_secret")
            .await?
            .ok_or_else(|| DbError::Task("the JWT secret vanished".into()))
    }

    pub async fn change_counter(&self) -> DbResult<i64> {
        let c = self.client().await?;
        let st = c
            .prepare_cached("SELECT n FROM change_counter WHERE id = 1")
            .await?;
        Ok(c.query_one(&st, &[]).await?.get(0))
    }

    /// Every plan, user and usable key, from one snapshot (a
    /// repeatable-read transaction), handed to `each` as the rows arrive;
    /// returns the change counter of that snapshot.
    pub async fn load_credentials(
        &self,
        part: CredentialPart,
        each: &mut dyn FnMut(CredentialRow),
    ) -> DbResult<i64> {
        use futures_util::TryStreamExt;
        let mut c = self.client().await?;
        let (tx, counter) = read_at_one_moment(&mut c).await?;
        let none: [&str; 0] = [];
        if part == CredentialPart::UsersAndPlans {
            for p in list_plans(&tx).await? {
                each(CredentialRow::Plan(p));
            }
            let sql = "SELECT id, username, NULL::text, NULL::text, role, plan, disabled, \
                       token_version, ''::text FROM users";
            let rows = tx.query_raw(sql, none).await?;
            futures_util::pin_mut!(rows);
            while let Some(r) = rows.try_next().await? {
                each(CredentialRow::User(user(&r)));
            }
        } else {
            // Only what the cache keeps (see CredentialRow); the order of KEY_COLUMNS.
            let sql = "SELECT id, user_id, ''::text, NULL::text, key_hash, ''::text, ''::text, \
                       last_used_at, expires_at, revoked, allowed_models, monthly_token_limit, \
                       monthly_usd_limit_micros FROM api_keys WHERE NOT revoked";
            let rows = tx.query_raw(sql, none).await?;
            futures_util::pin_mut!(rows);
            while let Some(r) = rows.try_next().await? {
                each(CredentialRow::Key(key(&r)));
            }
        }
        tx.commit().await?;
        Ok(counter)
    }

    /// The rows changed after change number `since` (at most `max` changes),
    /// read from one snapshot with the log that names them.
    pub async fn credential_changes(&self, since: i64, max: i64) -> DbResult<CredentialDelta> {
        let mut c = self.client().await?;
        let (tx, counter) = read_at_one_moment(&mut c).await?;
        if counter == since {
            return Ok(CredentialDelta::Unchanged);
        }
        if counter < since || counter - since > max {
            return Ok(CredentialDelta::Reload);
        }
        let log = tx
            .query(
                "SELECT seq, tbl, row_id, key_hash FROM credential_changes
                 WHERE seq > $1 AND seq <= $2 ORDER BY seq",
                &[&since, &counter],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        let Some(ids) = ChangedIds::of(since, counter, log) else {
            return Ok(CredentialDelta::Reload);
        };
        let user_ids = ids.users;
        let key_ids: Vec<i64> = ids.keys.keys().copied().collect();
        let mut out = ChangedRows {
            counter,
            ..Default::default()
        };
        if !user_ids.is_empty() {
            let rows = tx
                .query(
                    &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ANY($1)"),
                    &[&user_ids],
                )
                .await?;
            let mut found: std::collections::HashMap<i64, UserRow> =
                rows.iter().map(user).map(|u| (u.id, u)).collect();
            out.users = user_ids.iter().map(|id| (*id, found.remove(id))).collect();
        }
        if !key_ids.is_empty() {
            let rows = tx
                .query(
                    &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ANY($1)"),
                    &[&key_ids],
                )
                .await?;
            let mut found: std::collections::HashMap<i64, KeyRow> =
                rows.iter().map(key).map(|k| (k.id, k)).collect();
            out.keys = ids
                .keys
                .into_iter()
                .map(|(id, old_hashes)| KeyChange {
                    id,
                    row: found.remove(&id),
                    old_hashes,
                })
                .collect();
        }
        if ids.plans {
            out.plans = Some(list_plans(&tx).await?);
        }
        tx.commit().await?;
        Ok(CredentialDelta::Changed(out))
    }

    /// Deletes change-log entries more than `keep` numbers behind the counter.
    pub async fn prune_credential_changes(&self, keep: i64) -> DbResult<u64> {
        let c = self.client().await?;
        Ok(c.execute(
            "DELETE FROM credential_changes WHERE seq <= (SELECT n FROM change_counter WHERE id = 1) - $1",
            &[&keep],
        )
        .await?)
    }

    // ----- users

    pub async fn create_user(&self, u: NewUser, now: String) -> DbResult<Result<UserRow, Refused>> {
        let c = self.client().await?;
        let plan = match &u.plan {
            Some(p) => {
                if find_plan(&**c, p).await?.is_none() {
                    return Ok(Err(Refused::UnknownPlan));
                }
                p.clone()
            }
            None => match default_plan(&**c).await? {
                Some(p) => p,
                None => return Ok(Err(Refused::NoPlan)),
            },
        };
        // A plan deleted in between fails the foreign key: say so.
        match insert_user(&**c, &u, &plan, &now).await {
            Err(DbError::Conflict(_)) if find_plan(&**c, &plan).await?.is_none() => {
                Ok(Err(Refused::UnknownPlan))
            }
            r => Ok(Ok(r?)),
        }
    }

    pub async fn user_by_id(&self, id: i64) -> DbResult<Option<UserRow>> {
        user_by_id(&**self.client().await?, id).await
    }

    pub async fn user_by_username(&self, name: String) -> DbResult<Option<UserRow>> {
        user_by_name(&**self.client().await?, &name).await
    }

    pub async fn search_users(&self, q: Option<String>) -> DbResult<Vec<UserRow>> {
        let pattern = format!(
            "%{}%",
            q.as_deref()
                .unwrap_or("")
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        // ILIKE under "C" folds ASCII case only, as SQLite's LIKE does.
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {USER_COLUMNS} FROM users
                     WHERE username COLLATE \"C\" ILIKE $1 ESCAPE '\\'
                        OR COALESCE(email, '') COLLATE \"C\" ILIKE $1 ESCAPE '\\'
                     ORDER BY id"
                ),
                &[&pattern],
            )
            .await?;
        Ok(rows.iter().map(user).collect())
    }

    pub async fn users_page(
        &self,
        q: Option<String>,
        before: Option<i64>,
        limit: i64,
    ) -> DbResult<Vec<UserRow>> {
        let pattern = crate::db::api_keys::like_pattern(q.as_deref().unwrap_or(""));
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users
                 WHERE id < $2 AND ($1 = '%%'
                       OR username COLLATE \"C\" ILIKE $1 ESCAPE '\\'
                       OR COALESCE(email, '') COLLATE \"C\" ILIKE $1 ESCAPE '\\')
                 ORDER BY id DESC LIMIT $3"
            ))
            .await?;
        let rows = c
            .query(&st, &[&pattern, &before.unwrap_or(i64::MAX), &limit])
            .await?;
        Ok(rows.iter().map(user).collect())
    }

    pub async fn update_user(
        &self,
        id: i64,
        ch: UserChanges,
    ) -> DbResult<Result<UserRow, Refused>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // Locks the row: concurrent edits of one user apply one after the other.
        if tx
            .query_opt("SELECT id FROM users WHERE id = $1 FOR UPDATE", &[&id])
            .await?
            .is_none()
        {
            return Ok(Err(Refused::UnknownUser));
        }
        if let Some(plan) = &ch.plan {
            if find_plan(&*tx, plan).await?.is_none() {
                return Ok(Err(Refused::UnknownPlan));
            }
            tx.execute("UPDATE users SET plan = $2 WHERE id = $1", &[&id, plan])
                .await
                .map_err(|e| on_constraint(e, &format!("Plan {plan:?} does not exist.")))?;
        }
        if let Some(role) = &ch.role {
            tx.execute("UPDATE users SET role = $2 WHERE id = $1", &[&id, role])
                .await?;
        }
        if let Some(email) = &ch.email {
            tx.execute("UPDATE users SET email = $2 WHERE id = $1", &[&id, email])
                .await?;
        }
        if let Some(hash) = &ch.password_hash {
            tx.execute(
                "UPDATE users SET password_hash = $2, token_version = token_version + 1 WHERE id = $1",
                &[&id, hash],
            )
            .await?;
        }
        match ch.disabled {
            Some(true) => {
                tx.execute(
                    "UPDATE users SET disabled = TRUE, token_version = token_version + 1
                     WHERE id = $1 AND NOT disabled",
                    &[&id],
                )
                .await?;
            }
            Some(false) => {
                tx.execute("UPDATE users SET disabled = FALSE WHERE id = $1", &[&id])
                    .await?;
            }
            None => {}
        }
        let u = user_by_id(&*tx, id).await?;
        tx.commit().await?;
        Ok(u.ok_or(Refused::UnknownUser))
    }

    pub async fn set_user_password(&self, id: i64, hash: String) -> DbResult<bool> {
        Ok(self
            .client()
            .await?
            .execute(
                "UPDATE users SET password_hash = $2, token_version = token_version + 1 WHERE id = $1",
                &[&id, &hash],
            )
            .await?
            > 0)
    }

    pub async fn delete_user(&self, id: i64) -> DbResult<bool> {
        Ok(self
            .client()
            .await?
            .execute("DELETE FROM users WHERE id = $1", &[&id])
            .await?
            > 0)
    }

    pub async fn sign_in_with_identity(
        &self,
        s: IdentitySignIn,
        now: String,
    ) -> DbResult<Result<UserRow, Refused>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // Two first sign-ins of one identity at once: the second waits and
        // then finds the account the first made.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&format!("identity\n{}\n{}", s.provider, s.subject)],
        )
        .await?;
        let existing = tx
            .query_opt(
                &format!(
                    "SELECT {} FROM users u JOIN oauth_identities i ON i.user_id = u.id
                     WHERE i.provider = $1 AND i.subject = $2",
                    USER_COLUMNS
                        .split(", ")
                        .map(|c| format!("u.{c}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                &[&s.provider, &s.subject],
            )
            .await?
            .map(|r| user(&r));
        let existing_owner = existing.as_ref().map(|u| u.id);
        let found = match (s.link_to, existing) {
            (Some(target), Some(owner)) if owner.id == target => owner,
            (Some(_), Some(_)) => return Ok(Err(Refused::IdentityTaken)),
            (Some(target), None) => match user_by_id(&*tx, target).await? {
                Some(u) => u,
                None => return Ok(Err(Refused::UnknownUser)),
            },
            (None, Some(owner)) => owner,
            (None, None) => {
                let Some(username) = free_username(&*tx, &s.username).await? else {
                    return Ok(Err(Refused::NoFreeUsername));
                };
                let Some(plan) = default_plan(&*tx).await? else {
                    return Ok(Err(Refused::NoPlan));
                };
                let new = NewUser {
                    username,
                    email: s.email.clone(),
                    password_hash: None,
                    role: "user".into(),
                    plan: None,
                };
                insert_user(&*tx, &new, &plan, &now).await?
            }
        };
        if existing_owner.is_none() {
            tx.execute(
                "INSERT INTO oauth_identities (user_id, provider, subject, email, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
                &[&found.id, &s.provider, &s.subject, &s.email, &now],
            )
            .await
            .map_err(|e| on_constraint(e, "This sign-in is already linked to an account."))?;
        }
        tx.commit().await?;
        Ok(Ok(found))
    }

    // ----- OAuth states

    pub async fn save_oauth_state(&self, row: StateRow, purge_before: String) -> DbResult<()> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM oauth_states WHERE created_at < $1",
            &[&purge_before],
        )
        .await?;
        c.execute(
            "INSERT INTO oauth_states (state, provider, pkce_verifier, redirect_uri, link_user_id, browser_hash, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &row.state,
                &row.provider,
                &row.pkce_verifier,
                &row.redirect_uri,
                &row.link_user_id,
                &row.browser_hash,
                &row.created_at,
            ],
        )
        .await?;
        Ok(())
    }

    pub async fn take_oauth_state(&self, state: String) -> DbResult<Option<StateRow>> {
        Ok(self
            .client()
            .await?
            .query_opt(
                "DELETE FROM oauth_states WHERE state = $1
                 RETURNING state, provider, pkce_verifier, redirect_uri, link_user_id, browser_hash, created_at",
                &[&state],
            )
            .await?
            .map(|r| StateRow {
                state: r.get(0),
                provider: r.get(1),
                pkce_verifier: r.get(2),
                redirect_uri: r.get(3),
                link_user_id: r.get(4),
                browser_hash: r.get(5),
                created_at: r.get(6),
            }))
    }

    // ----- API keys

    pub async fn create_key(&self, k: NewKey, now: String) -> DbResult<KeyRow> {
        let r = self
            .client()
            .await?
            .query_one(
                &format!(
                    "INSERT INTO api_keys (user_id, name, description, key_hash, prefix, created_at, expires_at,
                                           allowed_models, monthly_token_limit, monthly_usd_limit_micros)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {KEY_COLUMNS}"
                ),
                &[
                    &k.user_id,
                    &k.name,
                    &k.description,
                    &k.key_hash,
                    &k.prefix,
                    &now,
                    &k.expires_at,
                    &k.allowed_models.as_deref().map(json_list),
                    &k.monthly_token_limit,
                    &k.monthly_usd_limit.map(|u| u.0),
                ],
            )
            .await
            .map_err(|e| on_constraint(e, "The key's user does not exist (any more)."))?;
        Ok(key(&r))
    }

    pub async fn usable_key_exists(&self, key_hash: String) -> DbResult<bool> {
        Ok(self
            .client()
            .await?
            .query_opt(
                "SELECT 1 FROM api_keys WHERE key_hash = $1 AND NOT revoked",
                &[&key_hash],
            )
            .await?
            .is_some())
    }

    pub async fn key_by_id(&self, id: i64) -> DbResult<Option<KeyRow>> {
        key_by_id(&**self.client().await?, id).await
    }

    pub async fn list_keys_for_user(&self, user_id: i64) -> DbResult<Vec<KeyRow>> {
        Ok(self
            .client()
            .await?
            .query(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY id"),
                &[&user_id],
            )
            .await?
            .iter()
            .map(key)
            .collect())
    }

    pub async fn keys_page(&self, f: crate::db::api_keys::KeyPage) -> DbResult<Vec<KeyRow>> {
        let mut w = vec!["TRUE".to_owned()];
        let mut p: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = Vec::new();
        let mut join = "";
        if let Some(u) = f.user_id {
            p.push(Box::new(u));
            w.push(format!("k.user_id = ${}", p.len()));
        }
        if let Some(b) = f.before {
            p.push(Box::new(b));
            w.push(format!("k.id < ${}", p.len()));
        }
        if let Some(q) = f.q.as_deref().filter(|q| !q.is_empty()) {
            join = "JOIN users u ON u.id = k.user_id";
            p.push(Box::new(crate::db::api_keys::like_pattern(q)));
            let n = p.len();
            w.push(format!(
                "(k.name COLLATE \"C\" ILIKE ${n} ESCAPE '\\' OR u.username COLLATE \"C\" ILIKE ${n} ESCAPE '\\' \
                 OR COALESCE(u.email, '') COLLATE \"C\" ILIKE ${n} ESCAPE '\\')"
            ));
        }
        p.push(Box::new(f.limit));
        let cols: Vec<String> = KEY_COLUMNS
            .split(", ")
            .map(|c| format!("k.{}", c.trim()))
            .collect();
        let sql = format!(
            "SELECT {} FROM api_keys k {join} WHERE {} ORDER BY k.id DESC LIMIT ${}",
            cols.join(", "),
            w.join(" AND "),
            p.len()
        );
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = p
            .iter()
            .map(|b| &**b as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        Ok(self
            .client()
            .await?
            .query(&sql, &params)
            .await?
            .iter()
            .map(key)
            .collect())
    }

    pub async fn list_keys(&self) -> DbResult<Vec<KeyRow>> {
        Ok(self
            .client()
            .await?
            .query(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY id"),
                &[],
            )
            .await?
            .iter()
            .map(key)
            .collect())
    }

    pub async fn update_key(&self, k: KeyRow) -> DbResult<Option<KeyRow>> {
        Ok(self
            .client()
            .await?
            .query_opt(
                &format!(
                    "UPDATE api_keys SET name = $2, description = $3, expires_at = $4, allowed_models = $5,
                                         monthly_token_limit = $6, monthly_usd_limit_micros = $7
                     WHERE id = $1 RETURNING {KEY_COLUMNS}"
                ),
                &[
                    &k.id,
                    &k.name,
                    &k.description,
                    &k.expires_at,
                    &k.allowed_models.as_deref().map(json_list),
                    &k.monthly_token_limit,
                    &k.monthly_usd_limit.map(|u| u.0),
                ],
            )
            .await?
            .map(|r| key(&r)))
    }

    pub async fn revoke_key(&self, id: i64) -> DbResult<bool> {
        Ok(self
            .client()
            .await?
            .execute("UPDATE api_keys SET revoked = TRUE WHERE id = $1", &[&id])
            .await?
            > 0)
    }

    /// Records last-use times in one statement.
    pub async fn record_key_uses(&self, uses: Vec<(i64, String)>) -> DbResult<()> {
        if uses.is_empty() {
            return Ok(());
        }
        let (ids, ats): (Vec<i64>, Vec<String>) = uses.into_iter().unzip();
        self.client()
            .await?
            .execute(
                "UPDATE api_keys k SET last_used_at = u.at
                 FROM UNNEST($1::BIGINT[], $2::TEXT[]) AS u(id, at)
                 WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)",
                &[&ids, &ats],
            )
            .await?;
        Ok(())
    }

    // ----- plans

    pub async fn create_plan(&self, p: Plan, now: String) -> DbResult<Plan> {
        insert_plan(&**self.client().await?, &p, &now).await
    }

    pub async fn list_plans(&self) -> DbResult<Vec<Plan>> {
        list_plans(&**self.client().await?).await
    }

    pub async fn plan_by_name(&self, name: String) -> DbResult<Option<Plan>> {
        find_plan(&**self.client().await?, &name).await
    }

    pub async fn update_plan(&self, p: Plan) -> DbResult<bool> {
        Ok(self
            .client()
            .await?
            .execute(
                "UPDATE plans SET monthly_tokens = $2, requests_per_minute = $3, price_usd_month = $4,
                                  allowed_models = $5, monthly_usd_micros = $6, pay_as_you_go = $7
                 WHERE name = $1",
                &[
                    &p.name,
                    &p.monthly_tokens,
                    &p.requests_per_minute,
                    &p.price_usd_month,
                    &json_list(&p.allowed_models),
                    &p.monthly_usd.map(|u| u.0),
                    &p.pay_as_you_go,
                ],
            )
            .await?
            > 0)
    }

    /// Deletes a plan; [`DbError::Conflict`] while a user is on it.
    pub async fn delete_plan(&self, name: String) -> DbResult<bool> {
        let c = self.client().await?;
        let users: i64 = c
            .query_one("SELECT COUNT(*) FROM users WHERE plan = $1", &[&name])
            .await?
            .get(0);
        if users > 0 {
            return Err(DbError::Conflict(format!(
                "Plan {name:?} is in use by {users} user(s); move them to another plan first."
            )));
        }
        let n = c
            .execute("DELETE FROM plans WHERE name = $1", &[&name])
            .await
            .map_err(|e| on_constraint(e, &format!("Plan {name:?} is in use.")))?;
        Ok(n > 0)
    }
}
