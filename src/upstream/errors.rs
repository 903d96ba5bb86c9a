//! Normalisation of upstream errors into the gateway's OpenAI error shape (SPEC §3).
//!
//! Providers disagree on error bodies (see `PROVIDERS.md` §1): OpenAI and OpenRouter send
//! `{"error":{"message","code","metadata"?}}` (OpenRouter's `code` is a number), Requesty sends
//! `{"error":{"origin","message"}}`, AI/ML API a flat `{"message","path","requestId","statusCode",
//! "timestamp"}`, others `{"error":"text"}`, `{"detail":…}` or plain text. [`normalize`] turns any of
//! these into a status, an OpenAI `type`, a string `code` and a message prefixed with the
//! provider's name, never containing the provider key. [`from_json_error`] does the same for an
//! error object that arrived inside a 200 body or an SSE `data:` event. Nothing here performs I/O;
//! only an HTTP-date `Retry-After` reads the clock.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// Longest message returned, in characters (provider prefix included).
const MAX_MESSAGE_CHARS: usize = 1000;
/// Longest excerpt of a non-JSON body, in characters.
const MAX_RAW_TEXT_CHARS: usize = 300;
/// Longest `metadata` detail appended to an OpenRouter message, in characters.
const MAX_DETAIL_CHARS: usize = 200;
/// Longest upstream `code` kept, in characters.
const MAX_CODE_CHARS: usize = 100;

/// An upstream error, as the gateway answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    /// What the gateway answers.
    pub status: u16,
    /// OpenAI `type`.
    pub kind: &'static str,
    pub code: Option<String>,
    /// `"<provider name>: <upstream message>"`.
    pub message: String,
    /// Seconds, only for 429.
    pub retry_after: Option<u64>,
}

/// Normalises an upstream error answer.
///
/// `status`: upstream HTTP status (or the numeric error.code of an error that arrived inside a
/// 200 / an SSE event — then pass that code, or 502 when absent);
/// `retry_after`: the upstream Retry-After header value if any (seconds or HTTP-date: for a date,
/// use 1 if you can't parse);
/// `secret`: the provider API key, which must never appear in `message` (replace any occurrence
/// with "***"; skip if secret is empty).
pub fn normalize(
    provider_name: &str,
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    secret: &str,
) -> Normalized {
    let extracted = extract_from_body(body, status, secret);
    let retry_after = if status == 429 {
        retry_after.and_then(|v| parse_retry_after(v, now_unix()))
    } else {
        None
    };
    build(provider_name, status, retry_after, extracted, secret)
}

/// For an error object that arrived inside a 200 body or an SSE data event: returns
/// Some(Normalized) if `v` has an "error" key (object or string).
pub fn from_json_error(provider_name: &str, v: &Value, secret: &str) -> Option<Normalized> {
    let obj = v.as_object()?;
    let status = match obj.get("error")? {
        Value::Object(e) => ["code", "status", "status_code", "statusCode"]
            .iter()
            .find_map(|k| e.get(*k).and_then(error_status))
            .or_else(|| obj.get("statusCode").and_then(error_status))
            .unwrap_or(502),
        Value::String(_) => ["statusCode", "status_code", "status"]
            .iter()
            .find_map(|k| obj.get(*k).and_then(error_status))
            .unwrap_or(502),
        _ => return None,
    };
    let extracted = extract_from_value(v)
        .map(|e| scrub_extracted(e, secret))
        .unwrap_or_else(|| Extracted {
            message: format!("upstream sent an error event (HTTP {status})"),
            code: None,
        });
    Some(build(provider_name, status, None, extracted, secret))
}

/// True when a 403's message is about the gateway's key or account (invalid/expired/revoked key,
/// authentication, unauthorized, account suspended/restricted, credits/balance/billing/payment)
/// rather than content moderation or model policy.
pub fn is_account_problem(message: &str) -> bool {
    const PHRASES: &[&str] = &[
        "api key",
        "api-key",
        "apikey",
        "api_key",
        "access key",
        "secret key",
        "invalid_key",
        "expired",
        "revoked",
        "authenticat",
        "unauthori",
        "credential",
        "invalid token",
        "token is invalid",
        "bearer",
        "credit",
        "balance",
        "billing",
        "payment",
        "insufficient funds",
        "insufficient_funds",
        "insufficient quota",
        "insufficient_quota",
        "quota",
        "spend limit",
        "spending limit",
        "spend_limit",
        "budget",
        "subscription",
        "out of funds",
    ];
    /// Key states that make a message about "the key" an account problem.
    const KEY_STATES: &[&str] = &[
        "invalid",
        "not valid",
        "disabled",
        "not found",
        "unknown",
        "missing",
        "incorrect",
        "wrong",
        "malformed",
        "deactivated",
        "inactive",
    ];
    /// Account states that are always about the operator's account.
    const ACCOUNT_STATES: &[&str] = &[
        "suspend",
        "disabled",
        "deactivat",
        "banned",
        "locked",
        "terminat",
        "closed",
        "inactive",
        "not active",
        "frozen",
        "on hold",
        "unverified",
        "not verified",
    ];
    /// Account states that may also describe a model blocked by policy: only counted when the
    /// message does not mention a model.
    const ACCOUNT_STATES_UNLESS_MODEL: &[&str] = &["restrict", "blocked"];

    let m = message.to_lowercase();
    if PHRASES.iter().any(|p| m.contains(p)) {
        return true;
    }
    let has_word = |w: &str| m.split(|c: char| !c.is_alphanumeric()).any(|t| t == w);
    // A stem matches the start of a word ("locked" must not match "blocked"); a phrase matches
    // anywhere.
    let has_stem = |stem: &str| {
        if stem.contains(' ') {
            m.contains(stem)
        } else {
            m.split(|c: char| !c.is_alphanumeric())
                .any(|t| t.starts_with(stem))
        }
    };
    if (has_word("key") || has_word("keys")) && KEY_STATES.iter().any(|s| has_stem(s)) {
        return true;
    }
    if has_word("account") || has_word("accounts") {
        if ACCOUNT_STATES.iter().any(|s| has_stem(s)) {
            return true;
        }
        if !m.contains("model") && ACCOUNT_STATES_UNLESS_MODEL.iter().any(|s| has_stem(s)) {
            return true;
        }
    }
    false
}

/// What was read from the upstream body.
#[derive(Debug)]
struct Extracted {
    message: String,
    code: Option<String>,
}

fn build(
    provider_name: &str,
    status: u16,
    retry_after: Option<u64>,
    extracted: Extracted,
    secret: &str,
) -> Normalized {
    const AUTH: (u16, &str, Option<&str>) = (502, "api_error", Some("upstream_auth_error"));
    const UPSTREAM: (u16, &str, Option<&str>) = (502, "api_error", Some("upstream_error"));
    let Extracted { message, code } = extracted;
    let upstream_code = code.as_deref();

    let (out_status, kind, code): (u16, &'static str, Option<&str>) = match status {
        401 | 402 | 412 => AUTH,
        403 if is_account_problem(&message) => AUTH,
        403 => (403, "permission_error", upstream_code),
        408 => (504, "api_error", Some("upstream_timeout")),
        429 => (429, "rate_limit_error", Some("rate_limit_exceeded")),
        404 => {
            let code = upstream_code.or_else(|| {
                message
                    .to_lowercase()
                    .contains("model")
                    .then_some("model_not_found")
            });
            (404, "invalid_request_error", code)
        }
        424 => UPSTREAM,
        400..=499 => (status, "invalid_request_error", upstream_code),
        _ => UPSTREAM,
    };

    let message = truncate_chars(
        &scrub(&format!("{provider_name}: {message}"), secret),
        MAX_MESSAGE_CHARS,
    );
    Normalized {
        status: out_status,
        kind,
        code: code.map(str::to_string),
        message,
        retry_after: if out_status == 429 { retry_after } else { None },
    }
}

fn extract_from_body(body: &[u8], status: u16, secret: &str) -> Extracted {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    // Scrub before anything is cut, so no truncation can leave part of the key behind.
    let text = scrub(&String::from_utf8_lossy(body), secret);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Extracted {
            message: format!("upstream answered HTTP {status} with no body"),
            code: None,
        };
    }
    let parsed = serde_json::from_str::<Value>(trimmed).ok();
    if let Some(e) = parsed.as_ref().and_then(extract_from_value) {
        return scrub_extracted(e, secret);
    }
    Extracted {
        message: raw_text_message(trimmed),
        code: None,
    }
}

fn scrub_extracted(e: Extracted, secret: &str) -> Extracted {
    Extracted {
        message: scrub(&e.message, secret),
        code: e.code.map(|c| scrub(&c, secret)),
    }
}

/// Reads a message and a string code from any of the known JSON error shapes.
fn extract_from_value(v: &Value) -> Option<Extracted> {
    let obj = match v {
        Value::String(s) if !s.trim().is_empty() => {
            return Some(Extracted {
                message: s.trim().to_string(),
                code: None,
            });
        }
        Value::Object(obj) => obj,
        _ => return None,
    };
    let top_message = obj.get("message").and_then(message_text);
    let top_code = obj.get("code").and_then(string_code);

    match obj.get("error") {
        // OpenAI / OpenRouter / Requesty.
        Some(Value::Object(e)) => {
            let mut message = ["message", "detail", "msg", "error"]
                .iter()
                .find_map(|k| e.get(*k).and_then(message_text))
                .or(top_message)
                .or_else(|| e.get("type").and_then(message_text))
                .unwrap_or_else(|| {
                    truncate_chars(&Value::Object(e.clone()).to_string(), MAX_RAW_TEXT_CHARS)
                });
            if let Some(extra) = e.get("metadata").and_then(metadata_details) {
                message = format!("{message} ({extra})");
            }
            let code = e.get("code").and_then(string_code).or(top_code);
            Some(Extracted { message, code })
        }
        // `{"error":"text"}`, or NestJS-style `{"statusCode","message","error":"Too Many Requests"}`
        // where `message` is the informative part.
        Some(Value::String(s)) if top_message.is_some() || !s.trim().is_empty() => {
            Some(Extracted {
                message: top_message.unwrap_or_else(|| s.trim().to_string()),
                code: top_code,
            })
        }
        _ => {
            // AIML flat shape, FastAPI `detail`, `errors` lists.
            let message = top_message
                .or_else(|| obj.get("detail").and_then(message_text))
                .or_else(|| obj.get("errors").and_then(message_text))?;
            Some(Extracted {
                message,
                code: top_code,
            })
        }
    }
}

/// A human message from a string, an array of strings / `{message|msg}` objects (joined with
/// "; "), or an object carrying one.
fn message_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => {
            let s = s.trim();
            (!s.is_empty()).then(|| s.to_string())
        }
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().filter_map(message_text).collect();
            (!parts.is_empty()).then(|| parts.join("; "))
        }
        Value::Object(o) => ["message", "msg", "detail", "error"]
            .iter()
            .find_map(|k| o.get(*k).and_then(message_text)),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(_) | Value::Null => None,
    }
}

/// An upstream `code` usable as the OpenAI string code: numbers (OpenRouter's HTTP-like codes)
/// and numeric strings are not codes.
fn string_code(v: &Value) -> Option<String> {
    let s = v.as_str()?.trim();
    if s.is_empty() || s.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(truncate_chars(s, MAX_CODE_CHARS))
}

/// A short summary of OpenRouter's `error.metadata` (`provider_name`, `raw`, `reason(s)`).
/// `flagged_input` is deliberately left out: it is the user's own content.
fn metadata_details(v: &Value) -> Option<String> {
    let m: &Map<String, Value> = v.as_object()?;
    let mut parts = Vec::new();
    if let Some(reasons) = m.get("reasons").and_then(message_text) {
        parts.push(format!("reasons: {reasons}"));
    }
    if let Some(reason) = m.get("reason").and_then(message_text) {
        parts.push(reason);
    }
    let raw = match m.get("raw") {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(v @ (Value::Object(_) | Value::Array(_))) => {
            Some(message_text(v).unwrap_or_else(|| v.to_string()))
        }
        _ => None,
    };
    if let Some(raw) = raw {
        let raw = collapse_whitespace(&raw);
        match m.get("provider_name").and_then(Value::as_str) {
            Some(p) if !p.trim().is_empty() => parts.push(format!("{}: {raw}", p.trim())),
            _ => parts.push(raw),
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(truncate_chars(&parts.join("; "), MAX_DETAIL_CHARS))
}

/// A status carried inside an error object: an HTTP error status as a number or numeric string.
fn error_status(v: &Value) -> Option<u16> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    }?;
    u16::try_from(n).ok().filter(|s| (400..=599).contains(s))
}

/// Up to 300 characters of a non-JSON body, tags stripped if it looks like HTML.
fn raw_text_message(text: &str) -> String {
    let lower_start = text
        .chars()
        .take(200)
        .collect::<String>()
        .to_ascii_lowercase();
    let looks_html = lower_start.starts_with('<')
        && (lower_start.contains("<html")
            || lower_start.contains("<!doctype")
            || lower_start.contains("<head")
            || lower_start.contains("<body"));
    let cleaned = if looks_html {
        let mut out = String::with_capacity(text.len());
        let mut in_tag = false;
        for c in text.chars() {
            match c {
                '<' => {
                    in_tag = true;
                    out.push(' ');
                }
                '>' if in_tag => in_tag = false,
                _ if !in_tag => out.push(c),
                _ => {}
            }
        }
        collapse_whitespace(&out)
    } else {
        collapse_whitespace(text)
    };
    if cleaned.is_empty() {
        return "upstream answered with an unreadable body".to_string();
    }
    truncate_chars(&cleaned, MAX_RAW_TEXT_CHARS)
}

fn collapse_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn scrub(s: &str, secret: &str) -> String {
    if secret.is_empty() {
        s.to_string()
    } else {
        s.replace(secret, "***")
    }
}

/// At most `max` characters; a cut string ends with "…" (counted in `max`).
fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `Retry-After` in seconds: delta-seconds (fractions rounded up) or an HTTP-date relative to
/// `now` (at least 1); anything unparseable counts as 1 second.
fn parse_retry_after(value: &str, now: i64) -> Option<u64> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if let Ok(n) = v.parse::<u64>() {
        return Some(n);
    }
    if let Ok(f) = v.parse::<f64>() {
        if f.is_finite() && f >= 0.0 {
            // `as` saturates on huge values.
            return Some(f.ceil() as u64);
        }
        return Some(1);
    }
    Some(match parse_http_date(v) {
        Some(at) => u64::try_from(at.saturating_sub(now)).unwrap_or(0).max(1),
        None => 1,
    })
}

/// Parses an HTTP-date (RFC 9110): IMF-fixdate `Sun, 06 Nov 1994 08:49:37 GMT`, the obsolete
/// RFC 850 `Sunday, 06-Nov-94 08:49:37 GMT` and asctime `Sun Nov  6 08:49:37 1994`.
fn parse_http_date(s: &str) -> Option<i64> {
    use chrono::{DateTime, NaiveDateTime};
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc2822(s) {
        return Some(t.timestamp());
    }
    ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .map(|t| t.and_utc().timestamp())
}

/// What to say about a 404 from `url` (a provider's endpoint under
/// `base_url`): which URL answered, and what to check. A `base_url` without
/// its version path (`http://host:11434` instead of `…/v1`) is the usual cause.
pub fn not_found_at(method: &str, url: &str, base_url: &str) -> String {
    // The query is left out: a configured models_url may carry a key there.
    let url = crate::config::mask_password(url.split('?').next().unwrap_or(url));
    let versioned = base_url
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .is_some_and(|last| {
            last.len() > 1 && last.starts_with('v') && last[1..].chars().all(|c| c.is_ascii_digit())
        });
    let check = if versioned {
        "check the provider's base_url and the model name"
    } else {
        "check the provider's base_url: does it end in /v1?"
    };
    format!("{method} {url} answered 404 Not Found; {check}")
}

/// Adds [`not_found_at`] to a 404 that is not about the model (a wrong path
/// answers a bare "not found", which alone tells the operator nothing).
pub fn explain_not_found(n: &mut Normalized, status: u16, method: &str, url: &str, base_url: &str) {
    let about_model =
        n.code.as_deref() == Some("model_not_found") || n.message.to_lowercase().contains("model");
    if status == 404 && !about_model {
        n.message = format!("{} ({})", n.message, not_found_at(method, url, base_url));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn n(provider: &str, status: u16, body: &str) -> Normalized {
        normalize(provider, status, None, body.as_bytes(), "")
    }

    fn assert_shape(got: &Normalized, status: u16, kind: &str, code: Option<&str>) {
        assert_eq!(got.status, status, "{got:?}");
        assert_eq!(got.kind, kind, "{got:?}");
        assert_eq!(got.code.as_deref(), code, "{got:?}");
    }

    // ---- status rules ----

    #[test]
    fn auth_statuses_become_502_upstream_auth_error() {
        for status in [401, 402, 412] {
            let got = n(
                "Requesty",
                status,
                r#"{"error":{"origin":"router","message":"nope"}}"#,
            );
            assert_shape(&got, 502, "api_error", Some("upstream_auth_error"));
            assert_eq!(got.message, "Requesty: nope");
            assert_eq!(got.retry_after, None);
        }
    }

    #[test]
    fn openrouter_402_is_upstream_auth_error() {
        let body = r#"{"error":{"code":402,"message":"Insufficient credits. Add more using https://openrouter.ai/credits"}}"#;
        let got = n("OpenRouter", 402, body);
        assert_shape(&got, 502, "api_error", Some("upstream_auth_error"));
        assert_eq!(
            got.message,
            "OpenRouter: Insufficient credits. Add more using https://openrouter.ai/credits"
        );
    }

    #[test]
    fn requesty_403_invalid_key_is_upstream_auth_error() {
        let got = n(
            "Requesty",
            403,
            r#"{"error":{"origin":"router","message":"Invalid API key"}}"#,
        );
        assert_shape(&got, 502, "api_error", Some("upstream_auth_error"));
        assert_eq!(got.message, "Requesty: Invalid API key");
    }

    #[test]
    fn requesty_403_restricted_account_is_upstream_auth_error() {
        let got = n(
            "Requesty",
            403,
            r#"{"error":{"origin":"router","message":"Your account is restricted"}}"#,
        );
        assert_shape(&got, 502, "api_error", Some("upstream_auth_error"));
    }

    #[test]
    fn moderation_403_stays_403() {
        let body = r#"{"error":{"code":403,"message":"Input flagged by moderation","metadata":{"reasons":["violence","harassment"],"flagged_input":"some user text","provider_name":"OpenAI","model_slug":"openai/gpt-4o"}}}"#;
        let got = n("OpenRouter", 403, body);
        assert_shape(&got, 403, "permission_error", None);
        assert_eq!(
            got.message,
            "OpenRouter: Input flagged by moderation (reasons: violence; harassment)"
        );
        assert!(!got.message.contains("some user text"));
    }

    #[test]
    fn policy_403_keeps_string_code() {
        let body = r#"{"error":{"message":"Model blocked by policy","type":"request_forbidden","code":"unsupported_country_region_territory"}}"#;
        let got = n("Custom", 403, body);
        assert_shape(
            &got,
            403,
            "permission_error",
            Some("unsupported_country_region_territory"),
        );
        let got = n(
            "Requesty",
            403,
            r#"{"error":{"origin":"router","message":"Model openai/o1 is blocked for your account by policy"}}"#,
        );
        assert_shape(&got, 403, "permission_error", None);
    }

    #[test]
    fn timeout_408_becomes_504() {
        let got = n(
            "OpenRouter",
            408,
            r#"{"error":{"code":408,"message":"Request timed out"}}"#,
        );
        assert_shape(&got, 504, "api_error", Some("upstream_timeout"));
        assert_eq!(got.message, "OpenRouter: Request timed out");
    }

    #[test]
    fn client_errors_keep_status() {
        let got = n(
            "OpenRouter",
            400,
            r#"{"error":{"code":400,"message":"bad is not a valid model ID"}}"#,
        );
        assert_shape(&got, 400, "invalid_request_error", None);
        let got = n(
            "Custom",
            400,
            r#"{"error":{"message":"x","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
        );
        assert_shape(
            &got,
            400,
            "invalid_request_error",
            Some("context_length_exceeded"),
        );
        let got = n(
            "Custom",
            422,
            r#"{"detail":[{"loc":["body","model"],"msg":"field required","type":"value_error.missing"},{"loc":["body","messages"],"msg":"field required","type":"value_error.missing"}]}"#,
        );
        assert_shape(&got, 422, "invalid_request_error", None);
        assert_eq!(got.message, "Custom: field required; field required");
    }

    #[test]
    fn a_404_says_which_url_and_what_to_check() {
        let mut got = n("nov1", 404, "404 page not found");
        explain_not_found(
            &mut got,
            404,
            "POST",
            "http://127.0.0.1:11434/chat/completions",
            "http://127.0.0.1:11434",
        );
        assert!(
            got.message
                .contains("POST http://127.0.0.1:11434/chat/completions answered 404")
                && got.message.contains("does it end in /v1?"),
            "{}",
            got.message
        );
        // A model the provider does not have is not a path problem.
        let mut got = n("Local", 404, r#"{"error":"model 'llama9' not found"}"#);
        let before = got.message.clone();
        explain_not_found(
            &mut got,
            404,
            "POST",
            "http://h/v1/chat/completions",
            "http://h/v1",
        );
        assert_eq!(got.message, before);
        let m = not_found_at(
            "GET",
            "http://u:pw-1@h/v1/models?key=k-2",
            "http://u:pw-1@h/v1",
        );
        assert!(
            !m.contains("pw-1") && !m.contains("k-2") && !m.contains("/v1?"),
            "{m}"
        );
    }

    #[test]
    fn not_found_404() {
        let got = n(
            "Requesty",
            404,
            r#"{"error":{"origin":"router","message":"Model foo/bar is not supported"}}"#,
        );
        assert_shape(&got, 404, "invalid_request_error", Some("model_not_found"));
        let got = n(
            "Custom",
            404,
            r#"{"error":{"message":"The model `gpt-5` does not exist","type":"invalid_request_error","code":"model_not_found"}}"#,
        );
        assert_shape(&got, 404, "invalid_request_error", Some("model_not_found"));
        let got = n("Custom", 404, r#"{"detail":"Not Found"}"#);
        assert_shape(&got, 404, "invalid_request_error", None);
        assert_eq!(got.message, "Custom: Not Found");
        let got = n(
            "Custom",
            404,
            r#"{"error":{"message":"no such route","code":"not_found"}}"#,
        );
        assert_shape(&got, 404, "invalid_request_error", Some("not_found"));
    }

    #[test]
    fn rate_limit_429() {
        let got = normalize(
            "OpenRouter",
            429,
            Some("12"),
            br#"{"error":{"code":429,"message":"Rate limit exceeded: free-models-per-min"}}"#,
            "",
        );
        assert_shape(&got, 429, "rate_limit_error", Some("rate_limit_exceeded"));
        assert_eq!(got.retry_after, Some(12));
        let got = n(
            "OpenRouter",
            429,
            r#"{"error":{"code":429,"message":"slow down"}}"#,
        );
        assert_eq!(got.retry_after, None);
    }

    #[test]
    fn aiml_flat_429_with_retry_after() {
        let body = r#"{"message":"Free-tier limit: You've reached your usage limit","path":"/v1/chat/completions","requestId":"abc-123","statusCode":429,"timestamp":"2025-01-01T00:00:00.000Z"}"#;
        let got = normalize("AIML API", 429, Some("7"), body.as_bytes(), "");
        assert_shape(&got, 429, "rate_limit_error", Some("rate_limit_exceeded"));
        assert_eq!(got.retry_after, Some(7));
        assert_eq!(
            got.message,
            "AIML API: Free-tier limit: You've reached your usage limit"
        );
    }

    #[test]
    fn http_date_retry_after() {
        // A date long past: at least 1 second.
        let got = normalize(
            "Custom",
            429,
            Some("Wed, 21 Oct 2015 07:28:00 GMT"),
            b"",
            "",
        );
        assert_eq!(got.retry_after, Some(1));
        // A date ~30 s from now.
        let future = chrono::DateTime::from_timestamp(now_unix() + 30, 0).unwrap();
        let header = future.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let got = normalize("Custom", 429, Some(&header), b"", "");
        let ra = got.retry_after.unwrap();
        assert!((25..=30).contains(&ra), "{header} -> {ra}");
        // Unparseable: 1.
        let got = normalize("Custom", 429, Some("soon-ish"), b"", "");
        assert_eq!(got.retry_after, Some(1));
    }

    #[test]
    fn retry_after_parsing() {
        let now = 1_445_412_480; // 2015-10-21T07:28:00Z
        assert_eq!(parse_retry_after("7", now), Some(7));
        assert_eq!(parse_retry_after(" 0 ", now), Some(0));
        assert_eq!(parse_retry_after("2.5", now), Some(3));
        assert_eq!(parse_retry_after("-3", now), Some(1));
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(30)
        );
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:29:00 GMT", now),
            Some(60)
        );
        assert_eq!(parse_retry_after("Wed Oct 21 07:28:10 2015", now), Some(10));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(1)
        );
        assert_eq!(
            parse_retry_after("Wed, 32 Oct 2015 07:27:00 GMT", now),
            Some(1)
        );
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 25:49:37 GMT"), None);
        assert_eq!(parse_http_date("garbage"), None);
    }

    #[test]
    fn retry_after_only_for_429() {
        let got = normalize("Custom", 503, Some("5"), b"overloaded", "");
        assert_shape(&got, 502, "api_error", Some("upstream_error"));
        assert_eq!(got.retry_after, None);
    }

    #[test]
    fn server_errors_become_502() {
        for status in [500, 502, 503, 504, 520, 424] {
            let got = n(
                "Requesty",
                status,
                r#"{"error":{"origin":"provider","message":"Provider down"}}"#,
            );
            assert_shape(&got, 502, "api_error", Some("upstream_error"));
            assert_eq!(got.message, "Requesty: Provider down");
        }
        // Odd statuses (a 200 with an error, 3xx, out of range) are upstream errors too.
        for status in [0, 200, 302, 600] {
            assert_shape(
                &n("X", status, "oops"),
                502,
                "api_error",
                Some("upstream_error"),
            );
        }
    }

    #[test]
    fn other_4xx_keep_status() {
        let got = n(
            "Custom",
            409,
            r#"{"error":{"message":"conflict","code":"conflict"}}"#,
        );
        assert_shape(&got, 409, "invalid_request_error", Some("conflict"));
        let got = n("Custom", 413, "Request Entity Too Large");
        assert_shape(&got, 413, "invalid_request_error", None);
        assert_eq!(got.message, "Custom: Request Entity Too Large");
    }

    // ---- message extraction ----

    #[test]
    fn openrouter_numeric_code_is_never_a_code() {
        let got = n(
            "OpenRouter",
            400,
            r#"{"error":{"code":400,"message":"bad"}}"#,
        );
        assert_eq!(got.code, None);
        let got = n(
            "OpenRouter",
            400,
            r#"{"error":{"code":"400","message":"bad"}}"#,
        );
        assert_eq!(got.code, None);
    }

    #[test]
    fn openrouter_metadata_raw_is_appended() {
        let body = r#"{"error":{"code":502,"message":"Provider returned error","metadata":{"provider_name":"Anthropic","raw":"{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}"}}}"#;
        let got = n("OpenRouter", 502, body);
        assert_shape(&got, 502, "api_error", Some("upstream_error"));
        assert!(
            got.message
                .starts_with("OpenRouter: Provider returned error (Anthropic: "),
            "{}",
            got.message
        );
        assert!(got.message.contains("Overloaded"));
        let long_raw = "x".repeat(5000);
        let body =
            json!({"error":{"code":502,"message":"m","metadata":{"raw": long_raw}}}).to_string();
        let got = n("OpenRouter", 502, &body);
        assert!(got.message.chars().count() < 250, "{}", got.message);
        let body = json!({"error":{"code":502,"message":"m","metadata":{"raw": {"error": {"message": "inner"}}}}}).to_string();
        assert_eq!(n("OpenRouter", 502, &body).message, "OpenRouter: m (inner)");
        let body = json!({"error":{"code":403,"message":"m","metadata":{"reason":"blocked by guardrail"}}}).to_string();
        assert_eq!(
            n("OpenRouter", 403, &body).message,
            "OpenRouter: m (blocked by guardrail)"
        );
    }

    #[test]
    fn error_string_shape() {
        let got = n(
            "Custom",
            404,
            r#"{"error":"model 'llama9' not found, try pulling it first"}"#,
        );
        assert_shape(&got, 404, "invalid_request_error", Some("model_not_found"));
        assert_eq!(
            got.message,
            "Custom: model 'llama9' not found, try pulling it first"
        );
    }

    #[test]
    fn nestjs_style_prefers_message_over_error_text() {
        let body = r#"{"statusCode":400,"message":["max_tokens must be a number","model should not be empty"],"error":"Bad Request"}"#;
        let got = n("AIML API", 400, body);
        assert_shape(&got, 400, "invalid_request_error", None);
        assert_eq!(
            got.message,
            "AIML API: max_tokens must be a number; model should not be empty"
        );
    }

    #[test]
    fn aiml_flat_message_array() {
        let body = r#"{"message":["a","b"],"path":"/v1/chat/completions","requestId":"r","statusCode":400,"timestamp":"t"}"#;
        assert_eq!(n("AIML API", 400, body).message, "AIML API: a; b");
    }

    #[test]
    fn flat_message_with_string_code() {
        let body = r#"{"object":"error","message":"vllm says no","type":"BadRequestError","param":null,"code":400}"#;
        let got = n("Custom", 400, body);
        assert_eq!(got.message, "Custom: vllm says no");
        assert_eq!(got.code, None);
        let got = n("Custom", 400, r#"{"message":"m","code":"bad_thing"}"#);
        assert_eq!(got.code.as_deref(), Some("bad_thing"));
    }

    #[test]
    fn errors_list() {
        let body =
            r#"{"errors":[{"code":10000,"message":"Authentication error"}],"success":false}"#;
        assert_eq!(
            n("Custom", 400, body).message,
            "Custom: Authentication error"
        );
    }

    #[test]
    fn error_object_without_message() {
        let got = n("Custom", 500, r#"{"error":{"type":"overloaded_error"}}"#);
        assert_eq!(got.message, "Custom: overloaded_error");
        let got = n("Custom", 500, r#"{"error":{"code":500}}"#);
        assert_eq!(got.message, r#"Custom: {"code":500}"#);
    }

    #[test]
    fn non_json_text_is_trimmed_and_cut_to_300() {
        let got = n("Glama", 502, "  \n Bad Gateway \n ");
        assert_eq!(got.message, "Glama: Bad Gateway");
        let long = "y".repeat(1000);
        let got = n("Glama", 502, &long);
        assert_eq!(got.message.chars().count(), "Glama: ".len() + 300);
        // Unrecognised JSON is kept as text.
        assert_eq!(
            n("Glama", 500, r#"{"foo":1}"#).message,
            r#"Glama: {"foo":1}"#
        );
        // A JSON string is its own message.
        assert_eq!(n("Glama", 500, r#""boom""#).message, "Glama: boom");
    }

    #[test]
    fn html_body_is_stripped() {
        let body = "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>cloudflare</center></body></html>";
        let got = n("Glama", 502, body);
        assert_eq!(
            got.message,
            "Glama: 502 Bad Gateway 502 Bad Gateway cloudflare"
        );
    }

    #[test]
    fn empty_body() {
        let got = n("Glama", 503, "");
        assert_eq!(
            got.message,
            "Glama: upstream answered HTTP 503 with no body"
        );
        let got = n("Glama", 401, "   \n");
        assert_eq!(
            got.message,
            "Glama: upstream answered HTTP 401 with no body"
        );
        assert_shape(&got, 502, "api_error", Some("upstream_auth_error"));
    }

    #[test]
    fn non_utf8_body() {
        let got = normalize("X", 500, None, b"bad \xff\xfe bytes", "");
        assert!(got.message.starts_with("X: bad "));
    }

    #[test]
    fn message_is_capped_at_1000_chars() {
        let body = json!({"error":{"message":"z".repeat(5000)}}).to_string();
        let got = n("OpenRouter", 400, &body);
        assert_eq!(got.message.chars().count(), 1000);
        assert!(got.message.starts_with("OpenRouter: zzz"));
        assert!(got.message.ends_with('…'));
        // Multi-byte characters are cut on a character boundary.
        let body = json!({"error":{"message":"é".repeat(3000)}}).to_string();
        assert_eq!(n("X", 400, &body).message.chars().count(), 1000);
    }

    // ---- secrets ----

    #[test]
    fn secret_is_scrubbed() {
        let secret = "sk-or-v1-0123456789abcdef";
        let body = format!(
            r#"{{"error":{{"code":401,"message":"Invalid key {secret} (key {secret})"}}}}"#
        );
        let got = normalize("OpenRouter", 401, None, body.as_bytes(), secret);
        assert_eq!(got.message, "OpenRouter: Invalid key *** (key ***)");
        // In plain text, even where the 300-char cut would have split it.
        let body = format!("{}{secret}", "a".repeat(290));
        let got = normalize("OpenRouter", 500, None, body.as_bytes(), secret);
        assert!(!got.message.contains("sk-or-v1"), "{}", got.message);
        // In metadata and codes.
        let body = json!({"error":{"message":"m","code":format!("bad_{secret}"),"metadata":{"raw":format!("echo {secret}")}}}).to_string();
        let got = normalize("X", 400, None, body.as_bytes(), secret);
        assert!(!got.message.contains(secret) && !got.code.unwrap().contains(secret));
        // An empty secret changes nothing.
        assert_eq!(normalize("X", 400, None, b"plain", "").message, "X: plain");
    }

    #[test]
    fn secret_scrubbed_in_from_json_error() {
        let v = json!({"error":{"code":401,"message":"key sk-abc is invalid"}});
        let got = from_json_error("P", &v, "sk-abc").unwrap();
        assert_eq!(got.message, "P: key *** is invalid");
    }

    // ---- from_json_error ----

    #[test]
    fn openrouter_mid_stream_error() {
        let v = json!({"error":{"code":502,"message":"Provider returned error"}});
        let got = from_json_error("OpenRouter", &v, "").unwrap();
        assert_shape(&got, 502, "api_error", Some("upstream_error"));
        assert_eq!(got.message, "OpenRouter: Provider returned error");
        assert_eq!(got.retry_after, None);
    }

    #[test]
    fn from_json_error_statuses() {
        let v = json!({"id":"gen-1","object":"chat.completion.chunk","error":{"code":429,"message":"rate limited upstream"}});
        assert_shape(
            &from_json_error("OR", &v, "").unwrap(),
            429,
            "rate_limit_error",
            Some("rate_limit_exceeded"),
        );
        let v = json!({"error":{"code":402,"message":"out of credits"}});
        assert_shape(
            &from_json_error("OR", &v, "").unwrap(),
            502,
            "api_error",
            Some("upstream_auth_error"),
        );
        let v = json!({"error":{"code":403,"message":"flagged","metadata":{"reasons":["sexual"]}}});
        assert_shape(
            &from_json_error("OR", &v, "").unwrap(),
            403,
            "permission_error",
            None,
        );
        // No numeric code: 502; a string code is kept out of the status and, for 5xx, replaced.
        let v = json!({"error":{"message":"server_error happened","type":"server_error","code":"server_error"}});
        assert_shape(
            &from_json_error("X", &v, "").unwrap(),
            502,
            "api_error",
            Some("upstream_error"),
        );
        let v = json!({"error":{"code":"404","message":"model gone"}});
        assert_shape(
            &from_json_error("X", &v, "").unwrap(),
            404,
            "invalid_request_error",
            Some("model_not_found"),
        );
        let v = json!({"error":{"code":200,"message":"weird"}});
        assert_eq!(from_json_error("X", &v, "").unwrap().status, 502);
    }

    #[test]
    fn from_json_error_string_and_absent() {
        let v = json!({"error":"stream broke"});
        let got = from_json_error("Glama", &v, "").unwrap();
        assert_shape(&got, 502, "api_error", Some("upstream_error"));
        assert_eq!(got.message, "Glama: stream broke");
        let v = json!({"statusCode":429,"message":"too many","error":"Too Many Requests"});
        let got = from_json_error("AIML API", &v, "").unwrap();
        assert_eq!(got.status, 429);
        assert_eq!(got.message, "AIML API: too many");
        let v = json!({"error":{}});
        assert_eq!(from_json_error("X", &v, "").unwrap().message, "X: {}");
        assert_eq!(
            from_json_error("X", &json!({"error":""}), "")
                .unwrap()
                .status,
            502
        );
        assert_eq!(from_json_error("X", &json!({"choices":[]}), ""), None);
        assert_eq!(from_json_error("X", &json!({"error":null}), ""), None);
        assert_eq!(from_json_error("X", &json!([1, 2]), ""), None);
        assert_eq!(from_json_error("X", &json!("error"), ""), None);
    }

    // ---- is_account_problem ----

    #[test]
    fn account_problems() {
        for m in [
            "Invalid API key",
            "invalid api-key provided",
            "The provided key is not valid",
            "Key revoked",
            "This key has expired",
            "Authentication failed",
            "Unauthorized",
            "User not authenticated",
            "Your account has been suspended",
            "Account restricted",
            "account is disabled",
            "Insufficient credits",
            "Your balance is too low",
            "Billing issue: update your payment method",
            "Monthly spend limit reached",
            "You exceeded your current quota",
            "Invalid credentials",
        ] {
            assert!(is_account_problem(m), "{m}");
        }
    }

    #[test]
    fn not_account_problems() {
        for m in [
            "Input flagged by moderation",
            "Your request was flagged by our content policy",
            "Model openai/o1 is blocked by policy",
            "Access to this model is restricted",
            "This model is not available in your region",
            "Model blocked for your account by organisation policy",
            "Forbidden",
            "",
            "monkey business",
        ] {
            assert!(!is_account_problem(m), "{m}");
        }
    }
}
