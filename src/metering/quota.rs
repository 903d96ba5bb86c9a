//! Admission: the requests-per-minute check and the reservation of a call, in
//! one step, and the balances they are decided on.
//!
//! One instance (SQLite) keeps both in memory: the [`Ledger`] and the
//! [`RateLimits`]. Replicas on PostgreSQL share them through the database
//! (`Quotas::Shared`), so a user whose calls land on different replicas still
//! gets exactly their plan. Either way the decision itself is [`Ask::decide`].

use super::ledger::{Account, Balance, Ledger};
use super::limits::RateLimits;
use crate::db::quota::Admission;
use crate::db::{DbResult, Store};
use std::time::Duration;

/// What a call asks to reserve (SPEC §6): its prompt estimate plus a cap on
/// completion tokens for each of its `n` choices.
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
}

impl Ask {
    /// The reservation for `avail` tokens left, and the completion cap to send
    /// (`None` for embeddings); `Err(avail)` when the call does not fit.
    pub fn decide(&self, avail: i64) -> Result<(i64, Option<i64>), i64> {
        if avail < self.prompt {
            return Err(avail);
        }
        if self.embeddings {
            return Ok((self.prompt, None));
        }
        let n = self.n.max(1);
        let cap = self.wanted.min((avail - self.prompt) / n);
        if cap < self.wanted && cap < self.min_cap {
            return Err(avail);
        }
        Ok((self.prompt + cap * n, Some(cap)))
    }
}

/// A reservation taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub reserved: i64,
    pub cap: Option<i64>,
    /// What the account had left before this reservation.
    pub avail: i64,
    /// The reservation's row when it lives in the database.
    pub hold: Option<i64>,
}

/// Why a call was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over the plan's requests per minute: seconds to wait.
    Rate(u64),
    /// Not enough tokens left: how many there are.
    Quota(i64),
}

pub enum Quotas {
    /// One instance: balances and rates in this process's memory.
    Local { ledger: Ledger, limits: RateLimits },
    /// Replicas: balances, reservations and rates in the database.
    Shared(Shared),
}

/// Quotas kept in a database that replicas share.
pub struct Shared {
    store: Store,
    /// This replica, as named on its reservations.
    instance: String,
    lease: Duration,
}

impl Quotas {
    /// In-memory quotas holding this period's `totals` (user, key or 0, tokens).
    pub fn local(period: &str, totals: &[crate::db::usage::PeriodTotal]) -> Quotas {
        Quotas::Local {
            ledger: Ledger::new(period, totals),
            limits: RateLimits::default(),
        }
    }

    /// Quotas in `store`, shared with every replica on it; this replica's
    /// reservations expire `lease` after it stops renewing them.
    pub fn shared(store: Store, lease: Duration) -> Quotas {
        use rand::Rng;
        let instance = format!("{:016x}", rand::rngs::OsRng.gen::<u64>());
        Quotas::Shared(Shared {
            store,
            instance,
            lease,
        })
    }

    /// Keeps this replica's reservations alive while it runs and clears
    /// those of replicas that died (shared quotas only; returns at once
    /// otherwise).
    pub async fn keep_leases(m: std::sync::Arc<crate::state::Metering>) {
        let Quotas::Shared(sh) = &m.quotas else {
            return;
        };
        let every = (sh.lease / 4).clamp(Duration::from_millis(250), Duration::from_secs(30));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            let r = sh
                .store
                .renew_reservations(sh.instance.clone(), sh.lease.as_secs_f64())
                .await;
            match (r, failing) {
                (Ok(()), true) => {
                    failing = false;
                    tracing::info!("reservation leases renewed again");
                }
                (Err(e), false) => {
                    failing = true;
                    tracing::warn!(error = %e, "cannot renew reservation leases");
                }
                _ => {}
            }
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
            Quotas::Local { ledger, limits } => {
                if let Err(wait) = limits.check(a.user_id, rpm) {
                    return Ok(Err(Refusal::Rate(wait)));
                }
                let mut seen = 0;
                let r = ledger.reserve(a, period, |avail| {
                    seen = avail;
                    ask.decide(avail)
                });
                Ok(match r {
                    Ok((reserved, cap)) => Ok(Grant {
                        reserved,
                        cap,
                        avail: seen,
                        hold: None,
                    }),
                    Err(avail) => Err(Refusal::Quota(avail)),
                })
            }
            Quotas::Shared(sh) => {
                let store = sh.store.clone();
                let admission = Admission {
                    user_id: a.user_id,
                    key_id: a.key_id,
                    user_limit: a.user_limit,
                    key_limit: a.key_limit,
                    period: period.to_owned(),
                    rpm,
                    prompt: ask.prompt,
                    wanted: ask.wanted,
                    n: ask.n,
                    min_cap: ask.min_cap,
                    embeddings: ask.embeddings,
                    instance: sh.instance.clone(),
                    lease_secs: sh.lease.as_secs_f64(),
                };
                // Decided on a task of its own: a client that goes away while
                // the database decides drops this future, and then the task
                // releases the reservation that nobody would settle.
                let (tx, rx) = tokio::sync::oneshot::channel();
                tokio::spawn(async move {
                    let r = store.admit(admission).await;
                    if let Err(Ok(crate::db::quota::Admitted {
                        hold: Some(hold), ..
                    })) = tx.send(r)
                    {
                        if let Err(e) = store.release_reservation(hold).await {
                            tracing::warn!(error = %e, "cannot release an abandoned reservation");
                        }
                    }
                });
                let d = rx
                    .await
                    .map_err(|_| crate::db::DbError::Task("the admission task ended".into()))??;
                Ok(match (d.wait_secs, d.hold) {
                    (Some(wait), _) => Err(Refusal::Rate(wait.max(1) as u64)),
                    (None, Some(hold)) => Ok(Grant {
                        reserved: d.reserved,
                        cap: d.cap,
                        avail: d.avail,
                        hold: Some(hold),
                    }),
                    (None, None) => Err(Refusal::Quota(d.avail)),
                })
            }
        }
    }

    /// Releases a call's reservation and charges what it used; returns what
    /// the account may still use (as far as this instance can tell without
    /// waiting for the database).
    pub fn settle(&self, a: &Account, period: &str, grant: &Grant, charged: i64) -> i64 {
        match self {
            Quotas::Local { ledger, .. } => ledger.settle(a, period, grant.reserved, charged),
            // The charge replaces the reservation when the usage writer
            // writes the call's record; until then the tokens stay held.
            Quotas::Shared(_) => (grant.avail - charged).max(0),
        }
    }

    /// Shared quotas: shrinks a settled call's reservation to its charge at
    /// once, on a task of its own, so the tokens it does not use are free for
    /// the next call before the usage writer replaces it with the charge.
    /// `None` for in-memory quotas, which settle in `settle`.
    pub fn shrink(&self, grant: &Grant, charged: i64) -> Option<tokio::task::JoinHandle<()>> {
        let (Quotas::Shared(sh), Some(hold)) = (self, grant.hold) else {
            return None;
        };
        if charged >= grant.reserved {
            return None;
        }
        // A database round trip per call: worth it only when the unused
        // tokens matter to the next call, that is when what was left beside
        // this reservation is less than twice it (a large cap near the end of
        // the allowance, as agents ask). Otherwise the writer's commit, tens
        // of milliseconds later, releases them; the invariant holds either way.
        if grant.avail - grant.reserved >= 2 * grant.reserved {
            return None;
        }
        let store = sh.store.clone();
        Some(tokio::spawn(async move {
            if let Err(e) = store.shrink_reservation(hold, charged).await {
                tracing::warn!(error = %e, "cannot release a settled call's unused tokens");
            }
        }))
    }

    /// The user's balance this period, and the key's when one is named.
    pub async fn balances(
        &self,
        user_id: i64,
        key_id: Option<i64>,
        period: &str,
    ) -> DbResult<(Balance, Option<Balance>)> {
        match self {
            Quotas::Local { ledger, .. } => Ok((
                ledger.user(user_id, period),
                key_id.map(|k| ledger.key(k, period)),
            )),
            Quotas::Shared(sh) => {
                let (u, k) = sh.store.held(user_id, key_id, period.to_owned()).await?;
                let b = |h: crate::db::quota::Held| Balance {
                    used: h.used,
                    reserved: h.reserved,
                };
                Ok((b(u), k.map(b)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decide_reserves_the_prompt_and_a_cap_per_choice() {
        let ask = Ask {
            prompt: 10,
            wanted: 100,
            n: 2,
            min_cap: 16,
            embeddings: false,
        };
        assert_eq!(ask.decide(1000), Ok((210, Some(100))));
        // Not room for the whole cap: a smaller one, down to min_cap.
        assert_eq!(ask.decide(60), Ok((60, Some(25))));
        assert_eq!(ask.decide(41), Err(41));
        assert_eq!(ask.decide(9), Err(9));
        let emb = Ask {
            embeddings: true,
            ..ask
        };
        assert_eq!(emb.decide(10), Ok((10, None)));
        assert_eq!(emb.decide(9), Err(9));
        // A wanted cap below min_cap still fits when it fits whole.
        let small = Ask { wanted: 5, ..ask };
        assert_eq!(small.decide(20), Ok((20, Some(5))));
    }
}
