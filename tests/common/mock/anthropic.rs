//! The mock's Anthropic Messages API at `/{provider}/v1/messages`, answering
//! as Anthropic does: its auth headers required, its answer, event stream and
//! error shapes. Flags in the model name: `usage:IN:OUT` (default 10 and 20),
//! `cache:CW:CR` (cache creation and read input tokens), `tool` (a text block
//! then a `tool_use` of the request's first tool), `error:STATUS`,
//! `delay:MS`, `flaky:N` (the first N calls are 529s), `length` (stop reason
//! `max_tokens`), `gated` (the stream waits after its first text piece until
//! the test opens the gate) and `stream_error` (an `error` event there). A
//! last user message holding a `tool_result` is answered `Tool said: …`.

use super::{record, send_events, send_gated, text_of, Flags, MockState, Say, TOOL_ARGS};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;

pub async fn messages(
    State(st): State<Arc<MockState>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let body = record(&st, &provider, "/messages", &headers, &raw);
    if !headers.contains_key("x-api-key") {
        return error(401, "x-api-key header is required");
    }
    if !headers.contains_key("anthropic-version") {
        return error(401, "anthropic-version header is required");
    }
    let model = body["model"].as_str().unwrap_or("").to_owned();
    let f = Flags::parse(&model);
    if let Some(r) = scripted_failure(&st, &model, &f).await {
        return r;
    }
    let blocks = blocks_of(&body, &f);
    let stop = if blocks.iter().any(|b| matches!(b, Say::Tool(_))) {
        "tool_use"
    } else if f.has("length") {
        "max_tokens"
    } else {
        "end_turn"
    };
    if body["stream"] == json!(true) {
        return stream(st, &model, &f, &blocks, stop);
    }
    let content: Vec<Value> = blocks.iter().map(whole_block).collect();
    Json(json!({
        "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": stop, "stop_sequence": null,
        "usage": usage(&f, f.num("usage", 1).unwrap_or(20))
    }))
    .into_response()
}

/// Anthropic's own model list (asked for with an `anthropic-version` header).
pub fn models() -> Response {
    Json(json!({
        "data": [
            {"type": "model", "id": "m1", "display_name": "Mock One", "created_at": "2025-01-01T00:00:00Z"},
            {"type": "model", "id": "m2", "display_name": "Mock Two", "created_at": "2025-01-02T00:00:00Z"}
        ],
        "has_more": false, "first_id": "m1", "last_id": "m2"
    }))
    .into_response()
}

/// Anthropic's error shape; the type follows the status as Anthropic's does.
fn error(status: u16, message: &str) -> Response {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    let mut r = (StatusCode::from_u16(status).unwrap(), Json(body)).into_response();
    if status == 429 {
        r.headers_mut().insert("retry-after", "7".parse().unwrap());
    }
    r
}

async fn scripted_failure(st: &MockState, model: &str, f: &Flags) -> Option<Response> {
    if let Some(ms) = f.num("delay", 0) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(n) = f.num("flaky", 0) {
        let mut counts = st.counts.lock().unwrap();
        let c = counts.entry(model.to_owned()).or_default();
        *c += 1;
        if *c as u64 <= n {
            return Some(error(529, "Overloaded"));
        }
    }
    if let Some(status) = f.num("error", 0) {
        return Some(error(status as u16, &format!("mock error {status}")));
    }
    None
}

/// What the answer holds, block by block.
fn blocks_of(body: &Value, f: &Flags) -> Vec<Say> {
    let last = body["messages"].as_array().and_then(|m| m.last());
    let result = last
        .filter(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_array())
        .and_then(|blocks| blocks.iter().find(|b| b["type"] == "tool_result"));
    if let Some(r) = result {
        return vec![Say::tool_said(&text_of(&r["content"]))];
    }
    if f.has("tool") {
        let name = body["tools"][0]["name"].as_str().unwrap_or("get_weather");
        return vec![
            Say::Text(vec!["Let me check.".into()]),
            Say::Tool(name.to_owned()),
        ];
    }
    vec![Say::hello()]
}

fn whole_block(b: &Say) -> Value {
    match b {
        Say::Text(pieces) => json!({"type": "text", "text": pieces.concat()}),
        Say::Tool(name) => json!({"type": "tool_use", "id": "toolu_mock1", "name": name,
                                  "input": {"city": "Paris"}}),
    }
}

/// The usage object: `input_tokens`, the given `output_tokens`, and the cache
/// fields when the `cache` flag is set.
fn usage(f: &Flags, output: u64) -> Value {
    let mut u = Map::new();
    u.insert(
        "input_tokens".into(),
        json!(f.num("usage", 0).unwrap_or(10)),
    );
    if f.has("cache") {
        u.insert(
            "cache_creation_input_tokens".into(),
            json!(f.num("cache", 0).unwrap_or(0)),
        );
        u.insert(
            "cache_read_input_tokens".into(),
            json!(f.num("cache", 1).unwrap_or(0)),
        );
    }
    u.insert("output_tokens".into(), json!(output));
    Value::Object(u)
}

fn event(v: Value) -> String {
    format!("event: {}\ndata: {v}\n\n", v["type"].as_str().unwrap_or(""))
}

/// Anthropic's event sequence for `blocks`.
fn stream(st: Arc<MockState>, model: &str, f: &Flags, blocks: &[Say], stop: &str) -> Response {
    let mut start = vec![
        event(json!({"type": "message_start", "message": {
            "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null, "usage": usage(f, 1)}})),
        event(json!({"type": "ping"})),
    ];
    let mut rest = vec![];
    for (i, b) in blocks.iter().enumerate() {
        let (head, deltas): (Value, Vec<Value>) = match b {
            Say::Text(pieces) => (
                json!({"type": "text", "text": ""}),
                pieces
                    .iter()
                    .map(|p| json!({"type": "text_delta", "text": p}))
                    .collect(),
            ),
            Say::Tool(name) => (
                json!({"type": "tool_use", "id": "toolu_mock1", "name": name, "input": {}}),
                std::iter::once("")
                    .chain(TOOL_ARGS)
                    .map(|p| json!({"type": "input_json_delta", "partial_json": p}))
                    .collect(),
            ),
        };
        let mut events = vec![event(
            json!({"type": "content_block_start", "index": i, "content_block": head}),
        )];
        events.extend(
            deltas
                .into_iter()
                .map(|d| event(json!({"type": "content_block_delta", "index": i, "delta": d}))),
        );
        events.push(event(json!({"type": "content_block_stop", "index": i})));
        // The first block's head and first piece go out before a gate or
        // a `stream_error`.
        let cut = if i == 0 { 2 } else { 0 };
        rest.extend(events.split_off(cut));
        start.extend(events);
    }
    if f.has("stream_error") {
        let err = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
        start.push(event(err));
        return send_events(st, start);
    }
    rest.push(event(json!({"type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": null},
        "usage": {"output_tokens": f.num("usage", 1).unwrap_or(20)}})));
    rest.push(event(json!({"type": "message_stop"})));
    send_gated(st, start, f.has("gated"), rest)
}
