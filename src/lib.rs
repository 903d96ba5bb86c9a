//! tollgate: a self-hosted LLM gateway and API marketplace in one binary.
//!
//! The seam tests use: [`build_state`] opens the database (migrating and, on
//! first start, seeding it) and loads the caches; [`serve`] runs the router on
//! a listener until `shutdown` resolves.

#![forbid(unsafe_code)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod glob;
pub mod http;
pub mod service;
pub mod state;
pub mod upstream;

use auth::cache::CredentialCache;
use auth::jwt::JwtKeys;
use config::{Config, ConfigError};
use service::accounts::{self, Bootstrap};
use state::{AppState, Clock, Inner};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("database: {0}")]
    Db(#[from] db::DbError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// Opens the database, runs pending migrations and seeds an empty one.
/// `admin_password` is `TOLLGATE_ADMIN_PASSWORD`; without it a password is
/// generated and returned in the [`Bootstrap`] to be printed once.
pub fn open_database(cfg: &Config, admin_password: Option<String>) -> Result<(db::Pool, Bootstrap), StartError> {
    let pool = db::open(&cfg.database.path)?;
    let ran = db::migrate(&pool)?;
    if ran > 0 {
        tracing::info!(migrations = ran, path = %cfg.database.path.display(), "database migrated");
    }
    let mut conn = pool.get().map_err(db::DbError::from)?;
    let report = if accounts::needs_bootstrap(&conn)? {
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
        accounts::bootstrap(&mut conn, cfg, &hash, generated, &now)?
    } else {
        Bootstrap::default()
    };
    Ok((pool, report))
}

/// Builds the shared state: database, credential cache, JWT keys.
pub fn build_state(cfg: Config, admin_password: Option<String>) -> Result<(AppState, Bootstrap), StartError> {
    let (pool, report) = open_database(&cfg, admin_password)?;
    let secret = {
        let conn = pool.get().map_err(db::DbError::from)?;
        accounts::jwt_secret(&conn, &cfg)?
    };
    let creds = Arc::new(CredentialCache::load(pool.clone())?);
    let trusted_proxies = cfg.server.trusted_proxies.iter().filter_map(|p| p.parse().ok()).collect();
    let state = AppState(Arc::new(Inner {
        jwt: JwtKeys::new(secret.as_bytes(), cfg.auth.access_token_ttl_secs),
        config: Arc::new(cfg),
        pool,
        creds,
        throttle: Default::default(),
        clock: Clock::default(),
        trusted_proxies,
    }));
    Ok((state, report))
}

/// Serves the API on `listener` until `shutdown` resolves, then flushes what is
/// kept in memory.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let poller = tokio::spawn(state.creds.clone().poll_changes());
    let flusher = tokio::spawn(state.creds.clone().flush_last_used_loop());
    let app = http::router(state.clone());
    let result = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await;
    poller.abort();
    flusher.abort();
    if let Err(e) = state.creds.flush_last_used().await {
        tracing::warn!(error = %e, "cannot record key last-use times at shutdown");
    }
    result
}
