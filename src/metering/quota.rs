//! Admission: the requests-per-minute check and the reservation of a call, in
//! one step, and the balances they are decided on.
//!
//! One instance (SQLite) keeps both in memory: the [`Ledger`] and the
//! [`RateLimits`]. Replicas on PostgreSQL share them through the database
//! (`Quotas::Shared`): each replica holds a *slice* of a user's allowance —
//! tokens, money and requests-per-minute arrivals taken from the database in
//! one grant — and admits calls against it in memory, so most calls never
//! wait for the database. The database counts every slice as reserved, so a
//! user whose calls land on different replicas still gets exactly their
//! plan. When what is left is short the slices are as small as one call and
//! settle straight back to the database; idle slices are given back within
//! about a second. Either way the decision itself is [`Ask::decide`].

use super::ledger::{Account, Amount, Avail, Balance, Credit, Ledger};
use super::limits::RateLimits;
use super::pricing::Price;
use crate::db::quota::{Grown, Growth, SliceReturn};
use crate::db::usage::SliceCharge;
use crate::db::{DbResult, Store};
use hashbrown::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// What a call asks to reserve (SPEC §6, §12): its prompt estimate plus a cap
/// on completion tokens for each of its `n` choices, in tokens and in money
/// at the model's price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    pub prompt: i64,
    /// The completion cap the call wants (the client's, the model's or the default).
    pub wanted: i64,
    pub n: i64,
    /// The smallest cap worth calling with when `wanted` does not fit.
    pub min_cap: i64,
    /// Embeddings generate nothing: only the prompt is reserved.
    pub embeddings: bool,
    /// The model's price (zero when unknown).
    pub price: Price,
}

impl Ask {
    /// The reservation for what is `avail`able, and the completion cap to
    /// send (`None` for embeddings): the cap is lowered to fit the tokens and
    /// the money left. `Err(avail)` when the call does not fit.
    pub fn decide(&self, avail: Avail) -> Result<(Amount, Option<i64>), Avail> {
        let prompt_cost = crate::money::cost_micros(self.prompt, self.price.prompt);
        if avail.tokens < self.prompt || avail.micros.is_some_and(|m| m < prompt_cost) {
            return Err(avail);
        }
        if self.embeddings {
            return Ok((
                Amount {
                    tokens: self.prompt,
                    micros: prompt_cost,
                },
                None,
            ));
        }
        let n = self.n.max(1);
        let mut cap = self.wanted.min((avail.tokens - self.prompt) / n);
        if let (Some(m), true) = (avail.micros, self.price.completion > 0) {
            // cost_micros(cap × n) ≤ m − prompt_cost ⟺ cap × n × price ≤ (m − prompt_cost) × 1e6
            let afford = (m - prompt_cost) as i128 * crate::money::MICROS as i128
                / (n as i128 * self.price.completion as i128);
            cap = cap.min(afford.min(i64::MAX as i128) as i64);
        }
        if cap < self.wanted && cap < self.min_cap {
            return Err(avail);
        }
        Ok((
            Amount {
                tokens: self.prompt + cap * n,
                micros: prompt_cost + crate::money::cost_micros(cap * n, self.price.completion),
            },
            Some(cap),
        ))
    }

    /// The reservation of the whole wanted cap.
    fn full(&self) -> Amount {
        let n = if self.embeddings { 0 } else { self.n.max(1) };
        let completion = self.wanted.saturating_mul(n);
        Amount {
            tokens: self.prompt.saturating_add(completion),
            micros: crate::money::cost_micros(self.prompt, self.price.prompt)
                .saturating_add(crate::money::cost_micros(completion, self.price.completion)),
        }
    }
}

/// A reservation taken.
#[derive(Clone)]
pub struct Grant {
    pub reserved: Amount,
    pub cap: Option<i64>,
    /// What the account had left before this reservation (with shared
    /// quotas, as far as this replica knows).
    pub avail: Avail,
    /// Shared quotas: the slice the call was admitted against.
    slice: Option<Arc<SliceCell>>,
    /// Shared quotas: the replica's slices then (see [`Shared::epoch`]).
    epoch: u64,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("reserved", &self.reserved)
            .field("cap", &self.cap)
            .field("avail", &self.avail)
            .field("shared", &self.slice.is_some())
            .finish()
    }
}

/// Why a call was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over the plan's requests per minute: seconds to wait.
    Rate(u64),
    /// Not enough tokens or money left: what there is.
    Quota(Avail),
}

pub enum Quotas {
    /// One instance: balances and rates in this process's memory.
    Local {
        ledger: Ledger,
        limits: RateLimits,
        store: Option<Store>,
        /// The last credit ledger entry the ledger holds.
        credits_seen: AtomicI64,
    },
    /// Replicas: slices of the allowances held in the database.
    Shared(Shared),
}

/// Calls' worth of tokens and money a slice is grown by while plenty is left.
const HEADROOM_CALLS: i64 = 32;
/// A slice unused this long is given back.
const IDLE: Duration = Duration::from_secs(1);
/// How often idle slices are looked for.
const SWEEP: Duration = Duration::from_millis(250);

fn plus(a: Avail, b: Avail) -> Avail {
    Avail {
        tokens: a.tokens.saturating_add(b.tokens),
        micros: match (a.micros, b.micros) {
            (Some(x), Some(y)) => Some(x.saturating_add(y)),
            (x, y) => x.or(y),
        },
    }
}

/// Quotas kept in a database that replicas share.
pub struct Shared {
    store: Store,
    /// This replica, as named on its slices; a new name once it gave its
    /// slices up (see [`Shared::abandon_if_lapsed`]).
    instance: Mutex<Arc<str>>,
    /// Counts the times this replica gave its slices up: a slice holds room
    /// only of the current epoch.
    epoch: AtomicU64,
    /// When the last lease renewal that succeeded began: nanoseconds after
    /// `base` and milliseconds of the wall clock (atomics: every admission
    /// reads them).
    renewed: (AtomicU64, AtomicU64),
    base: Instant,
    /// One replica-wide give-up at a time.
    abandoning: Mutex<()>,
    lease: Duration,
    slices: Mutex<HashMap<SliceKey, Arc<SliceCell>>>,
    /// Returns that failed or were cut short, retried at the next sweep
    /// (and at shutdown).
    unreturned: Arc<Mutex<Vec<SliceReturn>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SliceKey {
    user_id: i64,
    key_id: Option<i64>,
    period: Arc<str>,
}

/// This replica's slice of one user's (and key's) allowance in one period.
struct SliceCell {
    key: SliceKey,
    state: Mutex<Slice>,
    /// One grant from the database at a time per slice.
    growing: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Slice {
    /// Granted and not reserved, charged or given back. The money part is
    /// kept only for accounts with a money limit.
    room: Amount,
    /// Calls the rate limit admitted that are not used yet.
    arrivals: i64,
    /// Seconds of the rate limiter's clock one arrival stood for.
    rate_iv: f64,
    /// What the database had left beside this slice at the last grant.
    outside: Avail,
    /// Calls admitted (or being admitted) and not settled.
    inflight: u32,
    last_used: Option<Instant>,
    /// The last grant was short: room goes back at each settle.
    tight: bool,
    /// A call waits for a grant of its own: calls that come meanwhile do not
    /// take the room it brings.
    pending: bool,
    /// The limits the slice was granted under: calls under other limits (a
    /// plan or key edited meanwhile) give it back and take a new one.
    terms: Option<Terms>,
    /// The replica's epoch its room and arrivals were granted in.
    epoch: u64,
}

/// An account's limits, as a slice was granted under them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Terms {
    user_limit: i64,
    key_limit: Option<i64>,
    user_usd: Option<i64>,
    key_usd: Option<i64>,
    payg: bool,
}

impl Terms {
    fn of(a: &Account) -> Terms {
        Terms {
            user_limit: a.user_limit,
            key_limit: a.key_limit,
            user_usd: a.user_usd,
            key_usd: a.key_usd,
            payg: a.payg,
        }
    }
}

/// Milliseconds since the Unix epoch (0 before it).
fn wall_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The part of `x` a slice holds for `a`: money only under a money limit.
fn drawn(a: &Account, x: Amount) -> Amount {
    Amount {
        tokens: x.tokens,
        micros: if a.money_limited() { x.micros } else { 0 },
    }
}

impl Slice {
    /// Forgets the room and arrivals of an epoch given up: they may have
    /// been released in the database, and other replicas may have spent
    /// them. The calls in flight stay counted.
    fn refresh(&mut self, epoch: u64) {
        if self.epoch != epoch {
            *self = Slice {
                inflight: self.inflight,
                pending: self.pending,
                last_used: self.last_used,
                epoch,
                ..Slice::default()
            };
        }
    }

    fn avail(&self, a: &Account) -> Avail {
        Avail {
            tokens: self.room.tokens.max(0),
            micros: a.money_limited().then(|| self.room.micros.max(0)),
        }
    }

    /// Admits the call against the slice: with the whole wanted cap unless
    /// `lowered` allows a smaller one.
    fn take(
        &mut self,
        a: &Account,
        ask: &Ask,
        lowered: bool,
    ) -> Option<(Amount, Option<i64>, Avail)> {
        if self.arrivals <= 0 || self.terms != Some(Terms::of(a)) {
            return None;
        }
        let avail = self.avail(a);
        match ask.decide(avail) {
            Ok((amount, cap)) if lowered || cap.is_none_or(|c| c >= ask.wanted) => {
                let d = drawn(a, amount);
                self.arrivals -= 1;
                self.room.tokens -= d.tokens;
                self.room.micros -= d.micros;
                self.last_used = Some(Instant::now());
                Some((amount, cap, plus(avail, self.outside)))
            }
            _ => None,
        }
    }
}

impl SliceCell {
    fn state(&self) -> MutexGuard<'_, Slice> {
        lock(&self.state)
    }

    /// Admits the call against the slice. `fast`: without the slice's turn
    /// to grow, which a call waiting for its own grant holds (the room it
    /// asked for is its own, not for calls that came after).
    fn grant(
        &self,
        ask: &Ask,
        a: &Account,
        lowered: bool,
        fast: bool,
        epoch: u64,
    ) -> Option<Grant> {
        let mut s = self.state();
        s.refresh(epoch);
        if fast && s.pending {
            return None;
        }
        let (reserved, cap, avail) = s.take(a, ask, lowered)?;
        Some(Grant {
            reserved,
            cap,
            avail,
            slice: None,
            epoch,
        })
    }

    /// What to give back: all the room and unused arrivals.
    fn empty(&self, s: &mut Slice) -> Option<SliceReturn> {
        let back = SliceReturn {
            user_id: self.key.user_id,
            key_id: self.key.key_id,
            period: self.key.period.to_string(),
            tokens: s.room.tokens.max(0),
            micros: s.room.micros.max(0),
            rate_secs: s.arrivals.max(0) as f64 * s.rate_iv,
        };
        s.room = Amount::default();
        s.arrivals = 0;
        (back.tokens > 0 || back.micros > 0 || back.rate_secs > 0.0).then_some(back)
    }
}

impl Quotas {
    /// In-memory quotas holding this period's `totals` and every user's
    /// prepaid credit left; `store` (when given) is where new credit entries
    /// are read from, after entry `credits_seen`.
    pub fn local(
        period: &str,
        totals: &[crate::db::usage::PeriodTotal],
        credits: &[(i64, i64)],
        store: Option<Store>,
        credits_seen: i64,
    ) -> Quotas {
        Quotas::Local {
            ledger: Ledger::new(period, totals, credits),
            limits: RateLimits::default(),
            store,
            credits_seen: AtomicI64::new(credits_seen),
        }
    }

    /// Quotas in `store`, shared with every replica on it; this replica's
    /// slices expire `lease` after it stops renewing them.
    pub fn shared(store: Store, lease: Duration) -> Quotas {
        use rand::Rng;
        let instance = format!("{:016x}", rand::rngs::OsRng.gen::<u64>());
        Quotas::Shared(Shared {
            store,
            instance: Mutex::new(instance.into()),
            epoch: Default::default(),
            renewed: (
                AtomicU64::new(0),
                AtomicU64::new(wall_ms(SystemTime::now())),
            ),
            base: Instant::now(),
            abandoning: Mutex::new(()),
            lease,
            slices: Default::default(),
            unreturned: Default::default(),
        })
    }

    /// Reads the credit ledger entries made since the last look (by this
    /// server, another process or the CLI) into the in-memory ledger. Shared
    /// quotas read credit at every grant and need nothing here.
    pub async fn sync_credits(&self) -> DbResult<()> {
        let Quotas::Local {
            ledger,
            store: Some(store),
            credits_seen,
            ..
        } = self
        else {
            return Ok(());
        };
        let after = credits_seen.load(Ordering::SeqCst);
        let entries = store.credit_entries_after(after).await?;
        for (id, user, micros) in entries {
            // Two syncs at once: only the first to move the mark applies an entry.
            if credits_seen
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |seen| {
                    (id > seen).then_some(id)
                })
                .is_ok()
            {
                ledger.add_credit(user, micros);
            }
        }
        Ok(())
    }

    /// Background upkeep while the server runs: in memory, new credit
    /// entries; shared, the leases of this replica's slices, idle slices
    /// given back, and those of replicas that died cleared.
    pub async fn maintain(m: Arc<crate::state::Metering>) {
        match &m.quotas {
            Quotas::Local { store: None, .. } => {}
            Quotas::Local { .. } => {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut failing = false;
                loop {
                    tick.tick().await;
                    let r = m.quotas.sync_credits().await;
                    failing = report(r, failing, "cannot read new credit entries");
                }
            }
            Quotas::Shared(sh) => {
                let renew_every =
                    (sh.lease / 4).clamp(Duration::from_millis(250), Duration::from_secs(30));
                let mut tick = tokio::time::interval(SWEEP);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut renewed = Instant::now();
                let (mut renew_failing, mut return_failing) = (false, false);
                loop {
                    tick.tick().await;
                    sh.abandon_if_lapsed();
                    let period = super::period_of(m.clock.now());
                    let r = sh.give_back(|k, s| {
                        s.inflight == 0
                            && (*k.period != *period
                                || s.last_used.is_none_or(|t| t.elapsed() >= IDLE))
                    });
                    return_failing = report(
                        r.await,
                        return_failing,
                        "cannot give idle quota slices back",
                    );
                    if renewed.elapsed() >= renew_every {
                        renewed = Instant::now();
                        let wall = SystemTime::now();
                        let r = sh
                            .store
                            .renew_reservations(sh.instance().to_string(), sh.lease.as_secs_f64())
                            .await;
                        if r.is_ok() {
                            sh.renewed_at(renewed, wall);
                        }
                        renew_failing = report(r, renew_failing, "cannot renew reservation leases");
                    }
                }
            }
        }
    }

    /// Gives every slice back (at shutdown, once no call is in flight).
    pub async fn give_back_all(&self) -> DbResult<()> {
        match self {
            Quotas::Shared(sh) => sh.give_back(|_, _| true).await,
            Quotas::Local { .. } => Ok(()),
        }
    }

    /// Counts the call against the user's requests per minute, then reserves
    /// what `ask` decides — atomically against every other call of the user.
    pub async fn admit(
        &self,
        a: &Account,
        rpm: i64,
        ask: &Ask,
        period: &str,
    ) -> DbResult<Result<Grant, Refusal>> {
        match self {
            Quotas::Local { ledger, limits, .. } => {
                if let Err(wait) = limits.check(a.user_id, rpm) {
                    return Ok(Err(Refusal::Rate(wait)));
                }
                let mut seen = Avail::default();
                let r = ledger.reserve(a, period, |avail| {
                    seen = avail;
                    ask.decide(avail)
                });
                Ok(match r {
                    Ok((reserved, cap)) => Ok(Grant {
                        reserved,
                        cap,
                        avail: seen,
                        slice: None,
                        epoch: 0,
                    }),
                    Err(avail) => Err(Refusal::Quota(avail)),
                })
            }
            Quotas::Shared(sh) => {
                // Counted in flight from here; a refusal, an error or a
                // client gone mid-admission (this future dropped) uncounts
                // it, a grant hands it to the call's settlement.
                let entered = Entered(sh.enter(a, period));
                match sh.admit(&entered.0, a, rpm, ask).await {
                    Ok(Ok(mut g)) => {
                        g.slice = Some(entered.hand_over());
                        Ok(Ok(g))
                    }
                    other => other,
                }
            }
        }
    }

    /// Releases a call's reservation and charges what it used; returns what
    /// the account may still use (as far as this instance can tell without
    /// waiting for the database), the slice's charge for the call's record,
    /// and, when a short slice gives its room straight back, that return in
    /// flight (the caller awaits it before answering, so the client's next
    /// call, on any replica, finds the room).
    pub fn settle(
        &self,
        a: &Account,
        period: &str,
        grant: &Grant,
        charged: Amount,
    ) -> (
        Avail,
        Option<SliceCharge>,
        Option<tokio::task::JoinHandle<()>>,
    ) {
        match (self, &grant.slice) {
            (Quotas::Shared(sh), Some(cell)) => sh.settle(cell, a, grant, charged),
            (Quotas::Local { ledger, .. }, _) => (
                ledger.settle(a, period, grant.reserved, charged),
                None,
                None,
            ),
            (Quotas::Shared(_), None) => (Avail::default(), None, None),
        }
    }

    /// The user's balance this period, the key's when one is named, and the
    /// user's prepaid credit.
    pub async fn balances(
        &self,
        user_id: i64,
        key_id: Option<i64>,
        period: &str,
    ) -> DbResult<(Balance, Option<Balance>, Credit)> {
        match self {
            Quotas::Local { ledger, .. } => Ok((
                ledger.user(user_id, period),
                key_id.map(|k| ledger.key(k, period)),
                ledger.credit(user_id),
            )),
            Quotas::Shared(sh) => {
                let b = sh.store.held(user_id, key_id, period.to_owned()).await?;
                // What this replica's slices hold for calls to come is not
                // reserved by any call; other replicas' idle slices still
                // count until they give them back (within about a second).
                let (user_room, key_room) = sh.idle_room(user_id, key_id, period);
                let bal = |h: crate::db::quota::Held, room: Amount| Balance {
                    used: h.used,
                    reserved: (h.reserved - room.tokens).max(0),
                    usd_used: h.usd_used,
                    usd_reserved: (h.usd_reserved - room.micros).max(0),
                };
                Ok((
                    bal(b.user, user_room),
                    b.key.map(|k| bal(k, key_room)),
                    Credit {
                        left: b.credit_left,
                        reserved: (b.usd_held_all - user_room.micros).max(0),
                    },
                ))
            }
        }
    }
}

/// A return on its way; left for the next sweep if it does not arrive.
struct Unreturned(Option<SliceReturn>, Arc<Mutex<Vec<SliceReturn>>>);

impl Drop for Unreturned {
    fn drop(&mut self) {
        if let Some(back) = self.0.take() {
            lock(&self.1).push(back);
        }
    }
}

/// A slice's `pending` flag, cleared however the growing call ends.
struct Pending<'a>(&'a SliceCell);

impl<'a> Pending<'a> {
    fn set(cell: &'a SliceCell) -> Pending<'a> {
        cell.state().pending = true;
        Pending(cell)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.state().pending = false;
    }
}

/// A call counted in its slice's `inflight` until it is admitted.
struct Entered(Arc<SliceCell>);

impl Entered {
    /// The slice, still counted: the call's settlement uncounts it.
    fn hand_over(self) -> Arc<SliceCell> {
        let me = std::mem::ManuallyDrop::new(self);
        me.0.clone()
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        self.0.state().inflight -= 1;
    }
}

/// Logs a background step's failure once, and its recovery; returns whether
/// it is failing now.
fn report(r: DbResult<()>, failing: bool, what: &str) -> bool {
    match (r, failing) {
        (Ok(()), true) => {
            tracing::info!("{what}: working again");
            false
        }
        (Err(e), false) => {
            tracing::warn!(error = %e, "{what}");
            true
        }
        (r, _) => r.is_err(),
    }
}

impl Shared {
    fn instance(&self) -> Arc<str> {
        lock(&self.instance).clone()
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Notes a lease renewal that succeeded, begun at `at` (`wall`).
    fn renewed_at(&self, at: Instant, wall: SystemTime) {
        let nanos = at.saturating_duration_since(self.base).as_nanos() as u64;
        self.renewed.0.fetch_max(nanos, Ordering::AcqRel);
        self.renewed.1.fetch_max(wall_ms(wall), Ordering::AcqRel);
    }

    /// The time since the last renewal that succeeded, by the clock that
    /// says longer.
    fn since_renewed(&self) -> Duration {
        let mono = (self.base.elapsed().as_nanos() as u64)
            .saturating_sub(self.renewed.0.load(Ordering::Acquire));
        let wall =
            wall_ms(SystemTime::now()).saturating_sub(self.renewed.1.load(Ordering::Acquire));
        Duration::from_nanos(mono).max(Duration::from_millis(wall))
    }

    /// Gives every slice up when its lease may have lapsed: no renewal
    /// began within seven eighths of the lease, by either clock (a stopped
    /// process or a suspended machine: the monotonic clock may stand still
    /// while the wall clock and the database's go on; a database out of
    /// reach). Other replicas release lapsed slices and may spend their room,
    /// so using it would overspend. The replica forgets what its slices hold
    /// and takes a new name: rows under the old one are no longer renewed
    /// and lapse, so whatever is left in them goes back within the lease.
    /// Calls still in flight settle without putting room back or moving
    /// their charge out of a reservation; their usage is recorded as always.
    fn abandon_if_lapsed(&self) {
        let limit = self.lease - self.lease / 8;
        if self.since_renewed() < limit {
            return;
        }
        let _one = lock(&self.abandoning);
        let gap = self.since_renewed();
        if gap < limit {
            return; // another call gave them up meanwhile
        }
        use rand::Rng;
        let name: Arc<str> = format!("{:016x}", rand::rngs::OsRng.gen::<u64>()).into();
        let old = std::mem::replace(&mut *lock(&self.instance), name.clone());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.renewed_at(Instant::now(), SystemTime::now());
        tracing::warn!(
            gap_secs = gap.as_secs_f64(),
            lease_secs = self.lease.as_secs_f64(),
            old_instance = %old,
            instance = %name,
            "no quota lease renewal for most of the lease (the process stopped, or the database was out of reach): \
             this replica's quota slices are given up and new ones taken as calls come"
        );
    }

    /// The slice for the call, counted as in use until the call settles or
    /// is refused (an idle sweep does not take it meanwhile).
    fn enter(&self, a: &Account, period: &str) -> Arc<SliceCell> {
        let mut map = lock(&self.slices);
        let probe = SliceKey {
            user_id: a.user_id,
            key_id: a.key_id,
            period: Arc::from(period),
        };
        let cell = map
            .entry(probe.clone())
            .or_insert_with(|| {
                Arc::new(SliceCell {
                    key: probe,
                    state: Default::default(),
                    growing: Default::default(),
                })
            })
            .clone();
        cell.state().inflight += 1;
        cell
    }

    async fn admit(
        &self,
        cell: &Arc<SliceCell>,
        a: &Account,
        rpm: i64,
        ask: &Ask,
    ) -> DbResult<Result<Grant, Refusal>> {
        self.abandon_if_lapsed();
        let epoch = self.epoch();
        if let Some(g) = cell.grant(ask, a, false, true, epoch) {
            return Ok(Ok(g));
        }
        let _turn = cell.growing.lock().await;
        // Another call may have grown the slice meanwhile.
        let epoch = self.epoch();
        if let Some(g) = cell.grant(ask, a, false, false, epoch) {
            return Ok(Ok(g));
        }
        let terms = Terms::of(a);
        let instance = self.instance();
        let stale = {
            let mut s = cell.state();
            s.refresh(epoch);
            match s.terms {
                Some(t) if t != terms => cell.empty(&mut s),
                _ => None,
            }
        };
        if let Some(back) = stale {
            // Granted under other limits: given back before a new grant.
            self.store
                .return_slices(instance.to_string(), vec![back])
                .await?;
        }
        let full = drawn(a, ask.full());
        let growth = {
            let s = cell.state();
            let room = s.room;
            Growth {
                user_id: a.user_id,
                key_id: a.key_id,
                period: cell.key.period.to_string(),
                user_limit: a.user_limit,
                key_limit: a.key_limit,
                user_usd: a.user_usd,
                key_usd: a.key_usd,
                payg: a.payg,
                rpm,
                arrivals: if s.arrivals > 0 {
                    0
                } else {
                    (rpm / 16).clamp(1, HEADROOM_CALLS)
                },
                need: (full.tokens - room.tokens).max(0),
                want: (full.tokens.saturating_mul(HEADROOM_CALLS) - room.tokens).max(0),
                need_usd: (full.micros - room.micros).max(0),
                want_usd: (full.micros.saturating_mul(HEADROOM_CALLS) - room.micros).max(0),
                instance: instance.to_string(),
                lease_secs: self.lease.as_secs_f64(),
            }
        };
        let (want, want_usd, iv) = (growth.want, growth.want_usd, 60.0 / rpm.max(1) as f64);
        let _pending = Pending::set(cell);
        // Granted on a task of its own: a client that goes away meanwhile
        // drops this future, and the grant still lands in the slice.
        let (store, c) = (self.store.clone(), cell.clone());
        let money = a.money_limited();
        let grown = tokio::spawn(async move {
            let g: Grown = store.grow(growth).await?;
            let mut s = c.state();
            if s.epoch != epoch {
                // Given up while the grant was on its way: its row is under
                // the old name and lapses.
                return Ok(g);
            }
            s.room.tokens += g.tokens;
            s.room.micros += g.micros;
            s.arrivals += g.arrivals;
            if g.arrivals > 0 {
                s.rate_iv = iv;
            }
            s.outside = Avail {
                tokens: (g.avail - g.tokens).max(0),
                micros: g.avail_usd.map(|m| (m - g.micros).max(0)),
            };
            s.tight = g.tokens < want || (money && g.micros < want_usd);
            s.terms = Some(terms);
            Ok::<_, crate::db::DbError>(g)
        })
        .await
        .map_err(|_| crate::db::DbError::Task("the quota grant task ended".into()))??;
        if let Some(wait) = grown.wait_secs {
            if cell.state().arrivals <= 0 {
                return Ok(Err(Refusal::Rate(wait.max(1) as u64)));
            }
        }
        if let Some(g) = cell.grant(ask, a, true, false, epoch) {
            return Ok(Ok(g));
        }
        let (left, back) = {
            let mut s = cell.state();
            let left = plus(s.avail(a), s.outside);
            (
                left,
                if s.tight {
                    cell.empty_room(&mut s)
                } else {
                    None
                },
            )
        };
        if let Some(back) = back {
            // Too little for this call: what the slice holds goes back for
            // the user's other calls, here or on other replicas.
            self.store
                .return_slices(instance.to_string(), vec![back])
                .await?;
        }
        Ok(Err(Refusal::Quota(left)))
    }

    /// What this replica's slices hold unused for `user_id` (and for the key)
    /// in `period`: counted as reserved in the database, not by any call.
    fn idle_room(&self, user_id: i64, key_id: Option<i64>, period: &str) -> (Amount, Amount) {
        let (mut user, mut key) = (Amount::default(), Amount::default());
        let epoch = self.epoch();
        for (k, cell) in lock(&self.slices).iter() {
            if k.user_id != user_id || &*k.period != period {
                continue;
            }
            let room = {
                let s = cell.state();
                if s.epoch != epoch {
                    continue;
                }
                s.room
            };
            let room = Amount {
                tokens: room.tokens.max(0),
                micros: room.micros.max(0),
            };
            user.tokens += room.tokens;
            user.micros += room.micros;
            if key_id.is_some() && k.key_id == key_id {
                key = room;
            }
        }
        (user, key)
    }

    fn settle(
        &self,
        cell: &Arc<SliceCell>,
        a: &Account,
        grant: &Grant,
        charged: Amount,
    ) -> (
        Avail,
        Option<SliceCharge>,
        Option<tokio::task::JoinHandle<()>>,
    ) {
        let (r, c) = (drawn(a, grant.reserved), drawn(a, charged));
        let instance = self.instance();
        let mut s = cell.state();
        s.refresh(self.epoch());
        if s.epoch != grant.epoch {
            // Admitted against a slice given up since (see
            // `abandon_if_lapsed`): its reservation is in no row this
            // replica renews, and nothing goes back into the new slice.
            s.inflight -= 1;
            return (plus(s.avail(a), s.outside), None, None);
        }
        let charge = (c.tokens > 0 || c.micros > 0).then(|| SliceCharge {
            instance: instance.clone(),
            period: cell.key.period.clone(),
            tokens: c.tokens,
            micros: c.micros,
        });
        s.room.tokens += r.tokens - c.tokens;
        s.room.micros += r.micros - c.micros;
        s.inflight -= 1;
        let left = plus(s.avail(a), s.outside);
        if !s.tight {
            return (left, charge, None);
        }
        // Short of allowance: what the slice holds unused goes back at once,
        // for the user's calls on other replicas; while the return is on
        // its way no grant of this slice runs, so none misses the room.
        if s.room.tokens <= 0 && s.room.micros <= 0 {
            return (left, charge, None);
        }
        drop(s);
        let (store, instance, cell) = (self.store.clone(), instance.to_string(), cell.clone());
        let unreturned = self.unreturned.clone();
        let task = tokio::spawn(async move {
            let _turn = cell.growing.lock().await;
            let back = {
                let mut s = cell.state();
                if !s.tight {
                    return;
                }
                cell.empty_room(&mut s)
            };
            let Some(back) = back else {
                return;
            };
            // Out of the slice, not yet in the database: kept for the next
            // sweep unless the return completes (a task cut short at
            // shutdown, a failed return).
            let mut keep = Unreturned(Some(back.clone()), unreturned);
            match store.return_slices(instance, vec![back]).await {
                Ok(()) => keep.0 = None,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot give a settled call's unused quota back")
                }
            }
        });
        (left, charge, Some(task))
    }

    /// Gives back the slices `pick` chooses (and earlier returns that
    /// failed); a slice given back whole is forgotten.
    async fn give_back(&self, pick: impl Fn(&SliceKey, &Slice) -> bool) -> DbResult<()> {
        let mut back = std::mem::take(&mut *lock(&self.unreturned));
        let (epoch, instance) = (self.epoch(), self.instance());
        lock(&self.slices).retain(|k, cell| {
            let mut s = cell.state();
            s.refresh(epoch);
            if !pick(k, &s) {
                return true;
            }
            back.extend(cell.empty(&mut s));
            s.inflight > 0
        });
        if back.is_empty() {
            return Ok(());
        }
        let r = self
            .store
            .return_slices(instance.to_string(), back.clone())
            .await;
        if r.is_err() {
            lock(&self.unreturned).extend(back);
        }
        r
    }
}

impl SliceCell {
    /// The room alone (the arrivals stay): a short slice after a settle.
    fn empty_room(&self, s: &mut Slice) -> Option<SliceReturn> {
        let back = SliceReturn {
            user_id: self.key.user_id,
            key_id: self.key.key_id,
            period: self.key.period.to_string(),
            tokens: s.room.tokens.max(0),
            micros: s.room.micros.max(0),
            rate_secs: 0.0,
        };
        s.room.tokens -= back.tokens;
        s.room.micros -= back.micros;
        (back.tokens > 0 || back.micros > 0).then_some(back)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(t: i64) -> Avail {
        Avail {
            tokens: t,
            micros: None,
        }
    }

    fn amount(tokens: i64, micros: i64) -> Amount {
        Amount { tokens, micros }
    }

    const FREE: Price = Price {
        prompt: 0,
        completion: 0,
    };

    #[test]
    fn decide_reserves_the_prompt_and_a_cap_per_choice() {
        let ask = Ask {
            prompt: 10,
            wanted: 100,
            n: 2,
            min_cap: 16,
            embeddings: false,
            price: FREE,
        };
        assert_eq!(ask.decide(tokens(1000)), Ok((amount(210, 0), Some(100))));
        // Not room for the whole cap: a smaller one, down to min_cap.
        assert_eq!(ask.decide(tokens(60)), Ok((amount(60, 0), Some(25))));
        assert_eq!(ask.decide(tokens(41)), Err(tokens(41)));
        assert_eq!(ask.decide(tokens(9)), Err(tokens(9)));
        let emb = Ask {
            embeddings: true,
            ..ask
        };
        assert_eq!(emb.decide(tokens(10)), Ok((amount(10, 0), None)));
        assert_eq!(emb.decide(tokens(9)), Err(tokens(9)));
        // A wanted cap below min_cap still fits when it fits whole.
        let small = Ask { wanted: 5, ..ask };
        assert_eq!(small.decide(tokens(20)), Ok((amount(20, 0), Some(5))));
    }

    #[test]
    fn money_lowers_the_cap_and_refuses_what_it_cannot_pay() {
        // $2 per million prompt tokens, $10 per million completion tokens.
        let ask = Ask {
            prompt: 1000,
            wanted: 1000,
            n: 1,
            min_cap: 16,
            embeddings: false,
            price: Price::per_mtok(2.0, 10.0),
        };
        let money = |m| Avail {
            tokens: 1_000_000,
            micros: Some(m),
        };
        // Prompt 2,000 µ$, the whole cap 10,000 µ$.
        assert_eq!(
            ask.decide(money(50_000)),
            Ok((amount(2000, 12_000), Some(1000)))
        );
        // $0.007 pays the prompt and 500 completion tokens.
        assert_eq!(
            ask.decide(money(7_000)),
            Ok((amount(1500, 7_000), Some(500)))
        );
        // Not even min_cap, or not the prompt: refused.
        assert_eq!(ask.decide(money(2_100)), Err(money(2_100)));
        assert_eq!(ask.decide(money(1)), Err(money(1)));
        // Without a money limit the money is still counted, never limiting.
        assert_eq!(
            ask.decide(tokens(1_000_000)),
            Ok((amount(2000, 12_000), Some(1000)))
        );
        // A free model under a money limit: only tokens bind.
        let free = Ask { price: FREE, ..ask };
        assert_eq!(free.decide(money(0)), Ok((amount(2000, 0), Some(1000))));
    }
}
