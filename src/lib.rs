//! tollgate: a self-hosted LLM gateway and API marketplace in one binary.
//!
//! The seam tests use: [`build_state`] opens the database (migrating and, on
//! first start, seeding it) and loads the caches (awaited: the database work
//! runs on the blocking pool); [`serve`] runs the router on
//! a listener until `shutdown` resolves.

#![forbid(unsafe_code)]

pub mod auth;
pub mod check_config;
pub mod cli;
pub mod config;
pub mod db;
pub mod dialect;
pub mod error;
pub mod glob;
pub mod http;
pub mod json;
pub mod metering;
pub mod money;
pub mod server;
pub mod service;
pub mod state;
pub mod telemetry;
pub mod upstream;

use auth::cache::CredentialCache;
use auth::jwt::JwtKeys;
use config::{Config, ConfigError};
use service::accounts::{self, Bootstrap};
use state::{AppState, Clock, Inner, Metering};
use std::future::Future;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// Not `#[from]`: a source would print the same text twice in the CLI's error chain.
    #[error("database: {0}")]
    Db(db::DbError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

impl From<db::DbError> for StartError {
    fn from(e: db::DbError) -> Self {
        StartError::Db(e)
    }
}

/// Opens the database, runs pending migrations and seeds an empty one.
/// `admin_password` is `TOLLGATE_ADMIN_PASSWORD`; without it a password is
/// generated and returned in the [`Bootstrap`] to be printed once.
pub async fn open_database(
    cfg: &Config,
    admin_password: Option<String>,
) -> Result<(db::Store, Bootstrap), StartError> {
    let store = db::Store::connect(&cfg.database)?;
    let ran = store.migrate().await?;
    if ran > 0 {
        tracing::info!(migrations = ran, database = %db::Store::describe(&cfg.database), "database migrated");
    }
    let given = admin_password.as_deref().is_some_and(|p| !p.is_empty());
    let mut report = if store.needs_bootstrap().await? {
        let (password, generated) = match admin_password.filter(|p| !p.is_empty()) {
            Some(p) => (p, None),
            None => {
                let p = auth::password::generate();
                (p.clone(), Some(p))
            }
        };
        accounts::validate_password(&password)
            .map_err(|e| StartError::Other(format!("TOLLGATE_ADMIN_PASSWORD: {}", e.message)))?;
        let hash = auth::password::hash(&password).map_err(StartError::Other)?;
        let now = db::ts(chrono::Utc::now());
        accounts::bootstrap(&store, cfg, &hash, generated, &now).await?
    } else {
        Bootstrap::default()
    };
    report.admin_password_ignored = given && !report.created_admin;
    Ok((store, report))
}

/// Builds the shared state: database, credential cache, JWT keys.
pub async fn build_state(
    cfg: Config,
    admin_password: Option<String>,
) -> Result<(AppState, Bootstrap), StartError> {
    let (store, report) = open_database(&cfg, admin_password).await?;
    let secret = accounts::jwt_secret(&store, &cfg).await?;
    let creds = Arc::new(CredentialCache::load(store.clone()).await?);
    let trusted_proxies = http::extract::TrustedProxies::parse(&cfg.server.trusted_proxies);
    // One instance keeps its quotas in memory, starting from what the
    // database says was charged this period (nothing is reserved after a
    // restart); replicas keep them in the database they share.
    let quotas = if store.shares_quotas() {
        metering::quota::Quotas::shared(store.clone(), cfg.reservation_lease())
    } else {
        let period = metering::period_of(chrono::Utc::now());
        let totals = store.period_totals(period.clone()).await?;
        // Credit left = every ledger entry (read once, so the mark of the
        // last one read is exact) minus what pay-as-you-go calls spent.
        let entries = store.credit_entries_after(0).await?;
        let seen = entries.iter().map(|e| e.0).max().unwrap_or(0);
        let mut left: std::collections::HashMap<i64, i64> = Default::default();
        for (_, user, micros) in entries {
            *left.entry(user).or_default() += micros;
        }
        for (user, spent) in store.credit_spent().await? {
            *left.entry(user).or_default() -= spent;
        }
        let credits: Vec<(i64, i64)> = left.into_iter().collect();
        metering::quota::Quotas::local(&period, &totals, &credits, Some(store.clone()), seen)
    };
    telemetry::init();
    let cfg_ref = cfg.clone();
    let store_for_writer = store.clone();
    let retention_days = cfg.metering.usage_retention_days;
    let clock = Arc::new(Clock::default());
    let state = AppState(Arc::new(Inner {
        store,
        jwt: JwtKeys::new(secret.as_bytes(), cfg.auth.access_token_ttl_secs),
        config: Arc::new(cfg),
        creds,
        throttle: Default::default(),
        clock: clock.clone(),
        trusted_proxies,
        oauth_http: auth::oauth::build_http_client(),
        providers: Arc::new(upstream::providers::Providers::from_config(&cfg_ref)),
        catalog: Arc::new(upstream::catalog::Catalog::new(
            cfg_ref.routing.max_response_bytes,
        )),
        health: Default::default(),
        metering: Arc::new(Metering {
            quotas,
            writer: metering::writer::UsageWriter::spawn(store_for_writer, retention_days),
            calls: Default::default(),
            clock,
        }),
    }));
    Ok((state, report))
}

/// Serves the API on `listener` (HTTPS with `[server] tls_cert` and
/// `tls_key`) until `shutdown` resolves, then flushes what is kept in memory.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // HTTPS when both files are configured (validation refused one alone).
    let tls = match (&state.config.server.tls_cert, &state.config.server.tls_key) {
        (Some(cert), Some(key)) => {
            Some(server::tls::Tls::new(cert, key).map_err(std::io::Error::other)?)
        }
        _ => None,
    };
    let tls_watch = Some(match tls.clone() {
        Some(t) => tokio::spawn(t.watch()),
        None => tokio::spawn(server::tls::ignore_hangups()),
    });
    let poller = tokio::spawn(state.creds.clone().poll_changes());
    let upkeep = tokio::spawn(metering::quota::Quotas::maintain(state.metering.clone()));
    let flusher = tokio::spawn(state.creds.clone().flush_last_used_loop());
    let refresher = tokio::spawn(state.catalog.clone().refresh_loop(state.providers.clone()));
    server::raise_open_files_limit();
    let app = http::router(state.clone());
    // Stop accepting on the signal, then give calls in flight (streams
    // included) up to the grace period to finish.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let n = server::worker_count(state.config.server.workers);
    let mut workers = server::Workers::start(
        n,
        app,
        &state,
        tls.as_ref().map(|t| t.acceptor()),
        stop_rx.clone(),
    )?;
    tracing::debug!(workers = n, "serving threads started");
    let grace = std::time::Duration::from_secs(state.config.server.shutdown_grace_secs);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok((stream, peer)) => workers.dispatch(stream, peer),
                Err(e) if server::is_connection_error(&e) => {}
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::error!(error = %e, "cannot accept a connection; retrying in 1 s");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let _ = stop_rx.borrow_and_update();
    let conns = workers.conns.clone();
    let grace_over = tokio::time::timeout(grace, conns.wait_zero())
        .await
        .is_err();
    let result: std::io::Result<()> = Ok(());
    // Calls can outlive their connection (a stream drained after its client
    // left): they get the grace period too. Then whatever still runs is ended
    // and awaited, so that its record is queued before the final flush.
    let calls = &state.metering.calls;
    if grace_over || !calls.wait_idle(grace).await {
        tracing::warn!(
            calls = calls.live(),
            "grace period over: ending the calls still in flight"
        );
        calls.stop();
        if !calls.wait_idle(std::time::Duration::from_secs(5)).await {
            tracing::error!(calls = calls.live(), "calls did not settle at shutdown");
        }
    }
    // The serving threads end; whatever still ran there is dropped, which
    // settles its calls, before the final flush.
    if let Err(e) = tokio::task::spawn_blocking(move || workers.join()).await {
        tracing::error!(error = %e, "cannot stop the serving threads");
    }
    drop(stop_rx);
    poller.abort();
    flusher.abort();
    refresher.abort();
    if let Some(w) = tls_watch {
        w.abort();
    }
    // Everything queued is written (and, with shared quotas, its charges
    // are out of this replica's slices), then the slices go back.
    state.metering.writer.flush().await;
    upkeep.abort();
    if let Err(e) = state.metering.quotas.give_back_all().await {
        tracing::warn!(error = %e, "cannot give quota slices back at shutdown; they expire with their lease");
    }
    if let Err(e) = state.creds.flush_last_used().await {
        tracing::warn!(error = %e, "cannot record key last-use times at shutdown");
    }
    result
}
