//! API dialects and the one seam between them.
//!
//! A client speaks one dialect (OpenAI chat completions, Anthropic Messages,
//! OpenAI Responses); a provider speaks one `api` (`openai`: chat
//! completions, or `anthropic`: Messages). When they match, the request and
//! the answer pass through as bytes with only the model and the caps edited
//! (`service::request`, `service::answer`). When they do not, the request is
//! read into a [`Conversation`], the neutral form every dialect maps to and
//! from, and written out in the provider's dialect; the answer comes back as a
//! [`Reply`] (whole) or as [`Delta`]s (a stream, event by event) and is written
//! in the client's dialect.
//!
//! Each dialect is one module with up to two sides:
//! - **ingress** (what a client speaks): `parse` a body into a
//!   [`Conversation`], write a [`Reply`] as a whole answer, and an encoder
//!   that writes [`Delta`]s as that dialect's stream events;
//! - **egress** (what a provider speaks): write a [`Conversation`] as a
//!   request body, read a whole answer into a [`Reply`], and a decoder that
//!   reads each stream event into [`Delta`]s.
//!
//! `openai_chat` and `anthropic` have both sides, `responses` only ingress.
//! Adding a dialect is a module with the sides it needs and an arm in the
//! dispatch functions below; the proxy, metering and stream pump do not
//! change. See `docs/architecture.md`.

pub mod anthropic;
pub mod openai_chat;
pub mod responses;

use crate::config::ProviderApi;
use crate::error::ApiError;
use crate::metering::call::{Usage, UsageInfo};
use crate::service::proxy::Endpoint;
use serde_json::value::RawValue;
use serde_json::Value;

/// A conversation as every dialect can express it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conversation {
    /// System instructions, in order.
    pub system: Vec<String>,
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub stop: Vec<String>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// An end-user id for the provider's abuse tracking.
    pub user: Option<String>,
    /// Responses: the request's settings that its answer repeats.
    pub echo: Option<std::sync::Arc<serde_json::Map<String, Value>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    /// An image by URL: `https://…` or `data:<media type>;base64,<data>`.
    Image(String),
    /// A call of a tool by the assistant; `arguments` is JSON text.
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
    /// The result of a tool call, sent back by the client.
    ToolResult {
        id: String,
        content: String,
        is_error: bool,
    },
}

/// A function tool the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of its arguments.
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    Auto,
    None,
    /// Some tool must be called.
    Required,
    /// This tool must be called.
    Named(String),
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    End,
    Length,
    ToolUse,
    StopSequence,
    Filtered,
}

/// A whole answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub id: String,
    /// Text and tool calls, in order.
    pub parts: Vec<Part>,
    pub stop: Stop,
    pub usage: Option<Usage>,
}

/// One step of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    /// The provider's id for the answer (first event).
    Id(String),
    Text(String),
    /// A tool call begins; its arguments follow as [`Delta::ToolArgs`].
    ToolStart {
        id: String,
        name: String,
    },
    ToolArgs(String),
    Stop(Stop),
    /// Usage so far (cumulative; the last one counts).
    Usage(Usage),
}

/// Reads a provider's stream, event by event.
pub trait Decode: Send {
    /// One `data:` event: its deltas appended to `out`. `Err` when the
    /// provider reports an error in the stream (its JSON body).
    fn event(&mut self, data: &str, out: &mut Vec<Delta>) -> Result<(), Value>;
}

/// Writes a client's stream.
pub trait Encode: Send {
    /// The bytes (whole SSE events) for one delta.
    fn delta(&mut self, d: &Delta, out: &mut Vec<u8>);
    /// The closing events, once the call is settled; `usage` is what was
    /// charged.
    fn finish(&mut self, usage: &UsageInfo, out: &mut Vec<u8>);
    /// An error inside the stream, as this dialect writes it.
    fn error(&mut self, e: &ApiError, out: &mut Vec<u8>);
}

/// The dialect a provider's `api` speaks natively.
pub fn native(api: ProviderApi) -> Endpoint {
    match api {
        ProviderApi::OpenAI => Endpoint::Chat,
        ProviderApi::Anthropic => Endpoint::Messages,
    }
}

/// How a call of `ep` reaches a provider of `api`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// As bytes, with the model and caps edited.
    Pass,
    /// Read into a [`Conversation`] and written in the provider's dialect.
    Translate,
    /// The provider cannot serve this endpoint.
    No,
}

pub fn way(ep: Endpoint, api: ProviderApi) -> Way {
    match (ep, api) {
        (Endpoint::Chat | Endpoint::Completions | Endpoint::Embeddings, ProviderApi::OpenAI) => {
            Way::Pass
        }
        (Endpoint::Messages, ProviderApi::Anthropic) => Way::Pass,
        (Endpoint::Messages | Endpoint::Responses, ProviderApi::OpenAI)
        | (Endpoint::Chat | Endpoint::Responses, ProviderApi::Anthropic) => Way::Translate,
        (Endpoint::Completions | Endpoint::Embeddings, ProviderApi::Anthropic) => Way::No,
    }
}

/// Ingress: reads a client's body (already checked by `service::request`).
pub fn parse(ep: Endpoint, body: &str) -> Result<Conversation, ApiError> {
    match ep {
        Endpoint::Chat => openai_chat::parse(body),
        Endpoint::Messages => anthropic::parse(body),
        Endpoint::Responses => responses::parse(body),
        Endpoint::Completions | Endpoint::Embeddings => Err(ApiError::bad_request(
            "This endpoint is served by OpenAI-compatible providers only.",
        )),
    }
}

/// What an egress writes: the provider's path and the body.
pub struct Outgoing {
    pub path: &'static str,
    pub body: Vec<u8>,
}

/// Egress: the request for a provider of `api`.
pub fn encode(
    api: ProviderApi,
    c: &Conversation,
    model: &str,
    cap: Option<i64>,
    cap_field: &str,
    stream: bool,
) -> Outgoing {
    match api {
        ProviderApi::OpenAI => Outgoing {
            path: "/chat/completions",
            body: openai_chat::encode(c, model, cap, cap_field, stream),
        },
        ProviderApi::Anthropic => Outgoing {
            path: "/messages",
            body: anthropic::encode(c, model, cap, stream),
        },
    }
}

/// Egress: a provider's whole answer. `Err(Some(body))` when it reports an
/// error, `Err(None)` when it cannot be read.
pub fn decode_reply(api: ProviderApi, body: &str) -> Result<Reply, Option<Value>> {
    match api {
        ProviderApi::OpenAI => openai_chat::decode_reply(body),
        ProviderApi::Anthropic => anthropic::decode_reply(body),
    }
}

/// Egress: a reader of a provider's stream.
pub fn decoder(api: ProviderApi) -> Box<dyn Decode> {
    match api {
        ProviderApi::OpenAI => Box::<openai_chat::Decoder>::default(),
        ProviderApi::Anthropic => Box::<anthropic::Decoder>::default(),
    }
}

/// What an answer in the client's dialect repeats of the request: the model
/// as the client named it and (Responses) the request's settings.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    pub model: &'a str,
    pub echo: Option<&'a serde_json::Map<String, Value>>,
}

/// Ingress: a whole answer in the client's dialect.
pub fn write_reply(ep: Endpoint, r: &Reply, asked: Asked<'_>, info: &UsageInfo) -> Vec<u8> {
    match ep {
        Endpoint::Messages => anthropic::write_reply(r, asked.model, info),
        Endpoint::Responses => responses::write_reply(r, asked, info),
        _ => openai_chat::write_reply(r, asked.model, info),
    }
}

/// Ingress: a writer of the client's stream. `wants_usage`: a chat client
/// asked for the usage chunk; `input_estimate`: the gateway's count of the
/// prompt, for a dialect that reports input tokens before the provider has.
pub fn encoder(
    ep: Endpoint,
    model: &str,
    wants_usage: bool,
    id: &str,
    input_estimate: i64,
    echo: Option<std::sync::Arc<serde_json::Map<String, Value>>>,
) -> Box<dyn Encode> {
    match ep {
        Endpoint::Messages => Box::new(anthropic::Encoder::new(model, id, input_estimate)),
        Endpoint::Responses => Box::new(responses::Encoder::new(model, id, echo)),
        _ => Box::new(openai_chat::Encoder::new(model, wants_usage, id)),
    }
}

/// An error response in the shape of `ep`'s dialect: Anthropic's for the
/// Messages routes, OpenAI's (ours, SPEC §3) for the others.
pub fn error_response(ep: Endpoint, e: ApiError) -> axum::response::Response {
    use axum::response::IntoResponse;
    match ep {
        Endpoint::Messages => anthropic::error_response(e),
        _ => e.into_response(),
    }
}

/// Seconds since the epoch, for `created` fields.
pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A JSON text as a value, `{}` when it is not valid JSON (tool arguments a
/// model wrote badly).
pub(crate) fn arguments_value(text: &str) -> Value {
    if text.trim().is_empty() {
        return Value::Object(Default::default());
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::Object(Default::default()))
}

/// A string field of `v`, or `""`.
pub(crate) fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Text of a content that is a string or an array of text parts (other
/// parts left out).
pub(crate) fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| match p {
                Value::String(s) => Some(s.as_str()),
                _ => p.get("text").and_then(Value::as_str),
            })
            .collect::<Vec<_>>()
            .join(""),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The text parts of `parts`, joined.
pub(crate) fn text_in(parts: &[Part]) -> String {
    parts
        .iter()
        .filter_map(|p| match p {
            Part::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

/// A function tool as OpenAI writes it: `{"name","description","parameters"}`
/// (inside `function` in chat, flat in Responses).
pub(crate) fn function_tool(f: &Value) -> Tool {
    Tool {
        name: str_of(f, "name").to_owned(),
        description: f
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_owned),
        parameters: f
            .get("parameters")
            .filter(|p| !p.is_null())
            .cloned()
            .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
    }
}

/// OpenAI's `tool_choice` words (`auto`, `none`, `required`).
pub(crate) fn tool_choice_word(s: &str) -> ToolChoice {
    match s {
        "none" => ToolChoice::None,
        "required" => ToolChoice::Required,
        _ => ToolChoice::Auto,
    }
}

/// A field of the wrong type in a translated body.
pub(crate) fn wrong(param: &str, what: &str) -> ApiError {
    ApiError::invalid_field(param, format!("`{param}` must be {what}."))
}

/// Writes `usage` with `_usage_info` as its last field.
pub(crate) fn usage_with_info(
    mut usage: serde_json::Map<String, Value>,
    info: &UsageInfo,
) -> Value {
    usage.insert(
        "_usage_info".into(),
        serde_json::to_value(info).unwrap_or(Value::Null),
    );
    Value::Object(usage)
}

/// The raw `usage` JSON of an answer, for readers that take raw values.
pub(crate) fn raw_usage(v: &Value) -> Option<Box<RawValue>> {
    v.get("usage")
        .filter(|u| u.is_object())
        .and_then(|u| serde_json::value::to_raw_value(u).ok())
}

/// Writes one SSE event (`event:` line when named).
pub(crate) fn sse(out: &mut Vec<u8>, name: Option<&str>, data: &Value) {
    if let Some(n) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(n.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    let _ = serde_json::to_writer(&mut *out, data);
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests;
