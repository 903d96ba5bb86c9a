//! `CallMeter`: the guard around one metered call. It holds the call's
//! reservation; `finish` charges what the call used and releases the rest, and
//! if the guard is dropped unfinished — the client went away, the handler
//! panicked — `Drop` settles it as cancelled, charging the prompt and what was
//! generated so far. Settlement therefore runs on every path by construction.

use super::estimate;
use super::ledger::{Account, Amount, Avail};
use super::pricing::Price;
use super::quota::Grant;
use crate::db::{self, usage::UsageRecord};
use crate::state::Metering;
use serde::Serialize;
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    UpstreamError,
    ClientCancelled,
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::UpstreamError => "upstream_error",
            Outcome::ClientCancelled => "client_cancelled",
            Outcome::Refused => "refused",
        }
    }
}

/// Usage as an upstream reported it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// The upstream's own cost in USD (OpenRouter's `usage.cost`).
    pub cost_usd: Option<f64>,
}

/// What the gateway reads of a `usage` object: each count as the JSON text
/// it was sent as, so that a count of another type (`"12"`, `1.5`) reads as
/// absent rather than failing the whole object.
#[derive(serde::Deserialize)]
struct UsageWire<'a> {
    #[serde(borrow, default)]
    prompt_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    input_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    completion_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    output_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    total_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    cost: Option<&'a RawValue>,
}

impl Usage {
    /// Reads an OpenAI `usage` object (its JSON text); `None` when it is not
    /// an object, holds no token counts, or names a count twice.
    pub fn from_raw(raw: &RawValue) -> Option<Usage> {
        let w: UsageWire = serde_json::from_str(raw.get()).ok()?;
        let int = |v: Option<&RawValue>| v.and_then(|v| v.get().parse::<i64>().ok());
        let prompt = int(w.prompt_tokens).or_else(|| int(w.input_tokens));
        let completion = int(w.completion_tokens).or_else(|| int(w.output_tokens));
        let total = int(w.total_tokens);
        if prompt.is_none() && completion.is_none() && total.is_none() {
            return None;
        }
        let (p, c) = (prompt.unwrap_or(0).max(0), completion.unwrap_or(0).max(0));
        let cost = w
            .cost
            .and_then(|v| v.get().parse::<f64>().ok())
            .filter(|c| c.is_finite() && *c >= 0.0);
        Some(Usage {
            prompt_tokens: p,
            completion_tokens: c,
            total_tokens: total.unwrap_or(p + c).max(p + c),
            cost_usd: cost,
        })
    }
}

/// `_usage_info` (SPEC §5).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UsageInfo {
    pub tokens_used: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Micro-dollars, shown in dollars.
    #[serde(serialize_with = "crate::money::ser_usd")]
    pub cost_usd: i64,
    pub remaining_tokens: i64,
    /// Micro-dollars left under the USD limits that apply (SPEC §12); absent
    /// when none does.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_usd_opt"
    )]
    pub remaining_usd: Option<i64>,
    pub provider: String,
    pub request_id: String,
    pub estimated: bool,
}

fn ser_usd_opt<S: serde::Serializer>(m: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match m {
        Some(m) => crate::money::ser_usd(m, s),
        None => s.serialize_none(),
    }
}

/// What a call is, for its record.
#[derive(Debug, Clone)]
pub struct CallInfo {
    pub request_id: String,
    pub user_id: i64,
    pub username: String,
    pub key_id: Option<i64>,
    pub endpoint: &'static str,
    pub model: String,
    /// The model as a metrics label (`other` when nobody configured it).
    pub metric_model: String,
    pub provider: String,
    pub upstream_model: String,
}

pub struct CallMeter {
    m: Arc<Metering>,
    pub account: Account,
    pub info: CallInfo,
    grant: Grant,
    pub prompt_estimate: i64,
    pub price: Option<Price>,
    started: Instant,
    ttft_ms: Option<i64>,
    generated_chars: usize,
    done: bool,
    /// Shared quotas: a short slice's room going back, in flight.
    settling: Option<tokio::task::JoinHandle<()>>,
    /// What was left after the settlement.
    left: Avail,
}

impl CallMeter {
    /// Wraps a reservation already taken (see [`super::quota::Quotas::admit`]).
    pub fn new(
        m: Arc<Metering>,
        account: Account,
        info: CallInfo,
        grant: Grant,
        prompt_estimate: i64,
        price: Option<Price>,
    ) -> Self {
        m.calls.enter();
        CallMeter {
            m,
            account,
            info,
            grant,
            prompt_estimate,
            price,
            started: Instant::now(),
            ttft_ms: None,
            generated_chars: 0,
            done: false,
            settling: None,
            left: Avail::default(),
        }
    }

    /// Waits until the settled call's reservation is down to its charge in
    /// the database (shared quotas; at once otherwise), so that the client's
    /// next call, sent when this answer arrives, sees the tokens released.
    pub async fn settled(&mut self) {
        if let Some(t) = self.settling.take() {
            let _ = t.await;
        }
    }

    pub fn reserved(&self) -> i64 {
        self.grant.reserved.tokens
    }

    /// The provider and model that actually serve the call (after a fallback).
    pub fn set_route(&mut self, provider: &str, upstream_model: &str, price: Option<Price>) {
        self.info.provider = provider.to_owned();
        self.info.upstream_model = upstream_model.to_owned();
        self.price = price;
    }

    /// Marks the first token's arrival (once).
    pub fn first_token(&mut self) {
        if self.ttft_ms.is_none() {
            self.ttft_ms = Some(self.started.elapsed().as_millis() as i64);
        }
    }

    /// Counts `n` characters of generated text, for an estimate if no usage
    /// arrives.
    pub fn add_generated_chars(&mut self, n: usize) {
        self.generated_chars += n;
    }

    pub fn elapsed_ms(&self) -> i64 {
        self.started.elapsed().as_millis() as i64
    }

    /// Settles the call: charges `usage` (or an estimate), releases the rest of
    /// the reservation, queues the record. Returns `_usage_info`.
    pub fn finish(
        &mut self,
        outcome: Outcome,
        http_status: u16,
        usage: Option<Usage>,
    ) -> UsageInfo {
        // An upstream that reported usage did the work: that is charged, even
        // when the call then failed (a stream cut after its usage chunk, an
        // answer streamed though a whole one was asked for).
        let (prompt, completion, total, estimated) = match (outcome, usage) {
            (Outcome::Refused, _) | (Outcome::UpstreamError, None) => (0, 0, 0, false),
            (_, Some(u)) => (u.prompt_tokens, u.completion_tokens, u.total_tokens, false),
            (_, None) => {
                let c = (self.generated_chars as i64 + 3) / 4;
                (self.prompt_estimate, c, self.prompt_estimate + c, true)
            }
        };
        let reported_cost = usage.and_then(|u| u.cost_usd).filter(|_| total > 0);
        let (cost, priced) = match (reported_cost, self.price) {
            (Some(c), _) => (crate::money::micros_of_usd(c), true),
            (None, Some(p)) => (p.cost(prompt, completion), true),
            (None, None) => (0, false),
        };
        let now = self.m.clock.now();
        let period = super::period_of(now);
        let charged = Amount {
            tokens: total,
            micros: cost,
        };
        let (remaining, slice) = match self.done {
            // Settled already: what is left, without releasing anything twice.
            true => (self.left, None),
            false => {
                let (left, slice, settling) =
                    self.m
                        .quotas
                        .settle(&self.account, &period, &self.grant, charged);
                self.settling = settling;
                self.left = left;
                (left, slice)
            }
        };
        if !self.done {
            self.done = true;
            let latency_ms = self.elapsed_ms();
            crate::telemetry::record_tokens(
                &self.info.provider,
                &self.info.metric_model,
                prompt,
                completion,
                cost,
            );
            self.m.writer.send(UsageRecord {
                id: 0,
                request_id: self.info.request_id.clone(),
                user_id: self.info.user_id,
                username: self.info.username.clone(),
                key_id: self.info.key_id,
                provider: self.info.provider.clone(),
                model: self.info.model.clone(),
                upstream_model: self.info.upstream_model.clone(),
                endpoint: self.info.endpoint.into(),
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: total,
                cost_micros: cost,
                credit_micros: if self.account.payg { cost } else { 0 },
                estimated,
                priced,
                http_status,
                outcome: outcome.as_str().into(),
                latency_ms,
                ttft_ms: self.ttft_ms,
                created_at: db::ts(now),
                slice,
                seq: 0,
            });
        }
        UsageInfo {
            tokens_used: total,
            prompt_tokens: prompt,
            completion_tokens: completion,
            cost_usd: cost,
            remaining_tokens: remaining.tokens,
            remaining_usd: remaining.micros,
            provider: self.info.provider.clone(),
            request_id: self.info.request_id.clone(),
            estimated,
        }
    }

    pub fn is_finished(&self) -> bool {
        self.done
    }
}

impl Drop for CallMeter {
    fn drop(&mut self) {
        if !self.done {
            // 499: the client closed the request (nginx's convention).
            self.finish(Outcome::ClientCancelled, 499, None);
        }
        // Settled and queued: shutdown may now flush the writer.
        self.m.calls.leave();
    }
}

/// Records a call refused before it reached an upstream (quota, rate, model).
pub fn record_refusal(m: &Metering, info: &CallInfo, http_status: u16) {
    m.writer.send(UsageRecord {
        id: 0,
        request_id: info.request_id.clone(),
        user_id: info.user_id,
        username: info.username.clone(),
        key_id: info.key_id,
        provider: info.provider.clone(),
        model: info.model.clone(),
        upstream_model: info.upstream_model.clone(),
        endpoint: info.endpoint.into(),
        prompt_tokens: 0,
        completion_tokens: 0,
        total_tokens: 0,
        cost_micros: 0,
        credit_micros: 0,
        estimated: false,
        priced: false,
        http_status,
        outcome: Outcome::Refused.as_str().into(),
        latency_ms: 0,
        ttft_ms: None,
        created_at: db::ts(m.clock.now()),
        slice: None,
        seq: 0,
    });
}

/// Completion tokens of a text, for estimates.
pub fn estimate_text(text: &str) -> i64 {
    estimate::tokens_of_text(text)
}

#[cfg(test)]
mod tests {
    use super::Usage;
    use serde_json::value::RawValue;

    fn read(raw: &str) -> Option<Usage> {
        Usage::from_raw(&serde_json::from_str::<Box<RawValue>>(raw).unwrap())
    }

    #[test]
    fn usage_is_read_leniently_but_never_twice() {
        let u = read(r#"{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19,"prompt_tokens_details":{"cached_tokens":0},"cost":0.00042}"#).unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (12, 7, 19)
        );
        assert_eq!(u.cost_usd, Some(0.00042));
        let u = read(r#"{"input_tokens":3,"output_tokens":4}"#).unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (3, 4, 7)
        );
        // A total below its parts is raised to them; negative counts are 0.
        let u = read(r#"{"prompt_tokens":5,"completion_tokens":6,"total_tokens":2}"#).unwrap();
        assert_eq!(u.total_tokens, 11);
        let u = read(r#"{"prompt_tokens":-5,"completion_tokens":null,"total_tokens":9}"#).unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (0, 0, 9)
        );
        // Counts of another type read as absent; a negative cost is none.
        let u = read(r#"{"prompt_tokens":"12","completion_tokens":7,"cost":-1}"#).unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cost_usd),
            (0, 7, None)
        );
        for raw in [
            r#"{"prompt_tokens":1,"prompt_tokens":2}"#,
            r#"{"cost":1}"#,
            "null",
            "[]",
            "{}",
            "7",
        ] {
            assert_eq!(read(raw), None, "{raw}");
        }
    }
}
