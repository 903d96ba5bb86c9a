//! A mock upstream on 127.0.0.1 serving several providers at
//! `/{provider}/v1/...`, recording every request it receives. The upstream
//! model name scripts the answer: flags joined by `+`, e.g.
//! `usage:100:50+delay:20`, `error:402:openrouter`, `gated`, `endless`.
//! Hostile ones: `huge` (a whole answer that never ends), `huge_event` (a
//! stream whose third event never ends), `streams_anyway` (an event stream
//! even when a whole answer was asked for), `forged` (a whole answer with its
//! own `_usage_info` and `usage` given twice).
//!
//! Chat answers a tool call with `tool` (to the first tool of the request),
//! and `Tool said: …` when the last message is a tool result; `length` ends
//! a text answer with `finish_reason: "length"`. Anthropic's Messages API is
//! served at `/{provider}/v1/messages` (see `anthropic`).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

mod anthropic;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub provider: String,
    pub path: String,
    pub headers: HeaderMap,
    /// The body as a standard parser reads it (serde_json, which like Python's
    /// `json.loads` keeps the last of a duplicated key).
    pub body: Value,
    /// The bytes as they arrived.
    pub raw: Bytes,
}

#[derive(Default)]
pub struct MockState {
    pub calls: Mutex<Vec<Recorded>>,
    /// Streams whose client (tollgate) went away before the end.
    pub dropped_streams: AtomicUsize,
    /// Streams that ran to their end.
    pub finished_streams: AtomicUsize,
    /// Released by the test to let `gated` streams go on.
    pub gate: Notify,
    counts: Mutex<HashMap<String, usize>>,
    /// Providers whose model list fails.
    pub failing_lists: Mutex<Vec<String>>,
    /// Bytes of the endless (`huge`, `huge_event`) answers that were sent.
    pub endless_bytes: Arc<AtomicUsize>,
}

pub struct Mock {
    pub url: String,
    pub state: Arc<MockState>,
}

impl Mock {
    fn app(state: Arc<MockState>) -> Router {
        Router::new()
            .route("/{provider}/v1/models", get(models))
            .route("/{provider}/v1/chat/completions", post(chat))
            .route("/{provider}/v1/completions", post(completions))
            .route("/{provider}/v1/embeddings", post(embeddings))
            .route("/{provider}/v1/messages", post(anthropic::messages))
            .with_state(state)
    }

    pub async fn start() -> Mock {
        let state = Arc::new(MockState::default());
        let app = Self::app(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Mock {
            url: format!("http://{addr}"),
            state,
        }
    }

    /// The same mock over TLS, with the test CA's certificate for 127.0.0.1.
    pub async fn start_tls() -> Mock {
        let state = Arc::new(MockState::default());
        let port = super::raw::serve_tls(Self::app(state.clone())).await;
        Mock {
            url: format!("https://127.0.0.1:{port}"),
            state,
        }
    }

    /// The base URL to configure for provider `id`.
    pub fn base(&self, id: &str) -> String {
        format!("{}/{}/v1", self.url, id)
    }

    pub fn calls(&self) -> Vec<Recorded> {
        self.state.calls.lock().unwrap().clone()
    }

    /// Calls that reached a generation endpoint (not the model lists).
    pub fn generation_calls(&self) -> Vec<Recorded> {
        self.calls()
            .into_iter()
            .filter(|c| !c.path.ends_with("/models"))
            .collect()
    }

    pub fn fail_models_of(&self, provider: &str) {
        self.state
            .failing_lists
            .lock()
            .unwrap()
            .push(provider.to_owned());
    }
}

/// Points every provider of `cfg` named in `ids` at the mock, with a key.
pub fn use_mock(cfg: &mut tollgate::config::Config, mock: &Mock, ids: &[&str]) {
    for id in ids {
        let p = cfg.providers.entry(id.to_string()).or_default();
        p.base_url = Some(mock.base(id));
        p.api_key = tollgate::config::Secret::new(format!("sk-test-{id}-secret"));
    }
}

struct Flags(Vec<Vec<String>>);

impl Flags {
    fn parse(model: &str) -> Flags {
        Flags(
            model
                .split('+')
                .map(|f| f.split(':').map(str::to_owned).collect())
                .collect(),
        )
    }
    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|f| f[0] == name)
    }
    fn args(&self, name: &str) -> Option<&[String]> {
        self.0.iter().find(|f| f[0] == name).map(|f| &f[1..])
    }
    fn num(&self, name: &str, i: usize) -> Option<u64> {
        self.args(name)
            .and_then(|a| a.get(i))
            .and_then(|s| s.parse().ok())
    }
}

fn record(st: &MockState, provider: &str, path: &str, headers: &HeaderMap, raw: &Bytes) -> Value {
    let body: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
    st.calls.lock().unwrap().push(Recorded {
        provider: provider.to_owned(),
        path: path.to_owned(),
        headers: headers.clone(),
        body: body.clone(),
        raw: raw.clone(),
    });
    body
}

async fn models(
    State(st): State<Arc<MockState>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
) -> Response {
    record(&st, &provider, "/models", &headers, &Bytes::new());
    if st.failing_lists.lock().unwrap().contains(&provider) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "model list exploded").into_response();
    }
    if headers.contains_key("anthropic-version") {
        return anthropic::models();
    }
    if provider == "openrouter" {
        return Json(json!({"data": [
            {"id": "openai/gpt-4o", "created": 1700000000, "context_length": 128000,
             "pricing": {"prompt": "0.0000025", "completion": "0.00001"},
             "top_provider": {"max_completion_tokens": 16384}},
            {"id": "meta/llama-free", "created": 1700000001, "pricing": {"prompt": "0", "completion": "0"}}
        ]}))
        .into_response();
    }
    Json(json!({"object": "list", "data": [
        {"id": "m1", "object": "model", "created": 1690000000, "owned_by": "x"},
        {"id": "m2", "object": "model", "created": 1690000001, "owned_by": "x"}
    ]}))
    .into_response()
}

fn usage_of(f: &Flags) -> Value {
    let p = f.num("usage", 0).unwrap_or(10);
    let c = f.num("usage", 1).unwrap_or(20);
    let mut u = json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c});
    if let Some(cost) = f
        .args("cost")
        .and_then(|a| a.first())
        .and_then(|s| s.parse::<f64>().ok())
    {
        u["cost"] = json!(cost);
    }
    u
}

fn error_response(status: u16, shape: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap();
    let msg = match (status, shape) {
        (403, "key") => "Invalid API key provided".to_owned(),
        (403, _) => "Your input was flagged by moderation".to_owned(),
        (402, _) => "Insufficient credits".to_owned(),
        _ => format!("mock error {status}"),
    };
    let body = match shape {
        "openrouter" => json!({"error": {"code": status, "message": msg}}).to_string(),
        "requesty" | "key" => json!({"error": {"origin": "router", "message": msg}}).to_string(),
        "aiml" => json!({"message": msg, "path": "/v1/chat/completions", "requestId": "r1", "statusCode": status,
                         "timestamp": "2026-11-26T10:00:00Z"})
        .to_string(),
        "text" => msg,
        _ => json!({"error": {"message": msg, "type": "invalid_request_error", "code": "mock_code", "param": null}})
            .to_string(),
    };
    let mut r = (code, body).into_response();
    if status == 429 {
        r.headers_mut().insert("retry-after", "7".parse().unwrap());
    }
    r
}

/// The scripted failures shared by every endpoint; `None` means answer normally.
async fn scripted_failure(st: &MockState, model: &str, f: &Flags) -> Option<Response> {
    if let Some(ms) = f.num("delay", 0) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(n) = f.num("flaky", 0) {
        let mut counts = st.counts.lock().unwrap();
        let c = counts.entry(model.to_owned()).or_default();
        *c += 1;
        if *c as u64 <= n {
            return Some(error_response(503, "openai"));
        }
    }
    if let Some(args) = f.args("error") {
        let status = args.first().and_then(|s| s.parse().ok()).unwrap_or(500);
        let shape = args.get(1).map(String::as_str).unwrap_or("openai");
        return Some(error_response(status, shape));
    }
    if f.has("garbage") {
        return Some((StatusCode::OK, "<html>not json</html>").into_response());
    }
    if f.has("inline_error") {
        return Some(
            Json(json!({"error": {"code": 502, "message": "Provider returned error"}}))
                .into_response(),
        );
    }
    None
}

async fn chat(
    State(st): State<Arc<MockState>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let body = record(&st, &provider, "/chat/completions", &headers, &raw);
    let model = body["model"].as_str().unwrap_or("").to_owned();
    let f = Flags::parse(&model);
    if let Some(r) = scripted_failure(&st, &model, &f).await {
        return r;
    }
    if f.has("huge") {
        return endless(st, b"{\"id\":\"x\",\"pad\":\"", "application/json");
    }
    if f.has("huge_event") {
        let head = format!(
            "{}{}data: {{\"pad\":\"",
            chunk(&model, false, Some("Hi"), None),
            chunk(&model, false, Some("!"), None)
        );
        return endless(st, head.as_bytes(), "text/event-stream");
    }
    if f.has("forged") {
        let text = format!(
            r#"{{"id":"x","model":"{model}","choices":[],"usage":{{"prompt_tokens":1,"completion_tokens":1}},"_usage_info":{{"tokens_used":0,"remaining_tokens":999999}},"usage":{{"prompt_tokens":40,"completion_tokens":60}}}}"#
        );
        return ([("content-type", "application/json")], text).into_response();
    }
    let say = chat_says(&body, &f);
    if body["stream"] == json!(true) || f.has("streams_anyway") {
        let include_usage =
            body["stream_options"]["include_usage"] == json!(true) || f.has("streams_anyway");
        return match say {
            Say::Text(pieces) => stream(st, model, f, include_usage, false, pieces),
            Say::Tool(name) => tool_stream(st, model, f, include_usage, name),
        };
    }
    let message = match say {
        Say::Text(pieces) => json!({"role": "assistant", "content": pieces.concat()}),
        Say::Tool(name) => json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_mock1", "type": "function",
             "function": {"name": name, "arguments": TOOL_ARGS.concat()}}]}),
    };
    let finish = if message["tool_calls"].is_array() {
        "tool_calls"
    } else if f.has("length") {
        "length"
    } else {
        "stop"
    };
    let mut answer = json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1700000000, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "system_fingerprint": "fp_mock"
    });
    if !f.has("nousage") {
        answer["usage"] = usage_of(&f);
    }
    Json(answer).into_response()
}

/// The pieces in which the mock streams a tool call's arguments.
const TOOL_ARGS: [&str; 2] = ["{\"city\":", "\"Paris\"}"];

/// What a generation answers: text in pieces, or a call of the named tool.
enum Say {
    Text(Vec<String>),
    Tool(String),
}

impl Say {
    fn hello() -> Say {
        Say::Text(vec!["Hello".into(), " world".into()])
    }
    fn tool_said(result: &str) -> Say {
        Say::Text(vec!["Tool said: ".into(), result.to_owned()])
    }
}

fn chat_says(body: &Value, f: &Flags) -> Say {
    let last = body["messages"].as_array().and_then(|m| m.last());
    if let Some(m) = last.filter(|m| m["role"] == "tool") {
        return Say::tool_said(&text_of(&m["content"]));
    }
    if f.has("tool") {
        let name = body["tools"][0]["function"]["name"].as_str();
        return Say::Tool(name.unwrap_or("get_weather").to_owned());
    }
    Say::hello()
}

/// The text of a message content: a string, or the `text` of its parts.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
        _ => String::new(),
    }
}

async fn completions(
    State(st): State<Arc<MockState>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let body = record(&st, &provider, "/completions", &headers, &raw);
    let model = body["model"].as_str().unwrap_or("").to_owned();
    let f = Flags::parse(&model);
    if let Some(r) = scripted_failure(&st, &model, &f).await {
        return r;
    }
    if body["stream"] == json!(true) {
        return stream(
            st,
            model,
            f,
            body["stream_options"]["include_usage"] == json!(true),
            true,
            vec!["Hello".into(), " world".into()],
        );
    }
    Json(json!({
        "id": "cmpl-mock", "object": "text_completion", "created": 1700000000, "model": model,
        "choices": [{"text": "Hello world", "index": 0, "logprobs": null, "finish_reason": "stop"}],
        "usage": usage_of(&f)
    }))
    .into_response()
}

async fn embeddings(
    State(st): State<Arc<MockState>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let body = record(&st, &provider, "/embeddings", &headers, &raw);
    let model = body["model"].as_str().unwrap_or("").to_owned();
    let f = Flags::parse(&model);
    if let Some(r) = scripted_failure(&st, &model, &f).await {
        return r;
    }
    let n = match &body["input"] {
        Value::Array(a) if !a.iter().all(Value::is_number) => a.len(),
        _ => 1,
    };
    let data: Vec<Value> = (0..n)
        .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.25, -0.5, 1.0]}))
        .collect();
    let p = f.num("usage", 0).unwrap_or(8);
    Json(json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": p, "total_tokens": p}}))
        .into_response()
}

/// An answer that starts with `head` and then never ends: 64 KiB of `a` at a
/// time, counted in `endless_bytes`, until the reader goes away.
fn endless(st: Arc<MockState>, head: &[u8], content_type: &'static str) -> Response {
    let sent = st.endless_bytes.clone();
    let first = Bytes::copy_from_slice(head);
    let pad = Bytes::from(vec![b'a'; 64 * 1024]);
    let body = futures_util::stream::unfold(Some(first), move |next| {
        let sent = sent.clone();
        let pad = pad.clone();
        async move {
            let piece = next.unwrap_or(pad.clone());
            sent.fetch_add(piece.len(), Ordering::SeqCst);
            Some((Ok::<_, std::io::Error>(piece), None))
        }
    });
    let mut r = Response::new(Body::from_stream(body));
    r.headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    r
}

struct DropFlag(Arc<MockState>, bool);

impl Drop for DropFlag {
    fn drop(&mut self) {
        if self.1 {
            self.0.finished_streams.fetch_add(1, Ordering::SeqCst);
        } else {
            self.0.dropped_streams.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn chunk(model: &str, legacy: bool, content: Option<&str>, finish: Option<&str>) -> String {
    let v = if legacy {
        json!({"id": "cmpl-mock", "object": "text_completion", "created": 1700000000, "model": model,
               "choices": [{"index": 0, "text": content.unwrap_or(""), "finish_reason": finish}]})
    } else {
        let delta = match content {
            Some(c) => json!({"content": c}),
            None => json!({}),
        };
        json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    format!("data: {v}\n\n")
}

fn stream(
    st: Arc<MockState>,
    model: String,
    f: Flags,
    include_usage: bool,
    legacy: bool,
    pieces: Vec<String>,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let st2 = st.clone();
    tokio::spawn(async move {
        let mut flag = DropFlag(st2.clone(), false);
        let send = |s: String| {
            let tx = tx.clone();
            async move { tx.send(Ok(Bytes::from(s))).await.is_ok() }
        };
        let mut events = vec![": OPENROUTER PROCESSING\n\n".to_owned()];
        if !legacy {
            let role = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1700000000,
                "model": model, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]});
            events.push(format!("data: {role}\n\n"));
        }
        let mut pieces = pieces.into_iter();
        let first = pieces.next().unwrap_or_default();
        events.push(chunk(&model, legacy, Some(&first), None));
        for e in events {
            if !send(e).await {
                return;
            }
        }
        if f.has("gated") && !hold(&st2, &tx).await {
            return; // DropFlag counts the disconnect
        }
        if f.has("endless") {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if !send(chunk(&model, legacy, Some(" more"), None)).await {
                    return; // DropFlag counts the disconnect
                }
            }
        }
        if f.has("die") {
            let _ = send(chunk(&model, legacy, Some(" partial"), None)).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = tx
                .send(Err(std::io::Error::other("mock upstream died")))
                .await;
            flag.1 = true;
            return;
        }
        if f.has("stream_error") {
            let _ = send(
                "data: {\"error\":{\"code\":502,\"message\":\"Provider returned error\"}}\n\n"
                    .into(),
            )
            .await;
            flag.1 = true;
            return;
        }
        let mut rest: Vec<String> = pieces
            .map(|p| chunk(&model, legacy, Some(&p), None))
            .collect();
        let finish = if f.has("length") { "length" } else { "stop" };
        let mut last = chunk(&model, legacy, None, Some(finish));
        if f.has("usage_in_last") && include_usage {
            let mut v: Value =
                serde_json::from_str(last.trim_start_matches("data: ").trim()).unwrap();
            v["usage"] = usage_of(&f);
            last = format!("data: {v}\n\n");
        }
        rest.push(last);
        if include_usage && !f.has("nousage") && !f.has("usage_in_last") {
            let u = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1700000000,
                "model": model, "choices": [], "usage": usage_of(&f)});
            rest.push(format!("data: {u}\n\n"));
        }
        rest.push("data: [DONE]\n\n".into());
        if f.has("split") {
            let all: String = rest.concat();
            for piece in all.as_bytes().chunks(7) {
                tokio::time::sleep(Duration::from_millis(2)).await;
                if tx.send(Ok(Bytes::copy_from_slice(piece))).await.is_err() {
                    return;
                }
            }
        } else {
            for e in rest {
                if !send(e).await {
                    return;
                }
            }
        }
        flag.1 = true;
    });
    let body =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    let mut r = Response::new(Body::from_stream(body));
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    r
}

/// Holds a `gated` stream until the test opens the gate (true) or its reader
/// goes away (false). Watching the channel, rather than finding out on the
/// next send, makes a disconnect count even when what is left fits the
/// channel and the socket buffers before the closed connection is noticed.
async fn hold(
    st: &MockState,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> bool {
    tokio::select! {
        _ = st.gate.notified() => true,
        _ = tx.closed() => false,
    }
}

/// Sends `events` one by one as an event stream, counting in `st` whether
/// the reader stayed to the end.
fn send_events(st: Arc<MockState>, events: Vec<String>) -> Response {
    send_gated(st, events, false, vec![])
}

/// Sends `first`, then (when `gate`, once the test opens it) `then`.
fn send_gated(st: Arc<MockState>, first: Vec<String>, gate: bool, then: Vec<String>) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let first_len = first.len();
    tokio::spawn(async move {
        let mut flag = DropFlag(st.clone(), false);
        for (i, e) in first.into_iter().chain(then).enumerate() {
            if gate && i == first_len && !hold(&st, &tx).await {
                return;
            }
            if tx.send(Ok(Bytes::from(e))).await.is_err() {
                return;
            }
        }
        flag.1 = true;
    });
    let body =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    let mut r = Response::new(Body::from_stream(body));
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    r
}

/// A streamed chat tool call: the call's head, its arguments in pieces, the
/// finish, then usage when asked for.
fn tool_stream(
    st: Arc<MockState>,
    model: String,
    f: Flags,
    include_usage: bool,
    name: String,
) -> Response {
    let chunk_with = |delta: Value, finish: Option<&str>| {
        let v = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1700000000,
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {v}\n\n")
    };
    let mut events = vec![chunk_with(
        json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_mock1",
            "type": "function", "function": {"name": name, "arguments": ""}}]}),
        None,
    )];
    for piece in TOOL_ARGS {
        events.push(chunk_with(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
            None,
        ));
    }
    events.push(chunk_with(json!({}), Some("tool_calls")));
    if include_usage && !f.has("nousage") {
        let u = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1700000000,
            "model": model, "choices": [], "usage": usage_of(&f)});
        events.push(format!("data: {u}\n\n"));
    }
    events.push("data: [DONE]\n\n".into());
    send_events(st, events)
}
