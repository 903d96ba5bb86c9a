//! OpenAI's Responses API, stateless, as an ingress dialect (Codex, the
//! Agents SDK): `input` items read into a [`Conversation`]; answers written
//! as a `response` object and as the typed event sequence. Stored responses
//! (`previous_response_id`, `store: true`) are refused: tollgate keeps none.

use super::*;
use serde_json::{json, Map};

/// Reads a Responses body. Items and tools a chat provider cannot take
/// (reasoning, web search, custom and shell tools …) are left out rather
/// than failing the call.
pub fn parse(body: &str) -> Result<Conversation, ApiError> {
    let v: Value = serde_json::from_str(body)
        .map_err(|e| ApiError::bad_request(format!("The body is not valid JSON: {e}")))?;
    if v.get("previous_response_id").is_some_and(|p| !p.is_null()) {
        return Err(ApiError::invalid_field(
            "previous_response_id",
            "tollgate does not store responses: send the whole conversation in `input` instead of `previous_response_id`.",
        ));
    }
    if v.get("store") == Some(&Value::Bool(true)) {
        return Err(ApiError::invalid_field(
            "store",
            "tollgate does not store responses: leave `store` out or set it to false.",
        ));
    }
    let mut c = Conversation::default();
    if let Some(i) = v.get("instructions").and_then(Value::as_str) {
        if !i.is_empty() {
            c.system.push(i.to_owned());
        }
    }
    match v.get("input") {
        Some(Value::String(s)) => c.messages.push(Message {
            role: Role::User,
            parts: vec![Part::Text(s.clone())],
        }),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                item_into(&mut c, item, i)?;
            }
        }
        _ => return Err(wrong("input", "a string or an array of items")),
    }
    for t in v
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if str_of(t, "type") == "function" {
            c.tools.push(function_tool(t));
        }
    }
    c.tool_choice = match v.get("tool_choice") {
        Some(Value::String(s)) => Some(tool_choice_word(s)),
        Some(o @ Value::Object(_)) if str_of(o, "type") == "function" => {
            Some(ToolChoice::Named(str_of(o, "name").to_owned()))
        }
        _ => None,
    };
    c.temperature = v.get("temperature").and_then(Value::as_f64);
    c.top_p = v.get("top_p").and_then(Value::as_f64);
    c.user = v.get("user").and_then(Value::as_str).map(str::to_owned);
    let echo: Map<String, Value> = ECHOED
        .iter()
        .filter_map(|k| Some((k.to_string(), v.get(*k).filter(|x| !x.is_null())?.clone())))
        .collect();
    c.echo = (!echo.is_empty()).then(|| std::sync::Arc::new(echo));
    Ok(c)
}

/// The request's settings a `response` object repeats, as OpenAI's does.
const ECHOED: [&str; 11] = [
    "instructions",
    "max_output_tokens",
    "metadata",
    "parallel_tool_calls",
    "reasoning",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_p",
    "user",
];

fn item_into(c: &mut Conversation, item: &Value, i: usize) -> Result<(), ApiError> {
    let kind = match item.get("type").and_then(Value::as_str) {
        Some(t) => t,
        // An item without a type is a message ({"role","content"}).
        None if item.get("role").is_some() => "message",
        None => return Err(wrong(&format!("input[{i}]"), "an item with a type")),
    };
    match kind {
        "message" => {
            let content = item.get("content").unwrap_or(&Value::Null);
            let role = match str_of(item, "role") {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "system" | "developer" => {
                    c.system.push(text_of(content));
                    return Ok(());
                }
                _ => {
                    return Err(wrong(
                        &format!("input[{i}].role"),
                        "one of user, assistant, system or developer",
                    ))
                }
            };
            let parts = match content {
                Value::String(s) => vec![Part::Text(s.clone())],
                Value::Array(ps) => ps
                    .iter()
                    .filter_map(|p| match str_of(p, "type") {
                        "input_text" | "output_text" | "text" => {
                            Some(Part::Text(str_of(p, "text").to_owned()))
                        }
                        "input_image" => {
                            let url = match p.get("image_url") {
                                Some(Value::String(u)) => u.clone(),
                                Some(u) => str_of(u, "url").to_owned(),
                                None => return None,
                            };
                            Some(Part::Image(url))
                        }
                        "refusal" => Some(Part::Text(str_of(p, "refusal").to_owned())),
                        _ => None,
                    })
                    .collect(),
                _ => {
                    return Err(wrong(
                        &format!("input[{i}].content"),
                        "a string or an array of content parts",
                    ))
                }
            };
            openai_chat::push(&mut c.messages, role, parts);
        }
        "function_call" => {
            let part = Part::ToolCall {
                id: str_of(item, "call_id").to_owned(),
                name: str_of(item, "name").to_owned(),
                arguments: str_of(item, "arguments").to_owned(),
            };
            openai_chat::push(&mut c.messages, Role::Assistant, vec![part]);
        }
        "function_call_output" => {
            let part = Part::ToolResult {
                id: str_of(item, "call_id").to_owned(),
                content: text_of(item.get("output").unwrap_or(&Value::Null)),
                is_error: false,
            };
            openai_chat::push(&mut c.messages, Role::User, vec![part]);
        }
        // Reasoning, web search calls and the like: nothing a provider of
        // another dialect could read.
        _ => {}
    }
    Ok(())
}

fn resp_id(id: &str) -> String {
    if id.starts_with("resp_") {
        id.to_owned()
    } else {
        format!("resp_{id}")
    }
}

fn usage_json(info: &UsageInfo) -> Map<String, Value> {
    let mut u = Map::new();
    u.insert("input_tokens".into(), json!(info.prompt_tokens));
    u.insert("input_tokens_details".into(), json!({"cached_tokens": 0}));
    u.insert("output_tokens".into(), json!(info.completion_tokens));
    u.insert(
        "output_tokens_details".into(),
        json!({"reasoning_tokens": 0}),
    );
    u.insert("total_tokens".into(), json!(info.tokens_used));
    u
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    let content = if status == "in_progress" {
        json!([])
    } else {
        json!([{"type": "output_text", "text": text, "annotations": []}])
    };
    json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": content})
}

fn call_item(id: &str, call_id: &str, name: &str, args: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call_id, "name": name,
           "arguments": args, "status": status})
}

/// The `response` object around `output`, repeating the request's settings.
fn response(id: &str, asked: Asked<'_>, created: i64, status: &str, output: Vec<Value>) -> Value {
    let model = asked.model;
    let mut v = json!({
        "id": id, "object": "response", "created_at": created, "status": status,
        "error": null, "incomplete_details": null, "instructions": null,
        "max_output_tokens": null, "model": model, "output": output,
        "parallel_tool_calls": true, "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null}, "store": false,
        "temperature": null, "text": {"format": {"type": "text"}},
        "tool_choice": "auto", "tools": [], "top_p": null, "truncation": "disabled",
        "usage": null, "metadata": {},
    });
    if let (Some(o), Some(echo)) = (v.as_object_mut(), asked.echo) {
        for (k, x) in echo {
            o.insert(k.clone(), x.clone());
        }
    }
    v
}

fn finish_response(v: &mut Value, stop: Stop, info: &UsageInfo) {
    if stop == Stop::Length {
        v["status"] = json!("incomplete");
        v["incomplete_details"] = json!({"reason": "max_output_tokens"});
    } else if stop == Stop::Filtered {
        v["status"] = json!("incomplete");
        v["incomplete_details"] = json!({"reason": "content_filter"});
    } else {
        v["status"] = json!("completed");
    }
    v["usage"] = usage_with_info(usage_json(info), info);
}

/// A whole `response` object; `_usage_info` at its top level.
pub fn write_reply(r: &Reply, asked: Asked<'_>, info: &UsageInfo) -> Vec<u8> {
    let id = resp_id(&r.id);
    let mut output = Vec::new();
    let text = text_in(&r.parts);
    if !text.is_empty() {
        output.push(message_item(
            &format!("msg_{}", &id[5..]),
            &text,
            "completed",
        ));
    }
    for (i, p) in r.parts.iter().enumerate() {
        if let Part::ToolCall {
            id: call_id,
            name,
            arguments,
        } = p
        {
            output.push(call_item(
                &format!("fc_{}_{i}", &id[5..]),
                call_id,
                name,
                arguments,
                "completed",
            ));
        }
    }
    let mut v = response(&id, asked, now_secs(), "completed", output);
    finish_response(&mut v, r.stop, info);
    // The SDKs read usage as their model; the gateway's own figures go beside it too.
    if let Some(u) = v["usage"].as_object_mut() {
        u.remove("_usage_info");
    }
    v["_usage_info"] = serde_json::to_value(info).unwrap_or(Value::Null);
    serde_json::to_vec(&v).unwrap_or_default()
}

/// An output item being streamed.
enum Item {
    Message {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        args: String,
    },
}

/// Writes the Responses event sequence.
pub struct Encoder {
    model: String,
    echo: Option<std::sync::Arc<Map<String, Value>>>,
    id: String,
    created: i64,
    seq: u64,
    started: bool,
    items: Vec<Item>,
    /// The last item is still open.
    open: bool,
    stop: Option<Stop>,
}

impl Encoder {
    pub fn new(model: &str, id: &str, echo: Option<std::sync::Arc<Map<String, Value>>>) -> Encoder {
        Encoder {
            model: model.to_owned(),
            echo,
            id: resp_id(id),
            created: now_secs(),
            seq: 0,
            started: false,
            items: Vec::new(),
            open: false,
            stop: None,
        }
    }

    fn asked(&self) -> Asked<'_> {
        Asked {
            model: &self.model,
            echo: self.echo.as_deref(),
        }
    }

    fn event(&mut self, name: &str, mut v: Value, out: &mut Vec<u8>) {
        v["type"] = json!(name);
        v["sequence_number"] = json!(self.seq);
        self.seq += 1;
        sse(out, Some(name), &v);
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let r = response(&self.id, self.asked(), self.created, "in_progress", vec![]);
        self.event("response.created", json!({"response": r}), out);
        let r = response(&self.id, self.asked(), self.created, "in_progress", vec![]);
        self.event("response.in_progress", json!({"response": r}), out);
    }

    fn item_json(item: &Item, status: &str) -> Value {
        match item {
            Item::Message { id, text } => message_item(id, text, status),
            Item::Call {
                id,
                call_id,
                name,
                args,
            } => call_item(id, call_id, name, args, status),
        }
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if !self.open {
            return;
        }
        self.open = false;
        let index = self.items.len() - 1;
        let done = match &self.items[index] {
            Item::Message { id, text } => {
                let (id, text) = (id.clone(), text.clone());
                self.event(
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text,
                           "logprobs": []}),
                    out,
                );
                self.event(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                           "part": {"type": "output_text", "text": text, "annotations": []}}),
                    out,
                );
                Self::item_json(&self.items[index], "completed")
            }
            Item::Call { id, args, .. } => {
                let (id, args) = (id.clone(), args.clone());
                self.event(
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": index, "arguments": args}),
                    out,
                );
                Self::item_json(&self.items[index], "completed")
            }
        };
        self.event(
            "response.output_item.done",
            json!({"output_index": index, "item": done}),
            out,
        );
    }

    fn add(&mut self, item: Item, out: &mut Vec<u8>) {
        self.close(out);
        let index = self.items.len();
        let added = Self::item_json(&item, "in_progress");
        let message_id = match &item {
            Item::Message { id, .. } => Some(id.clone()),
            Item::Call { .. } => None,
        };
        self.items.push(item);
        self.open = true;
        self.event(
            "response.output_item.added",
            json!({"output_index": index, "item": added}),
            out,
        );
        if let Some(id) = message_id {
            self.event(
                "response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": 0,
                       "part": {"type": "output_text", "text": "", "annotations": []}}),
                out,
            );
        }
    }
}

impl Encode for Encoder {
    fn delta(&mut self, d: &Delta, out: &mut Vec<u8>) {
        match d {
            Delta::Id(id) => {
                if !self.started {
                    self.id = resp_id(id);
                }
                self.start(out);
            }
            Delta::Text(t) => {
                self.start(out);
                let is_message =
                    self.open && matches!(self.items.last(), Some(Item::Message { .. }));
                if !is_message {
                    let id = format!("msg_{}_{}", &self.id[5..], self.items.len());
                    self.add(
                        Item::Message {
                            id,
                            text: String::new(),
                        },
                        out,
                    );
                }
                let index = self.items.len() - 1;
                let item_id = match self.items.last_mut() {
                    Some(Item::Message { id, text }) => {
                        text.push_str(t);
                        id.clone()
                    }
                    _ => return,
                };
                self.event(
                    "response.output_text.delta",
                    json!({"item_id": item_id, "output_index": index, "content_index": 0,
                           "delta": t, "logprobs": []}),
                    out,
                );
            }
            Delta::ToolStart { id, name } => {
                self.start(out);
                let item_id = format!("fc_{}_{}", &self.id[5..], self.items.len());
                self.add(
                    Item::Call {
                        id: item_id,
                        call_id: id.clone(),
                        name: name.clone(),
                        args: String::new(),
                    },
                    out,
                );
            }
            Delta::ToolArgs(a) => {
                if !self.open {
                    return;
                }
                let index = self.items.len() - 1;
                let item_id = match self.items.last_mut() {
                    Some(Item::Call { id, args, .. }) => {
                        args.push_str(a);
                        id.clone()
                    }
                    _ => return,
                };
                self.event(
                    "response.function_call_arguments.delta",
                    json!({"item_id": item_id, "output_index": index, "delta": a}),
                    out,
                );
            }
            Delta::Stop(s) => self.stop = Some(*s),
            Delta::Usage(_) => {}
        }
    }

    fn finish(&mut self, info: &UsageInfo, out: &mut Vec<u8>) {
        self.start(out);
        self.close(out);
        let output: Vec<Value> = self
            .items
            .iter()
            .map(|i| Self::item_json(i, "completed"))
            .collect();
        let mut r = response(&self.id, self.asked(), self.created, "completed", output);
        let stop = self.stop.unwrap_or(Stop::End);
        finish_response(&mut r, stop, info);
        let name = if r["status"] == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.event(name, json!({"response": r}), out);
    }

    fn error(&mut self, e: &ApiError, out: &mut Vec<u8>) {
        let body = e.body();
        let err = &body["error"];
        self.event(
            "error",
            json!({"code": err["code"], "message": err["message"], "param": err["param"]}),
            out,
        );
    }
}
