//! Quotas shared by replicas (SPEC §11): admission, balances and the leases
//! of reservations, in the database. Only PostgreSQL shares them (`pg/quota.rs`
//! and migrations/postgres/V5); one SQLite instance keeps its quotas in memory
//! (`metering::quota`), so these operations refuse on SQLite.

use super::store::{Backend, Store};
use super::{DbError, DbResult};

/// One call asking to be admitted (the arguments of `tollgate_admit`).
#[derive(Debug, Clone)]
pub struct Admission {
    pub user_id: i64,
    pub key_id: Option<i64>,
    pub user_limit: i64,
    /// The key's own monthly limit, if it has one.
    pub key_limit: Option<i64>,
    pub period: String,
    pub rpm: i64,
    pub prompt: i64,
    pub wanted: i64,
    pub n: i64,
    pub min_cap: i64,
    pub embeddings: bool,
    /// The replica taking the reservation, which renews its lease.
    pub instance: String,
    pub lease_secs: f64,
}

/// What the database decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// The reservation's row, when one was taken.
    pub hold: Option<i64>,
    pub reserved: i64,
    pub cap: Option<i64>,
    /// Tokens left before this reservation.
    pub avail: i64,
    /// Set when the rate limit refused: seconds to wait.
    pub wait_secs: Option<i64>,
}

/// Tokens charged and held this period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    pub used: i64,
    pub reserved: i64,
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

    /// Counts a call against the user's requests per minute and reserves what
    /// the plan allows, atomically against every replica.
    pub async fn admit(&self, a: Admission) -> DbResult<Admitted> {
        match &self.backend {
            Backend::Sqlite(_) => {
                let _ = a;
                Err(unshared())
            }
            Backend::Postgres(pg) => pg.admit(&a).await,
        }
    }

    /// The user's and (when named) the key's tokens charged in `period` and
    /// held by live reservations, read at one moment.
    pub async fn held(
        &self,
        user_id: i64,
        key_id: Option<i64>,
        period: String,
    ) -> DbResult<(Held, Option<Held>)> {
        match &self.backend {
            Backend::Sqlite(_) => {
                let _ = (user_id, key_id, period);
                Err(unshared())
            }
            Backend::Postgres(pg) => pg.held(user_id, key_id, &period).await,
        }
    }

    /// Renews the leases of `instance`'s live reservations for `lease_secs`
    /// and deletes expired ones (a dead replica's).
    pub async fn renew_reservations(&self, instance: String, lease_secs: f64) -> DbResult<()> {
        match &self.backend {
            Backend::Sqlite(_) => {
                let _ = (instance, lease_secs);
                Err(unshared())
            }
            Backend::Postgres(pg) => pg.renew_reservations(&instance, lease_secs).await,
        }
    }

    /// Lowers a settled call's reservation to what it was charged, until the
    /// usage writer replaces it with the charge itself.
    pub async fn shrink_reservation(&self, hold: i64, charged: i64) -> DbResult<()> {
        match &self.backend {
            Backend::Sqlite(_) => {
                let _ = (hold, charged);
                Err(unshared())
            }
            Backend::Postgres(pg) => pg.shrink(hold, charged).await,
        }
    }

    /// Releases a reservation that no call will settle (its admission was
    /// abandoned by a client that went away while it was being decided).
    pub async fn release_reservation(&self, hold: i64) -> DbResult<()> {
        match &self.backend {
            Backend::Sqlite(_) => {
                let _ = hold;
                Err(unshared())
            }
            Backend::Postgres(pg) => pg.release(hold).await,
        }
    }
}
