//! A generation request as the client sent it: read once by serde_json,
//! checked, measured for the prompt estimate, and rewritten for each upstream.
//!
//! One reading of the body (SPEC §9): serde_json reads the top-level object
//! in one pass, decoding every key. The fields the gateway acts on are kept
//! as raw values (where serde_json found them), the prompt field is counted
//! as it is read ([`super::prompt`]), and the rest is only checked. A key
//! that appears twice, or a letter-case variant of a field the gateway reads,
//! is refused with 400, as is one of those fields whose key is written with
//! escapes (`"m\u006fdel"`): every parser must read the same key, however
//! it treats escapes. The upstream body is the client's text with the
//! checked values written over those raw values — `model`, the completion cap
//! in every length field and, for a stream, `stream_options.include_usage` —
//! and any field the gateway adds before the closing brace.

use super::prompt::{tokens_of_raw, Prompt, PromptSeed};
use super::proxy::Endpoint;
use crate::error::ApiError;
use crate::json::{self, Fields, Str};
use bytes::Bytes;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

/// The top-level fields the gateway reads. A body with a letter-case variant
/// of one of them (`"Model"`) is refused: a case-insensitive upstream would
/// read it where the gateway did not.
const READ: [&str; 19] = [
    "model",
    "stream",
    "stream_options",
    "n",
    "best_of",
    "models",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "max_new_tokens",
    "n_predict",
    "num_predict",
    "options",
    "messages",
    "prompt",
    "input",
    "tools",
    "system",
    "instructions",
];

/// The completion-length fields: the cap is written into each one present,
/// at the top level and in `options` (Ollama's native form).
const LENGTH_FIELDS: [&str; 6] = [
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "max_new_tokens",
    "n_predict",
    "num_predict",
];

/// The largest `n` (and `best_of`) accepted.
const MAX_N: i64 = 128;

fn field_error(param: &str, msg: impl Into<String>) -> ApiError {
    ApiError::invalid_field(param, msg)
}

/// What the request asks for, checked.
pub(super) struct Request {
    ep: Endpoint,
    /// The body, checked to be UTF-8.
    text: String,
    /// Where the values the gateway writes over are in `text`.
    model_at: Range<usize>,
    lengths_at: Vec<Range<usize>>,
    /// `max_tokens` or `max_completion_tokens` is among them.
    standard_cap: bool,
    /// `options`, when it holds a length field.
    options_at: Option<Range<usize>>,
    stream_options_at: Option<Range<usize>>,
    pub model: String,
    pub stream: bool,
    /// Completions the call generates: the larger of `n` and `best_of`.
    pub n: i64,
    /// The smallest completion cap the client set in any length field.
    pub client_cap: Option<i64>,
    /// Estimated prompt tokens (SPEC §6).
    pub prompt_estimate: i64,
    /// A stream whose client asked for the usage chunk.
    pub wants_usage: bool,
    /// Other models the upstream may run instead (OpenRouter's `models`),
    /// as the client wrote them.
    pub models: Vec<String>,
}

/// The body as serde_json read it in one pass.
struct Read<'a> {
    ep: Endpoint,
    /// Every key, decoded, in order.
    keys: Vec<Cow<'a, str>>,
    /// The raw values of the fields the gateway acts on (the last of each).
    values: Vec<(&'static str, &'a RawValue)>,
    prompt: Option<Prompt>,
    /// The first field the gateway reads whose key came with escapes.
    escaped: Option<String>,
}

impl<'a> Read<'a> {
    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.values
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }
}

/// The top-level object, read into [`Read`].
struct Body<'r, 'a>(&'r mut Read<'a>);

impl<'de> DeserializeSeed<'de> for Body<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Body<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let r = self.0;
        let prompt_field = prompt_field(r.ep);
        while let Some(Str(key)) = m.next_key::<Str>()? {
            if matches!(key, Cow::Owned(_)) && READ.contains(&key.as_ref()) {
                // Written with escapes: decoded here, but not by every parser.
                r.escaped.get_or_insert_with(|| key.clone().into_owned());
            }
            if key == prompt_field {
                r.prompt = Some(m.next_value_seed(PromptSeed(r.ep))?);
            } else if let Some(name) = READ.iter().find(|f| **f == key) {
                r.values.push((name, m.next_value::<&RawValue>()?));
            } else {
                m.next_value::<IgnoredAny>()?;
            }
            r.keys.push(key);
        }
        Ok(())
    }
}

/// The field holding the prompt of `ep`'s requests.
fn prompt_field(ep: Endpoint) -> &'static str {
    match ep {
        Endpoint::Chat | Endpoint::Messages => "messages",
        Endpoint::Completions => "prompt",
        Endpoint::Embeddings | Endpoint::Responses => "input",
    }
}

/// Refuses an object whose keys (decoded) hold one twice, or a letter-case
/// variant of one of `read`; `path` prefixes the key named in `param`.
fn one_reading<K: AsRef<str>>(keys: &[K], read: &[&str], path: &str) -> Result<(), ApiError> {
    if let Some(k) = json::duplicate(keys) {
        return Err(field_error(
            &format!("{path}{k}"),
            format!("The key {path}{k:?} appears more than once (after escapes are decoded); send it once."),
        ));
    }
    for k in keys {
        let k = k.as_ref();
        if let Some(f) = json::case_variant_of(k, read) {
            return Err(field_error(
                &format!("{path}{k}"),
                format!(
                    "The key {path}{k:?} differs from {path}{f:?} only in letter case; use {f:?}."
                ),
            ));
        }
    }
    Ok(())
}

/// An integer field, `null` read as absent.
fn integer(raw: &RawValue, param: &str, what: &str) -> Result<Option<i64>, ApiError> {
    if raw.get() == "null" {
        return Ok(None);
    }
    serde_json::from_str::<i64>(raw.get())
        .map(Some)
        .map_err(|_| field_error(param, format!("`{param}` must be {what}.")))
}

/// A completion-length field: `Some(cap)` for a cap, `None` for `null` or,
/// in llama.cpp's and Ollama's `n_predict`/`num_predict`, a negative
/// ("no limit") value.
fn length_cap(name: &str, raw: &RawValue, param: &str) -> Result<Option<i64>, ApiError> {
    let vendor = name == "n_predict" || name == "num_predict";
    let what = if vendor {
        "an integer"
    } else {
        "a non-negative integer"
    };
    match integer(raw, param, what)? {
        Some(c) if c >= 0 => Ok(Some(c)),
        Some(_) if vendor => Ok(None),
        Some(_) => Err(field_error(param, format!("`{param}` must be {what}."))),
        None => Ok(None),
    }
}

fn min_cap(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Request {
    pub fn parse(ep: Endpoint, raw: Bytes) -> Result<Request, ApiError> {
        Self::read(ep, raw, true)
    }

    /// A Messages body read for `count_tokens`, where `max_tokens` may be absent.
    pub fn parse_for_count(raw: Bytes) -> Result<Request, ApiError> {
        Self::read(Endpoint::Messages, raw, false)
    }

    fn read(ep: Endpoint, raw: Bytes, is_call: bool) -> Result<Request, ApiError> {
        let not_json = |e: serde_json::Error| {
            ApiError::bad_request(format!("The body is not valid JSON: {e}"))
        };
        let text = String::from_utf8(Vec::from(raw))
            .map_err(|_| ApiError::bad_request("The body is not valid JSON: it is not UTF-8."))?;
        json::check_depth(&text).map_err(|_| {
            ApiError::bad_request(format!(
                "The body is nested deeper than {} levels.",
                json::MAX_DEPTH
            ))
        })?;
        let mut r = Read {
            ep,
            keys: Vec::with_capacity(8),
            values: Vec::with_capacity(8),
            prompt: None,
            escaped: None,
        };
        let mut de = serde_json::Deserializer::from_str(&text);
        Body(&mut r)
            .deserialize(&mut de)
            .and_then(|()| de.end())
            .map_err(|e| {
                if e.is_data() {
                    ApiError::bad_request("The request body must be a JSON object.")
                } else {
                    not_json(e)
                }
            })?;
        one_reading(&r.keys, &READ, "")?;
        if let Some(k) = &r.escaped {
            return Err(field_error(
                k,
                format!("Write the key {k:?} without escape sequences: the gateway reads it, and so must every upstream, whatever its parser."),
            ));
        }
        let at = |v: &RawValue| json::range_in(&text, v.get()).unwrap_or(0..0);

        let model_raw = r
            .get("model")
            .ok_or_else(|| field_error("model", "Missing required field `model`."))?;
        let model = match serde_json::from_str::<Str>(model_raw.get()) {
            Ok(Str(s)) if !s.trim().is_empty() => s.into_owned(),
            _ => return Err(field_error("model", "`model` must be a non-empty string.")),
        };
        let stream = match r.get("stream").map(RawValue::get) {
            None | Some("null") | Some("false") => false,
            Some("true") => ep != Endpoint::Embeddings,
            Some(_) => return Err(field_error("stream", "`stream` must be true or false.")),
        };
        let mut n = 1;
        for name in ["n", "best_of"] {
            if let Some(v) = r.get(name) {
                let what = format!("an integer from 1 to {MAX_N}");
                match integer(v, name, &what)? {
                    Some(x) if (1..=MAX_N).contains(&x) => n = n.max(x),
                    None => {}
                    Some(_) => return Err(field_error(name, format!("`{name}` must be {what}."))),
                }
            }
        }

        // The completion cap: every length field, at the top level and in `options`.
        let mut client_cap = None;
        let mut lengths_at = Vec::new();
        let mut standard_cap = false;
        let mut options_at = None;
        if ep != Endpoint::Embeddings {
            for name in LENGTH_FIELDS {
                if let Some(v) = r.get(name) {
                    client_cap = min_cap(client_cap, length_cap(name, v, name)?);
                    lengths_at.push(at(v));
                    standard_cap |= name == "max_tokens" || name == "max_completion_tokens";
                }
            }
            if let Some(o) = r.get("options").filter(|o| o.get().starts_with('{')) {
                let inner = Fields::parse(o.get()).map_err(not_json)?;
                let keys: Vec<&str> = inner.0.iter().map(|(k, _)| k.as_ref()).collect();
                one_reading(&keys, &LENGTH_FIELDS, "options.")?;
                for name in LENGTH_FIELDS {
                    if let Some(v) = inner.get(name) {
                        let param = format!("options.{name}");
                        client_cap = min_cap(client_cap, length_cap(name, v, &param)?);
                        options_at = Some(at(o));
                    }
                }
            }
        }

        let mut wants_usage = false;
        let mut stream_options_at = None;
        let has_stream_options = matches!(ep, Endpoint::Chat | Endpoint::Completions);
        if let Some(so) = r
            .get("stream_options")
            .filter(|_| stream && has_stream_options)
        {
            match so.get().as_bytes()[0] {
                b'{' => {
                    let inner = Fields::parse(so.get()).map_err(not_json)?;
                    let keys: Vec<&str> = inner.0.iter().map(|(k, _)| k.as_ref()).collect();
                    one_reading(&keys, &["include_usage"], "stream_options.")?;
                    wants_usage = inner.get("include_usage").map(RawValue::get) == Some("true");
                }
                _ if so.get() == "null" => {}
                _ => {
                    return Err(field_error(
                        "stream_options",
                        "`stream_options` must be an object.",
                    ))
                }
            }
            stream_options_at = Some(at(so));
        }

        let models = match r.get("models") {
            None => vec![],
            Some(v) if v.get() == "null" => vec![],
            Some(v) => match serde_json::from_str::<Vec<Str>>(v.get()) {
                Ok(list) if list.iter().all(|s| !s.as_str().trim().is_empty()) => {
                    list.into_iter().map(|s| s.0.into_owned()).collect()
                }
                _ => {
                    return Err(field_error(
                        "models",
                        "`models` must be an array of model names.",
                    ))
                }
            },
        };

        let name = prompt_field(ep);
        let what = match ep {
            Endpoint::Chat | Endpoint::Messages => "an array of messages",
            Endpoint::Completions | Endpoint::Embeddings => "a string or an array",
            Endpoint::Responses => "a string or an array of items",
        };
        if is_call
            && ep == Endpoint::Messages
            && r.get("max_tokens").is_none_or(|v| v.get() == "null")
        {
            return Err(field_error(
                "max_tokens",
                "Missing required field `max_tokens` (the Messages API requires it).",
            ));
        }
        let mut prompt_estimate = match r.prompt {
            Some(Prompt::Tokens(t)) => t,
            _ => {
                return Err(field_error(
                    name,
                    format!("`{name}` is required and must be {what}."),
                ))
            }
        };
        if matches!(
            ep,
            Endpoint::Chat | Endpoint::Messages | Endpoint::Responses
        ) {
            prompt_estimate += r.get("tools").map_or(0, tokens_of_raw);
            prompt_estimate += r.get("system").map_or(0, tokens_of_raw);
            prompt_estimate += r.get("instructions").map_or(0, tokens_of_raw);
        }

        let model_at = at(model_raw);
        drop(r);
        Ok(Request {
            ep,
            text,
            model_at,
            lengths_at,
            standard_cap,
            options_at,
            stream_options_at,
            model,
            stream,
            n,
            client_cap,
            prompt_estimate,
            wants_usage,
            models,
        })
    }

    /// The body as the client sent it (UTF-8, checked).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The body for one upstream: the client's text with `model` set to
    /// `upstream_model`, the completion cap (when the gateway sets one) in
    /// every length field present — and in `cap_field` when neither
    /// `max_tokens` nor `max_completion_tokens` is — and, for a stream,
    /// `stream_options.include_usage` true.
    pub fn upstream_body(&self, upstream_model: &str, cap: Option<i64>, cap_field: &str) -> Bytes {
        let t = self.text.as_str();
        let mut edit = json::Splice::new(t);
        edit.replace(self.model_at.clone(), json::quoted(upstream_model));
        let mut added = Vec::new();
        if let Some(cap) = cap {
            let cap = itoa::Buffer::new().format(cap).to_owned();
            for r in &self.lengths_at {
                edit.replace(r.clone(), cap.clone());
            }
            if let Some(r) = &self.options_at {
                edit.replace(r.clone(), capped_options(&t[r.clone()], &cap));
            }
            if !self.standard_cap {
                let mut f = json::quoted(cap_field);
                f.push(':');
                f.push_str(&cap);
                added.push(f);
            }
        }
        if self.stream && matches!(self.ep, Endpoint::Chat | Endpoint::Completions) {
            match &self.stream_options_at {
                Some(r) => edit.replace(r.clone(), include_usage(&t[r.clone()])),
                None => added.push("\"stream_options\":{\"include_usage\":true}".to_owned()),
            }
        }
        if !added.is_empty() {
            edit.append(added.join(","));
        }
        let mut out = Vec::with_capacity(t.len() + 64);
        edit.write(&mut out);
        Bytes::from(out)
    }
}

/// An `options` object (`raw`) with every length field set to `cap`.
fn capped_options(raw: &str, cap: &str) -> String {
    let mut out = Vec::with_capacity(raw.len() + 8);
    let mut w = json::Writer::new(&mut out);
    if let Ok(fields) = Fields::parse(raw) {
        for (k, v) in &fields.0 {
            if LENGTH_FIELDS.contains(&k.as_ref()) {
                w.raw(k, cap);
            } else {
                w.raw(k, v.get());
            }
        }
    }
    w.finish();
    String::from_utf8(out).unwrap_or_default()
}

/// A stream's `stream_options` (`raw`) with `include_usage` true and its
/// other fields kept (`null` becomes just that flag).
fn include_usage(raw: &str) -> String {
    let mut out = Vec::with_capacity(raw.len() + 24);
    let mut w = json::Writer::new(&mut out);
    if let Ok(fields) = Fields::parse(raw) {
        for (k, v) in &fields.0 {
            if k != "include_usage" {
                w.raw(k, v.get());
            }
        }
    }
    w.raw("include_usage", "true");
    w.finish();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse(ep: Endpoint, v: &Value) -> Request {
        Request::parse(ep, Bytes::from(v.to_string())).unwrap()
    }

    fn err(body: &str) -> ApiError {
        Request::parse(Endpoint::Chat, Bytes::from(body.to_owned()))
            .err()
            .unwrap()
    }

    #[test]
    fn estimates() {
        let r = parse(
            Endpoint::Chat,
            &json!({"model":"m","messages":[{"role":"user","content":"abcdefgh"}]}),
        );
        assert_eq!(r.prompt_estimate, 3 + 4 + 2);
        // Escapes are decoded before counting: "é😀" is two characters.
        let r = Request::parse(
            Endpoint::Chat,
            Bytes::from(
                r#"{"model":"m","messages":[{"content":"\u00e9\ud83d\ude00","name":"ab"}]}"#,
            ),
        )
        .unwrap();
        assert_eq!(r.prompt_estimate, 3 + 4 + 1 + 1);
        let parts = json!({"model":"m","messages":[
            {"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"x"}},"bare", 7]},
            "not an object",
            {"role":"assistant","content":null,"tool_calls":[{"id":"t"}]}
        ],"tools":[{"type":"function"}]});
        let want = 3 + (4 + 1 + 85 + 1 + 1) + (4 + 4) + (4 + 3) + 6;
        assert_eq!(parse(Endpoint::Chat, &parts).prompt_estimate, want);
        let c = json!({"model":"m","prompt":["abcd","efgh"]});
        assert_eq!(parse(Endpoint::Completions, &c).prompt_estimate, 1 + 2);
        let e = json!({"model":"m","input":[[1,2],[3]]});
        assert_eq!(parse(Endpoint::Embeddings, &e).prompt_estimate, 3);
        let e = json!({"model":"m","input":[1,2,3]});
        assert_eq!(parse(Endpoint::Embeddings, &e).prompt_estimate, 3);
    }

    #[test]
    fn upstream_body_keeps_values_and_sets_what_was_checked() {
        let raw = r#"{ "model" : "aiml/gpt", "messages":[{"role":"user","content":"model"}], "x":{"model":"keep",  "n": 1.50} }"#;
        let r = Request::parse(Endpoint::Chat, Bytes::from(raw)).unwrap();
        let out = r.upstream_body("gpt", Some(50), "max_tokens");
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{ "model" : "gpt", "messages":[{"role":"user","content":"model"}], "x":{"model":"keep",  "n": 1.50} ,"max_tokens":50}"#
        );
        // The client's own cap field gets the cap; stream options are added or completed.
        let r = parse(
            Endpoint::Chat,
            &json!({"model":"m","messages":[],"max_completion_tokens":900,"stream":true,"stream_options":{"other":1}}),
        );
        assert_eq!(r.client_cap, Some(900));
        assert!(!r.wants_usage);
        let out: Value =
            serde_json::from_slice(&r.upstream_body("u", Some(100), "max_tokens")).unwrap();
        assert_eq!(out["max_completion_tokens"], 100);
        assert!(out.get("max_tokens").is_none());
        assert_eq!(
            out["stream_options"],
            json!({"other":1,"include_usage":true})
        );
        for so in [json!({}), json!(null), json!({"include_usage": false})] {
            let r = parse(
                Endpoint::Chat,
                &json!({"model":"m","messages":[],"stream":true,"stream_options":so}),
            );
            let out: Value =
                serde_json::from_slice(&r.upstream_body("m", None, "max_tokens")).unwrap();
            assert_eq!(out["stream_options"], json!({"include_usage":true}), "{so}");
        }
        let r = parse(
            Endpoint::Chat,
            &json!({"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}),
        );
        assert!(r.wants_usage);
        // Escaped values are decoded; the rest is the client's text.
        let raw = r#"{"model":"a\u0062\/c","messages":[],"x\u0078":1}"#;
        let r = Request::parse(Endpoint::Chat, Bytes::from(raw)).unwrap();
        assert_eq!(r.model, "ab/c");
        let out = r.upstream_body("up", None, "max_tokens");
        assert_eq!(&out[..], br#"{"model":"up","messages":[],"x\u0078":1}"#);
    }

    #[test]
    fn every_length_field_gets_the_cap() {
        let r = parse(
            Endpoint::Chat,
            &json!({"model":"m","messages":[],"max_completion_tokens":20,"max_tokens":100000,
                    "num_predict":-1,"options":{"num_predict":500,"temperature":0.5},"max_new_tokens":null}),
        );
        assert_eq!(r.client_cap, Some(20));
        let out: Value =
            serde_json::from_slice(&r.upstream_body("m", Some(20), "max_tokens")).unwrap();
        for f in [
            "max_completion_tokens",
            "max_tokens",
            "num_predict",
            "max_new_tokens",
        ] {
            assert_eq!(out[f], 20, "{f}");
        }
        assert_eq!(out["options"], json!({"num_predict":20,"temperature":0.5}));
        // Only a vendor field: the standard cap field is added too.
        let r = parse(
            Endpoint::Completions,
            &json!({"model":"m","prompt":"x","options":{"num_predict":7}}),
        );
        assert_eq!(r.client_cap, Some(7));
        let out: Value =
            serde_json::from_slice(&r.upstream_body("m", Some(7), "max_completion_tokens"))
                .unwrap();
        assert_eq!(out["options"]["num_predict"], 7);
        assert_eq!(out["max_completion_tokens"], 7);
        // best_of counts like n.
        let r = parse(
            Endpoint::Completions,
            &json!({"model":"m","prompt":"x","n":2,"best_of":5}),
        );
        assert_eq!(r.n, 5);
    }

    #[test]
    fn one_reading_of_every_field() {
        for (body, param) in [
            (r#"{"model":"a","m\u006fdel":"b","messages":[]}"#, "model"),
            (r#"{"model":"a","Model":"b","messages":[]}"#, "Model"),
            (
                r#"{"model":"a","messages":[],"max_tokens":1,"max_t\u006fkens":9}"#,
                "max_tokens",
            ),
            (r#"{"model":"a","messages":[],"n":1,"\u006e":120}"#, "n"),
            (
                r#"{"model":"a","messages":[],"stream":false,"str\u0065am":true}"#,
                "stream",
            ),
            (r#"{"model":"a","messages":[],"STREAM":true}"#, "STREAM"),
            (r#"{"model":"a","messages":[],"x":1,"x":2}"#, "x"),
            (
                r#"{"model":"a","messages":[],"options":{"num_predict":1,"num_predict":2}}"#,
                "options.num_predict",
            ),
            (
                r#"{"model":"a","messages":[],"stream":true,"stream_options":{"include_usage":false,"include_usage":true}}"#,
                "stream_options.include_usage",
            ),
            (
                r#"{"model":"a","messages":[],"Max_Tokens":5}"#,
                "Max_Tokens",
            ),
            (
                r#"{"model":"a","messages":[],"max_to\u212Aens":5}"#,
                "max_to\u{212A}ens",
            ),
        ] {
            let e = err(body);
            assert_eq!(e.status.as_u16(), 400, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
        // A key the gateway reads, written with escapes, is refused alone too.
        for (body, param) in [
            (r#"{"model":"a","messages":[],"\u006e":120}"#, "n"),
            (r#"{"m\u006fdel":"a","messages":[]}"#, "model"),
            (r#"{"model":"a","m\u0065ssages":[]}"#, "messages"),
        ] {
            let e = err(body);
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
            assert!(e.message.contains("escape"), "{}", e.message);
        }
    }

    #[test]
    fn bad_requests_say_which_field() {
        assert!(err("{").message.contains("not valid JSON"));
        assert!(err("[1]").message.contains("must be a JSON object"));
        assert!(err(r#"{"model":"m","messages":[01]}"#)
            .message
            .contains("not valid JSON"));
        let latin1 = Request::parse(Endpoint::Chat, Bytes::from(&b"{\"model\":\"\xe9\"}"[..]));
        assert!(latin1.err().unwrap().message.contains("not UTF-8"));
        // Nested deeper than 128 levels: refused, without recursing.
        let deep = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":{}{}}}]}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(err(&deep).message.contains("nested deeper"));
        let ok = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"hi","x":{}{}}}]}}"#,
            "[".repeat(120),
            "]".repeat(120)
        );
        assert_eq!(
            Request::parse(Endpoint::Chat, Bytes::from(ok))
                .unwrap()
                .model,
            "m"
        );
        for (body, param) in [
            (r#"{"messages":[]}"#, "model"),
            (r#"{"model":null,"messages":[]}"#, "model"),
            (r#"{"model":" ","messages":[]}"#, "model"),
            (r#"{"model":"m","messages":[],"stream":1}"#, "stream"),
            (r#"{"model":"m","messages":[],"n":0}"#, "n"),
            (r#"{"model":"m","messages":[],"n":2.0}"#, "n"),
            (r#"{"model":"m","messages":[],"n":129}"#, "n"),
            (r#"{"model":"m","messages":[],"best_of":1e3}"#, "best_of"),
            (
                r#"{"model":"m","messages":[],"max_tokens":-1}"#,
                "max_tokens",
            ),
            (
                r#"{"model":"m","messages":[],"max_tokens":99999999999999999999}"#,
                "max_tokens",
            ),
            (
                r#"{"model":"m","messages":[],"max_completion_tokens":"5"}"#,
                "max_completion_tokens",
            ),
            (
                r#"{"model":"m","messages":[],"options":{"max_tokens":1.5}}"#,
                "options.max_tokens",
            ),
            (r#"{"model":"m","messages":[],"models":"x"}"#, "models"),
            (r#"{"model":"m","messages":[],"models":[""]}"#, "models"),
            (
                r#"{"model":"m","messages":[],"stream":true,"stream_options":3}"#,
                "stream_options",
            ),
            (r#"{"model":"m","messages":"hi"}"#, "messages"),
            (r#"{"model":"m"}"#, "messages"),
        ] {
            assert_eq!(err(body).param.as_deref(), Some(param), "{body}");
        }
    }

    /// A small deterministic generator of hostile bodies.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            xs[(self.next() % xs.len() as u64) as usize]
        }
        fn value(&mut self, depth: usize) -> String {
            match self.next() % 12 {
                0 => "null".into(),
                1 => "true".into(),
                2 => "false".into(),
                3 => self
                    .pick(&[
                        "0",
                        "1",
                        "-1",
                        "20",
                        "2.0",
                        "1e5",
                        "99999999999999999999",
                        "-0",
                        "128",
                        "129",
                    ])
                    .into(),
                4 => self
                    .pick(&[r#""a""#, r#""b\u0061""#, r#""""#, r#"" ""#, r#""\ud800""#])
                    .into(),
                5 if depth < 150 => {
                    let n = (self.next() % 3) as usize;
                    let inner: Vec<String> = (0..n).map(|_| self.value(depth + 1)).collect();
                    format!("[{}]", inner.join(","))
                }
                6 if depth < 150 => self.object(depth + 1, 3),
                7 => {
                    let d = (self.next() % 140) as usize;
                    format!("{}{}", "[".repeat(d), "]".repeat(d))
                }
                8 => r#"[{"role":"user","content":"hi"}]"#.into(),
                9 => r#"{"include_usage":true,"num_predict":5}"#.into(),
                _ => r#""m""#.into(),
            }
        }
        fn object(&mut self, depth: usize, max: u64) -> String {
            let n = self.next() % (max + 1);
            let fields: Vec<String> = (0..n)
                .map(|_| {
                    let k = self.pick(&[
                        "model",
                        "Model",
                        "m\\u006fdel",
                        "stream",
                        "str\\u0065am",
                        "n",
                        "\\u006e",
                        "best_of",
                        "max_tokens",
                        "max_t\\u006fkens",
                        "MAX_TOKENS",
                        "max_completion_tokens",
                        "num_predict",
                        "options",
                        "stream_options",
                        "messages",
                        "prompt",
                        "models",
                        "x",
                        "\\u0078",
                        "include_usage",
                    ]);
                    format!("\"{k}\":{}", self.value(depth))
                })
                .collect();
            format!("{{{}}}", fields.join(","))
        }
    }

    /// The value of `field` as a decoder reads it: the last key equal to it
    /// (Python's `json.loads`), or with `fold`, the last key equal to it
    /// ignoring letter case (Go's `encoding/json`).
    fn read(v: &Value, field: &str, fold: bool) -> Option<Value> {
        let obj = v.as_object()?;
        // serde_json's map keeps the last of duplicated keys already.
        if !fold {
            return obj.get(field).cloned();
        }
        obj.iter()
            .rfind(|(k, _)| *k == field || json::case_variant(k, field))
            .map(|(_, v)| v.clone())
    }

    fn python_and_go_agree(text: &str) {
        // Python and Go read the checked fields of an accepted body alike.
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return;
        };
        for f in READ {
            assert_eq!(read(&v, f, false), read(&v, f, true), "{f} in {text}");
        }
    }

    #[test]
    fn what_is_forwarded_decodes_to_what_was_checked() {
        let mut g = Gen(0x9E37_79B9_7F4A_7C15);
        let mut accepted = 0;
        for i in 0..40_000 {
            let mut body = g.object(0, 6);
            if i % 3 == 0 {
                // Most cases carry a valid core, so that many are accepted.
                let core = r#""model":"m","messages":[],"prompt":"p""#;
                body = if body == "{}" {
                    format!("{{{core}}}")
                } else {
                    format!("{{{core},{}", &body[1..])
                };
            }
            let ep = if i % 2 == 0 {
                Endpoint::Chat
            } else {
                Endpoint::Completions
            };
            let Ok(r) = Request::parse(ep, Bytes::from(body.clone())) else {
                continue;
            };
            accepted += 1;
            // (serde_json refuses lone surrogates such as "\ud800", which
            // Python reads and the gateway forwards untouched in values it
            // does not read; such bodies are left out of the comparison.)
            let Ok(original) = serde_json::from_str::<Value>(&body) else {
                assert!(body.contains("\\ud800"), "accepted but not JSON: {body}");
                continue;
            };
            python_and_go_agree(&body);
            assert_eq!(
                read(&original, "model", false),
                Some(json!(r.model)),
                "{body}"
            );
            let stream = read(&original, "stream", false) == Some(json!(true));
            assert_eq!(r.stream, stream, "{body}");
            for cap in [None, Some(0), Some(77)] {
                let out = r.upstream_body("up", cap, "max_tokens");
                let text = std::str::from_utf8(&out).unwrap();
                python_and_go_agree(text);
                let fwd: Value = serde_json::from_str(text).expect("forwarded bodies are JSON");
                assert_eq!(fwd["model"], "up", "{body} -> {text}");
                assert_eq!(fwd.get("stream") == Some(&json!(true)), r.stream, "{text}");
                for name in ["n", "best_of"] {
                    if let Some(n) = read(&fwd, name, true).and_then(|v| v.as_i64()) {
                        assert!(n <= r.n, "{name} {n} > {} in {text}", r.n);
                    }
                }
                if let Some(c) = cap {
                    for f in LENGTH_FIELDS {
                        if let Some(v) = fwd.get(f) {
                            assert_eq!(v, &json!(c), "{f} in {text}");
                        }
                        if let Some(v) = fwd["options"].get(f) {
                            assert_eq!(v, &json!(c), "options.{f} in {text}");
                        }
                    }
                    assert!(
                        fwd.get("max_tokens").is_some()
                            || fwd.get("max_completion_tokens").is_some()
                    );
                }
                if r.stream {
                    assert_eq!(fwd["stream_options"]["include_usage"], true, "{text}");
                }
            }
        }
        assert!(accepted > 2_000, "only {accepted} bodies were accepted");
    }
}
