//! The in-memory credential cache: every user, usable key and plan, loaded from
//! the database into an immutable snapshot that the request path reads without
//! a query. Triggers log every changed row of users, keys and plans with the
//! next change number (so changes by the CLI or another replica are logged
//! too); after a change made through the API, and when the number moves —
//! polled every second — the cache reads the rows changed since the number it
//! holds and applies them to a copy of the snapshot. The snapshot's maps are
//! persistent (imbl), so that copy shares everything but the changed paths:
//! a change costs in proportion to what changed, not to the number of keys
//! (SPEC §13). A gap in the log (pruned) or a long run of changes rebuilds it.

use crate::db::{self, api_keys::KeyRow, plans::Plan, users::UserRow, DbResult, Store};
use crate::db::{ChangedRows, CredentialDelta, CredentialPart, CredentialRow};
use crate::glob::Patterns;
use hashbrown::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    User,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "user" => Some(Role::User),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }
}

#[derive(Debug)]
pub struct UserEntry {
    pub id: i64,
    pub username: String,
    pub role: Role,
    pub plan: String,
    pub disabled: bool,
    pub token_version: i64,
}

#[derive(Debug)]
pub struct KeyEntry {
    pub id: i64,
    pub user_id: i64,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// Boxed: most keys have none, and 200,000 entries add up.
    pub allowed_models: Option<Box<Patterns>>,
    pub monthly_token_limit: Option<i64>,
    /// Micro-dollars the key may spend per calendar month (SPEC §12);
    /// `None`: only the plan's limits apply.
    pub monthly_usd_limit: Option<i64>,
    /// Unix seconds of the last use seen in memory, and of the last one written.
    pub last_used: AtomicI64,
    pub last_flushed: AtomicI64,
}

impl KeyEntry {
    /// Notes a use; a plain atomic store, written to the database in batches.
    pub fn touch(&self, now: i64) {
        if self.last_used.load(Ordering::Relaxed) < now {
            self.last_used.store(now, Ordering::Relaxed);
        }
    }
}

#[derive(Debug)]
pub struct PlanEntry {
    pub plan: Plan,
    pub allowed: Patterns,
}

/// A persistent hash map: a clone shares every node, and an insert copies only
/// the path to the changed entry.
pub type Map<K, V> =
    imbl::GenericHashMap<K, V, hashbrown::DefaultHashBuilder, imbl::shared_ptr::DefaultSharedPtr>;

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The change number the snapshot is current at.
    pub counter: i64,
    /// False only for the empty snapshot before the first load.
    loaded: bool,
    pub users: Map<i64, Arc<UserEntry>>,
    /// Usable keys by the SHA-256 of the key.
    pub keys: Map<[u8; 32], Arc<KeyEntry>>,
    pub plans: HashMap<String, Arc<PlanEntry>>,
}

impl Snapshot {
    /// Loads every user, usable key and plan, keeping the last-use times that
    /// `old` saw. Rows are taken one at a time as the database hands them;
    /// keys on a second thread. Each half is read at its own moment: the
    /// snapshot takes the earlier one's change number, so the changes made
    /// between the two are applied again at the next reload (applying a
    /// change reads the row as it is then, so twice does no harm).
    fn load(store: &Store, old: &Snapshot) -> DbResult<Snapshot> {
        let (keys, users) = std::thread::scope(|scope| {
            let keys = scope.spawn(|| {
                let mut s = Snapshot::default();
                let counter =
                    store.load_credentials_blocking(CredentialPart::Keys, &mut |row| {
                        if let CredentialRow::Key(k) = row {
                            let prev = key_hash(&k).and_then(|h| old.keys.get(&h)).map(|e| &**e);
                            s.put_key(k, prev);
                        }
                    })?;
                Ok::<_, db::DbError>((counter, s.keys))
            });
            let mut users = Map::default();
            let mut plans = Vec::new();
            let counter = store.load_credentials_blocking(
                CredentialPart::UsersAndPlans,
                &mut |row| match row {
                    CredentialRow::User(u) => {
                        users.insert(u.id, Arc::new(user_entry(u)));
                    }
                    CredentialRow::Plan(p) => plans.push(p),
                    CredentialRow::Key(_) => {}
                },
            );
            let keys = keys.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            (keys, counter.map(|c| (c, users, plans)))
        });
        let (key_counter, keys) = keys?;
        let (user_counter, users, plans) = users?;
        Ok(Snapshot {
            counter: key_counter.min(user_counter),
            loaded: true,
            users,
            keys,
            plans: plans_map(plans),
        })
    }

    /// A copy of this snapshot with `rows` applied: the persistent maps make
    /// it cost in proportion to the rows.
    fn apply(&self, rows: ChangedRows) -> Snapshot {
        let mut s = self.clone();
        s.counter = rows.counter;
        for (id, row) in rows.users {
            match row {
                Some(u) => {
                    s.users.insert(id, Arc::new(user_entry(u)));
                }
                None => {
                    s.users.remove(&id);
                }
            }
        }
        for change in rows.keys {
            let mut prev = None;
            for hash in change.old_hashes.iter().filter_map(|h| decode_hash(h)) {
                if s.keys.get(&hash).is_some_and(|e| e.id == change.id) {
                    prev = s.keys.remove(&hash);
                }
            }
            if let Some(k) = change.row {
                s.put_key(k, prev.as_deref());
            }
        }
        if let Some(plans) = rows.plans {
            s.plans = plans_map(plans);
        }
        s
    }

    /// Adds a key unless it is revoked, keeping the last-use times `old` saw.
    fn put_key(&mut self, k: KeyRow, old: Option<&KeyEntry>) {
        if k.revoked {
            return;
        }
        if let Some((hash, entry)) = key_entry(k, old) {
            self.keys.insert(hash, Arc::new(entry));
        }
    }
}

fn plans_map(plans: Vec<Plan>) -> HashMap<String, Arc<PlanEntry>> {
    plans
        .into_iter()
        .map(|p| {
            let allowed = Patterns::lenient(&p.allowed_models);
            (p.name.clone(), Arc::new(PlanEntry { plan: p, allowed }))
        })
        .collect()
}

pub struct CredentialCache {
    store: Store,
    snap: RwLock<Arc<Snapshot>>,
    /// Bumped after every swap of `snap`: a thread's copy is current while
    /// the version it was taken at is.
    version: AtomicU64,
    /// Tells caches apart in a thread's copy (tests run many servers).
    id: u64,
    /// Serialises reloads so an older snapshot never replaces a newer one.
    reloading: Mutex<()>,
    /// Key hashes looked for in the database and not found there, so that a
    /// client repeating a wrong key costs one query, not one per call.
    misses: Mutex<hashbrown::HashSet<[u8; 32]>>,
    /// Database lookups of unknown keys in flight: beyond these, a flood of
    /// random keys is refused from memory.
    lookups: tokio::sync::Semaphore,
}

/// Unknown key hashes remembered; the set is emptied when full.
const MISSES_CAP: usize = 10_000;
/// Concurrent database lookups of keys missing from the snapshot.
const LOOKUPS: usize = 4;
/// Beyond this many changes at once, rebuilding the snapshot is cheaper.
const MAX_CHANGES: i64 = 20_000;
/// Change-log entries kept behind the newest; a replica further behind
/// than that (it was stopped) rebuilds its snapshot.
const KEEP_CHANGES: i64 = 100_000;

fn user_entry(u: UserRow) -> UserEntry {
    UserEntry {
        id: u.id,
        username: u.username,
        role: Role::parse(&u.role).unwrap_or(Role::User),
        plan: u.plan,
        disabled: u.disabled,
        token_version: u.token_version,
    }
}

fn decode_hash(hex_hash: &str) -> Option<[u8; 32]> {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(hex_hash, &mut hash).ok()?;
    Some(hash)
}

fn key_hash(k: &KeyRow) -> Option<[u8; 32]> {
    decode_hash(&k.key_hash)
}

fn key_entry(k: KeyRow, old: Option<&KeyEntry>) -> Option<([u8; 32], KeyEntry)> {
    let hash = key_hash(&k)?;
    let stored_use = k
        .last_used_at
        .as_deref()
        .and_then(db::parse_ts)
        .map(|t| t.timestamp())
        .unwrap_or(0);
    let (used, flushed) = match old {
        Some(o) => (
            o.last_used.load(Ordering::Relaxed).max(stored_use),
            o.last_flushed.load(Ordering::Relaxed).max(stored_use),
        ),
        None => (stored_use, stored_use),
    };
    Some((
        hash,
        KeyEntry {
            id: k.id,
            user_id: k.user_id,
            expires_at: k
                .expires_at
                .as_deref()
                .and_then(db::parse_ts)
                .map(|t| t.timestamp()),
            allowed_models: k
                .allowed_models
                .as_deref()
                .map(|a| Box::new(Patterns::lenient(a))),
            monthly_token_limit: k.monthly_token_limit,
            monthly_usd_limit: k.monthly_usd_limit.map(|u| u.0),
            last_used: AtomicI64::new(used),
            last_flushed: AtomicI64::new(flushed),
        },
    ))
}

impl CredentialCache {
    /// Loads the cache from the database (on the blocking pool, as reloads are).
    pub async fn load(store: Store) -> DbResult<Self> {
        match tokio::task::spawn_blocking(move || Self::load_blocking(store)).await {
            Ok(r) => r,
            Err(e) => Err(db::DbError::Task(e.to_string())),
        }
    }

    /// Loads the cache from the database on this thread.
    pub fn load_blocking(store: Store) -> DbResult<Self> {
        static IDS: AtomicU64 = AtomicU64::new(0);
        let cache = CredentialCache {
            store,
            snap: RwLock::new(Arc::new(Snapshot::default())),
            version: AtomicU64::new(0),
            id: IDS.fetch_add(1, Ordering::Relaxed),
            reloading: Mutex::new(()),
            misses: Mutex::default(),
            lookups: tokio::sync::Semaphore::new(LOOKUPS),
        };
        cache.reload_blocking()?;
        Ok(cache)
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snap.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs `f` on the current snapshot through this thread's copy of it: on
    /// the request path, no lock and no reference count that other threads
    /// touch, only a load of the version. The copy is refreshed when the
    /// version has moved since it was taken.
    pub fn with_snapshot<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        type Local = Option<(u64, u64, Arc<Snapshot>)>;
        thread_local! {
            static LOCAL: std::cell::RefCell<Local> = const { std::cell::RefCell::new(None) };
        }
        // The version is read before the snapshot: a swap in between leaves
        // a newer snapshot under an older version, refreshed on the next call.
        let version = self.version.load(Ordering::Acquire);
        LOCAL.with(|local| {
            let Ok(mut local) = local.try_borrow_mut() else {
                return f(&self.snapshot()); // re-entered from `f`
            };
            match &*local {
                Some((id, v, snap)) if *id == self.id && *v == version => f(snap),
                _ => {
                    let snap = self.snapshot();
                    let out = f(&snap);
                    *local = Some((self.id, version, snap));
                    out
                }
            }
        })
    }

    /// Brings the snapshot up to date on this thread: applies the rows
    /// changed since its change number, or rebuilds it when the log cannot
    /// say (first load, a gap, a long run of changes). It reads through the
    /// store's blocking variants because a rebuild must stay off the serving
    /// threads too (see [`Self::reload`]).
    pub fn reload_blocking(&self) -> DbResult<()> {
        let _guard = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.snapshot();
        let snap = match old.loaded {
            true => match self
                .store
                .credential_changes_blocking(old.counter, MAX_CHANGES)?
            {
                CredentialDelta::Unchanged => return Ok(()),
                CredentialDelta::Changed(rows) => old.apply(rows),
                CredentialDelta::Reload => Snapshot::load(&self.store, &old)?,
            },
            false => Snapshot::load(&self.store, &old)?,
        };
        *self.snap.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snap);
        self.version.fetch_add(1, Ordering::Release);
        lock(&self.misses).clear();
        Ok(())
    }

    /// Brings the snapshot up to date now; called after every change made
    /// through the API, so the change is in force before the answer leaves.
    pub async fn reload(self: &Arc<Self>) -> DbResult<()> {
        let me = self.clone();
        match tokio::task::spawn_blocking(move || me.reload_blocking()).await {
            Ok(r) => r,
            Err(e) => Err(db::DbError::Task(e.to_string())),
        }
    }

    /// A key that is not in the snapshot may have been made a moment ago by
    /// the CLI or another replica: looks for its hash in the database once
    /// and, when it is there, reloads the snapshot so the key works at its
    /// first use. Hashes not found are remembered (bounded), and only a few
    /// lookups run at once, so random keys cannot flood the database.
    pub async fn find_new_key(self: &Arc<Self>, hash: &[u8; 32]) -> bool {
        if lock(&self.misses).contains(hash) {
            return false;
        }
        let Ok(_permit) = self.lookups.try_acquire() else {
            return false;
        };
        match self.store.usable_key_exists(hex::encode(hash)).await {
            Ok(true) => match self.reload().await {
                Ok(()) => self.with_snapshot(|s| s.keys.contains_key(hash)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reload the credential cache");
                    false
                }
            },
            Ok(false) => {
                let mut m = lock(&self.misses);
                if m.len() >= MISSES_CAP {
                    m.clear();
                }
                m.insert(*hash);
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot look up an unknown key");
                false
            }
        }
    }

    /// Reloads when another process changed users, keys or plans.
    pub async fn reload_if_changed(self: &Arc<Self>) -> DbResult<bool> {
        let counter = self.store.change_counter().await?;
        if counter != self.snapshot().counter {
            self.reload().await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Polls the change counter every second until the process ends, and
    /// prunes the change log every minute.
    pub async fn poll_changes(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for n in 0u64.. {
            tick.tick().await;
            if n % 60 == 59 {
                if let Err(e) = self.store.prune_credential_changes(KEEP_CHANGES).await {
                    tracing::warn!(error = %e, "cannot prune the credential change log");
                }
            }
            match self.reload_if_changed().await {
                Ok(true) => tracing::debug!("credential cache reloaded after an outside change"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot check the database for changes"),
            }
        }
    }

    /// Writes last-use times gathered in memory (every few seconds and at shutdown).
    pub async fn flush_last_used(self: &Arc<Self>) -> DbResult<usize> {
        let snap = self.snapshot();
        let mut batch = Vec::new();
        for k in snap.keys.values() {
            let used = k.last_used.load(Ordering::Relaxed);
            if used > k.last_flushed.load(Ordering::Relaxed) {
                if let Some(t) = chrono::DateTime::from_timestamp(used, 0) {
                    batch.push((k.id, db::ts(t), k.clone(), used));
                }
            }
        }
        if batch.is_empty() {
            return Ok(0);
        }
        let rows: Vec<(i64, String)> = batch.iter().map(|(id, t, _, _)| (*id, t.clone())).collect();
        let n = rows.len();
        self.store.record_key_uses(rows).await?;
        for (_, _, k, used) in batch {
            k.last_flushed.fetch_max(used, Ordering::Relaxed);
        }
        Ok(n)
    }

    pub async fn flush_last_used_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.flush_last_used().await {
                tracing::warn!(error = %e, "cannot record key last-use times");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn cache(dir: &std::path::Path, name: &str) -> CredentialCache {
        let store = Store::open(&dir.join(name)).unwrap();
        store.migrate().await.unwrap();
        let free = Plan::tiny("free");
        store
            .create_plan(free, "2026-01-01T00:00:00Z".into())
            .await
            .unwrap();
        CredentialCache::load(store).await.unwrap()
    }

    async fn add_user(c: &CredentialCache, name: &str) {
        let u = db::users::NewUser {
            username: name.into(),
            email: None,
            password_hash: Some("x".into()),
            role: "user".into(),
            plan: Some("free".into()),
        };
        let created = c.store.create_user(u, "2026-01-01T00:00:00Z".into()).await;
        created.unwrap().unwrap();
    }

    // One thread (the test's runtime runs on it): each cache's copy of its
    // snapshot is this thread's.
    #[tokio::test(flavor = "current_thread")]
    async fn a_threads_copy_of_the_snapshot_follows_every_reload() {
        let dir = tempfile::tempdir().unwrap();
        let a = cache(dir.path(), "a.db").await;
        let b = cache(dir.path(), "b.db").await;
        let users = |c: &CredentialCache| c.with_snapshot(|s| s.users.len());
        let n = users(&a);
        add_user(&a, "one").await;
        assert_eq!(users(&a), n, "in force only once reloaded");
        a.reload_blocking().unwrap();
        assert_eq!(users(&a), n + 1);
        // Another cache on the same thread gets its own snapshot, and back.
        add_user(&b, "two").await;
        add_user(&b, "three").await;
        b.reload_blocking().unwrap();
        assert_eq!(users(&b), n + 2);
        assert_eq!(users(&a), n + 1);
        // Re-entered from inside `f`: answered from the shared snapshot.
        assert_eq!(a.with_snapshot(|_| users(&a)), n + 1);
    }
}
