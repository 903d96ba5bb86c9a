//! Quotas shared by replicas (SPEC §11): each replica holds a *slice* of a
//! user's allowance — tokens, money and requests-per-minute arrivals taken
//! from the database in one step — and admits calls against it in memory.
//! The database counts every slice as reserved, so the replicas together
//! never hold more than the plan allows. Only PostgreSQL shares them
//! (`pg/quota.rs` and migrations/postgres/V8); one SQLite instance keeps its
//! quotas in memory (`metering::quota`), so these operations refuse on SQLite.

use super::store::{Backend, Store};
use super::{DbError, DbResult};

/// A replica asking to grow its slice of one user's (and key's) allowance
/// (the arguments of `tollgate_grow`).
#[derive(Debug, Clone, Default)]
pub struct Growth {
    pub user_id: i64,
    pub key_id: Option<i64>,
    pub period: String,
    pub user_limit: i64,
    /// The key's own monthly token limit, if it has one.
    pub key_limit: Option<i64>,
    /// The plan's `monthly_usd` (micro-dollars).
    pub user_usd: Option<i64>,
    /// The key's `monthly_usd_limit` (micro-dollars).
    pub key_usd: Option<i64>,
    /// The plan spends prepaid credit.
    pub payg: bool,
    pub rpm: i64,
    /// Arrivals (calls) to count against the requests per minute now.
    pub arrivals: i64,
    /// Tokens the waiting call needs, and what the replica would like.
    pub need: i64,
    pub want: i64,
    /// The same in micro-dollars (0 when no money limit applies).
    pub need_usd: i64,
    pub want_usd: i64,
    /// The replica growing its slice, which renews its lease.
    pub instance: String,
    pub lease_secs: f64,
}

/// What the database granted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grown {
    pub tokens: i64,
    pub micros: i64,
    pub arrivals: i64,
    /// Tokens (and micro-dollars, when limited) left before this grant.
    pub avail: i64,
    pub avail_usd: Option<i64>,
    /// Set when the rate limit refused: seconds to wait.
    pub wait_secs: Option<i64>,
}

/// What a replica gives back of its slice (unused when it fell idle).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SliceReturn {
    pub user_id: i64,
    pub key_id: Option<i64>,
    pub period: String,
    pub tokens: i64,
    pub micros: i64,
    /// Seconds of the rate limiter's clock the unused arrivals stand for.
    pub rate_secs: f64,
}

/// Charged and held this period, in tokens and micro-dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    pub used: i64,
    pub reserved: i64,
    pub usd_used: i64,
    pub usd_reserved: i64,
}

/// A user's balances as the database holds them: the user's and (when
/// named) the key's this period, and the prepaid credit left (entries minus
/// what pay-as-you-go calls were charged) with the money slices hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Balances {
    pub user: Held,
    pub key: Option<Held>,
    pub credit_left: i64,
    /// Micro-dollars held by every live slice of the user, any period.
    pub usd_held_all: i64,
}

fn unshared() -> DbError {
    DbError::Task("quotas are shared only on PostgreSQL".into())
}

impl Store {
    /// Whether replicas may share this database (its quotas live in it).
    pub fn shares_quotas(&self) -> bool {
        match &self.backend {
            Backend::Sqlite(_) => false,
            Backend::Postgres(_) => true,
        }
    }

    /// Counts arrivals against the user's requests per minute and adds what
    /// the plan allows to this replica's slice, atomically against every
    /// replica.
    pub async fn grow(&self, g: Growth) -> DbResult<Grown> {
        match &self.backend {
            Backend::Sqlite(_) => {
                let _ = g;
                Err(unshared())
            }
            Backend::Postgres(pg) => pg.grow(&g).await,
        }
    }

    /// Gives unused parts of slices back to the database.
    pub async fn return_slices(&self, instance: String, back: Vec<SliceReturn>) -> DbResult<()> {
        match &self.backend {
            Backend::Sqlite(_) => {
                let _ = (instance, back);
                Err(unshared())
            }
            Backend::Postgres(pg) => pg.return_slices(&instance, &back).await,
        }
    }

    /// The user's and key's balances, read at one moment.
    pub async fn held(
        &self,
        user_id: i64,
        key_id: Option<i64>,
        period: String,
    ) -> DbResult<Balances> {
        match &self.backend {
            Backend::Sqlite(_) => {
                let _ = (user_id, key_id, period);
                Err(unshared())
            }
            Backend::Postgres(pg) => pg.held(user_id, key_id, &period).await,
        }
    }

    /// Renews the leases of `instance`'s slices for `lease_secs` and deletes
    /// expired ones (a dead replica's).
    pub async fn renew_reservations(&self, instance: String, lease_secs: f64) -> DbResult<()> {
        match &self.backend {
            Backend::Sqlite(_) => {
                let _ = (instance, lease_secs);
                Err(unshared())
            }
            Backend::Postgres(pg) => pg.renew_reservations(&instance, lease_secs).await,
        }
    }
}
