//! OpenAI chat completions, both sides: a chat client's body read into a
//! [`Conversation`] (for a provider of another dialect), and a
//! [`Conversation`] written for an OpenAI-compatible provider, with its
//! answers and stream chunks read back.

use super::*;
use serde_json::{json, Map};

fn stop_of(reason: &str) -> Stop {
    match reason {
        "length" => Stop::Length,
        "tool_calls" | "function_call" => Stop::ToolUse,
        "content_filter" => Stop::Filtered,
        _ => Stop::End,
    }
}

fn reason_of(stop: Stop) -> &'static str {
    match stop {
        Stop::End | Stop::StopSequence => "stop",
        Stop::Length => "length",
        Stop::ToolUse => "tool_calls",
        Stop::Filtered => "content_filter",
    }
}

// ---- ingress -------------------------------------------------------------

/// Reads a chat completions body. `tool` messages become tool results in a
/// user turn; `system` and `developer` messages become system text.
pub fn parse(body: &str) -> Result<Conversation, ApiError> {
    let v: Value = serde_json::from_str(body)
        .map_err(|e| ApiError::bad_request(format!("The body is not valid JSON: {e}")))?;
    let mut c = Conversation::default();
    let Some(messages) = v.get("messages").and_then(Value::as_array) else {
        return Err(wrong("messages", "an array of messages"));
    };
    for (i, m) in messages.iter().enumerate() {
        let role = str_of(m, "role");
        let content = m.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => c.system.push(text_of(content)),
            "user" => {
                let parts = user_parts(content, i)?;
                push(&mut c.messages, Role::User, parts);
            }
            "assistant" => {
                let parts = assistant_parts(m);
                push(&mut c.messages, Role::Assistant, parts);
            }
            "tool" | "function" => {
                let id = m
                    .get("tool_call_id")
                    .or_else(|| m.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let part = Part::ToolResult {
                    id,
                    content: text_of(content),
                    is_error: false,
                };
                push(&mut c.messages, Role::User, vec![part]);
            }
            _ => {
                return Err(wrong(
                    &format!("messages[{i}].role"),
                    "one of system, developer, user, assistant or tool",
                ))
            }
        }
    }
    for t in v
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(f) = t.get("function") {
            c.tools.push(function_tool(f));
        }
    }
    c.tool_choice = match v.get("tool_choice") {
        Some(Value::String(s)) => Some(tool_choice_word(s)),
        Some(o @ Value::Object(_)) => o
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .map(|n| ToolChoice::Named(n.to_owned())),
        _ => None,
    };
    c.stop = match v.get("stop") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect(),
        _ => vec![],
    };
    c.temperature = v.get("temperature").and_then(Value::as_f64);
    c.top_p = v.get("top_p").and_then(Value::as_f64);
    c.user = v.get("user").and_then(Value::as_str).map(str::to_owned);
    Ok(c)
}

fn user_parts(content: &Value, i: usize) -> Result<Vec<Part>, ApiError> {
    Ok(match content {
        Value::String(s) => vec![Part::Text(s.clone())],
        Value::Array(items) => items
            .iter()
            .filter_map(|p| match str_of(p, "type") {
                "text" => Some(Part::Text(str_of(p, "text").to_owned())),
                "image_url" => {
                    let url = p.get("image_url").map(|u| match u {
                        Value::String(s) => s.as_str(),
                        _ => str_of(u, "url"),
                    });
                    Some(Part::Image(url.unwrap_or("").to_owned()))
                }
                _ => None,
            })
            .collect(),
        Value::Null => vec![],
        _ => {
            return Err(wrong(
                &format!("messages[{i}].content"),
                "a string or an array of parts",
            ))
        }
    })
}

/// An assistant message's text and tool calls (a request's history turn or
/// an answer's message).
fn assistant_parts(m: &Value) -> Vec<Part> {
    let mut parts = Vec::new();
    let text = text_of(m.get("content").unwrap_or(&Value::Null));
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    for call in m
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let f = call.get("function").unwrap_or(&Value::Null);
        parts.push(Part::ToolCall {
            id: str_of(call, "id").to_owned(),
            name: str_of(f, "name").to_owned(),
            arguments: match f.get("arguments") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => "{}".into(),
            },
        });
    }
    parts
}

/// Appends a turn, joining it to the previous one of the same role.
pub(super) fn push(messages: &mut Vec<Message>, role: Role, parts: Vec<Part>) {
    match messages.last_mut() {
        Some(last) if last.role == role => last.parts.extend(parts),
        _ => messages.push(Message { role, parts }),
    }
}

/// A whole chat completion.
pub fn write_reply(r: &Reply, model: &str, info: &UsageInfo) -> Vec<u8> {
    let message = assistant_message(&r.parts, true);
    let v = json!({
        "id": chat_id(&r.id),
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null,
                     "finish_reason": reason_of(r.stop)}],
        "usage": {"prompt_tokens": info.prompt_tokens, "completion_tokens": info.completion_tokens,
                  "total_tokens": info.tokens_used},
        "_usage_info": info,
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// An assistant message: its text and its tool calls.
fn assistant_message(parts: &[Part], whole_answer: bool) -> Value {
    let text = text_in(parts);
    let calls: Vec<Value> = parts
        .iter()
        .filter_map(|p| match p {
            Part::ToolCall {
                id,
                name,
                arguments,
            } => Some(json!({"id": id, "type": "function",
                "function": {"name": name, "arguments": arguments}})),
            _ => None,
        })
        .collect();
    // An answer's content is a string unless it only calls tools; a turn of
    // the history sent upstream has `null` for no text.
    let null = text.is_empty() && (!whole_answer || !calls.is_empty());
    let mut message = json!({"role": "assistant",
        "content": if null { Value::Null } else { Value::String(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    message
}

fn chat_id(id: &str) -> String {
    if id.starts_with("chatcmpl") {
        id.to_owned()
    } else {
        format!("chatcmpl-{id}")
    }
}

/// Writes chat completion chunks.
pub struct Encoder {
    model: String,
    id: String,
    created: i64,
    wants_usage: bool,
    started: bool,
    /// Index of the tool call being streamed (-1: none yet).
    tool: i64,
    stop: Option<Stop>,
}

impl Encoder {
    pub fn new(model: &str, wants_usage: bool, id: &str) -> Encoder {
        Encoder {
            model: model.to_owned(),
            id: chat_id(id),
            created: now_secs(),
            wants_usage,
            started: false,
            tool: -1,
            stop: None,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>, out: &mut Vec<u8>) {
        let v = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        sse(out, None, &v);
    }

    fn role(&mut self, mut delta: Value) -> Value {
        if !self.started {
            self.started = true;
            delta["role"] = json!("assistant");
        }
        delta
    }
}

impl Encode for Encoder {
    fn delta(&mut self, d: &Delta, out: &mut Vec<u8>) {
        match d {
            Delta::Id(id) => {
                if !self.started {
                    self.id = chat_id(id);
                }
            }
            Delta::Text(t) => {
                let delta = self.role(json!({"content": t}));
                self.chunk(delta, None, out);
            }
            Delta::ToolStart { id, name } => {
                self.tool += 1;
                let delta = self.role(json!({"tool_calls": [{"index": self.tool, "id": id,
                    "type": "function", "function": {"name": name, "arguments": ""}}]}));
                self.chunk(delta, None, out);
            }
            Delta::ToolArgs(a) => {
                let delta = self.role(json!({"tool_calls": [{"index": self.tool.max(0),
                    "function": {"arguments": a}}]}));
                self.chunk(delta, None, out);
            }
            Delta::Stop(s) => {
                self.stop = Some(*s);
                let delta = self.role(json!({}));
                self.chunk(delta, Some(reason_of(*s)), out);
            }
            Delta::Usage(_) => {}
        }
    }

    fn finish(&mut self, info: &UsageInfo, out: &mut Vec<u8>) {
        if self.stop.is_none() {
            let delta = self.role(json!({}));
            self.chunk(delta, Some("stop"), out);
        }
        if self.wants_usage {
            let v = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [],
                "usage": {"prompt_tokens": info.prompt_tokens, "completion_tokens": info.completion_tokens,
                          "total_tokens": info.tokens_used, "_usage_info": info}});
            sse(out, None, &v);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }

    fn error(&mut self, e: &ApiError, out: &mut Vec<u8>) {
        sse(out, None, &e.body());
    }
}

// ---- egress --------------------------------------------------------------

/// A chat completions body for an OpenAI-compatible provider.
pub fn encode(
    c: &Conversation,
    model: &str,
    cap: Option<i64>,
    cap_field: &str,
    stream: bool,
) -> Vec<u8> {
    let mut messages = Vec::with_capacity(c.messages.len() + 1);
    if !c.system.is_empty() {
        messages.push(json!({"role": "system", "content": c.system.join("\n\n")}));
    }
    for m in &c.messages {
        match m.role {
            Role::User => {
                // Tool results first: they answer the assistant turn before.
                for p in &m.parts {
                    if let Part::ToolResult { id, content, .. } = p {
                        messages
                            .push(json!({"role": "tool", "tool_call_id": id, "content": content}));
                    }
                }
                let rest: Vec<&Part> = m
                    .parts
                    .iter()
                    .filter(|p| !matches!(p, Part::ToolResult { .. }))
                    .collect();
                if rest.is_empty() {
                    continue;
                }
                let content = if rest.iter().all(|p| matches!(p, Part::Text(_))) {
                    Value::String(
                        rest.iter()
                            .filter_map(|p| match p {
                                Part::Text(t) => Some(t.as_str()),
                                _ => None,
                            })
                            .collect::<Vec<_>>()
                            .join("\n"),
                    )
                } else {
                    Value::Array(
                        rest.iter()
                            .filter_map(|p| match p {
                                Part::Text(t) => Some(json!({"type": "text", "text": t})),
                                Part::Image(url) => {
                                    Some(json!({"type": "image_url", "image_url": {"url": url}}))
                                }
                                _ => None,
                            })
                            .collect(),
                    )
                };
                messages.push(json!({"role": "user", "content": content}));
            }
            Role::Assistant => messages.push(assistant_message(&m.parts, false)),
        }
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("messages".into(), Value::Array(messages));
    if let Some(cap) = cap {
        body.insert(cap_field.into(), json!(cap));
    }
    if !c.tools.is_empty() {
        let tools: Vec<Value> = c
            .tools
            .iter()
            .map(|t| {
                let mut f = json!({"name": t.name, "parameters": t.parameters});
                if let Some(d) = &t.description {
                    f["description"] = json!(d);
                }
                json!({"type": "function", "function": f})
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
        if let Some(tc) = &c.tool_choice {
            let v = match tc {
                ToolChoice::Auto => json!("auto"),
                ToolChoice::None => json!("none"),
                ToolChoice::Required => json!("required"),
                ToolChoice::Named(n) => json!({"type": "function", "function": {"name": n}}),
            };
            body.insert("tool_choice".into(), v);
        }
    }
    if !c.stop.is_empty() {
        body.insert("stop".into(), json!(c.stop));
    }
    if let Some(t) = c.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(t) = c.top_p {
        body.insert("top_p".into(), json!(t));
    }
    if let Some(u) = &c.user {
        body.insert("user".into(), json!(u));
    }
    if stream {
        body.insert("stream".into(), json!(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    serde_json::to_vec(&Value::Object(body)).unwrap_or_default()
}

fn usage_of(v: &Value) -> Option<Usage> {
    raw_usage(v).and_then(|u| Usage::from_raw(&u))
}

/// Reads a whole chat completion.
pub fn decode_reply(body: &str) -> Result<Reply, Option<Value>> {
    let v: Value = serde_json::from_str(body).map_err(|_| None)?;
    if v.get("error").is_some_and(|e| !e.is_null()) {
        return Err(Some(v));
    }
    let choice = v
        .get("choices")
        .and_then(|c| c.get(0))
        .filter(|c| c.is_object())
        .ok_or(None)?;
    let parts = assistant_parts(choice.get("message").unwrap_or(&Value::Null));
    let mut stop = stop_of(str_of(choice, "finish_reason"));
    if stop == Stop::End && parts.iter().any(|p| matches!(p, Part::ToolCall { .. })) {
        stop = Stop::ToolUse;
    }
    Ok(Reply {
        id: str_of(&v, "id").to_owned(),
        parts,
        stop,
        usage: usage_of(&v),
    })
}

/// Reads chat completion chunks.
#[derive(Default)]
pub struct Decoder {
    id_sent: bool,
    /// The index of the tool call being streamed.
    tool: Option<i64>,
}

impl Decode for Decoder {
    fn event(&mut self, data: &str, out: &mut Vec<Delta>) -> Result<(), Value> {
        if data.trim() == "[DONE]" {
            return Ok(());
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return Ok(());
        };
        if v.get("error").is_some_and(|e| !e.is_null()) {
            return Err(v);
        }
        if !self.id_sent {
            if let Some(id) = v.get("id").and_then(Value::as_str) {
                self.id_sent = true;
                out.push(Delta::Id(id.to_owned()));
            }
        }
        if let Some(choice) = v.get("choices").and_then(|c| c.get(0)) {
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            if let Some(t) = delta.get("content").and_then(Value::as_str) {
                if !t.is_empty() {
                    out.push(Delta::Text(t.to_owned()));
                }
            }
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let index = call.get("index").and_then(Value::as_i64).unwrap_or(0);
                let f = call.get("function").unwrap_or(&Value::Null);
                if self.tool != Some(index) {
                    self.tool = Some(index);
                    out.push(Delta::ToolStart {
                        id: str_of(call, "id").to_owned(),
                        name: str_of(f, "name").to_owned(),
                    });
                }
                if let Some(a) = f.get("arguments").and_then(Value::as_str) {
                    if !a.is_empty() {
                        out.push(Delta::ToolArgs(a.to_owned()));
                    }
                }
            }
            if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
                let mut stop = stop_of(r);
                if stop == Stop::End && self.tool.is_some() {
                    stop = Stop::ToolUse;
                }
                out.push(Delta::Stop(stop));
            }
        }
        if let Some(u) = usage_of(&v) {
            out.push(Delta::Usage(u));
        }
        Ok(())
    }
}
