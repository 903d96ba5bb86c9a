//! The LLM proxy: one call from the client's JSON to the upstream and back.
//!
//! check the request → route it → refuse early (model not allowed, provider
//! inactive, rate, quota) → reserve through a [`CallMeter`] → send with retries
//! and fallbacks → answer: whole JSON with `_usage_info`, or an SSE stream
//! pumped chunk by chunk by its own task (`stream`), which also notices the client leaving.
//! The request body is kept as the client sent it; only `model`, the completion
//! cap and `stream_options.include_usage` are changed.

use super::answer::{Answer, Wanted};
use super::request::Request;
use crate::auth::Principal;
use crate::config::{ProviderApi, Unpriced};
use crate::dialect::{self, Conversation, Way};
use crate::error::ApiError;
use crate::json;
use crate::metering::call::{record_refusal, CallInfo, CallMeter, Outcome};
use crate::metering::ledger::{Account, Avail};
use crate::metering::pricing::Price;
use crate::metering::quota::{Ask, Refusal};
use crate::state::AppState;
use crate::telemetry;
use crate::upstream::client::{self, SendError};
use crate::upstream::errors::{self, Normalized};
use crate::upstream::routing::Route;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    /// Anthropic's Messages API.
    Messages,
    /// OpenAI's Responses API.
    Responses,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Messages => "/messages",
            Endpoint::Responses => "/responses",
        }
    }

    /// The name used in records and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat/completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Messages => "messages",
            Endpoint::Responses => "responses",
        }
    }
}

/// The most of an upstream error's body that is read.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Turns a normalised upstream error into our error.
pub fn api_error(n: Normalized) -> ApiError {
    let status = StatusCode::from_u16(n.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut e = ApiError::new(status, n.kind, n.code.as_deref(), n.message);
    e.retry_after = n.retry_after;
    e
}

/// Handles one call; every failure is an OpenAI-shaped error.
/// A call's body and the client headers passed on to a provider of the
/// same dialect (`anthropic-beta`: Claude Code's beta features need it).
pub struct Incoming {
    pub body: Bytes,
    pub forward: Vec<(axum::http::HeaderName, axum::http::HeaderValue)>,
}

impl Incoming {
    /// The headers of `headers` a call of `ep` forwards.
    pub fn new(ep: Endpoint, body: Bytes, headers: &axum::http::HeaderMap) -> Incoming {
        let forward = match ep {
            Endpoint::Messages => headers
                .get_all("anthropic-beta")
                .iter()
                .map(|v| {
                    (
                        axum::http::HeaderName::from_static("anthropic-beta"),
                        v.clone(),
                    )
                })
                .collect(),
            _ => Vec::new(),
        };
        Incoming { body, forward }
    }
}

pub async fn handle(
    st: AppState,
    p: Principal,
    request_id: String,
    ep: Endpoint,
    raw: Incoming,
) -> Response {
    // At the end of the shutdown grace period a call still waiting for its
    // upstream is dropped, which settles it (see `CallMeter`'s `Drop`).
    let stopped = st.metering.calls.stopped_owned();
    // The call's state (several kB) lives on the heap: the futures that wrap
    // it up to the connection then move a pointer, not the state, at each await.
    let call = Box::pin(run(st, p, request_id, ep, raw));
    let result = tokio::select! {
        r = call => r,
        _ = stopped => Err(shutting_down()),
    };
    match result {
        Ok(r) => r,
        Err(e) => crate::dialect::error_response(ep, e),
    }
}

/// `POST /v1/messages/count_tokens`: the prompt estimate of a Messages body
/// (read as a call would be; `max_tokens` not needed).
pub fn count_tokens(raw: Bytes) -> Result<i64, ApiError> {
    Request::parse_for_count(raw).map(|r| r.prompt_estimate)
}

pub(super) fn shutting_down() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "api_error",
        Some("shutting_down"),
        "The server is shutting down; the call was ended.",
    )
}

/// `provider/model` of a route (built without the formatting machinery: it
/// is on every call's path).
fn canonical_name(route: &Route) -> String {
    let mut s = String::with_capacity(route.provider.id.len() + 1 + route.upstream_model.len());
    s.push_str(&route.provider.id);
    s.push('/');
    s.push_str(&route.upstream_model);
    s
}

/// Price and completion limit of a routed model: `[pricing]` first (by the
/// client's name, then by the canonical `provider/model`), then the catalogue.
pub fn price_and_limit(
    st: &AppState,
    client_model: &str,
    route: &Route,
) -> (Option<Price>, Option<i64>) {
    let listed = st
        .catalog
        .with_model(&route.provider.id, &route.upstream_model, |m| {
            (m.max_output_tokens, m.prompt_price, m.completion_price)
        });
    let listed_limit = listed.and_then(|(max, ..)| max).map(|v| v as i64);
    let pricing = &st.config.pricing;
    let configured = match pricing.get(client_model) {
        Some(p) => Some(p),
        None if pricing.is_empty() => None,
        None => pricing.get(&canonical_name(route)),
    };
    match configured {
        Some(p) => (
            Some(Price::per_mtok(p.prompt, p.completion)),
            p.max_output_tokens.map(|v| v as i64).or(listed_limit),
        ),
        None => {
            let price = listed
                .and_then(|(_, prompt, completion)| Some(Price::per_mtok(prompt?, completion?)));
            (price, listed_limit)
        }
    }
}

/// `Err(whose list refuses it)` unless the plan and the key allow `model`.
fn allowed(
    p: &Principal,
    plan: &crate::auth::cache::PlanEntry,
    model: &str,
) -> Result<(), &'static str> {
    if !plan.allowed.matches(model) {
        return Err("your plan");
    }
    let key_allows = p
        .key
        .as_ref()
        .and_then(|k| k.allowed_models.as_ref())
        .is_none_or(|a| a.matches(model));
    if key_allows {
        Ok(())
    } else {
        Err("this API key")
    }
}

/// The dearer of two prices (by the cost of a million tokens each way); an
/// unknown price is not dearer than a known one.
fn dearer(a: Option<Price>, b: Option<Price>) -> Option<Price> {
    match (a, b) {
        (Some(a), Some(b)) if b.prompt + b.completion > a.prompt + a.completion => Some(b),
        (a, b) => a.or(b),
    }
}

/// Whose balance a call of `p` draws on, with every limit that applies.
pub fn account_of(p: &Principal, plan: &crate::auth::cache::PlanEntry) -> Account {
    Account {
        user_id: p.user.id,
        user_limit: plan.plan.monthly_tokens,
        key_id: p.key.as_ref().map(|k| k.id),
        key_limit: p.key.as_ref().and_then(|k| k.monthly_token_limit),
        user_usd: plan.plan.monthly_usd.map(|u| u.0),
        key_usd: p.key.as_ref().and_then(|k| k.monthly_usd_limit),
        payg: plan.plan.pay_as_you_go,
    }
}

/// Which limit in dollars applies, for messages.
fn money_limit_of(a: &Account) -> &'static str {
    match (a.payg, a.key_usd.is_some(), a.user_usd.is_some()) {
        (true, _, _) => "your prepaid credit",
        (false, true, false) => "this API key's USD limit",
        _ => "your plan's USD limit",
    }
}

/// 403 `model_not_priced` (SPEC §12).
fn not_priced(model: &str, a: &Account) -> ApiError {
    ApiError::forbidden_code(
        "model_not_priced",
        format!(
            "The model {model:?} has no known price, and calls under {} must be priced; \
             use a priced model, or ask an administrator to add a [pricing] entry for it.",
            money_limit_of(a)
        ),
    )
}

/// The 429 message of a call that does not fit what is left: in dollars when
/// money is what is short.
fn short_of(ask: &Ask, avail: Avail, a: &Account) -> String {
    let tokens_only = Avail {
        micros: None,
        ..avail
    };
    match avail.micros {
        Some(m) if ask.decide(tokens_only).is_ok() => {
            let prompt = crate::money::cost_micros(ask.prompt, ask.price.prompt);
            format!(
                "You have ${} left under {}, not enough for this call (about ${} for {} prompt tokens \
                 plus at least {} completion tokens). Add credit, wait for the next period or ask for a larger limit.",
                crate::money::format_usd(m),
                money_limit_of(a),
                crate::money::format_usd(prompt),
                ask.prompt,
                ask.min_cap
            )
        }
        _ => format!(
            "You have {} tokens left this period, not enough for this call (about {} prompt tokens \
             plus at least {} completion tokens). Wait for the next period or ask for a larger plan.",
            avail.tokens, ask.prompt, ask.min_cap
        ),
    }
}

/// The model as a metrics label: known names only, so clients cannot grow the label set.
pub fn metric_model(st: &AppState, client_model: &str, route: &Route) -> String {
    let canonical = canonical_name(route);
    let known = st.config.pricing.contains_key(client_model)
        || st.config.pricing.contains_key(&canonical)
        || st.config.routing.fallbacks.contains_key(client_model)
        || st
            .catalog
            .with_model(&route.provider.id, &route.upstream_model, |_| ())
            .is_some();
    if known {
        canonical
    } else {
        "other".to_owned()
    }
}

async fn run(
    st: AppState,
    p: Principal,
    request_id: String,
    ep: Endpoint,
    incoming: Incoming,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let Incoming { body: raw, forward } = incoming;
    let mut req = Request::parse(ep, raw)?;
    // `[routing] aliases`: the model a name stands for is what is routed,
    // checked, priced and recorded; the answer names it as the client did.
    let named = st
        .providers
        .aliases
        .resolve(&req.model)
        .map(|m| std::mem::replace(&mut req.model, m));
    let route = st.providers.route(&req.model);
    if dialect::way(ep, route.provider.api) == Way::No {
        return Err(ApiError::invalid_field(
            "model",
            format!(
                "The provider {} speaks Anthropic's Messages API, which has no /{}; use /v1/messages or /v1/chat/completions, or a model of an OpenAI-compatible provider.",
                route.provider.name,
                ep.name()
            ),
        ));
    }
    let info = CallInfo {
        request_id,
        user_id: p.user.id,
        username: p.user.username.clone(),
        key_id: p.key.as_ref().map(|k| k.id),
        endpoint: ep.name(),
        model: req.model.clone(),
        metric_model: metric_model(&st, &req.model, &route),
        provider: route.provider.id.clone(),
        upstream_model: route.upstream_model.clone(),
    };
    let refuse = |e: ApiError| {
        record_refusal(&st.metering, &info, e.status.as_u16());
        telemetry::record_request(
            &info.provider,
            &info.metric_model,
            ep.name(),
            e.status.as_u16(),
            started.elapsed().as_secs_f64(),
        );
        e
    };

    let Some(plan) = p.plan.clone() else {
        return Err(ApiError::internal(format!(
            "user {} has no plan",
            p.user.id
        )));
    };
    // The model and every model the upstream may run instead (OpenRouter's
    // `models`, each named under the provider the call goes to).
    let alternatives: Vec<String> = req
        .models
        .iter()
        .map(|m| format!("{}/{m}", route.provider.id))
        .collect();
    for name in std::iter::once(&req.model).chain(&alternatives) {
        if let Err(whose) = allowed(&p, &plan, name) {
            return Err(refuse(ApiError::forbidden_code(
                "model_not_allowed",
                format!("The model {name:?} is not allowed for {whose}; see GET /llm/models or ask an administrator."),
            )));
        }
    }
    if !route.provider.active() {
        return Err(refuse(ApiError::provider_unavailable(format!(
            "The provider {} is not available: {}.",
            route.provider.name,
            route.provider.inactive_reason().unwrap_or_default()
        ))));
    }
    let account = account_of(&p, &plan);
    let money = account.money_limited();
    let allow_unpriced = st.config.metering.unpriced == Unpriced::Allow;
    // Reserve: prompt estimate + cap × n (SPEC §6), in tokens and money, for
    // the dearest model the call may run.
    let (mut price, mut model_limit) = price_and_limit(&st, &req.model, &route);
    if money && price.is_none() && !allow_unpriced {
        return Err(refuse(not_priced(&req.model, &account)));
    }
    for (name, m) in alternatives.iter().zip(&req.models) {
        let alt = Route {
            provider: route.provider.clone(),
            upstream_model: m.clone(),
        };
        let (p, limit) = price_and_limit(&st, name, &alt);
        if money && p.is_none() && !allow_unpriced {
            return Err(refuse(not_priced(name, &account)));
        }
        price = dearer(price, p);
        model_limit = model_limit.max(limit);
    }
    let mut targets = vec![route];
    if let Some(alts) = st.config.routing.fallbacks.get(&req.model) {
        // A fallback on another provider gets the same `models` list: it is
        // taken only if that provider's names are allowed too, and only if
        // it can serve the endpoint (and, under a money limit, is priced).
        for t in alts.iter().map(|m| st.providers.route(m)) {
            let usable = dialect::way(ep, t.provider.api) != Way::No
                && req
                    .models
                    .iter()
                    .all(|m| allowed(&p, &plan, &format!("{}/{m}", t.provider.id)).is_ok());
            if !usable {
                continue;
            }
            let (fp, _) = price_and_limit(&st, &req.model, &t);
            if money && fp.is_none() && !allow_unpriced {
                continue;
            }
            price = dearer(price, fp);
            targets.push(t);
        }
    }
    let prompt_estimate = req.prompt_estimate;
    let metering = &st.config.metering;
    let wanted = req
        .client_cap
        .or(model_limit)
        .unwrap_or(metering.default_max_tokens as i64);
    let (min_cap, n) = (metering.min_completion_tokens as i64, req.n);
    let ask = Ask {
        prompt: prompt_estimate,
        wanted,
        n,
        min_cap,
        embeddings: ep == Endpoint::Embeddings,
        price: price.unwrap_or(Price {
            prompt: 0,
            completion: 0,
        }),
    };
    // While usage cannot be written, records wait in memory up to
    // max_pending_records; past it no call is taken that could go unrecorded.
    // The refusal itself is not recorded (it would only add to the wait).
    if st.metering.writer.is_failing()
        && st.metering.writer.pending() as u64 >= metering.max_pending_records
    {
        let e = ApiError::usage_unavailable();
        telemetry::record_request(
            &info.provider,
            &info.metric_model,
            ep.name(),
            e.status.as_u16(),
            started.elapsed().as_secs_f64(),
        );
        return Err(e);
    }
    let period = crate::metering::period_of(st.clock.now());
    let rpm = plan.plan.requests_per_minute;
    let admitted = st
        .metering
        .quotas
        .admit(&account, rpm, &ask, &period)
        .await
        .map_err(|e| refuse(ApiError::from(e)))?;
    let grant = match admitted {
        Ok(g) => g,
        Err(Refusal::Rate(wait)) => {
            return Err(refuse(ApiError::rate_limited(
                format!("Rate limit of your plan reached ({rpm} requests per minute); retry in {wait} s."),
                wait,
            )));
        }
        Err(Refusal::Quota(avail)) => {
            return Err(refuse(ApiError::insufficient_quota(short_of(
                &ask, avail, &account,
            ))));
        }
    };
    let cap = grant.cap;
    let mut meter = CallMeter::new(
        st.metering.clone(),
        account,
        info,
        grant,
        prompt_estimate,
        price,
    );

    let wants_usage = req.wants_usage;

    // The conversation, read once when some target speaks another dialect.
    let conversation = match targets
        .iter()
        .any(|t| dialect::way(ep, t.provider.api) == Way::Translate)
    {
        true => Some(dialect::parse(ep, req.text())?),
        false => None,
    };
    let out = Outbound {
        req: &req,
        conversation: conversation.as_ref(),
        ep,
        cap,
        forward: &forward,
    };
    let sent = send(&st, &mut meter, &out, &targets).await;
    let (resp, target) = match sent {
        Ok(r) => r,
        Err(e) => {
            meter.finish(Outcome::UpstreamError, e.status.as_u16(), None);
            meter.settled().await;
            telemetry::record_request(
                &meter.info.provider,
                &meter.info.metric_model,
                ep.name(),
                e.status.as_u16(),
                started.elapsed().as_secs_f64(),
            );
            return Err(e);
        }
    };
    let is_sse = resp.is_event_stream();
    let way = dialect::way(ep, target.provider.api);
    if req.stream && is_sse {
        return Ok(super::stream::stream_response(super::stream::StreamCall {
            st,
            meter,
            resp,
            target,
            client_model: named.unwrap_or(req.model),
            echo: conversation.and_then(|c| c.echo),
            wants_usage,
            ep,
            way,
            started,
        }));
    }
    let asked = dialect::Asked {
        model: named.as_deref().unwrap_or(&req.model),
        echo: conversation.as_ref().and_then(|c| c.echo.as_deref()),
    };
    let result = whole_response(&st, &mut meter, resp, &target, asked, ep, way).await;
    let status = match &result {
        Ok(_) => 200,
        Err(e) => e.status.as_u16(),
    };
    telemetry::record_request(
        &meter.info.provider,
        &meter.info.metric_model,
        ep.name(),
        status,
        started.elapsed().as_secs_f64(),
    );
    result
}

/// Sends to the first target that answers, retrying connect errors, 5xx and
/// 429 (before any byte reached the client) and moving on to the fallbacks.
/// What goes to each target: the request as read (and as a conversation
/// when some target speaks another dialect), the completion cap, and the
/// client headers a provider of the client's dialect gets.
struct Outbound<'a> {
    req: &'a Request,
    conversation: Option<&'a Conversation>,
    ep: Endpoint,
    cap: Option<i64>,
    forward: &'a crate::upstream::conn::Extra,
}

async fn send(
    st: &AppState,
    meter: &mut CallMeter,
    out: &Outbound<'_>,
    targets: &[Route],
) -> Result<(client::UpResponse, Route), ApiError> {
    let Outbound {
        req,
        conversation,
        ep,
        cap,
        forward,
    } = *out;
    let retries = st.config.routing.retries;
    let mut last: Option<ApiError> = None;
    let mut attempts = 0u32;
    for target in targets {
        let prov = &target.provider;
        if !prov.active() {
            last.get_or_insert_with(|| {
                ApiError::provider_unavailable(format!(
                    "The provider {} is not available: {}.",
                    prov.name,
                    prov.inactive_reason().unwrap_or_default()
                ))
            });
            continue;
        }
        let way = dialect::way(ep, prov.api);
        // Client headers go only to a provider of the client's own dialect.
        let extra = if way == Way::Pass { forward } else { &[] };
        let (path, bytes) = match (way, conversation) {
            (Way::Translate, Some(c)) => {
                let out = dialect::encode(
                    prov.api,
                    c,
                    &target.upstream_model,
                    cap,
                    &prov.cap_field,
                    req.stream,
                );
                (out.path, Bytes::from(out.body))
            }
            _ => (
                ep.path(),
                req.upstream_body(&target.upstream_model, cap, &prov.cap_field),
            ),
        };
        if target.provider.id != meter.info.provider
            || target.upstream_model != meter.info.upstream_model
        {
            let (price, _) = price_and_limit(st, &req.model, target);
            meter.set_route(&prov.id, &target.upstream_model, price);
        }
        for attempt in 0..=retries {
            if attempts > 0 {
                telemetry::record_retry(&prov.id, &meter.info.metric_model, ep.name());
                let wait = last
                    .as_ref()
                    .and_then(|e| e.retry_after)
                    .filter(|s| *s <= 2)
                    .map(Duration::from_secs);
                tokio::time::sleep(wait.unwrap_or(Duration::from_millis(100 << attempt.min(4))))
                    .await;
            }
            attempts += 1;
            match client::post_json(prov, path, bytes.clone(), req.stream, extra).await {
                Ok(resp) if resp.status().is_success() => {
                    st.health.record(&prov.id, true);
                    return Ok((resp, target.clone()));
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp.retry_after().map(str::to_owned);
                    // An error's message is all that is read of it: a body
                    // larger than that reads as empty.
                    let body = resp.bytes(ERROR_BODY_LIMIT).await.unwrap_or_default();
                    let mut n = errors::normalize(
                        &prov.name,
                        status,
                        retry_after.as_deref(),
                        &body,
                        prov.api_key.expose(),
                    );
                    let url = format!("{}{path}", prov.base_url);
                    errors::explain_not_found(&mut n, status, "POST", &url, &prov.base_url);
                    telemetry::record_upstream_error(
                        &prov.id,
                        &meter.info.metric_model,
                        ep.name(),
                        status,
                    );
                    let auth = n.code.as_deref() == Some("upstream_auth_error");
                    st.health.record(&prov.id, !(status >= 500 || auth));
                    tracing::info!(provider = %prov.id, status, "upstream answered an error");
                    let retryable = status == 429 || status >= 500;
                    last = Some(api_error(n));
                    if retryable && attempt < retries {
                        continue;
                    }
                    if retryable || auth {
                        break;
                    }
                    return Err(finish_error(last, attempts));
                }
                Err(e) => {
                    st.health.record(&prov.id, false);
                    telemetry::record_upstream_error(
                        &prov.id,
                        &meter.info.metric_model,
                        ep.name(),
                        0,
                    );
                    let (err, retryable) = match e {
                        SendError::Connect(m) => (
                            ApiError::upstream(format!(
                                "{}: cannot connect to the provider: {m}",
                                prov.name
                            )),
                            true,
                        ),
                        SendError::Timeout => (
                            ApiError::upstream_timeout(format!(
                                "{}: the provider did not answer within {} s.",
                                prov.name,
                                prov.timeout.as_secs()
                            )),
                            false,
                        ),
                        SendError::Broken(m) => (
                            ApiError::upstream(format!(
                                "{}: the connection to the provider broke: {m}",
                                prov.name
                            )),
                            false,
                        ),
                    };
                    tracing::info!(provider = %prov.id, error = %err.message, "upstream unreachable");
                    last = Some(err);
                    if retryable && attempt < retries {
                        continue;
                    }
                    break;
                }
            }
        }
    }
    Err(finish_error(last, attempts))
}

/// The last error, marked so SDKs do not retry once the gateway has.
fn finish_error(last: Option<ApiError>, attempts: u32) -> ApiError {
    let e = last.unwrap_or_else(|| ApiError::upstream("No provider could take the call."));
    if attempts > 1 {
        e.with_should_retry(false)
    } else {
        e
    }
}

/// A non-streaming answer: the upstream's object written again with `model`
/// as the client named it and `_usage_info` added. An answer that is not a
/// JSON object, or is larger than `[routing] max_response_bytes`, is a 502;
/// one that is an event stream (the upstream streamed though it was asked
/// for a whole answer) is a 502 too, charged for the usage it reported.
async fn whole_response(
    st: &AppState,
    meter: &mut CallMeter,
    resp: client::UpResponse,
    target: &Route,
    asked: dialect::Asked<'_>,
    ep: Endpoint,
    way: Way,
) -> Result<Response, ApiError> {
    let client_model = asked.model;
    let prov = &target.provider;
    let limit = st.config.routing.max_response_bytes;
    let streamed = resp.is_event_stream();
    let bytes = match resp.bytes(limit).await {
        Ok(b) => b,
        Err(e) => {
            let err = if e.is_timeout() {
                ApiError::upstream_timeout(format!(
                    "{}: the provider did not finish its answer in time.",
                    prov.name
                ))
            } else if e.is_too_large() {
                ApiError::upstream(format!(
                    "{}: the provider's answer is larger than {limit} bytes ([routing] max_response_bytes).",
                    prov.name
                ))
            } else {
                ApiError::upstream(format!("{}: the answer broke off: {e}", prov.name))
            };
            meter.finish(Outcome::UpstreamError, err.status.as_u16(), None);
            meter.settled().await;
            return Err(err);
        }
    };
    if streamed {
        let usage = super::stream::usage_of_events(&bytes, st.config.routing.max_event_bytes);
        let err = ApiError::upstream(format!(
            "{}: the provider streamed its answer, though a whole one was asked for.",
            prov.name
        ));
        st.health.record(&prov.id, false);
        meter.finish(Outcome::UpstreamError, 502, usage);
        meter.settled().await;
        return Err(err);
    }
    if way == Way::Translate {
        let r = translated_whole(st, meter, &bytes, target, asked, ep);
        meter.settled().await;
        return r;
    }
    let anthropic = prov.api == ProviderApi::Anthropic;
    let answer = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|t| Answer::parse(t, Wanted::default()));
    let Some(answer) = answer else {
        st.health.record(&prov.id, false);
        meter.finish(Outcome::UpstreamError, 502, None);
        meter.settled().await;
        return Err(ApiError::upstream(format!(
            "{}: the provider answered something that is not a JSON object.",
            prov.name
        )));
    };
    if answer.has_error() {
        let n = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| errors::from_json_error(&prov.name, &v, prov.api_key.expose()));
        let err = match n {
            Some(n) => api_error(n),
            None => ApiError::upstream(format!("{}: the provider reported an error.", prov.name)),
        };
        meter.finish(Outcome::UpstreamError, err.status.as_u16(), answer.usage());
        meter.settled().await;
        return Err(err);
    }
    let usage = if anthropic {
        answer
            .raw("usage")
            .and_then(|u| serde_json::from_str::<Value>(u).ok())
            .and_then(|u| dialect::anthropic::usage_of(&u))
    } else {
        answer.usage()
    };
    if usage.is_none() {
        if let Some(c) = answer.choices() {
            meter.add_generated_chars(c.chars);
        }
    }
    meter.first_token();
    let info = meter.finish(Outcome::Ok, 200, usage);
    meter.settled().await;
    let mut out = Vec::with_capacity(bytes.len() + 256);
    answer.write(&mut out, &json::quoted(client_model), true, Some(&info));
    Ok(([(header::CONTENT_TYPE, "application/json")], out).into_response())
}

/// A whole answer from a provider of another dialect: read into a
/// [`dialect::Reply`] and written in the client's.
fn translated_whole(
    st: &AppState,
    meter: &mut CallMeter,
    bytes: &[u8],
    target: &Route,
    asked: dialect::Asked<'_>,
    ep: Endpoint,
) -> Result<Response, ApiError> {
    let prov = &target.provider;
    let text = std::str::from_utf8(bytes).unwrap_or("");
    let reply = match dialect::decode_reply(prov.api, text) {
        Ok(r) => r,
        Err(Some(v)) => {
            let err = match errors::from_json_error(&prov.name, &v, prov.api_key.expose()) {
                Some(n) => api_error(n),
                None => {
                    ApiError::upstream(format!("{}: the provider reported an error.", prov.name))
                }
            };
            meter.finish(Outcome::UpstreamError, err.status.as_u16(), None);
            return Err(err);
        }
        Err(None) => {
            st.health.record(&prov.id, false);
            meter.finish(Outcome::UpstreamError, 502, None);
            return Err(ApiError::upstream(format!(
                "{}: the provider answered something that is not a readable answer.",
                prov.name
            )));
        }
    };
    if reply.usage.is_none() {
        let chars: usize = reply
            .parts
            .iter()
            .map(|p| match p {
                dialect::Part::Text(t) => t.chars().count(),
                dialect::Part::ToolCall {
                    name, arguments, ..
                } => name.chars().count() + arguments.chars().count(),
                _ => 0,
            })
            .sum();
        meter.add_generated_chars(chars);
    }
    meter.first_token();
    let info = meter.finish(Outcome::Ok, 200, reply.usage);
    let out = dialect::write_reply(ep, &reply, asked, &info);
    Ok(([(header::CONTENT_TYPE, "application/json")], out).into_response())
}

#[cfg(test)]
mod future_sizes {
    fn size<A, B, C, D, E, F: std::future::Future>(_: impl FnOnce(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A call's state is boxed once in `handle`; what wraps it up to the
    /// connection stays small, so awaiting it never copies kilobytes.
    #[test]
    fn the_futures_around_a_call_stay_small() {
        assert!(size(super::run) > 1024, "the boxed state is the big one");
        assert!(size(super::handle) <= 512, "{}", size(super::handle));
    }
}
