//! A generation request as the client sent it: checked, measured for the
//! prompt estimate, and rewritten for each upstream — all on its JSON text.
//!
//! The body is validated once (a full syntax check that builds nothing), its
//! top-level fields are located once, and the upstream body is the client's
//! text with `model`, the completion cap and `stream_options.include_usage`
//! edited in place. No `serde_json::Value` tree is built or printed on the
//! request path; fields the gateway does not know pass through byte for byte.

use super::proxy::Endpoint;
use crate::error::ApiError;
use crate::metering::estimate::{self, tokens_of_chars};
use crate::upstream::json_edit::{self, Checked, Edit, Field};
use bytes::Bytes;
use serde::de::IgnoredAny;
use serde_json::Value;

/// What the request asks for, checked.
pub(super) struct Request {
    /// The body, checked to be UTF-8 once.
    text: String,
    /// Every top-level field: key range and position.
    fields: Vec<((usize, usize), Field)>,
    /// The last occurrence of each key the gateway reads (see [`KNOWN`]).
    known: [Option<Field>; KNOWN.len()],
    pub model: String,
    pub stream: bool,
    pub n: i64,
    /// The cap field the client used, and its value.
    pub client_cap: Option<(&'static str, i64)>,
    /// Estimated prompt tokens (SPEC §6).
    pub prompt_estimate: i64,
    /// A stream whose client asked for the usage chunk.
    pub wants_usage: bool,
}

/// The top-level keys the gateway reads, located once at parse time.
const KNOWN: [&str; 10] = [
    "model",
    "stream",
    "n",
    "max_completion_tokens",
    "max_tokens",
    "messages",
    "prompt",
    "input",
    "tools",
    "stream_options",
];

fn field_error(param: &str, msg: impl Into<String>) -> ApiError {
    ApiError::invalid_field(param, msg)
}

impl Request {
    fn text(&self) -> &str {
        &self.text
    }

    /// The last `key` field (as a JSON parser keeps the last); `key` is one
    /// of [`KNOWN`].
    fn field(&self, key: &str) -> Option<Field> {
        let i = KNOWN.iter().position(|k| *k == key)?;
        self.known[i]
    }

    /// The value text of [`Request::field`].
    fn get(&self, key: &str) -> Option<&str> {
        self.field(key).map(|f| json_edit::value(self.text(), &f))
    }

    fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Field> + 'a {
        let t = self.text();
        self.fields
            .iter()
            .filter(move |((s, e), _)| &t[*s..*e] == key)
            .map(|(_, f)| f)
    }

    pub fn parse(ep: Endpoint, raw: Bytes) -> Result<Request, ApiError> {
        let not_object = || ApiError::bad_request("The request body must be a JSON object.");
        let not_json = |e: serde_json::Error| {
            ApiError::bad_request(format!("The body is not valid JSON: {e}"))
        };
        let text = match String::from_utf8(Vec::from(raw)) {
            Ok(t) => t,
            Err(e) => {
                return Err(match serde_json::from_slice::<IgnoredAny>(e.as_bytes()) {
                    Err(e) => not_json(e),
                    Ok(_) => not_object(),
                })
            }
        };
        let located = match json_edit::check(&text) {
            Checked::Object(fields) => fields,
            Checked::Other => return Err(not_object()),
            // serde_json words the error; or the text is valid but nested
            // deeper than the check goes, and is located the slow way.
            Checked::Invalid => match serde_json::from_str::<IgnoredAny>(&text) {
                Err(e) => return Err(not_json(e)),
                Ok(_) => json_edit::fields(&text).ok_or_else(not_object)?,
            },
        };
        let mut known = [None; KNOWN.len()];
        for (k, f) in &located {
            if let Some(i) = KNOWN.iter().position(|n| n == k) {
                known[i] = Some(*f);
            }
        }
        let fields = located
            .iter()
            .map(|(k, f)| ((f.key_start + 1, f.key_start + 1 + k.len()), *f))
            .collect();
        let mut req = Request {
            text,
            fields,
            known,
            model: String::new(),
            stream: false,
            n: 1,
            client_cap: None,
            prompt_estimate: 0,
            wants_usage: false,
        };
        req.model = match req.get("model") {
            Some(v) => match string_value(v) {
                Some(s) if !s.trim().is_empty() => s,
                _ => return Err(field_error("model", "`model` must be a non-empty string.")),
            },
            None => return Err(field_error("model", "Missing required field `model`.")),
        };
        req.stream = match req.get("stream") {
            None | Some("null") | Some("false") => false,
            Some("true") => ep != Endpoint::Embeddings,
            Some(_) => return Err(field_error("stream", "`stream` must be true or false.")),
        };
        req.n = match req.get("n") {
            None | Some("null") => 1,
            Some(v) => match serde_json::from_str::<i64>(v) {
                Ok(n) if (1..=128).contains(&n) => n,
                _ => return Err(field_error("n", "`n` must be an integer from 1 to 128.")),
            },
        };
        if ep != Endpoint::Embeddings {
            for f in ["max_completion_tokens", "max_tokens"] {
                match req.get(f) {
                    None | Some("null") => {}
                    Some(v) => match serde_json::from_str::<i64>(v) {
                        Ok(c) if c >= 0 => {
                            req.client_cap = Some((f, c));
                            break;
                        }
                        _ => {
                            return Err(field_error(
                                f,
                                format!("`{f}` must be a non-negative integer."),
                            ))
                        }
                    },
                }
            }
        }
        let starts =
            |k: &str, with: &[u8]| req.get(k).is_some_and(|v| with.contains(&v.as_bytes()[0]));
        let (name, ok) = match ep {
            Endpoint::Chat => ("messages", starts("messages", b"[")),
            Endpoint::Completions => ("prompt", starts("prompt", b"\"[")),
            Endpoint::Embeddings => ("input", starts("input", b"\"[")),
        };
        if !ok {
            let what = match ep {
                Endpoint::Chat => "an array of messages",
                _ => "a string or an array",
            };
            return Err(field_error(
                name,
                format!("`{name}` is required and must be {what}."),
            ));
        }
        req.prompt_estimate = match ep {
            Endpoint::Chat => chat_prompt(req.get("messages"), req.get("tools")),
            Endpoint::Completions => 1 + input_tokens(req.get("prompt")),
            Endpoint::Embeddings => input_tokens(req.get("input")),
        };
        req.wants_usage = req.stream
            && req.get("stream_options").is_some_and(|so| {
                json_edit::fields(so).is_some_and(|f| {
                    f.iter()
                        .rev()
                        .find(|(k, _)| *k == "include_usage")
                        .is_some_and(|(_, v)| json_edit::value(so, v) == "true")
                })
            });
        Ok(req)
    }

    /// The body for one upstream: the client's text with `model` set to
    /// `upstream_model`, the completion cap (when the gateway sets one) in the
    /// client's cap field or else in `cap_field`, and, for a stream,
    /// `stream_options.include_usage` true.
    pub fn upstream_body(&self, upstream_model: &str, cap: Option<i64>, cap_field: &str) -> Bytes {
        let t = self.text();
        let mut edits: Vec<Edit> = Vec::with_capacity(4);
        let model_json = json_edit::quoted(upstream_model);
        for f in self.all("model") {
            if json_edit::value(t, f) != model_json {
                edits.push(Edit::replace(f, model_json.as_str()));
            }
        }
        // New top-level fields (`"key":value`, comma-separated), added before the brace.
        let mut added = String::new();
        let mut add = |key: &str, value: &str| {
            if !added.is_empty() {
                added.push(',');
            }
            json_edit::push_quoted(&mut added, key);
            added.push(':');
            added.push_str(value);
        };
        let mut cap_buf = itoa::Buffer::new();
        if let Some(cap) = cap {
            let cap_text = cap_buf.format(cap);
            let field = self.client_cap.map_or(cap_field, |(f, _)| f);
            let mut placed = false;
            for f in self.all(field) {
                edits.push(Edit::replace(f, cap_text));
                placed = true;
            }
            if !placed {
                add(field, cap_text);
            }
        }
        if self.stream {
            const INCLUDE: &str = "\"include_usage\":true";
            match self.field("stream_options") {
                Some(f) => {
                    let v = json_edit::value(t, &f);
                    match json_edit::fields(v) {
                        Some(inner) => {
                            let mut found = false;
                            for (_, g) in inner.iter().filter(|(k, _)| *k == "include_usage") {
                                found = true;
                                edits.push(Edit {
                                    start: f.value_start + g.value_start,
                                    end: f.value_start + g.value_end,
                                    with: "true".into(),
                                });
                            }
                            if !found {
                                edits.extend(Edit::append(v, f.value_start, INCLUDE));
                            }
                        }
                        None => edits.push(Edit::replace(&f, format!("{{{INCLUDE}}}"))),
                    }
                }
                None => add("stream_options", &format!("{{{INCLUDE}}}")),
            }
        }
        if !added.is_empty() {
            edits.extend(Edit::append(t, 0, &added));
        }
        if edits.is_empty() {
            return Bytes::from(self.text.clone());
        }
        Bytes::from(json_edit::edited(t, &mut edits))
    }
}

/// Tokens of a JSON value printed compactly (a rare shape: parsed to be exact).
fn tokens_of_json(raw: &str) -> i64 {
    serde_json::from_str::<Value>(raw)
        .map(|v| estimate::tokens_of_text(&v.to_string()))
        .unwrap_or(0)
}

/// A message `content`: a string, parts (text, or a fixed allowance for an
/// image or other part), or anything else printed. As `estimate::chat_prompt`.
fn content_tokens(raw: &str) -> i64 {
    let b = raw.as_bytes();
    match b.first() {
        Some(b'"') => tokens_of_chars(json_edit::string_chars(raw).unwrap_or(0)),
        Some(b'n') if raw == "null" => 0,
        Some(b'[') => {
            let mut n = 0;
            let _ = json_edit::walk_array(b, 0, |ps| {
                let pe = json_edit::value_end(b, ps)?;
                let part = &raw[ps..pe];
                if part.starts_with('{') {
                    let text = json_edit::fields(part).and_then(|f| {
                        f.iter()
                            .rev()
                            .find(|(k, _)| *k == "text")
                            .map(|(_, f)| json_edit::value(part, f).to_owned())
                    });
                    n += match text.as_deref().and_then(json_edit::string_chars) {
                        Some(c) => tokens_of_chars(c),
                        None => 85,
                    };
                } else {
                    n += content_tokens(part);
                }
                Some(pe)
            });
            n
        }
        _ => tokens_of_json(raw),
    }
}

/// The prompt of a chat completion, as `estimate::chat_prompt` counts it.
fn chat_prompt(messages: Option<&str>, tools: Option<&str>) -> i64 {
    let mut n = 3;
    if let Some(m) = messages {
        let b = m.as_bytes();
        let _ = json_edit::walk_array(b, 0, |ms| {
            n += 4;
            if b[ms] != b'{' {
                return json_edit::value_end(b, ms);
            }
            // The last occurrence of each key counts, as in a parsed object.
            let (mut content, mut calls, mut name) = (None, None, None);
            let me = json_edit::walk_object(b, ms, |key, _, vs| {
                let ve = json_edit::value_end(b, vs)?;
                match key {
                    b"content" => content = Some((vs, ve)),
                    b"tool_calls" => calls = Some((vs, ve)),
                    b"name" => name = Some((vs, ve)),
                    _ => {}
                }
                Some(ve)
            })?;
            if let Some((s, e)) = content {
                n += content_tokens(&m[s..e]);
            }
            if let Some((s, e)) = calls {
                n += tokens_of_json(&m[s..e]);
            }
            if let Some(c) = name.and_then(|(s, e)| json_edit::string_chars(&m[s..e])) {
                n += tokens_of_chars(c);
            }
            Some(me)
        });
    }
    if let Some(t) = tools {
        n += tokens_of_json(t);
    }
    n
}

/// A JSON string value's text: borrowed straight from the body when it has
/// no escapes, decoded otherwise; `None` if `raw` is not a string.
fn string_value(raw: &str) -> Option<String> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') && !inner.bytes().any(|c| c < 0x20) {
        return Some(inner.to_owned());
    }
    serde_json::from_str::<String>(raw).ok()
}

/// A completion `prompt` or an embeddings `input` (rarely large; parsed).
fn input_tokens(raw: Option<&str>) -> i64 {
    raw.and_then(|r| serde_json::from_str::<Value>(r).ok())
        .map(|v| estimate::input_tokens(&v))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(ep: Endpoint, v: &Value) -> Request {
        Request::parse(ep, Bytes::from(v.to_string())).unwrap()
    }

    #[test]
    fn estimates_match_the_tree_walk() {
        let bodies = [
            json!({"model":"m","messages":[{"role":"user","content":"abcdefgh"}]}),
            json!({"model":"m","messages":[
                {"role":"system","content":"You are terse. é😀 \"quoted\"\n"},
                {"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"x"}},"bare", 7]},
                {"role":"assistant","content":null,"tool_calls":[{"id":"t","type":"function","function":{"name":"f","arguments":"{\"a\": 1}"}}]},
                {"role":"tool","name":"f","content":{"odd":true}},
                "not an object",
                {"role":"user","content":12.5}
            ],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]}),
        ];
        for b in bodies {
            let want = estimate::chat_prompt(b.as_object().unwrap());
            assert_eq!(parse(Endpoint::Chat, &b).prompt_estimate, want, "{b}");
        }
        let c = json!({"model":"m","prompt":["abcd","efgh"]});
        assert_eq!(
            parse(Endpoint::Completions, &c).prompt_estimate,
            estimate::completion_prompt(c.as_object().unwrap())
        );
        let e = json!({"model":"m","input":[[1,2],[3]]});
        assert_eq!(parse(Endpoint::Embeddings, &e).prompt_estimate, 3);
    }

    #[test]
    fn upstream_body_edits_only_what_it_must() {
        let raw = r#"{ "model" : "aiml/gpt", "messages":[{"role":"user","content":"model"}], "x":{"model":"keep"} }"#;
        let r = Request::parse(Endpoint::Chat, Bytes::from(raw)).unwrap();
        let out: Value =
            serde_json::from_slice(&r.upstream_body("gpt", Some(50), "max_tokens")).unwrap();
        assert_eq!(
            out,
            json!({"model":"gpt","messages":[{"role":"user","content":"model"}],"x":{"model":"keep"},"max_tokens":50})
        );
        // The client's own cap field gets the cap; stream options are added or completed.
        let r = parse(
            Endpoint::Chat,
            &json!({"model":"m","messages":[],"max_completion_tokens":900,"stream":true,"stream_options":{"other":1}}),
        );
        assert_eq!(r.client_cap, Some(("max_completion_tokens", 900)));
        assert!(!r.wants_usage);
        let out: Value =
            serde_json::from_slice(&r.upstream_body("u", Some(100), "max_tokens")).unwrap();
        assert_eq!(out["max_completion_tokens"], 100);
        assert!(out.get("max_tokens").is_none());
        assert_eq!(
            out["stream_options"],
            json!({"other":1,"include_usage":true})
        );
        for so in [
            json!({}),
            json!(null),
            json!("x"),
            json!({"include_usage": false}),
        ] {
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
        // A model name with escapes is decoded.
        let r = Request::parse(
            Endpoint::Chat,
            Bytes::from(r#"{"model":"a\u0062\/c","messages":[]}"#),
        )
        .unwrap();
        assert_eq!(r.model, "ab/c");
        // Nothing to change: the very bytes the client sent.
        let raw = Bytes::from(r#"{"model":"m","messages":[]}"#);
        let r = Request::parse(Endpoint::Chat, raw.clone()).unwrap();
        assert_eq!(r.upstream_body("m", None, "max_tokens"), raw);
    }

    #[test]
    fn bad_requests_say_which_field() {
        let err = |body: &str| {
            Request::parse(Endpoint::Chat, Bytes::from(body.to_owned()))
                .err()
                .unwrap()
        };
        assert!(err("{").message.contains("not valid JSON"));
        assert!(err("[1]").message.contains("must be a JSON object"));
        assert!(err(r#"{"model":"m","messages":[01]}"#)
            .message
            .contains("not valid JSON: invalid number"));
        let latin1 = Request::parse(Endpoint::Chat, Bytes::from(&b"{\"model\":\"\xe9\"}"[..]));
        assert!(latin1
            .err()
            .unwrap()
            .message
            .contains("must be a JSON object"));
        // Nested deeper than the one-pass check goes: still read.
        let deep = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"hi","x":{}{}}}]}}"#,
            "[".repeat(300),
            "]".repeat(300)
        );
        let r = Request::parse(Endpoint::Chat, Bytes::from(deep)).unwrap();
        assert_eq!(r.model, "m");
        assert!(r.prompt_estimate > 3);
        for (body, param) in [
            (r#"{"messages":[]}"#, "model"),
            (r#"{"model":null,"messages":[]}"#, "model"),
            (r#"{"model":" ","messages":[]}"#, "model"),
            (r#"{"model":"m","messages":[],"stream":1}"#, "stream"),
            (r#"{"model":"m","messages":[],"n":0}"#, "n"),
            (r#"{"model":"m","messages":[],"n":2.0}"#, "n"),
            (
                r#"{"model":"m","messages":[],"max_tokens":-1}"#,
                "max_tokens",
            ),
            (r#"{"model":"m","messages":"hi"}"#, "messages"),
            (r#"{"model":"m"}"#, "messages"),
        ] {
            assert_eq!(err(body).param.as_deref(), Some(param), "{body}");
        }
    }
}
