//! The store: the one way the rest of tollgate reaches the database.
//!
//! Its operations are named for what they do and are async: each runs the
//! backend's blocking work on the blocking pool, so no serving thread waits
//! for the database. Work that must be all or nothing (seeding, editing a
//! user, an OAuth sign-in) is one operation. The two `_blocking` operations
//! are for code that already runs on a thread of its own.
//!
//! Two backends: SQLite (the modules beside this one), whose blocking work
//! runs on the blocking pool, and PostgreSQL (`pg/`), which is awaited
//! directly. A new backend is a variant of [`Backend`] and one arm in each
//! operation.

use super::{
    accounts, api_keys, credits, oauth_states, plans, usage, users, DbError, DbResult, Pool,
};
use api_keys::KeyRow;
use plans::Plan;
use rusqlite::Connection;
use usage::{DailyFilter, DailyRow, GroupRow, RequestFilter, UsageRecord};
use users::{NewUser, UserRow};

#[derive(Clone)]
pub struct Store {
    pub(super) backend: Backend,
}

#[derive(Clone)]
pub(super) enum Backend {
    Sqlite(Pool),
    Postgres(super::pg::Pg),
}

/// Why the store did not do a write; the caller words the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The plan named does not exist.
    UnknownPlan,
    /// No plan exists at all, so a new account has none to be on.
    NoPlan,
    /// The user does not exist (any more).
    UnknownUser,
    /// The OAuth identity already belongs to another account.
    IdentityTaken,
    /// No free username is left for a new OAuth account.
    NoFreeUsername,
}

/// What the first start writes (see [`Store::bootstrap`]).
#[derive(Debug, Clone)]
pub struct Seed {
    /// Plans created when there are none.
    pub plans: Vec<Plan>,
    /// The password hash of the `admin` user created when there is none.
    pub admin_hash: String,
    /// The JWT secret stored when there is none.
    pub jwt_secret: String,
    pub now: String,
}

/// What [`Store::bootstrap`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Seeded {
    pub created_admin: bool,
    pub created_plans: usize,
}

/// The fields of a user to change; `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct UserChanges {
    pub plan: Option<String>,
    pub role: Option<String>,
    pub email: Option<Option<String>>,
    /// A new password hash; the user's token version moves with it.
    pub password_hash: Option<String>,
    pub disabled: Option<bool>,
}

/// An OAuth identity signing in (see [`Store::sign_in_with_identity`]).
#[derive(Debug, Clone)]
pub struct IdentitySignIn {
    pub provider: String,
    pub subject: String,
    pub email: Option<String>,
    /// A valid username for a new account; suffixed when it is taken.
    pub username: String,
    /// Link the identity to this user instead of signing in as its owner.
    pub link_to: Option<i64>,
}

/// One row of what the credential cache is built from. Only what the cache
/// keeps is read: a user's email, password hash and creation time, and a
/// key's name, description, prefix and creation time, are left empty.
#[derive(Debug, Clone)]
pub enum CredentialRow {
    User(UserRow),
    /// A key not revoked.
    Key(KeyRow),
    Plan(Plan),
}

/// The two halves of the credential rows, read apart so that a large
/// snapshot is loaded on two threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialPart {
    UsersAndPlans,
    Keys,
}

/// One entry of the change log: `(seq, table, row id, the key's hash before
/// the change)`.
pub type ChangeLogEntry = (i64, String, i64, Option<String>);

/// What changed in users, keys and plans since a change number, for the
/// credential cache to apply (SPEC §13).
#[derive(Debug, Clone)]
pub enum CredentialDelta {
    /// Nothing changed.
    Unchanged,
    /// More changes than asked for, or a log pruned past the number (or a
    /// database that went back): the cache must be rebuilt from scratch.
    Reload,
    Changed(ChangedRows),
}

/// The rows behind a run of changes, read at one moment.
#[derive(Debug, Clone, Default)]
pub struct ChangedRows {
    /// The change number these rows bring the cache to.
    pub counter: i64,
    /// Each changed user's id and row; `None` when it was deleted.
    pub users: Vec<(i64, Option<UserRow>)>,
    /// Each changed key, revoked ones included.
    pub keys: Vec<KeyChange>,
    /// Every plan, when any plan changed (there are few).
    pub plans: Option<Vec<Plan>>,
}

/// A changed key: the hashes it had before (to find its cache entry) and its
/// row now, `None` when it was deleted.
#[derive(Debug, Clone)]
pub struct KeyChange {
    pub id: i64,
    pub old_hashes: Vec<String>,
    pub row: Option<KeyRow>,
}

/// The distinct ids a run of the change log names, per table.
#[derive(Debug, Default)]
pub struct ChangedIds {
    pub users: Vec<i64>,
    /// Key ids with the hashes they had before their changes.
    pub keys: std::collections::BTreeMap<i64, Vec<String>>,
    pub plans: bool,
}

impl ChangedIds {
    /// Sorts a run of log entries by table; `None` when the run does not hold
    /// every number from `since + 1` to `counter` (the log was pruned), as
    /// every change takes the next number.
    pub fn of(since: i64, counter: i64, log: Vec<ChangeLogEntry>) -> Option<ChangedIds> {
        if log.len() as i64 != counter - since {
            return None;
        }
        let mut ids = ChangedIds::default();
        for (i, (seq, tbl, id, hash)) in log.into_iter().enumerate() {
            if seq != since + 1 + i as i64 {
                return None;
            }
            match tbl.as_str() {
                "users" => ids.users.push(id),
                "api_keys" => ids.keys.entry(id).or_default().extend(hash),
                _ => ids.plans = true,
            }
        }
        ids.users.sort_unstable();
        ids.users.dedup();
        Some(ids)
    }
}

/// Runs blocking SQLite work on the blocking pool, re-raising its panics.
async fn run<T, F>(pool: &Pool, f: F) -> DbResult<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> DbResult<T> + Send + 'static,
{
    let pool = pool.clone();
    match tokio::task::spawn_blocking(move || {
        let mut conn = pool.get()?;
        f(&mut conn)
    })
    .await
    {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(DbError::Task(e.to_string())),
    }
}

impl Store {
    /// A store on an open SQLite pool.
    pub fn sqlite(pool: Pool) -> Store {
        Store {
            backend: Backend::Sqlite(pool),
        }
    }

    /// Opens (creating if needed) the SQLite database file.
    pub fn open(path: &std::path::Path) -> DbResult<Store> {
        super::open(path).map(Store::sqlite)
    }

    /// The configured database: PostgreSQL when `[database] url` is set,
    /// else the SQLite file at `path`. PostgreSQL connects at first use.
    pub fn connect(cfg: &crate::config::DatabaseConfig) -> DbResult<Store> {
        match &cfg.url {
            Some(url) => Ok(Store {
                backend: Backend::Postgres(super::pg::Pg::connect(url)?),
            }),
            None => Store::open(&cfg.path),
        }
    }

    /// Where the data lives, for messages (a PostgreSQL URL without its password).
    pub fn describe(cfg: &crate::config::DatabaseConfig) -> String {
        match &cfg.url {
            Some(url) => crate::config::mask_password(url),
            None => cfg.path.display().to_string(),
        }
    }

    /// The PostgreSQL backend, for the work only it does (`migrate --from-sqlite`).
    pub fn postgres(&self) -> Option<&super::pg::Pg> {
        match &self.backend {
            Backend::Postgres(pg) => Some(pg),
            Backend::Sqlite(_) => None,
        }
    }

    /// Runs the migrations that have not run yet; returns how many ran.
    pub async fn migrate(&self) -> DbResult<usize> {
        match &self.backend {
            Backend::Postgres(pg) => pg.migrate().await,
            Backend::Sqlite(pool) => run(pool, super::migrate_connection).await,
        }
    }

    // ----- settings and first start

    /// Whether the first-start seeding has not run yet.
    pub async fn needs_bootstrap(&self) -> DbResult<bool> {
        match &self.backend {
            Backend::Postgres(pg) => pg.needs_bootstrap().await,
            Backend::Sqlite(pool) => {
                run(pool, |c| {
                    Ok(super::settings::get(c, "initialized")?.is_none())
                })
                .await
            }
        }
    }

    /// Seeds an empty database once, in one transaction; later calls change nothing.
    pub async fn bootstrap(&self, seed: Seed) -> DbResult<Seeded> {
        match &self.backend {
            Backend::Postgres(pg) => pg.bootstrap(seed).await,
            Backend::Sqlite(pool) => run(pool, move |c| accounts::bootstrap(c, &seed)).await,
        }
    }

    /// The stored JWT secret; `candidate` is stored and returned when there is none.
    pub async fn jwt_secret(&self, candidate: String) -> DbResult<String> {
        match &self.backend {
            Backend::Postgres(pg) => pg.jwt_secret(candidate).await,
            Backend::Sqlite(pool) => run(pool, move |c| accounts::jwt_secret(c, &candidate)).await,
        }
    }

    /// The counter bumped on every change to users, keys or plans (by any process).
    pub async fn change_counter(&self) -> DbResult<i64> {
        match &self.backend {
            Backend::Postgres(pg) => pg.change_counter().await,
            Backend::Sqlite(pool) => run(pool, |c| super::settings::change_counter(c)).await,
        }
    }

    /// Every plan and user, or every usable key, read at one moment and
    /// handed to `each` one row at a time (a snapshot of 200,000 keys is
    /// built without holding all their rows at once); returns the change
    /// counter of that moment. Blocking: the credential cache builds its
    /// snapshot on blocking threads, since building a large one must not
    /// hold a serving thread either.
    pub fn load_credentials_blocking(
        &self,
        part: CredentialPart,
        each: &mut dyn FnMut(CredentialRow),
    ) -> DbResult<i64> {
        match &self.backend {
            Backend::Postgres(pg) => pg.block_on(pg.load_credentials(part, each)),
            Backend::Sqlite(pool) => accounts::load_credentials(&mut *pool.get()?, part, each),
        }
    }

    /// The changes to users, keys and plans after change number `since`, at
    /// most `max` of them. Blocking, like [`Self::load_credentials_blocking`].
    pub fn credential_changes_blocking(&self, since: i64, max: i64) -> DbResult<CredentialDelta> {
        match &self.backend {
            Backend::Postgres(pg) => pg.block_on(pg.credential_changes(since, max)),
            Backend::Sqlite(pool) => accounts::credential_changes(&mut *pool.get()?, since, max),
        }
    }

    /// Forgets change-log entries more than `keep` numbers old.
    pub async fn prune_credential_changes(&self, keep: i64) -> DbResult<u64> {
        match &self.backend {
            Backend::Postgres(pg) => pg.prune_credential_changes(keep).await,
            Backend::Sqlite(pool) => {
                run(pool, move |c| accounts::prune_credential_changes(c, keep)).await
            }
        }
    }

    // ----- users

    /// Creates a user on its plan, or on the default plan when it names none.
    /// Refused: [`Refused::UnknownPlan`], [`Refused::NoPlan`]; a taken
    /// username is [`DbError::Conflict`].
    pub async fn create_user(&self, u: NewUser, now: String) -> DbResult<Result<UserRow, Refused>> {
        match &self.backend {
            Backend::Postgres(pg) => pg.create_user(u, now).await,
            Backend::Sqlite(pool) => run(pool, move |c| accounts::create_user(c, &u, &now)).await,
        }
    }

    pub async fn user_by_id(&self, id: i64) -> DbResult<Option<UserRow>> {
        match &self.backend {
            Backend::Postgres(pg) => pg.user_by_id(id).await,
            Backend::Sqlite(pool) => run(pool, move |c| users::find_by_id(c, id)).await,
        }
    }

    pub async fn user_by_username(&self, name: String) -> DbResult<Option<UserRow>> {
        match &self.backend {
            Backend::Postgres(pg) => pg.user_by_username(name).await,
            Backend::Sqlite(pool) => run(pool, move |c| users::find_by_username(c, &name)).await,
        }
    }

    /// Users whose username or email contains `q` (all users without `q`), by id.
    pub async fn search_users(&self, q: Option<String>) -> DbResult<Vec<UserRow>> {
        match &self.backend {
            Backend::Postgres(pg) => pg.search_users(q).await,
            Backend::Sqlite(pool) => run(pool, move |c| users::search(c, q.as_deref())).await,
        }
    }

    /// A page of users, newest first: those whose username or email contains
    /// `q`, with an id below `before`.
    pub async fn users_page(
        &self,
        q: Option<String>,
        before: Option<i64>,
        limit: i64,
    ) -> DbResult<Vec<UserRow>> {
        match &self.backend {
            Backend::Sqlite(pool) => {
                run(pool, move |c| users::page(c, q.as_deref(), before, limit)).await
            }
            Backend::Postgres(pg) => pg.users_page(q, before, limit).await,
        }
    }

    /// Every user, by id.
    pub async fn list_users(&self) -> DbResult<Vec<UserRow>> {
        self.search_users(None).await
    }

    /// Applies `changes` to user `id`, all or nothing; returns the user as saved.
    /// Refused: [`Refused::UnknownUser`], [`Refused::UnknownPlan`].
    pub async fn update_user(
        &self,
        id: i64,
        changes: UserChanges,
    ) -> DbResult<Result<UserRow, Refused>> {
        match &self.backend {
            Backend::Postgres(pg) => pg.update_user(id, changes).await,
            Backend::Sqlite(pool) => {
                run(pool, move |c| accounts::update_user(c, id, &changes)).await
            }
        }
    }

    /// Sets a new password hash; earlier tokens of the user stop working.
    pub async fn set_user_password(&self, id: i64, hash: String) -> DbResult<bool> {
        match &self.backend {
            Backend::Postgres(pg) => pg.set_user_password(id, hash).await,
            Backend::Sqlite(pool) => run(pool, move |c| users::set_password(c, id, &hash)).await,
        }
    }

    pub async fn delete_user(&self, id: i64) -> DbResult<bool> {
        match &self.backend {
            Backend::Postgres(pg) => pg.delete_user(id).await,
            Backend::Sqlite(pool) => run(pool, move |c| users::delete(c, id)).await,
        }
    }

    /// The user an OAuth identity signs in as, found, created or linked in one
    /// transaction. Refused: [`Refused::IdentityTaken`] (linking an identity
    /// someone else owns), [`Refused::UnknownUser`] (the user to link is
    /// gone), [`Refused::NoFreeUsername`], [`Refused::NoPlan`].
    pub async fn sign_in_with_identity(
        &self,
        s: IdentitySignIn,
        now: String,
    ) -> DbResult<Result<UserRow, Refused>> {
        match &self.backend {
            Backend::Postgres(pg) => pg.sign_in_with_identity(s, now).await,
            Backend::Sqlite(pool) => run(pool, move |c| accounts::sign_in(c, &s, &now)).await,
        }
    }

    // ----- OAuth states

    /// Stores a new sign-in state after dropping those created before `purge_before`.
    pub async fn save_oauth_state(
        &self,
        row: oauth_states::StateRow,
        purge_before: String,
    ) -> DbResult<()> {
        match &self.backend {
            Backend::Postgres(pg) => pg.save_oauth_state(row, purge_before).await,
            Backend::Sqlite(pool) => {
                run(pool, move |c| {
                    oauth_states::purge_created_before(c, &purge_before)?;
                    oauth_states::insert(c, &row)
                })
                .await
            }
        }
    }

    /// Reads and deletes the row of `state`, so it can be used once only.
    pub async fn take_oauth_state(
        &self,
        state: String,
    ) -> DbResult<Option<oauth_states::StateRow>> {
        match &self.backend {
            Backend::Postgres(pg) => pg.take_oauth_state(state).await,
            Backend::Sqlite(pool) => run(pool, move |c| oauth_states::take(c, &state)).await,
        }
    }

    // ----- API keys

    pub async fn create_key(&self, k: api_keys::NewKey, now: String) -> DbResult<KeyRow> {
        match &self.backend {
            Backend::Postgres(pg) => pg.create_key(k, now).await,
            Backend::Sqlite(pool) => run(pool, move |c| api_keys::insert(c, &k, &now)).await,
        }
    }

    /// Whether a usable (not revoked) key has this hash (hex SHA-256).
    pub async fn usable_key_exists(&self, key_hash: String) -> DbResult<bool> {
        match &self.backend {
            Backend::Sqlite(pool) => {
                run(pool, move |c| api_keys::usable_hash_exists(c, &key_hash)).await
            }
            Backend::Postgres(pg) => pg.usable_key_exists(key_hash).await,
        }
    }

    pub async fn key_by_id(&self, id: i64) -> DbResult<Option<KeyRow>> {
        match &self.backend {
            Backend::Postgres(pg) => pg.key_by_id(id).await,
            Backend::Sqlite(pool) => run(pool, move |c| api_keys::find_by_id(c, id)).await,
        }
    }

    /// A user's keys (revoked ones too), by id.
    pub async fn list_keys_for_user(&self, user_id: i64) -> DbResult<Vec<KeyRow>> {
        match &self.backend {
            Backend::Postgres(pg) => pg.list_keys_for_user(user_id).await,
            Backend::Sqlite(pool) => run(pool, move |c| api_keys::list_for_user(c, user_id)).await,
        }
    }

    /// A page of keys, newest first (see [`api_keys::KeyPage`]).
    pub async fn keys_page(&self, f: api_keys::KeyPage) -> DbResult<Vec<KeyRow>> {
        match &self.backend {
            Backend::Sqlite(pool) => run(pool, move |c| api_keys::page(c, &f)).await,
            Backend::Postgres(pg) => pg.keys_page(f).await,
        }
    }

    /// Every key, by id.
    pub async fn list_keys(&self) -> DbResult<Vec<KeyRow>> {
        match &self.backend {
            Backend::Postgres(pg) => pg.list_keys().await,
            Backend::Sqlite(pool) => run(pool, |c| api_keys::list_all(c)).await,
        }
    }

    /// Writes every editable field of `k` back; returns the key as saved.
    pub async fn update_key(&self, k: KeyRow) -> DbResult<Option<KeyRow>> {
        match &self.backend {
            Backend::Postgres(pg) => pg.update_key(k).await,
            Backend::Sqlite(pool) => {
                run(pool, move |c| {
                    api_keys::update(c, &k)?;
                    api_keys::find_by_id(c, k.id)
                })
                .await
            }
        }
    }

    pub async fn revoke_key(&self, id: i64) -> DbResult<bool> {
        match &self.backend {
            Backend::Postgres(pg) => pg.revoke_key(id).await,
            Backend::Sqlite(pool) => run(pool, move |c| api_keys::revoke(c, id)).await,
        }
    }

    /// Records last-use times gathered in memory, in one transaction.
    pub async fn record_key_uses(&self, uses: Vec<(i64, String)>) -> DbResult<()> {
        match &self.backend {
            Backend::Postgres(pg) => pg.record_key_uses(uses).await,
            Backend::Sqlite(pool) => run(pool, move |c| api_keys::record_last_used(c, &uses)).await,
        }
    }

    // ----- plans

    /// Creates a plan; a taken name is [`DbError::Conflict`].
    pub async fn create_plan(&self, p: Plan, now: String) -> DbResult<Plan> {
        match &self.backend {
            Backend::Postgres(pg) => pg.create_plan(p, now).await,
            Backend::Sqlite(pool) => run(pool, move |c| plans::insert(c, &p, &now)).await,
        }
    }

    /// Every plan, oldest first.
    pub async fn list_plans(&self) -> DbResult<Vec<Plan>> {
        match &self.backend {
            Backend::Postgres(pg) => pg.list_plans().await,
            Backend::Sqlite(pool) => run(pool, |c| plans::list(c)).await,
        }
    }

    pub async fn plan_by_name(&self, name: String) -> DbResult<Option<Plan>> {
        match &self.backend {
            Backend::Postgres(pg) => pg.plan_by_name(name).await,
            Backend::Sqlite(pool) => run(pool, move |c| plans::find(c, &name)).await,
        }
    }

    pub async fn update_plan(&self, p: Plan) -> DbResult<bool> {
        match &self.backend {
            Backend::Postgres(pg) => pg.update_plan(p).await,
            Backend::Sqlite(pool) => run(pool, move |c| plans::update(c, &p)).await,
        }
    }

    /// Deletes a plan; [`DbError::Conflict`] while a user is on it.
    pub async fn delete_plan(&self, name: String) -> DbResult<bool> {
        match &self.backend {
            Backend::Postgres(pg) => pg.delete_plan(name).await,
            Backend::Sqlite(pool) => run(pool, move |c| plans::delete(c, &name)).await,
        }
    }

    // ----- credits

    /// Adds a credit ledger entry and returns it with the user's new balance
    /// (micro-dollars), in one transaction. Refused: the user does not
    /// exist, a deduction larger than the balance, a balance past
    /// [`crate::money::MAX_MICROS`].
    pub async fn add_credit(
        &self,
        c: credits::NewCredit,
        now: String,
    ) -> DbResult<Result<(credits::CreditEntry, i64), credits::CreditRefused>> {
        match &self.backend {
            Backend::Postgres(pg) => pg.add_credit(c, now).await,
            Backend::Sqlite(pool) => run(pool, move |conn| credits::add(conn, &c, &now)).await,
        }
    }

    /// A page of a user's credit ledger, newest first: entries with an id
    /// below `before`, at most `limit`.
    pub async fn list_credits(
        &self,
        user_id: i64,
        before: Option<i64>,
        limit: i64,
    ) -> DbResult<Vec<credits::CreditEntry>> {
        match &self.backend {
            Backend::Postgres(pg) => pg.credits_page(user_id, before, limit).await,
            Backend::Sqlite(pool) => {
                run(pool, move |c| credits::page(c, user_id, before, limit)).await
            }
        }
    }

    /// A user's prepaid credit left (micro-dollars): their ledger entries
    /// minus what their pay-as-you-go calls spent, as far as it is written.
    pub async fn credit_balance(&self, user_id: i64) -> DbResult<i64> {
        match &self.backend {
            Backend::Postgres(pg) => pg.credit_balance(user_id).await,
            Backend::Sqlite(pool) => run(pool, move |c| credits::balance(c, user_id)).await,
        }
    }

    // ----- usage

    /// Writes a batch of records with their roll-ups in one transaction.
    /// Blocking: the usage writer calls it from its own thread.
    pub fn write_usage_batch_blocking(&self, records: &[UsageRecord]) -> DbResult<()> {
        match &self.backend {
            Backend::Postgres(pg) => pg.block_on(pg.write_usage_batch(records)),
            Backend::Sqlite(pool) => usage::insert_batch(&mut *pool.get()?, records),
        }
    }

    /// Deletes raw records created before `before` (RFC 3339); roll-ups stay.
    /// Blocking: the usage writer calls it from its own thread.
    pub fn trim_usage_blocking(&self, before: &str) -> DbResult<usize> {
        match &self.backend {
            Backend::Postgres(pg) => pg.block_on(pg.trim_usage(before)),
            Backend::Sqlite(pool) => usage::delete_before(&*pool.get()?, before),
        }
    }

    /// Tokens and money charged in `period` (YYYY-MM), per user and key.
    pub async fn period_totals(&self, period: String) -> DbResult<Vec<usage::PeriodTotal>> {
        match &self.backend {
            Backend::Postgres(pg) => pg.period_totals(period).await,
            Backend::Sqlite(pool) => run(pool, move |c| usage::period_totals(c, &period)).await,
        }
    }

    /// What each user's pay-as-you-go calls were charged to their prepaid
    /// credit, every period (user, micro-dollars).
    pub async fn credit_spent(&self) -> DbResult<Vec<(i64, i64)>> {
        match &self.backend {
            Backend::Postgres(pg) => pg.credit_spent().await,
            Backend::Sqlite(pool) => run(pool, |c| usage::credit_spent(c)).await,
        }
    }

    /// Credit ledger entries after id `after`: (id, user, micro-dollars).
    pub async fn credit_entries_after(&self, after: i64) -> DbResult<Vec<(i64, i64, i64)>> {
        match &self.backend {
            Backend::Postgres(pg) => pg.credit_entries_after(after).await,
            Backend::Sqlite(pool) => {
                run(pool, move |c| usage::credit_entries_after(c, after)).await
            }
        }
    }

    /// (tokens, successful requests, tokens of successful requests, micro-dollars).
    pub async fn usage_totals(&self, f: DailyFilter) -> DbResult<(i64, i64, i64, i64)> {
        match &self.backend {
            Backend::Postgres(pg) => pg.usage_totals(f).await,
            Backend::Sqlite(pool) => run(pool, move |c| usage::totals(c, &f)).await,
        }
    }

    /// Totals per day, provider and model.
    pub async fn usage_daily(&self, f: DailyFilter) -> DbResult<Vec<DailyRow>> {
        match &self.backend {
            Backend::Postgres(pg) => pg.usage_daily(f).await,
            Backend::Sqlite(pool) => run(pool, move |c| usage::daily(c, &f)).await,
        }
    }

    /// Totals grouped by `day`, `user`, `provider` or `model` (checked by the caller).
    pub async fn usage_grouped(&self, group_by: String, f: DailyFilter) -> DbResult<Vec<GroupRow>> {
        match &self.backend {
            Backend::Postgres(pg) => pg.usage_grouped(group_by, f).await,
            Backend::Sqlite(pool) => run(pool, move |c| usage::grouped(c, &group_by, &f)).await,
        }
    }

    /// Records newest first, keyset-paginated by id.
    pub async fn requests_page(&self, f: RequestFilter) -> DbResult<Vec<UsageRecord>> {
        match &self.backend {
            Backend::Postgres(pg) => pg.requests_page(f).await,
            Backend::Sqlite(pool) => run(pool, move |c| usage::requests(c, &f)).await,
        }
    }
}
