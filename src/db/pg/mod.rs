//! PostgreSQL: the backend for teams that run several replicas (SPEC §11).
//!
//! `tokio-postgres` speaks the protocol and `deadpool-postgres` pools the
//! connections (see docs/architecture.md for why these two). The store's
//! operations are async, so on this backend they await the database directly
//! on the serving threads, nothing blocks. Each connection's I/O task lives on
//! a small runtime of its own ([`Home`]), so connections outlive whichever
//! runtime first asked for them, and the store's two `_blocking` operations
//! (called from threads of their own) can wait on it.

mod accounts;
pub mod copy;
mod credits;
mod quota;
mod tls;
mod usage;

use super::{DbError, DbResult};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

/// Advisory lock keys (the admission lock of a user is `2^62 + user id`, see
/// migrations/postgres/V5).
const MIGRATE_LOCK: i64 = 0x746f_6c6c_6761_7465; // "tollgate"
const BOOTSTRAP_LOCK: i64 = MIGRATE_LOCK + 1;

/// Connections per replica: enough for the serving threads' admissions and
/// the writer, few enough that several replicas fit PostgreSQL's default
/// `max_connections` (100).
const POOL_SIZE: usize = 16;

#[derive(Clone)]
pub struct Pg {
    pool: Pool,
    config: Arc<tokio_postgres::Config>,
    tls: MakeRustlsConnect,
    home: Arc<Home>,
    /// The URL without its password, for messages.
    shown: Arc<str>,
}

/// The runtime the connections' I/O runs on.
struct Home(Option<tokio::runtime::Runtime>);

impl Home {
    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("runtime until drop").handle()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        // Dropped from async code too (the last store handle of a test):
        // shutting down in the background never blocks.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Spawns each new connection's I/O task on the home runtime.
struct HomeConnect(tokio::runtime::Handle, MakeRustlsConnect);

impl deadpool_postgres::Connect for HomeConnect {
    fn connect(
        &self,
        pg_config: &tokio_postgres::Config,
    ) -> futures_util::future::BoxFuture<
        '_,
        Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>,
    > {
        let cfg = pg_config.clone();
        let (home, tls) = (self.0.clone(), self.1.clone());
        Box::pin(async move {
            let (client, conn) = connect_on(&cfg, &home, tls).await?;
            Ok((client, conn))
        })
    }
}

/// Opens one connection whose I/O task runs on `home`.
async fn connect_on(
    cfg: &tokio_postgres::Config,
    home: &tokio::runtime::Handle,
    tls: MakeRustlsConnect,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
    let (client, connection) = cfg.connect(tls).await?;
    let task = home.spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection closed");
        }
    });
    Ok((client, task))
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        DbError::Postgres(describe(&e))
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            e => DbError::Postgres(format!("connection pool: {e}")),
        }
    }
}

/// The server's own message when there is one (`tokio_postgres::Error`'s
/// display is only "db error"); never the URL or its password.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// Maps a unique or foreign-key violation to [`DbError::Conflict`] with `what`.
pub(super) fn on_constraint(e: tokio_postgres::Error, what: &str) -> DbError {
    use tokio_postgres::error::SqlState;
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::FOREIGN_KEY_VIOLATION => {
            DbError::Conflict(what.to_owned())
        }
        _ => e.into(),
    }
}

impl Pg {
    /// A pool for `url`; nothing connects until the first operation.
    pub fn connect(url: &str) -> DbResult<Pg> {
        let invalid = |why: String| {
            DbError::Postgres(format!(
                "the database URL {} is not valid: {why}",
                crate::config::mask_password(url),
            ))
        };
        let (rest, tls_settings) = tls::split(url).map_err(invalid)?;
        let mut config: tokio_postgres::Config = rest
            .parse()
            .map_err(|e: tokio_postgres::Error| invalid(describe(&e)))?;
        if tls_settings.require {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        let tls = tls::connector(&tls_settings).map_err(invalid)?;
        // An unreachable host fails in seconds rather than at the OS's TCP timeout.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("tollgate");
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tollgate-pg")
            .enable_all()
            .build()
            .map_err(|e| DbError::Task(format!("cannot start the PostgreSQL runtime: {e}")))?;
        let home = Arc::new(Home(Some(rt)));
        let manager = Manager::from_connect(
            config.clone(),
            HomeConnect(home.handle().clone(), tls.clone()),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(std::time::Duration::from_secs(30)))
            .create_timeout(Some(std::time::Duration::from_secs(10)))
            .build()
            .map_err(|e| DbError::Task(format!("cannot build the connection pool: {e}")))?;
        Ok(Pg {
            pool,
            config: Arc::new(config),
            tls,
            home,
            shown: crate::config::mask_password(url).into(),
        })
    }

    pub(super) async fn client(&self) -> DbResult<deadpool_postgres::Object> {
        self.pool
            .get()
            .await
            .map_err(|e| self.unreachable(e.into()))
    }

    /// Names the database in an error of connecting to it.
    fn unreachable(&self, e: DbError) -> DbError {
        match e {
            DbError::Postgres(m) if !m.starts_with("ERROR") => {
                DbError::Postgres(format!("cannot use the database at {}: {m}", self.shown))
            }
            e => e,
        }
    }

    /// Runs `f` to completion from a thread that is not a runtime's.
    pub(super) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.home.handle().block_on(f)
    }

    /// Runs the migrations that have not run yet, one replica at a time.
    pub async fn migrate(&self) -> DbResult<usize> {
        let (mut client, task) = connect_on(&self.config, self.home.handle(), self.tls.clone())
            .await
            .map_err(|e| self.unreachable(e.into()))?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK])
            .await?;
        let report = embedded::migrations::runner()
            .run_async(&mut client)
            .await
            .map_err(|e| DbError::Migration(e.to_string()));
        let _ = client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK])
            .await;
        drop(client);
        task.abort();
        Ok(report?.applied_migrations().len())
    }
}
