//! `AppState`: what every handler shares — configuration, the database store,
//! the in-memory caches and the clock.

use crate::auth::cache::CredentialCache;
use crate::auth::jwt::JwtKeys;
use crate::auth::throttle::LoginThrottle;
use crate::config::Config;
use crate::db::Store;
use crate::metering::{calls::CallTracker, ledger::Balance, quota::Quotas, writer::UsageWriter};
use crate::upstream::{catalog::Catalog, health::Health, providers::Providers};
use std::ops::Deref;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

pub struct Inner {
    pub config: Arc<Config>,
    /// The database: every handler and service reaches it through this.
    pub store: Store,
    pub creds: Arc<CredentialCache>,
    pub jwt: JwtKeys,
    pub throttle: LoginThrottle,
    /// Shared with the metering, which stamps periods and records with it.
    pub clock: Arc<Clock>,
    pub trusted_proxies: crate::http::extract::TrustedProxies,
    /// The client for OAuth token and userinfo calls (follows no redirects).
    pub oauth_http: reqwest::Client,
    pub providers: Arc<Providers>,
    pub catalog: Arc<Catalog>,
    pub health: Health,
    pub metering: Arc<Metering>,
}

/// The metering parts of the state: all a call's settlement needs
/// (`metering::call` takes this, not the whole state).
pub struct Metering {
    /// Requests per minute and token balances: admission and settlement.
    pub quotas: Quotas,
    pub writer: UsageWriter,
    /// Calls in flight, ended and awaited at shutdown.
    pub calls: CallTracker,
    pub clock: Arc<Clock>,
}

impl Metering {
    /// The user's balance this period, and the key's when one is named. With
    /// shared quotas a call is charged when its record is written, so this
    /// replica's pending records are written first: a client sees its own
    /// calls charged.
    pub async fn balances(
        &self,
        user_id: i64,
        key_id: Option<i64>,
        period: &str,
    ) -> crate::db::DbResult<(Balance, Option<Balance>, crate::metering::ledger::Credit)> {
        if matches!(self.quotas, Quotas::Shared(_)) {
            self.writer.flush().await;
        }
        self.quotas.balances(user_id, key_id, period).await
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Wall-clock time with an offset that tests can move (month rollover, expiry).
#[derive(Default)]
pub struct Clock {
    offset_secs: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + chrono::Duration::seconds(self.offset_secs.load(Ordering::Relaxed))
    }

    /// Moves the clock by `secs` (tests only need this; harmless otherwise).
    pub fn advance(&self, secs: i64) {
        self.offset_secs.fetch_add(secs, Ordering::Relaxed);
    }
}
