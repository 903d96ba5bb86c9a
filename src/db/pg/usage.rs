//! Usage on PostgreSQL: the writer's batches (records, roll-ups, and the
//! reservations their charges replace, in one transaction) and the reads of
//! the usage and admin routes.

use super::Pg;
use crate::db::usage::{DailyFilter, DailyRow, GroupRow, PeriodTotal, RequestFilter, UsageRecord};
use crate::db::DbResult;
use std::borrow::Cow;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

/// Column arrays of a batch of records, bound to one `INSERT … SELECT FROM
/// UNNEST(…)`: one statement per batch, whatever its size.
#[derive(Default)]
struct Columns<'a> {
    request_id: Vec<&'a str>,
    user_id: Vec<i64>,
    username: Vec<&'a str>,
    key_id: Vec<Option<i64>>,
    provider: Vec<&'a str>,
    model: Vec<&'a str>,
    upstream_model: Vec<&'a str>,
    endpoint: Vec<&'a str>,
    prompt: Vec<i64>,
    completion: Vec<i64>,
    total: Vec<i64>,
    cost: Vec<i64>,
    credit: Vec<i64>,
    estimated: Vec<bool>,
    priced: Vec<bool>,
    status: Vec<i32>,
    outcome: Vec<&'a str>,
    latency: Vec<i64>,
    ttft: Vec<Option<i64>>,
    created_at: Vec<&'a str>,
}

const INSERT_RECORDS: &str = "INSERT INTO requests (request_id, user_id, username, key_id, provider, model,
        upstream_model, endpoint, prompt_tokens, completion_tokens, total_tokens, cost_micros, credit_micros,
        estimated, priced, http_status, outcome, latency_ms, ttft_ms, created_at)
    SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::BIGINT[], $5::TEXT[], $6::TEXT[], $7::TEXT[],
        $8::TEXT[], $9::BIGINT[], $10::BIGINT[], $11::BIGINT[], $12::BIGINT[], $13::BIGINT[], $14::BOOL[],
        $15::BOOL[], $16::INT4[], $17::TEXT[], $18::BIGINT[], $19::BIGINT[], $20::TEXT[])";

const UPSERT_DAILY: &str = "INSERT INTO usage_daily AS d (day, user_id, provider, model, tokens, prompt_tokens,
        completion_tokens, requests, ok_tokens, cost_micros)
    SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[], $6::BIGINT[],
        $7::BIGINT[], $8::BIGINT[], $9::BIGINT[], $10::BIGINT[])
    ON CONFLICT (day, user_id, provider, model) DO UPDATE SET
        tokens = d.tokens + EXCLUDED.tokens,
        prompt_tokens = d.prompt_tokens + EXCLUDED.prompt_tokens,
        completion_tokens = d.completion_tokens + EXCLUDED.completion_tokens,
        requests = d.requests + EXCLUDED.requests,
        ok_tokens = d.ok_tokens + EXCLUDED.ok_tokens,
        cost_micros = d.cost_micros + EXCLUDED.cost_micros";

const UPSERT_PERIOD: &str = "INSERT INTO usage_period AS p (period, user_id, key_id, tokens, cost_micros,
        credit_micros)
    SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[], $5::BIGINT[], $6::BIGINT[])
    ON CONFLICT (period, user_id, key_id) DO UPDATE SET tokens = p.tokens + EXCLUDED.tokens,
        cost_micros = p.cost_micros + EXCLUDED.cost_micros,
        credit_micros = p.credit_micros + EXCLUDED.credit_micros";

/// The charge of each record comes out of its replica's slice in the same
/// commit, so a grant never sees both or neither (V9: the slices locked in
/// key order).
const FROM_SLICES: &str = "SELECT tollgate_take($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::TEXT[],
    $5::BIGINT[], $6::BIGINT[])";

fn record(r: &Row) -> UsageRecord {
    UsageRecord {
        id: r.get(0),
        request_id: r.get(1),
        user_id: r.get(2),
        username: r.get(3),
        key_id: r.get(4),
        provider: r.get(5),
        model: r.get(6),
        upstream_model: r.get(7),
        endpoint: Cow::Owned(r.get(8)),
        prompt_tokens: r.get(9),
        completion_tokens: r.get(10),
        total_tokens: r.get(11),
        cost_micros: r.get(12),
        credit_micros: r.get(13),
        estimated: r.get(14),
        priced: r.get(15),
        http_status: u16::try_from(r.get::<_, i32>(16)).unwrap_or(0),
        outcome: Cow::Owned(r.get(17)),
        latency_ms: r.get(18),
        ttft_ms: r.get(19),
        created_at: r.get(20),
        slice: None,
        seq: 0,
    }
}

const RECORD_COLUMNS: &str = "id, request_id, user_id, username, key_id, provider, model, upstream_model, endpoint, \
    prompt_tokens, completion_tokens, total_tokens, cost_micros, credit_micros, estimated, priced, http_status, \
    outcome, latency_ms, ttft_ms, created_at";

/// `1 = 1 AND …` over the daily roll-ups, with its parameters.
fn daily_clause(f: &DailyFilter) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let mut w = vec!["1 = 1".to_owned()];
    let mut p: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    if let Some(u) = f.user_id {
        p.push(Box::new(u));
        w.push(format!("d.user_id = ${}", p.len()));
    }
    for (v, col, op) in [
        (&f.provider, "d.provider", "="),
        (&f.model, "d.model", "="),
        (&f.from_day, "d.day", ">="),
        (&f.to_day, "d.day", "<"),
    ] {
        if let Some(v) = v {
            p.push(Box::new(v.clone()));
            w.push(format!("{col} {op} ${}", p.len()));
        }
    }
    (w.join(" AND "), p)
}

fn refs(p: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    p.iter().map(|b| &**b as &(dyn ToSql + Sync)).collect()
}

impl Pg {
    /// Writes a batch of records with their roll-ups, and deletes the
    /// reservations they settle, in one transaction.
    pub async fn write_usage_batch(&self, records: &[UsageRecord]) -> DbResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut cols = Columns::default();
        // Charges per slice: (instance, user, key or 0, period) → (tokens, micros).
        let mut held: std::collections::BTreeMap<(&str, i64, i64, &str), (i64, i64)> =
            Default::default();
        for r in records {
            cols.request_id.push(&r.request_id);
            cols.user_id.push(r.user_id);
            cols.username.push(&r.username);
            cols.key_id.push(r.key_id);
            cols.provider.push(&r.provider);
            cols.model.push(&r.model);
            cols.upstream_model.push(&r.upstream_model);
            cols.endpoint.push(&r.endpoint);
            cols.prompt.push(r.prompt_tokens);
            cols.completion.push(r.completion_tokens);
            cols.total.push(r.total_tokens);
            cols.cost.push(r.cost_micros);
            cols.credit.push(r.credit_micros);
            cols.estimated.push(r.estimated);
            cols.priced.push(r.priced);
            cols.status.push(i32::from(r.http_status));
            cols.outcome.push(&r.outcome);
            cols.latency.push(r.latency_ms);
            cols.ttft.push(r.ttft_ms);
            cols.created_at.push(&r.created_at);
            if let Some(s) = &r.slice {
                let e = held
                    .entry((&s.instance, r.user_id, r.key_id.unwrap_or(0), &s.period))
                    .or_default();
                e.0 += s.tokens;
                e.1 += s.micros;
            }
        }
        let (days, periods) = crate::db::usage::rollups(records);
        let mut day_cols = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        // Rows are upserted in key order: replicas writing at once then lock
        // shared roll-up rows in one order and cannot deadlock each other.
        let mut days: Vec<_> = days.into_iter().collect();
        days.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut periods: Vec<_> = periods.into_iter().collect();
        periods.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for ((day, user, provider, model), d) in &days {
            day_cols.0.push(*day);
            day_cols.1.push(*user);
            day_cols.2.push(*provider);
            day_cols.3.push(*model);
            day_cols.4.push(d.tokens);
            day_cols.5.push(d.prompt);
            day_cols.6.push(d.completion);
            day_cols.7.push(d.requests);
            day_cols.8.push(d.ok_tokens);
            day_cols.9.push(d.cost);
        }
        let mut period_cols = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for ((p, user, key), t) in &periods {
            period_cols.0.push(*p);
            period_cols.1.push(*user);
            period_cols.2.push(*key);
            period_cols.3.push(t.tokens);
            period_cols.4.push(t.cost);
            period_cols.5.push(t.credit);
        }

        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let ins = tx.prepare_cached(INSERT_RECORDS).await?;
        let c_ = &cols;
        tx.execute(
            &ins,
            &[
                &c_.request_id,
                &c_.user_id,
                &c_.username,
                &c_.key_id,
                &c_.provider,
                &c_.model,
                &c_.upstream_model,
                &c_.endpoint,
                &c_.prompt,
                &c_.completion,
                &c_.total,
                &c_.cost,
                &c_.credit,
                &c_.estimated,
                &c_.priced,
                &c_.status,
                &c_.outcome,
                &c_.latency,
                &c_.ttft,
                &c_.created_at,
            ],
        )
        .await?;
        if !days.is_empty() {
            let st = tx.prepare_cached(UPSERT_DAILY).await?;
            let d = &day_cols;
            tx.execute(
                &st,
                &[&d.0, &d.1, &d.2, &d.3, &d.4, &d.5, &d.6, &d.7, &d.8, &d.9],
            )
            .await?;
        }
        if !periods.is_empty() {
            let st = tx.prepare_cached(UPSERT_PERIOD).await?;
            let p = &period_cols;
            tx.execute(&st, &[&p.0, &p.1, &p.2, &p.3, &p.4, &p.5])
                .await?;
        }
        if !held.is_empty() {
            // In key order, like the roll-ups.
            let mut cols = (
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
            );
            for ((instance, user, key, period), (tokens, micros)) in &held {
                cols.0.push(*instance);
                cols.1.push(*user);
                cols.2.push(*key);
                cols.3.push(*period);
                cols.4.push(*tokens);
                cols.5.push(*micros);
            }
            let st = tx.prepare_cached(FROM_SLICES).await?;
            let h = &cols;
            tx.execute(&st, &[&h.0, &h.1, &h.2, &h.3, &h.4, &h.5])
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes raw records created before `before`; roll-ups stay.
    pub async fn trim_usage(&self, before: &str) -> DbResult<usize> {
        let n = self
            .client()
            .await?
            .execute(
                "DELETE FROM requests WHERE id < COALESCE(
                    (SELECT id FROM requests WHERE created_at >= $1 ORDER BY id LIMIT 1),
                    (SELECT MAX(id) + 1 FROM requests), 0)",
                &[&before],
            )
            .await?;
        Ok(n as usize)
    }

    pub async fn period_totals(&self, period: String) -> DbResult<Vec<PeriodTotal>> {
        Ok(self
            .client()
            .await?
            .query(
                "SELECT user_id, key_id, tokens, cost_micros FROM usage_period WHERE period = $1",
                &[&period],
            )
            .await?
            .iter()
            .map(|r| PeriodTotal {
                user_id: r.get(0),
                key_id: r.get(1),
                tokens: r.get(2),
                cost: r.get(3),
            })
            .collect())
    }

    pub async fn credit_spent(&self) -> DbResult<Vec<(i64, i64)>> {
        Ok(self
            .client()
            .await?
            .query(
                "SELECT user_id, SUM(credit_micros)::BIGINT FROM usage_period
                 WHERE credit_micros <> 0 GROUP BY user_id",
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    pub async fn credit_entries_after(&self, after: i64) -> DbResult<Vec<(i64, i64, i64)>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT id, user_id, amount_micros FROM credits WHERE id > $1 ORDER BY id",
            )
            .await?;
        Ok(c.query(&st, &[&after])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    pub async fn usage_totals(&self, f: DailyFilter) -> DbResult<(i64, i64, i64, i64)> {
        let (w, p) = daily_clause(&f);
        let r = self
            .client()
            .await?
            .query_one(
                &format!(
                    "SELECT COALESCE(SUM(d.tokens), 0)::BIGINT, COALESCE(SUM(d.requests), 0)::BIGINT,
                            COALESCE(SUM(d.ok_tokens), 0)::BIGINT, COALESCE(SUM(d.cost_micros), 0)::BIGINT
                     FROM usage_daily d WHERE {w}"
                ),
                &refs(&p),
            )
            .await?;
        Ok((r.get(0), r.get(1), r.get(2), r.get(3)))
    }

    pub async fn usage_daily(&self, f: DailyFilter) -> DbResult<Vec<DailyRow>> {
        let (w, p) = daily_clause(&f);
        Ok(self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT d.day, d.provider, d.model, SUM(d.tokens)::BIGINT, SUM(d.requests)::BIGINT,
                            SUM(d.cost_micros)::BIGINT
                     FROM usage_daily d WHERE {w}
                     GROUP BY d.day, d.provider, d.model
                     ORDER BY d.day COLLATE \"C\", d.provider COLLATE \"C\", d.model COLLATE \"C\""
                ),
                &refs(&p),
            )
            .await?
            .iter()
            .map(|r| DailyRow {
                date: r.get(0),
                provider: r.get(1),
                model: r.get(2),
                tokens: r.get(3),
                requests: r.get(4),
                cost_micros: r.get(5),
            })
            .collect())
    }

    pub async fn usage_grouped(&self, group_by: String, f: DailyFilter) -> DbResult<Vec<GroupRow>> {
        let key = match group_by.as_str() {
            "day" => "d.day",
            "user" => "COALESCE(u.username, d.user_id::TEXT)",
            "provider" => "d.provider",
            _ => "d.model",
        };
        let (w, p) = daily_clause(&f);
        // Text in byte order, as SQLite sorts it.
        let order = if group_by == "day" { "1" } else { "2 DESC, 1" };
        Ok(self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT ({key}) COLLATE \"C\", SUM(d.tokens)::BIGINT, SUM(d.requests)::BIGINT, SUM(d.cost_micros)::BIGINT
                     FROM usage_daily d LEFT JOIN users u ON u.id = d.user_id
                     WHERE {w} GROUP BY 1 ORDER BY {order}"
                ),
                &refs(&p),
            )
            .await?
            .iter()
            .map(|r| GroupRow {
                key: r.get(0),
                tokens: r.get(1),
                requests: r.get(2),
                cost_micros: r.get(3),
            })
            .collect())
    }

    pub async fn requests_page(&self, f: RequestFilter) -> DbResult<Vec<UsageRecord>> {
        let mut w = vec!["1 = 1".to_owned()];
        let mut p: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        if let Some(u) = f.user_id {
            p.push(Box::new(u));
            w.push(format!("user_id = ${}", p.len()));
        }
        if let Some(v) = &f.provider {
            p.push(Box::new(v.clone()));
            w.push(format!("provider = ${}", p.len()));
        }
        if let Some(v) = &f.outcome {
            p.push(Box::new(v.clone()));
            w.push(format!("outcome = ${}", p.len()));
        }
        if let Some(b) = f.before {
            p.push(Box::new(b));
            w.push(format!("id < ${}", p.len()));
        }
        p.push(Box::new(f.limit));
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM requests WHERE {} ORDER BY id DESC LIMIT ${}",
            w.join(" AND "),
            p.len()
        );
        Ok(self
            .client()
            .await?
            .query(&sql, &refs(&p))
            .await?
            .iter()
            .map(record)
            .collect())
    }
}
