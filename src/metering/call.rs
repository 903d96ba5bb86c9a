//! `CallMeter`: the guard around one metered call. It holds the call's
//! reservation; `finish` charges what the call used and releases the rest, and
//! if the guard is dropped unfinished — the client went away, the handler
//! panicked — `Drop` settles it as cancelled, charging the prompt and what was
//! generated so far. Settlement therefore runs on every path by construction.

use super::estimate;
use super::ledger::Account;
use super::pricing::Price;
use crate::db::{self, usage::UsageRecord};
use crate::state::AppState;
use serde::Serialize;
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

/// A `usage` object read without building a tree; numbers kept as JSON
/// numbers so that the rules of [`Usage::from_json`] apply unchanged.
#[derive(serde::Deserialize)]
struct UsageWire {
    prompt_tokens: Option<serde_json::Number>,
    input_tokens: Option<serde_json::Number>,
    completion_tokens: Option<serde_json::Number>,
    output_tokens: Option<serde_json::Number>,
    total_tokens: Option<serde_json::Number>,
    cost: Option<serde_json::Number>,
}

impl Usage {
    /// [`Usage::from_json`] on the text of a `usage` value. The common shape
    /// is read into a flat struct; anything else (a count sent as a string,
    /// say) is parsed and read as a tree, so the result is the same.
    pub fn from_json_text(raw: &str) -> Option<Usage> {
        let Ok(w) = serde_json::from_str::<UsageWire>(raw) else {
            return serde_json::from_str::<serde_json::Value>(raw)
                .ok()
                .as_ref()
                .and_then(Usage::from_json);
        };
        let int = |n: &Option<serde_json::Number>| n.as_ref().and_then(serde_json::Number::as_i64);
        let prompt = int(&w.prompt_tokens).or_else(|| int(&w.input_tokens));
        let completion = int(&w.completion_tokens).or_else(|| int(&w.output_tokens));
        let total = int(&w.total_tokens);
        if prompt.is_none() && completion.is_none() && total.is_none() {
            return None;
        }
        let (p, c) = (prompt.unwrap_or(0).max(0), completion.unwrap_or(0).max(0));
        let cost = w
            .cost
            .as_ref()
            .and_then(serde_json::Number::as_f64)
            .filter(|c| c.is_finite() && *c >= 0.0);
        Some(Usage {
            prompt_tokens: p,
            completion_tokens: c,
            total_tokens: total.unwrap_or(p + c).max(p + c),
            cost_usd: cost,
        })
    }

    /// Reads an OpenAI `usage` object; `None` when it holds no token counts.
    pub fn from_json(v: &serde_json::Value) -> Option<Usage> {
        let obj = v.as_object()?;
        let get = |k: &str| obj.get(k).and_then(serde_json::Value::as_i64);
        let prompt = get("prompt_tokens").or_else(|| get("input_tokens"));
        let completion = get("completion_tokens").or_else(|| get("output_tokens"));
        if prompt.is_none() && completion.is_none() && get("total_tokens").is_none() {
            return None;
        }
        let (p, c) = (prompt.unwrap_or(0).max(0), completion.unwrap_or(0).max(0));
        let total = get("total_tokens").unwrap_or(p + c).max(p + c);
        let cost = obj
            .get("cost")
            .and_then(serde_json::Value::as_f64)
            .filter(|c| c.is_finite() && *c >= 0.0);
        Some(Usage {
            prompt_tokens: p,
            completion_tokens: c,
            total_tokens: total,
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
    pub cost_usd: f64,
    pub remaining_tokens: i64,
    pub provider: String,
    pub request_id: String,
    pub estimated: bool,
}

impl UsageInfo {
    /// The object as JSON text, as serde_json prints it (field order, number
    /// and float format), without going through a serializer per call.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(200);
        self.write_json(&mut out);
        out
    }

    /// [`UsageInfo::to_json`] appended to `out`.
    pub fn write_json(&self, out: &mut String) {
        use crate::upstream::json_edit::push_quoted;
        let mut int = itoa::Buffer::new();
        out.push_str("{\"tokens_used\":");
        out.push_str(int.format(self.tokens_used));
        out.push_str(",\"prompt_tokens\":");
        out.push_str(int.format(self.prompt_tokens));
        out.push_str(",\"completion_tokens\":");
        out.push_str(int.format(self.completion_tokens));
        out.push_str(",\"cost_usd\":");
        match self.cost_usd {
            c if !c.is_finite() => out.push_str("null"),
            c => match ryu::Buffer::new().format_finite(c) {
                // serde_json writes exponents its own way ("3e+21").
                t if t.contains('e') => {
                    out.push_str(&serde_json::to_string(&c).unwrap_or_else(|_| "null".into()))
                }
                t => out.push_str(t),
            },
        }
        out.push_str(",\"remaining_tokens\":");
        out.push_str(int.format(self.remaining_tokens));
        out.push_str(",\"provider\":");
        push_quoted(out, &self.provider);
        out.push_str(",\"request_id\":");
        push_quoted(out, &self.request_id);
        out.push_str(if self.estimated {
            ",\"estimated\":true}"
        } else {
            ",\"estimated\":false}"
        });
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
    st: AppState,
    pub account: Account,
    pub info: CallInfo,
    reserved: i64,
    pub prompt_estimate: i64,
    pub price: Option<Price>,
    started: Instant,
    ttft_ms: Option<i64>,
    generated_chars: usize,
    done: bool,
}

impl CallMeter {
    /// Wraps a reservation already taken in the ledger.
    pub fn new(
        st: AppState,
        account: Account,
        info: CallInfo,
        reserved: i64,
        prompt_estimate: i64,
        price: Option<Price>,
    ) -> Self {
        st.metering.calls.enter();
        CallMeter {
            st,
            account,
            info,
            reserved,
            prompt_estimate,
            price,
            started: Instant::now(),
            ttft_ms: None,
            generated_chars: 0,
            done: false,
        }
    }

    pub fn reserved(&self) -> i64 {
        self.reserved
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

    /// Counts generated text, for an estimate if no usage arrives.
    pub fn add_generated(&mut self, text: &str) {
        self.generated_chars += text.chars().count();
    }

    /// Counts `n` characters of generated text.
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
        let (prompt, completion, total, estimated) = match (outcome, usage) {
            (Outcome::UpstreamError | Outcome::Refused, _) => (0, 0, 0, false),
            (_, Some(u)) => (u.prompt_tokens, u.completion_tokens, u.total_tokens, false),
            (_, None) => {
                let c = (self.generated_chars as i64 + 3) / 4;
                (self.prompt_estimate, c, self.prompt_estimate + c, true)
            }
        };
        let reported_cost = usage.and_then(|u| u.cost_usd).filter(|_| total > 0);
        let (cost, priced) = match (reported_cost, self.price) {
            (Some(c), _) => (c, true),
            (None, Some(p)) => (p.cost(prompt, completion), true),
            (None, None) => (0.0, false),
        };
        let now = self.st.clock.now();
        let period = super::period_of(now);
        let reserved = if self.done { 0 } else { self.reserved };
        let charged = if self.done { 0 } else { total };
        let remaining = self
            .st
            .metering
            .ledger
            .settle(&self.account, &period, reserved, charged);
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
            self.st.metering.writer.send(UsageRecord {
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
                cost_usd: cost,
                estimated,
                priced,
                http_status,
                outcome: outcome.as_str().into(),
                latency_ms,
                ttft_ms: self.ttft_ms,
                created_at: db::ts(now),
            });
        }
        UsageInfo {
            tokens_used: total,
            prompt_tokens: prompt,
            completion_tokens: completion,
            cost_usd: cost,
            remaining_tokens: remaining,
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
        self.st.metering.calls.leave();
    }
}

/// Records a call refused before it reached an upstream (quota, rate, model).
pub fn record_refusal(st: &AppState, info: &CallInfo, http_status: u16) {
    st.metering.writer.send(UsageRecord {
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
        cost_usd: 0.0,
        estimated: false,
        priced: false,
        http_status,
        outcome: Outcome::Refused.as_str().into(),
        latency_ms: 0,
        ttft_ms: None,
        created_at: db::ts(st.clock.now()),
    });
}

/// Completion tokens of a text, for estimates.
pub fn estimate_text(text: &str) -> i64 {
    estimate::tokens_of_text(text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn usage_info_json_is_serde_jsons() {
        for (cost, provider, estimated) in [
            (0.0, "openrouter", false),
            (0.000123, "a\"b", true),
            (1e-9, "x", false),
            (12.5, "custom_1", true),
            (3.0e21, "big", false),
            (f64::NAN, "nan", false),
            (0.1 + 0.2, "sum", false),
            (1.5e-5, "small", false),
            (123456789.123, "mid", false),
            (5e-324, "tiny", false),
        ] {
            let info = UsageInfo {
                tokens_used: 19,
                prompt_tokens: -1,
                completion_tokens: i64::MAX,
                cost_usd: cost,
                remaining_tokens: i64::MIN,
                provider: provider.into(),
                request_id: "req_0123abc".into(),
                estimated,
            };
            assert_eq!(info.to_json(), serde_json::to_string(&info).unwrap());
        }
    }

    use super::{Usage, UsageInfo};

    #[test]
    fn usage_from_text_reads_like_the_tree() {
        for raw in [
            r#"{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}"#,
            r#"{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19,"prompt_tokens_details":{"cached_tokens":0},"cost":0.00042}"#,
            r#"{"input_tokens":3,"output_tokens":4}"#,
            r#"{"prompt_tokens":5,"completion_tokens":6,"total_tokens":2}"#,
            r#"{"prompt_tokens":-5,"completion_tokens":null,"total_tokens":9}"#,
            r#"{"prompt_tokens":"12","completion_tokens":7}"#,
            r#"{"prompt_tokens":1.5,"completion_tokens":7,"cost":-1}"#,
            r#"{"prompt_tokens":1,"prompt_tokens":2}"#,
            r#"{"cost":1}"#,
            "null",
            "[]",
            "{}",
        ] {
            let tree = serde_json::from_str::<serde_json::Value>(raw)
                .ok()
                .as_ref()
                .and_then(Usage::from_json);
            assert_eq!(Usage::from_json_text(raw), tree, "{raw}");
        }
    }
}
