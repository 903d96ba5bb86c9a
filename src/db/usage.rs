//! Usage records, daily roll-ups and period totals. Written only by the usage
//! writer, in batches; read by the usage and admin routes.

use super::DbResult;
use hashbrown::HashMap;
use rusqlite::{params, params_from_iter, Connection, Row};
use serde::Serialize;

/// One call, as recorded (SPEC §6) and as `/admin/requests` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UsageRecord {
    pub id: i64,
    pub request_id: String,
    pub user_id: i64,
    pub username: String,
    pub key_id: Option<i64>,
    pub provider: String,
    pub model: String,
    pub upstream_model: String,
    /// Text the gateway itself names (`chat/completions`, `ok`): not copied per call.
    pub endpoint: std::borrow::Cow<'static, str>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// Micro-dollars; shown in dollars as `cost_usd`.
    #[serde(rename = "cost_usd", serialize_with = "crate::money::ser_usd")]
    pub cost_micros: i64,
    /// The part of the cost paid from the user's prepaid credit
    /// (pay-as-you-go plans); shown in dollars as `credit_usd`.
    #[serde(rename = "credit_usd", serialize_with = "crate::money::ser_usd")]
    pub credit_micros: i64,
    pub estimated: bool,
    pub priced: bool,
    pub http_status: u16,
    pub outcome: std::borrow::Cow<'static, str>,
    pub latency_ms: i64,
    pub ttft_ms: Option<i64>,
    pub created_at: String,
    /// The replica's slice this record's charge comes out of, when replicas
    /// share quotas: taken out in the same transaction that writes the
    /// charge. Not stored.
    #[serde(skip)]
    pub slice: Option<SliceCharge>,
    /// The order in which the writer was handed records (set by it), so a
    /// batch is written in call order whichever thread sent each. Not stored.
    #[serde(skip)]
    pub seq: u64,
}

/// What a record's charge takes out of its replica's slice of the user's
/// allowance (shared quotas).
#[derive(Debug, Clone, PartialEq)]
pub struct SliceCharge {
    pub instance: std::sync::Arc<str>,
    /// The period the slice was taken for (the call's admission).
    pub period: std::sync::Arc<str>,
    pub tokens: i64,
    pub micros: i64,
}

/// One day's totals of a user, provider and model within a batch.
#[derive(Default)]
pub(super) struct DayTotals {
    pub tokens: i64,
    pub prompt: i64,
    pub completion: i64,
    pub requests: i64,
    pub ok_tokens: i64,
    pub cost: i64,
}

/// One period's charges of a user and key within a batch.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodTotals {
    pub tokens: i64,
    /// Micro-dollars.
    pub cost: i64,
    /// Micro-dollars paid from credit.
    pub credit: i64,
}

/// (day, user, provider, model) and (period, user, key or 0).
pub(super) type DayKey<'a> = (&'a str, i64, &'a str, &'a str);
pub(super) type PeriodKey<'a> = (&'a str, i64, i64);

/// A batch's roll-ups, summed in memory first (both backends): one upsert per
/// group per batch.
pub(super) fn rollups(
    records: &[UsageRecord],
) -> (
    HashMap<DayKey<'_>, DayTotals>,
    HashMap<PeriodKey<'_>, PeriodTotals>,
) {
    let mut days: HashMap<DayKey, DayTotals> = HashMap::new();
    let mut periods: HashMap<PeriodKey, PeriodTotals> = HashMap::new();
    for r in records {
        let charged = r.total_tokens > 0 || r.cost_micros > 0;
        if charged || r.outcome == "ok" {
            let ok = r.outcome == "ok";
            let d = days
                .entry((
                    &r.created_at[..10],
                    r.user_id,
                    r.provider.as_str(),
                    r.model.as_str(),
                ))
                .or_default();
            d.tokens += r.total_tokens;
            d.prompt += r.prompt_tokens;
            d.completion += r.completion_tokens;
            d.requests += ok as i64;
            d.ok_tokens += if ok { r.total_tokens } else { 0 };
            d.cost += r.cost_micros;
        }
        if charged {
            let p = periods
                .entry((&r.created_at[..7], r.user_id, r.key_id.unwrap_or(0)))
                .or_default();
            p.tokens += r.total_tokens;
            p.cost += r.cost_micros;
            p.credit += r.credit_micros;
        }
    }
    (days, periods)
}

/// Records per multi-row insert.
const ROWS: usize = 16;
/// The writer offers its core back after this many groups of [`ROWS`].
const YIELD_EVERY_GROUPS: usize = 4;
/// Columns of a record as inserted (see [`bind_record`]).
const COLUMNS: usize = 20;

/// `INSERT INTO requests ... VALUES` with `rows` groups of parameters.
fn insert_sql(rows: usize) -> &'static str {
    static SQL: [std::sync::OnceLock<String>; 2] =
        [std::sync::OnceLock::new(), std::sync::OnceLock::new()];
    SQL[usize::from(rows != 1)].get_or_init(|| {
        let group = format!("({})", vec!["?"; COLUMNS].join(","));
        format!(
            "INSERT INTO requests (request_id, user_id, username, key_id, provider, model, upstream_model, endpoint,
                prompt_tokens, completion_tokens, total_tokens, cost_micros, credit_micros, estimated, priced,
                http_status, outcome, latency_ms, ttft_ms, created_at) VALUES {}",
            vec![group; rows].join(",")
        )
    })
}

/// Binds `r` to parameters `at + 1 ..= at + COLUMNS`.
fn bind_record(
    st: &mut rusqlite::Statement<'_>,
    at: usize,
    r: &UsageRecord,
) -> rusqlite::Result<()> {
    st.raw_bind_parameter(at + 1, &r.request_id)?;
    st.raw_bind_parameter(at + 2, r.user_id)?;
    st.raw_bind_parameter(at + 3, &r.username)?;
    st.raw_bind_parameter(at + 4, r.key_id)?;
    st.raw_bind_parameter(at + 5, &r.provider)?;
    st.raw_bind_parameter(at + 6, &r.model)?;
    st.raw_bind_parameter(at + 7, &r.upstream_model)?;
    st.raw_bind_parameter(at + 8, &r.endpoint)?;
    st.raw_bind_parameter(at + 9, r.prompt_tokens)?;
    st.raw_bind_parameter(at + 10, r.completion_tokens)?;
    st.raw_bind_parameter(at + 11, r.total_tokens)?;
    st.raw_bind_parameter(at + 12, r.cost_micros)?;
    st.raw_bind_parameter(at + 13, r.credit_micros)?;
    st.raw_bind_parameter(at + 14, r.estimated)?;
    st.raw_bind_parameter(at + 15, r.priced)?;
    st.raw_bind_parameter(at + 16, r.http_status)?;
    st.raw_bind_parameter(at + 17, &r.outcome)?;
    st.raw_bind_parameter(at + 18, r.latency_ms)?;
    st.raw_bind_parameter(at + 19, r.ttft_ms)?;
    st.raw_bind_parameter(at + 20, &r.created_at)?;
    Ok(())
}

/// Writes a batch of records with their roll-ups in one transaction.
pub fn insert_batch(conn: &mut Connection, records: &[UsageRecord]) -> DbResult<()> {
    let tx = conn.transaction()?;
    {
        // Full groups of ROWS records go in one multi-row statement: SQLite's
        // per-statement work (start, halt, reset) is paid once per group.
        let mut ins_many = tx.prepare_cached(insert_sql(ROWS))?;
        let mut ins_one = tx.prepare_cached(insert_sql(1))?;
        let mut daily = tx.prepare_cached(
            "INSERT INTO usage_daily (day, user_id, provider, model, tokens, prompt_tokens, completion_tokens,
                requests, ok_tokens, cost_micros)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (day, user_id, provider, model) DO UPDATE SET
                tokens = tokens + excluded.tokens,
                prompt_tokens = prompt_tokens + excluded.prompt_tokens,
                completion_tokens = completion_tokens + excluded.completion_tokens,
                requests = requests + excluded.requests,
                ok_tokens = ok_tokens + excluded.ok_tokens,
                cost_micros = cost_micros + excluded.cost_micros",
        )?;
        let mut period = tx.prepare_cached(
            "INSERT INTO usage_period (period, user_id, key_id, tokens, cost_micros, credit_micros)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (period, user_id, key_id) DO UPDATE SET tokens = tokens + excluded.tokens,
                cost_micros = cost_micros + excluded.cost_micros,
                credit_micros = credit_micros + excluded.credit_micros",
        )?;
        let mut groups = records.chunks_exact(ROWS);
        for (n, group) in (&mut groups).enumerate() {
            for (i, r) in group.iter().enumerate() {
                bind_record(&mut ins_many, i * COLUMNS, r)?;
            }
            ins_many.raw_execute()?;
            // A batch takes the writer a millisecond or more. A serving
            // thread woken on this core meanwhile would wait for the rest of
            // the writer's time slice (the one-connection p99 was ~0.9 ms
            // added); every 64 records the core is offered back at once.
            if n % YIELD_EVERY_GROUPS == YIELD_EVERY_GROUPS - 1 {
                std::thread::yield_now();
            }
        }
        for r in groups.remainder() {
            bind_record(&mut ins_one, 0, r)?;
            ins_one.raw_execute()?;
        }
        let (days, periods) = rollups(records);
        for ((day, user, provider, model), d) in &days {
            daily.execute(params![
                day,
                user,
                provider,
                model,
                d.tokens,
                d.prompt,
                d.completion,
                d.requests,
                d.ok_tokens,
                d.cost
            ])?;
        }
        for ((p, user, key), t) in &periods {
            period.execute(params![p, user, key, t.tokens, t.cost, t.credit])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// What was charged in a period to a user with one key (`key_id` 0: with
/// access tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodTotal {
    pub user_id: i64,
    pub key_id: i64,
    pub tokens: i64,
    /// Micro-dollars.
    pub cost: i64,
}

/// Tokens and money charged in `period` (YYYY-MM): per user and per key.
pub fn period_totals(conn: &Connection, period: &str) -> DbResult<Vec<PeriodTotal>> {
    let mut st = conn.prepare(
        "SELECT user_id, key_id, tokens, cost_micros FROM usage_period WHERE period = ?1",
    )?;
    let rows = st
        .query_map([period], |r| {
            Ok(PeriodTotal {
                user_id: r.get(0)?,
                key_id: r.get(1)?,
                tokens: r.get(2)?,
                cost: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// What each user's pay-as-you-go calls were charged to their prepaid
/// credit, every period (micro-dollars). Users who spent none are absent.
pub fn credit_spent(conn: &Connection) -> DbResult<Vec<(i64, i64)>> {
    let mut st = conn.prepare(
        "SELECT user_id, SUM(credit_micros) FROM usage_period WHERE credit_micros <> 0
         GROUP BY user_id",
    )?;
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Credit ledger entries after id `after` (id, user, micro-dollars): the
/// metering ledger reads those made since it last looked, by whoever made
/// them (this server, another process, the CLI).
pub fn credit_entries_after(conn: &Connection, after: i64) -> DbResult<Vec<(i64, i64, i64)>> {
    let mut st = conn.prepare_cached(
        "SELECT id, user_id, amount_micros FROM credits WHERE id > ?1 ORDER BY id",
    )?;
    let rows = st
        .query_map([after], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Deletes raw records created before `before` (RFC 3339); roll-ups stay.
/// Records are appended in time order, so the old ones are the lowest ids and
/// no index on `created_at` (a cost on every insert) is needed to find them.
pub fn delete_before(conn: &Connection, before: &str) -> DbResult<usize> {
    Ok(conn.execute(
        "DELETE FROM requests WHERE id < COALESCE(
            (SELECT id FROM requests WHERE created_at >= ?1 ORDER BY id LIMIT 1),
            (SELECT MAX(id) + 1 FROM requests), 0)",
        [before],
    )?)
}

/// Filters over the daily roll-ups; dates are `YYYY-MM-DD`, `to` exclusive.
#[derive(Debug, Default, Clone)]
pub struct DailyFilter {
    pub user_id: Option<i64>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub from_day: Option<String>,
    pub to_day: Option<String>,
}

impl DailyFilter {
    fn clause(&self) -> (String, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value;
        let mut w = vec!["1 = 1".to_owned()];
        let mut p: Vec<Value> = Vec::new();
        if let Some(u) = self.user_id {
            p.push(Value::Integer(u));
            w.push(format!("d.user_id = ?{}", p.len()));
        }
        if let Some(v) = &self.provider {
            p.push(Value::Text(v.clone()));
            w.push(format!("d.provider = ?{}", p.len()));
        }
        if let Some(v) = &self.model {
            p.push(Value::Text(v.clone()));
            w.push(format!("d.model = ?{}", p.len()));
        }
        if let Some(v) = &self.from_day {
            p.push(Value::Text(v.clone()));
            w.push(format!("d.day >= ?{}", p.len()));
        }
        if let Some(v) = &self.to_day {
            p.push(Value::Text(v.clone()));
            w.push(format!("d.day < ?{}", p.len()));
        }
        (w.join(" AND "), p)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DailyRow {
    pub date: String,
    pub provider: String,
    pub model: String,
    pub tokens: i64,
    pub requests: i64,
    /// Micro-dollars, shown in dollars.
    #[serde(rename = "cost_usd", serialize_with = "crate::money::ser_usd")]
    pub cost_micros: i64,
}

pub fn daily(conn: &Connection, f: &DailyFilter) -> DbResult<Vec<DailyRow>> {
    let (w, p) = f.clause();
    let mut st = conn.prepare(&format!(
        "SELECT d.day, d.provider, d.model, SUM(d.tokens), SUM(d.requests), SUM(d.cost_micros)
         FROM usage_daily d WHERE {w} GROUP BY d.day, d.provider, d.model ORDER BY d.day, d.provider, d.model"
    ))?;
    let rows = st
        .query_map(params_from_iter(p), |r| {
            Ok(DailyRow {
                date: r.get(0)?,
                provider: r.get(1)?,
                model: r.get(2)?,
                tokens: r.get(3)?,
                requests: r.get(4)?,
                cost_micros: r.get(5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// (tokens, successful requests, tokens of successful requests, micro-dollars).
pub fn totals(conn: &Connection, f: &DailyFilter) -> DbResult<(i64, i64, i64, i64)> {
    let (w, p) = f.clause();
    Ok(conn.query_row(
        &format!(
            "SELECT COALESCE(SUM(d.tokens), 0), COALESCE(SUM(d.requests), 0), COALESCE(SUM(d.ok_tokens), 0),
                    COALESCE(SUM(d.cost_micros), 0)
             FROM usage_daily d WHERE {w}"
        ),
        params_from_iter(p),
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?)
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupRow {
    pub key: String,
    pub tokens: i64,
    pub requests: i64,
    /// Micro-dollars, shown in dollars.
    #[serde(rename = "cost_usd", serialize_with = "crate::money::ser_usd")]
    pub cost_micros: i64,
}

/// Totals grouped by `day`, `user`, `provider` or `model` (checked by the caller).
pub fn grouped(conn: &Connection, group_by: &str, f: &DailyFilter) -> DbResult<Vec<GroupRow>> {
    let key = match group_by {
        "day" => "d.day",
        "user" => "COALESCE(u.username, CAST(d.user_id AS TEXT))",
        "provider" => "d.provider",
        _ => "d.model",
    };
    let (w, p) = f.clause();
    let order = if group_by == "day" { "1" } else { "2 DESC, 1" };
    let mut st = conn.prepare(&format!(
        "SELECT {key}, SUM(d.tokens), SUM(d.requests), SUM(d.cost_micros)
         FROM usage_daily d LEFT JOIN users u ON u.id = d.user_id
         WHERE {w} GROUP BY 1 ORDER BY {order}"
    ))?;
    let rows = st
        .query_map(params_from_iter(p), |r| {
            Ok(GroupRow {
                key: r.get(0)?,
                tokens: r.get(1)?,
                requests: r.get(2)?,
                cost_micros: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

#[derive(Debug, Default, Clone)]
pub struct RequestFilter {
    pub user_id: Option<i64>,
    pub provider: Option<String>,
    pub outcome: Option<String>,
    pub before: Option<i64>,
    pub limit: i64,
}

const RECORD_COLUMNS: &str = "id, request_id, user_id, username, key_id, provider, model, upstream_model, endpoint, \
    prompt_tokens, completion_tokens, total_tokens, cost_micros, credit_micros, estimated, priced, http_status, \
    outcome, latency_ms, ttft_ms, created_at";

fn record_from_row(r: &Row) -> rusqlite::Result<UsageRecord> {
    Ok(UsageRecord {
        id: r.get(0)?,
        request_id: r.get(1)?,
        user_id: r.get(2)?,
        username: r.get(3)?,
        key_id: r.get(4)?,
        provider: r.get(5)?,
        model: r.get(6)?,
        upstream_model: r.get(7)?,
        endpoint: std::borrow::Cow::Owned(r.get(8)?),
        prompt_tokens: r.get(9)?,
        completion_tokens: r.get(10)?,
        total_tokens: r.get(11)?,
        cost_micros: r.get(12)?,
        credit_micros: r.get(13)?,
        estimated: r.get(14)?,
        priced: r.get(15)?,
        http_status: r.get(16)?,
        outcome: std::borrow::Cow::Owned(r.get(17)?),
        latency_ms: r.get(18)?,
        ttft_ms: r.get(19)?,
        created_at: r.get(20)?,
        slice: None,
        seq: 0,
    })
}

/// Records newest first, keyset-paginated by id.
pub fn requests(conn: &Connection, f: &RequestFilter) -> DbResult<Vec<UsageRecord>> {
    use rusqlite::types::Value;
    let mut w = vec!["1 = 1".to_owned()];
    let mut p: Vec<Value> = Vec::new();
    if let Some(u) = f.user_id {
        p.push(Value::Integer(u));
        w.push(format!("user_id = ?{}", p.len()));
    }
    if let Some(v) = &f.provider {
        p.push(Value::Text(v.clone()));
        w.push(format!("provider = ?{}", p.len()));
    }
    if let Some(v) = &f.outcome {
        p.push(Value::Text(v.clone()));
        w.push(format!("outcome = ?{}", p.len()));
    }
    if let Some(b) = f.before {
        p.push(Value::Integer(b));
        w.push(format!("id < ?{}", p.len()));
    }
    p.push(Value::Integer(f.limit));
    let sql = format!(
        "SELECT {RECORD_COLUMNS} FROM requests WHERE {} ORDER BY id DESC LIMIT ?{}",
        w.join(" AND "),
        p.len()
    );
    let mut st = conn.prepare(&sql)?;
    let rows = st
        .query_map(params_from_iter(p), record_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Every record of a request id (tests and troubleshooting).
pub fn by_request_id(conn: &Connection, request_id: &str) -> DbResult<Vec<UsageRecord>> {
    let mut st = conn.prepare(&format!(
        "SELECT {RECORD_COLUMNS} FROM requests WHERE request_id = ?1 ORDER BY id"
    ))?;
    let rows = st
        .query_map([request_id], record_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// A record for tests: fields vary with `i`.
#[cfg(test)]
pub(crate) fn sample_record(i: i64) -> UsageRecord {
    UsageRecord {
        id: 0,
        request_id: format!("req_{i}"),
        user_id: 1 + i % 3,
        username: format!("user{}", i % 3),
        key_id: (i % 2 == 0).then_some(i),
        provider: "p".into(),
        model: format!("p/m{}", i % 2),
        upstream_model: "m".into(),
        endpoint: "chat/completions".into(),
        prompt_tokens: i,
        completion_tokens: 2 * i,
        total_tokens: 3 * i,
        cost_micros: i * 125_000,
        credit_micros: 0,
        estimated: i % 5 == 0,
        priced: i % 7 != 0,
        http_status: if i % 4 == 0 { 502 } else { 200 },
        outcome: if i % 4 == 0 { "upstream_error" } else { "ok" }.into(),
        latency_ms: 10 + i,
        ttft_ms: (i % 3 != 0).then_some(i),
        created_at: format!("2026-11-{:02}T00:00:{:02}Z", 1 + i % 28, i % 60),
        slice: None,
        seq: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::sample_record as record;
    use super::*;

    #[test]
    fn a_batch_of_any_size_is_written_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::db::open(&dir.path().join("t.db")).unwrap();
        crate::db::migrate(&pool).unwrap();
        let mut conn = pool.get().unwrap();
        // Groups of ROWS, a remainder, a lone record, an empty batch.
        let mut n = 0;
        for size in [2 * ROWS + 5, ROWS, 1, 0, ROWS - 1] {
            let batch: Vec<_> = (n..n + size as i64).map(record).collect();
            insert_batch(&mut conn, &batch).unwrap();
            n += size as i64;
        }
        let mut all = requests(
            &conn,
            &RequestFilter {
                limit: 1000,
                ..Default::default()
            },
        )
        .unwrap();
        all.reverse();
        assert_eq!(all.len(), n as usize);
        for (i, got) in all.into_iter().enumerate() {
            let want = UsageRecord {
                id: got.id,
                ..record(i as i64)
            };
            assert_eq!(got, want);
        }
        // The roll-ups saw every record once.
        let (tokens, requests, ok_tokens, _) = totals(&conn, &DailyFilter::default()).unwrap();
        assert_eq!(tokens, (0..n).map(|i| 3 * i).sum::<i64>());
        assert_eq!(requests, (0..n).filter(|i| i % 4 != 0).count() as i64);
        assert_eq!(
            ok_tokens,
            (0..n).filter(|i| i % 4 != 0).map(|i| 3 * i).sum::<i64>()
        );
    }
}
