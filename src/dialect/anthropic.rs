//! Anthropic's Messages API, both sides: a Messages client (Claude Code, the
//! Anthropic SDKs) read into a [`Conversation`] for an OpenAI-compatible
//! provider, and a [`Conversation`] written for an `api = "anthropic"`
//! provider, with its answers and named stream events read back. Also the
//! Anthropic error shape and usage (cache tokens count as input).

use super::*;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map};

fn stop_of(reason: &str) -> Stop {
    match reason {
        "max_tokens" | "model_context_window_exceeded" => Stop::Length,
        "tool_use" => Stop::ToolUse,
        "stop_sequence" => Stop::StopSequence,
        "refusal" => Stop::Filtered,
        _ => Stop::End,
    }
}

fn reason_of(stop: Stop) -> &'static str {
    match stop {
        Stop::End => "end_turn",
        Stop::Length => "max_tokens",
        Stop::ToolUse => "tool_use",
        Stop::StopSequence => "stop_sequence",
        Stop::Filtered => "refusal",
    }
}

/// Anthropic's usage: input counts the cache writes and reads too.
pub fn usage_of(u: &Value) -> Option<Usage> {
    let n = |k: &str| u.get(k).and_then(Value::as_i64).unwrap_or(0).max(0);
    if !u.is_object() || (u.get("input_tokens").is_none() && u.get("output_tokens").is_none()) {
        return None;
    }
    let prompt =
        n("input_tokens") + n("cache_creation_input_tokens") + n("cache_read_input_tokens");
    let completion = n("output_tokens");
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        cost_usd: None,
    })
}

/// The error type Anthropic gives a status.
fn error_type(status: u16) -> &'static str {
    match status {
        400 | 405 | 408 | 409 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 | 403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 | 503 => "overloaded_error",
        _ => "api_error",
    }
}

fn error_body(e: &ApiError) -> Value {
    json!({"type": "error", "error": {"type": error_type(e.status.as_u16()), "message": e.message}})
}

/// An error event of an Anthropic stream.
pub fn sse_error(e: &ApiError, out: &mut Vec<u8>) {
    sse(out, Some("error"), &error_body(e));
}

/// An error in Anthropic's shape, with the headers ours carries
/// (`Retry-After`, `x-should-retry`).
pub fn error_response(e: ApiError) -> Response {
    let body = error_body(&e);
    let (mut parts, _) = e.into_response().into_parts();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(
        parts,
        axum::body::Body::from(serde_json::to_vec(&body).unwrap_or_default()),
    )
}

// ---- ingress -------------------------------------------------------------

/// A `tool_use` block as a tool call, its input as JSON text.
fn tool_use_part(b: &Value) -> Part {
    Part::ToolCall {
        id: str_of(b, "id").to_owned(),
        name: str_of(b, "name").to_owned(),
        arguments: b
            .get("input")
            .map(Value::to_string)
            .unwrap_or_else(|| "{}".into()),
    }
}

fn blocks(content: &Value) -> Vec<&Value> {
    match content {
        Value::Array(a) => a.iter().collect(),
        _ => vec![],
    }
}

/// Reads a Messages body. Blocks a chat provider cannot take (thinking,
/// documents, server tools) are left out.
pub fn parse(body: &str) -> Result<Conversation, ApiError> {
    let v: Value = serde_json::from_str(body)
        .map_err(|e| ApiError::bad_request(format!("The body is not valid JSON: {e}")))?;
    let mut c = Conversation::default();
    match v.get("system") {
        Some(Value::String(s)) if !s.is_empty() => c.system.push(s.clone()),
        Some(s @ Value::Array(_)) => {
            let t = text_of(s);
            if !t.is_empty() {
                c.system.push(t);
            }
        }
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(_) => return Err(wrong("system", "a string or an array of text blocks")),
    }
    let Some(messages) = v.get("messages").and_then(Value::as_array) else {
        return Err(wrong("messages", "an array of messages"));
    };
    for (i, m) in messages.iter().enumerate() {
        let content = m.get("content").unwrap_or(&Value::Null);
        let role = match str_of(m, "role") {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            // Claude Code sends system turns under a beta.
            "system" => {
                c.system.push(text_of(content));
                continue;
            }
            _ => {
                return Err(wrong(
                    &format!("messages[{i}].role"),
                    "\"user\" or \"assistant\"",
                ))
            }
        };
        let mut parts = Vec::new();
        match content {
            Value::String(s) => parts.push(Part::Text(s.clone())),
            Value::Array(_) => {
                for b in blocks(content) {
                    match str_of(b, "type") {
                        "text" => parts.push(Part::Text(str_of(b, "text").to_owned())),
                        "image" => {
                            let src = b.get("source").unwrap_or(&Value::Null);
                            let url = match str_of(src, "type") {
                                "base64" => format!(
                                    "data:{};base64,{}",
                                    str_of(src, "media_type"),
                                    str_of(src, "data")
                                ),
                                _ => str_of(src, "url").to_owned(),
                            };
                            parts.push(Part::Image(url));
                        }
                        "tool_use" => parts.push(tool_use_part(b)),
                        "tool_result" => parts.push(Part::ToolResult {
                            id: str_of(b, "tool_use_id").to_owned(),
                            content: text_of(b.get("content").unwrap_or(&Value::Null)),
                            is_error: b.get("is_error").and_then(Value::as_bool) == Some(true),
                        }),
                        _ => {}
                    }
                }
            }
            _ => {
                return Err(wrong(
                    &format!("messages[{i}].content"),
                    "a string or an array of content blocks",
                ))
            }
        }
        openai_chat::push(&mut c.messages, role, parts);
    }
    for t in v
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        // Server tools (web search, code execution …) have a `type` and no
        // schema: only the provider that runs them could take them.
        let Some(schema) = t.get("input_schema") else {
            continue;
        };
        c.tools.push(Tool {
            name: str_of(t, "name").to_owned(),
            description: t
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_owned),
            parameters: schema.clone(),
        });
    }
    c.tool_choice = v
        .get("tool_choice")
        .and_then(|tc| match str_of(tc, "type") {
            "auto" => Some(ToolChoice::Auto),
            "any" => Some(ToolChoice::Required),
            "none" => Some(ToolChoice::None),
            "tool" => Some(ToolChoice::Named(str_of(tc, "name").to_owned())),
            _ => None,
        });
    c.stop = v
        .get("stop_sequences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    c.temperature = v.get("temperature").and_then(Value::as_f64);
    c.top_p = v.get("top_p").and_then(Value::as_f64);
    c.user = v
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(c)
}

fn msg_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_owned()
    } else {
        format!("msg_{id}")
    }
}

fn content_blocks(parts: &[Part]) -> Vec<Value> {
    parts
        .iter()
        .filter_map(|p| match p {
            Part::Text(t) if !t.is_empty() => Some(json!({"type": "text", "text": t})),
            Part::ToolCall {
                id,
                name,
                arguments,
            } => Some(json!({"type": "tool_use", "id": id, "name": name,
                             "input": arguments_value(arguments)})),
            _ => None,
        })
        .collect()
}

fn usage_json(info: &UsageInfo) -> Map<String, Value> {
    let mut u = Map::new();
    u.insert("input_tokens".into(), json!(info.prompt_tokens));
    u.insert("output_tokens".into(), json!(info.completion_tokens));
    u
}

/// A whole Messages answer.
pub fn write_reply(r: &Reply, model: &str, info: &UsageInfo) -> Vec<u8> {
    let v = json!({
        "id": msg_id(&r.id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content_blocks(&r.parts),
        "stop_reason": reason_of(r.stop),
        "stop_sequence": null,
        "usage": Value::Object(usage_json(info)),
        "_usage_info": info,
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

#[derive(PartialEq)]
enum Open {
    None,
    Text,
    Tool,
}

/// Writes Anthropic's stream events.
pub struct Encoder {
    model: String,
    id: String,
    /// The gateway's estimate of the prompt, for `message_start`: the
    /// provider's count comes only at the end (in `message_delta`).
    input_estimate: i64,
    started: bool,
    index: i64,
    open: Open,
    stop: Option<Stop>,
}

impl Encoder {
    pub fn new(model: &str, id: &str, input_estimate: i64) -> Encoder {
        Encoder {
            model: model.to_owned(),
            id: msg_id(id),
            input_estimate,
            started: false,
            index: -1,
            open: Open::None,
            stop: None,
        }
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let v = json!({"type": "message_start", "message": {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": self.input_estimate, "output_tokens": 0}}});
        sse(out, Some("message_start"), &v);
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if self.open != Open::None {
            self.open = Open::None;
            sse(
                out,
                Some("content_block_stop"),
                &json!({"type": "content_block_stop", "index": self.index}),
            );
        }
    }

    fn open(&mut self, block: Value, kind: Open, out: &mut Vec<u8>) {
        self.close(out);
        self.index += 1;
        self.open = kind;
        sse(
            out,
            Some("content_block_start"),
            &json!({"type": "content_block_start", "index": self.index, "content_block": block}),
        );
    }
}

impl Encode for Encoder {
    fn delta(&mut self, d: &Delta, out: &mut Vec<u8>) {
        match d {
            Delta::Id(id) => {
                if !self.started {
                    self.id = msg_id(id);
                }
                self.start(out);
            }
            Delta::Text(t) => {
                self.start(out);
                if self.open != Open::Text {
                    self.open(json!({"type": "text", "text": ""}), Open::Text, out);
                }
                sse(
                    out,
                    Some("content_block_delta"),
                    &json!({"type": "content_block_delta", "index": self.index,
                            "delta": {"type": "text_delta", "text": t}}),
                );
            }
            Delta::ToolStart { id, name } => {
                self.start(out);
                self.open(
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                    Open::Tool,
                    out,
                );
            }
            Delta::ToolArgs(a) => {
                self.start(out);
                if self.open != Open::Tool {
                    return;
                }
                sse(
                    out,
                    Some("content_block_delta"),
                    &json!({"type": "content_block_delta", "index": self.index,
                            "delta": {"type": "input_json_delta", "partial_json": a}}),
                );
            }
            Delta::Stop(s) => self.stop = Some(*s),
            Delta::Usage(_) => {}
        }
    }

    fn finish(&mut self, info: &UsageInfo, out: &mut Vec<u8>) {
        self.start(out);
        self.close(out);
        let usage = usage_with_info(usage_json(info), info);
        let v = json!({"type": "message_delta",
            "delta": {"stop_reason": reason_of(self.stop.unwrap_or(Stop::End)), "stop_sequence": null},
            "usage": usage});
        sse(out, Some("message_delta"), &v);
        sse(out, Some("message_stop"), &json!({"type": "message_stop"}));
    }

    fn error(&mut self, e: &ApiError, out: &mut Vec<u8>) {
        sse_error(e, out);
    }
}

// ---- egress --------------------------------------------------------------

/// A Messages body for an Anthropic provider. `max_tokens` is required
/// there: the cap, else 4096.
pub fn encode(c: &Conversation, model: &str, cap: Option<i64>, stream: bool) -> Vec<u8> {
    let mut messages: Vec<Value> = Vec::with_capacity(c.messages.len());
    for m in &c.messages {
        let mut content: Vec<Value> = Vec::new();
        // Tool results lead a user turn, as Anthropic requires.
        for p in &m.parts {
            if let Part::ToolResult {
                id,
                content: text,
                is_error,
            } = p
            {
                let mut b = json!({"type": "tool_result", "tool_use_id": id, "content": text});
                if *is_error {
                    b["is_error"] = json!(true);
                }
                content.push(b);
            }
        }
        for p in &m.parts {
            match p {
                Part::Text(t) if !t.is_empty() => {
                    content.push(json!({"type": "text", "text": t}));
                }
                Part::Image(url) => content.push(image_block(url)),
                Part::ToolCall {
                    id,
                    name,
                    arguments,
                } => content.push(json!({"type": "tool_use", "id": id, "name": name,
                                         "input": arguments_value(arguments)})),
                _ => {}
            }
        }
        if content.is_empty() {
            continue;
        }
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        match messages.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(a) = last["content"].as_array_mut() {
                    a.extend(content);
                }
            }
            _ => messages.push(json!({"role": role, "content": content})),
        }
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("max_tokens".into(), json!(cap.unwrap_or(4096)));
    if !c.system.is_empty() {
        body.insert("system".into(), json!(c.system.join("\n\n")));
    }
    body.insert("messages".into(), Value::Array(messages));
    if !c.tools.is_empty() {
        let tools: Vec<Value> = c
            .tools
            .iter()
            .map(|t| {
                let mut v = json!({"name": t.name, "input_schema": t.parameters});
                if let Some(d) = &t.description {
                    v["description"] = json!(d);
                }
                v
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
        if let Some(tc) = &c.tool_choice {
            let v = match tc {
                ToolChoice::Auto => json!({"type": "auto"}),
                // The tools stay defined: the history may hold their calls.
                ToolChoice::None => json!({"type": "none"}),
                ToolChoice::Required => json!({"type": "any"}),
                ToolChoice::Named(n) => json!({"type": "tool", "name": n}),
            };
            body.insert("tool_choice".into(), v);
        }
    }
    if !c.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(c.stop));
    }
    if let Some(t) = c.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(t) = c.top_p {
        body.insert("top_p".into(), json!(t));
    }
    if let Some(u) = &c.user {
        body.insert("metadata".into(), json!({"user_id": u}));
    }
    if stream {
        body.insert("stream".into(), json!(true));
    }
    serde_json::to_vec(&Value::Object(body)).unwrap_or_default()
}

fn image_block(url: &str) -> Value {
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some((media, data)) = rest.split_once(";base64,") {
            return json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}});
        }
    }
    json!({"type": "image", "source": {"type": "url", "url": url}})
}

/// Reads a whole Messages answer.
pub fn decode_reply(body: &str) -> Result<Reply, Option<Value>> {
    let v: Value = serde_json::from_str(body).map_err(|_| None)?;
    if str_of(&v, "type") == "error" || v.get("error").is_some_and(|e| !e.is_null()) {
        return Err(Some(v));
    }
    let content = v.get("content").and_then(Value::as_array).ok_or(None)?;
    let mut parts = Vec::new();
    for b in content {
        match str_of(b, "type") {
            "text" => parts.push(Part::Text(str_of(b, "text").to_owned())),
            "tool_use" => parts.push(tool_use_part(b)),
            _ => {}
        }
    }
    Ok(Reply {
        id: str_of(&v, "id").to_owned(),
        parts,
        stop: stop_of(str_of(&v, "stop_reason")),
        usage: v.get("usage").and_then(usage_of),
    })
}

/// Reads Anthropic's stream events (by their `type`; the `event:` line
/// says the same).
#[derive(Default)]
pub struct Decoder {
    /// Input tokens reported by `message_start`.
    input: Option<Value>,
    /// The block being streamed is one the client gets (text or tool use).
    in_block: bool,
}

impl Decode for Decoder {
    fn event(&mut self, data: &str, out: &mut Vec<Delta>) -> Result<(), Value> {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return Ok(());
        };
        match str_of(&v, "type") {
            "error" => return Err(v),
            "message_start" => {
                let m = v.get("message").unwrap_or(&Value::Null);
                out.push(Delta::Id(str_of(m, "id").to_owned()));
                // The input and the output so far: merged into
                // `message_delta`'s usage, the one that counts.
                if let Some(u) = m.get("usage") {
                    self.input = Some(u.clone());
                }
            }
            "content_block_start" => {
                let b = v.get("content_block").unwrap_or(&Value::Null);
                self.in_block = true;
                match str_of(b, "type") {
                    "text" => {
                        let t = str_of(b, "text");
                        if !t.is_empty() {
                            out.push(Delta::Text(t.to_owned()));
                        }
                    }
                    "tool_use" => out.push(Delta::ToolStart {
                        id: str_of(b, "id").to_owned(),
                        name: str_of(b, "name").to_owned(),
                    }),
                    _ => self.in_block = false,
                }
            }
            "content_block_delta" if self.in_block => {
                let d = v.get("delta").unwrap_or(&Value::Null);
                match str_of(d, "type") {
                    "text_delta" => out.push(Delta::Text(str_of(d, "text").to_owned())),
                    "input_json_delta" => {
                        let p = str_of(d, "partial_json");
                        if !p.is_empty() {
                            out.push(Delta::ToolArgs(p.to_owned()));
                        }
                    }
                    _ => {}
                }
            }
            "content_block_stop" => self.in_block = false,
            "message_delta" => {
                let d = v.get("delta").unwrap_or(&Value::Null);
                if let Some(r) = d.get("stop_reason").and_then(Value::as_str) {
                    out.push(Delta::Stop(stop_of(r)));
                }
                if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                    // The input counts as `message_start` gave them unless
                    // this event repeats them.
                    let mut merged = self.input.clone().unwrap_or_else(|| json!({}));
                    if let (Some(m), Some(o)) = (merged.as_object_mut(), u.as_object()) {
                        for (k, v) in o {
                            m.insert(k.clone(), v.clone());
                        }
                    }
                    if let Some(u) = usage_of(&merged) {
                        out.push(Delta::Usage(u));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}
