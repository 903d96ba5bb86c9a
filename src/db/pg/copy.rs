//! `tollgate migrate --from-sqlite PATH`: copies a SQLite deployment into an
//! empty PostgreSQL database (SPEC §11), in one transaction, so a failure
//! leaves the target as empty as it was.

use super::Pg;
use crate::db::{DbError, DbResult};
use rusqlite::types::ValueRef;
use tokio_postgres::types::ToSql;

#[derive(Clone, Copy)]
enum Kind {
    Int,
    Text,
    Real,
    Bool,
}
use Kind::*;

/// The tables copied, parents first, with their columns and PostgreSQL types.
const TABLES: &[(&str, &[(&str, Kind)])] = &[
    (
        "plans",
        &[
            ("id", Int),
            ("name", Text),
            ("monthly_tokens", Int),
            ("requests_per_minute", Int),
            ("price_usd_month", Real),
            ("allowed_models", Text),
            ("created_at", Text),
            ("monthly_usd_micros", Int),
            ("pay_as_you_go", Bool),
        ],
    ),
    (
        "users",
        &[
            ("id", Int),
            ("username", Text),
            ("email", Text),
            ("password_hash", Text),
            ("role", Text),
            ("plan", Text),
            ("disabled", Bool),
            ("token_version", Int),
            ("created_at", Text),
        ],
    ),
    (
        "oauth_identities",
        &[
            ("id", Int),
            ("user_id", Int),
            ("provider", Text),
            ("subject", Text),
            ("email", Text),
            ("created_at", Text),
        ],
    ),
    (
        "api_keys",
        &[
            ("id", Int),
            ("user_id", Int),
            ("name", Text),
            ("description", Text),
            ("key_hash", Text),
            ("prefix", Text),
            ("created_at", Text),
            ("last_used_at", Text),
            ("expires_at", Text),
            ("revoked", Bool),
            ("allowed_models", Text),
            ("monthly_token_limit", Int),
            ("monthly_usd_limit_micros", Int),
        ],
    ),
    (
        "credits",
        &[
            ("id", Int),
            ("user_id", Int),
            ("amount_micros", Int),
            ("note", Text),
            ("created_by", Text),
            ("created_at", Text),
        ],
    ),
    ("settings", &[("key", Text), ("value", Text)]),
    (
        "requests",
        &[
            ("id", Int),
            ("request_id", Text),
            ("user_id", Int),
            ("username", Text),
            ("key_id", Int),
            ("provider", Text),
            ("model", Text),
            ("upstream_model", Text),
            ("endpoint", Text),
            ("prompt_tokens", Int),
            ("completion_tokens", Int),
            ("total_tokens", Int),
            ("cost_micros", Int),
            ("credit_micros", Int),
            ("estimated", Bool),
            ("priced", Bool),
            ("http_status", Int),
            ("outcome", Text),
            ("latency_ms", Int),
            ("ttft_ms", Int),
            ("created_at", Text),
        ],
    ),
    (
        "usage_daily",
        &[
            ("day", Text),
            ("user_id", Int),
            ("provider", Text),
            ("model", Text),
            ("tokens", Int),
            ("prompt_tokens", Int),
            ("completion_tokens", Int),
            ("requests", Int),
            ("ok_tokens", Int),
            ("cost_micros", Int),
        ],
    ),
    (
        "usage_period",
        &[
            ("period", Text),
            ("user_id", Int),
            ("key_id", Int),
            ("tokens", Int),
            ("cost_micros", Int),
            ("credit_micros", Int),
        ],
    ),
];

/// Tables with an identity column whose sequence must move past the copied ids.
const WITH_IDS: &[&str] = &[
    "plans",
    "users",
    "oauth_identities",
    "api_keys",
    "credits",
    "requests",
];

const CHUNK: usize = 5000;

/// One column's values of a chunk, typed for `UNNEST`.
enum Column {
    Int(Vec<Option<i64>>),
    Text(Vec<Option<String>>),
    Real(Vec<Option<f64>>),
    Bool(Vec<Option<bool>>),
}

impl Column {
    fn new(k: Kind) -> Column {
        match k {
            Int => Column::Int(Vec::new()),
            Text => Column::Text(Vec::new()),
            Real => Column::Real(Vec::new()),
            Bool => Column::Bool(Vec::new()),
        }
    }

    fn push(&mut self, v: ValueRef<'_>) -> Result<(), String> {
        if let ValueRef::Null = v {
            match self {
                Column::Int(c) => c.push(None),
                Column::Text(c) => c.push(None),
                Column::Real(c) => c.push(None),
                Column::Bool(c) => c.push(None),
            }
            return Ok(());
        }
        match (self, v) {
            (Column::Int(c), ValueRef::Integer(i)) => c.push(Some(i)),
            (Column::Real(c), ValueRef::Real(f)) => c.push(Some(f)),
            (Column::Real(c), ValueRef::Integer(i)) => c.push(Some(i as f64)),
            (Column::Bool(c), ValueRef::Integer(i)) => c.push(Some(i != 0)),
            (Column::Text(c), ValueRef::Text(t)) => {
                c.push(Some(String::from_utf8_lossy(t).into_owned()))
            }
            (_, v) => return Err(format!("unexpected value of type {:?}", v.data_type())),
        }
        Ok(())
    }

    fn sql_type(&self) -> &'static str {
        match self {
            Column::Int(_) => "BIGINT[]",
            Column::Text(_) => "TEXT[]",
            Column::Real(_) => "FLOAT8[]",
            Column::Bool(_) => "BOOL[]",
        }
    }

    fn as_param(&self) -> &(dyn ToSql + Sync) {
        match self {
            Column::Int(c) => c,
            Column::Text(c) => c,
            Column::Real(c) => c,
            Column::Bool(c) => c,
        }
    }
}

/// What was copied: rows per table, in [`TABLES`] order.
pub type Copied = Vec<(&'static str, u64)>;

impl Pg {
    /// Copies every row of the SQLite database at `source` (migrated to the
    /// current schema first) into this database, which must hold no account,
    /// plan, key or record. `progress` hears (table, rows so far, rows in all).
    pub async fn copy_from_sqlite(
        &self,
        source: &std::path::Path,
        mut progress: impl FnMut(&str, u64, u64),
    ) -> DbResult<Copied> {
        if !source.is_file() {
            return Err(DbError::Task(format!(
                "{} is not a file: give the path of the SQLite database (tollgate.db)",
                source.display()
            )));
        }
        let pool = crate::db::open(source)?;
        crate::db::migrate(&pool)?;
        let sqlite = pool.get()?;

        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        for t in ["users", "plans", "api_keys", "credits", "requests"] {
            let n: i64 = tx
                .query_one(&format!("SELECT COUNT(*) FROM {t}"), &[])
                .await?
                .get(0);
            if n > 0 {
                return Err(DbError::Conflict(format!(
                    "The PostgreSQL database is not empty ({t} holds {n} row(s)); \
                     copy into a new, empty database."
                )));
            }
        }
        // Settings written by a server that started on the empty database
        // (its JWT secret, its first-start mark) give way to the copied ones.
        tx.execute("DELETE FROM settings", &[]).await?;

        let mut copied = Vec::new();
        for (table, columns) in TABLES {
            let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
            let total: i64 =
                sqlite.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
            let total = total as u64;
            progress(table, 0, total);
            let mut st = sqlite.prepare(&format!(
                "SELECT {} FROM {table} ORDER BY rowid",
                names.join(", ")
            ))?;
            let mut rows = st.query([])?;
            let mut done = 0u64;
            loop {
                let mut chunk: Vec<Column> = columns.iter().map(|c| Column::new(c.1)).collect();
                let mut n = 0;
                while n < CHUNK {
                    let Some(row) = rows.next()? else { break };
                    for (i, col) in chunk.iter_mut().enumerate() {
                        col.push(row.get_ref(i)?)
                            .map_err(|e| DbError::Task(format!("{table}.{}: {e}", names[i])))?;
                    }
                    n += 1;
                }
                if n == 0 {
                    break;
                }
                let unnest: Vec<String> = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("${}::{}", i + 1, c.sql_type()))
                    .collect();
                let sql = format!(
                    "INSERT INTO {table} ({}) SELECT * FROM UNNEST({})",
                    names.join(", "),
                    unnest.join(", ")
                );
                let params: Vec<&(dyn ToSql + Sync)> = chunk.iter().map(|c| c.as_param()).collect();
                tx.execute(&sql, &params).await?;
                done += n as u64;
                progress(table, done, total);
            }
            copied.push((*table, done));
        }
        for t in WITH_IDS {
            tx.execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{t}', 'id'),
                                   COALESCE((SELECT MAX(id) FROM {t}), 0) + 1, false)"
                ),
                &[],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(copied)
    }
}
