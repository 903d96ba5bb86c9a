//! What the gateway reads of an upstream's OpenAI-shaped answer (a whole
//! answer or one stream chunk), through serde_json, and how it writes one
//! back to the client.
//!
//! The object is read into decoded keys and raw values ([`Fields`]), the last
//! of a duplicated key kept as JSON parsers keep it; `choices` is read into
//! typed structs that count the generated text without copying it. The
//! client gets the same fields written from the decoded keys, with `model` as
//! the client named it, `usage` removed when the client did not ask for it,
//! and the gateway's own `_usage_info` (an upstream's field of that name is
//! never passed on).

use crate::json::{self, Fields};
use crate::metering::call::{Usage, UsageInfo};
use serde::de::{self, Deserializer, IgnoredAny, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::fmt;

/// A JSON value read for the characters of its text: a string's decoded
/// characters, 0 for anything else. The string is never copied.
struct Chars(usize);

impl<'de> Deserialize<'de> for Chars {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Chars;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, s: &str) -> Result<Chars, E> {
                Ok(Chars(s.chars().count()))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Chars, E> {
                Ok(Chars(0))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Chars, E> {
                Ok(Chars(0))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Chars, E> {
                Ok(Chars(0))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Chars, E> {
                Ok(Chars(0))
            }
            fn visit_unit<E>(self) -> Result<Chars, E> {
                Ok(Chars(0))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<Chars, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Chars(0))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut m: A) -> Result<Chars, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Chars(0))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct Function {
    #[serde(default)]
    arguments: Option<Chars>,
}

#[derive(Deserialize)]
struct ToolCall {
    #[serde(default)]
    function: Option<Function>,
}

/// A choice's `message` (whole answer) or `delta` (stream chunk).
#[derive(Deserialize)]
struct Turn {
    #[serde(default)]
    content: Option<Chars>,
    #[serde(default)]
    reasoning: Option<Chars>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default)]
    message: Option<Turn>,
    #[serde(default)]
    delta: Option<Turn>,
    /// Legacy completions.
    #[serde(default)]
    text: Option<Chars>,
    #[serde(borrow, default)]
    finish_reason: Option<&'a RawValue>,
}

impl Turn {
    fn chars(&self) -> usize {
        let calls = self.tool_calls.iter().flatten();
        let args: usize = calls
            .filter_map(|c| c.function.as_ref()?.arguments.as_ref())
            .map(|a| a.0)
            .sum();
        self.content.as_ref().map_or(0, |c| c.0) + self.reasoning.as_ref().map_or(0, |c| c.0) + args
    }
}

/// What `choices` says: generated characters (text, reasoning, tool-call
/// arguments), whether a choice finished, and how many choices there are.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ChoicesRead {
    pub chars: usize,
    pub finished: bool,
    pub count: usize,
}

/// Reads `choices` (its JSON text). A choice of another shape counts no text.
pub fn read_choices(raw: &RawValue) -> ChoicesRead {
    let mut out = ChoicesRead::default();
    let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(raw.get()) else {
        return out;
    };
    out.count = items.len();
    for item in items {
        let Ok(c) = serde_json::from_str::<Choice>(item.get()) else {
            continue;
        };
        out.chars += c.message.as_ref().map_or(0, Turn::chars);
        out.chars += c.delta.as_ref().map_or(0, Turn::chars);
        out.chars += c.text.map_or(0, |t| t.0);
        out.finished |= c.finish_reason.is_some();
    }
    out
}

/// An answer object as read: the last of each duplicated key kept.
pub struct Answer<'a> {
    pub fields: Fields<'a>,
}

impl<'a> Answer<'a> {
    /// Reads `text` as a JSON object; `None` if it is not one.
    pub fn parse(text: &'a str) -> Option<Answer<'a>> {
        let mut fields = Fields::parse(text).ok()?;
        fields.dedup_last();
        Some(Answer { fields })
    }

    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.fields.get(key)
    }

    /// An `error` other than `null`: the answer reports a failure.
    pub fn has_error(&self) -> bool {
        self.get("error").is_some_and(|e| e.get() != "null")
    }

    /// The usage it reports, if any.
    pub fn usage(&self) -> Option<Usage> {
        self.get("usage")
            .filter(|u| u.get() != "null")
            .and_then(Usage::from_raw)
    }

    pub fn choices(&self) -> Option<ChoicesRead> {
        self.get("choices").map(read_choices)
    }

    /// The raw text of a top-level field (for `id`, `created`, `object`).
    pub fn raw(&self, key: &str) -> Option<&'a str> {
        self.get(key).map(RawValue::get)
    }

    /// Writes the answer for the client into `out`: `model` as the client
    /// named it (`model_json`, a JSON string), `usage` left out unless
    /// `keep_usage`, and `usage_info` as the last field when given.
    pub fn write(
        &self,
        out: &mut Vec<u8>,
        model_json: &str,
        keep_usage: bool,
        usage_info: Option<&UsageInfo>,
    ) {
        let mut w = json::Writer::new(out);
        for (k, v) in &self.fields.0 {
            match k.as_ref() {
                "model" => w.raw("model", model_json),
                "usage" if !keep_usage => {}
                "_usage_info" => {}
                k => w.raw(k, v.get()),
            }
        }
        if let Some(info) = usage_info {
            w.value("_usage_info", info);
        }
        w.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn choices(v: Value) -> ChoicesRead {
        let raw = serde_json::to_string(&v).unwrap();
        read_choices(&serde_json::from_str::<Box<RawValue>>(&raw).unwrap())
    }

    #[test]
    fn choices_count_text_reasoning_and_tool_arguments() {
        let c = choices(json!([
            {"index":0,"delta":{"role":"assistant","content":"Hé \"x\" é😀"},"finish_reason":null},
            {"delta":{"reasoning":"hm","tool_calls":[{"index":0,"function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"},
            {"text":"abc","finish_reason":null},
            {"message":{"content":"whole"}},
            {"delta":null},
            7
        ]));
        assert_eq!(c.chars, 9 + 2 + 7 + 3 + 5);
        assert!(c.finished);
        assert_eq!(c.count, 6);
        assert_eq!(choices(json!([])), ChoicesRead::default());
        // Escapes are decoded before counting.
        let raw = r#"[{"delta":{"content":"\u00e9\ud83d\ude00"}}]"#;
        let c = read_choices(&serde_json::from_str::<Box<RawValue>>(raw).unwrap());
        assert_eq!(c.chars, 2);
    }

    #[test]
    fn answers_are_written_from_decoded_keys_with_the_last_of_a_duplicate() {
        let text = r#"{"id":"c1","m\u006fdel":"up","usage":{"total_tokens":1},"usage":{"prompt_tokens":4,"completion_tokens":5},"_usage_info":{"forged":true},"choices":[]}"#;
        let a = Answer::parse(text).unwrap();
        let u = a.usage().unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (4, 5));
        assert!(!a.has_error());
        let mut out = Vec::new();
        a.write(&mut out, "\"mine\"", false, None);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, json!({"id":"c1","model":"mine","choices":[]}));
        out.clear();
        let info = UsageInfo {
            tokens_used: 9,
            prompt_tokens: 4,
            completion_tokens: 5,
            cost_usd: 0.5,
            remaining_tokens: 1,
            provider: "p".into(),
            request_id: "r".into(),
            estimated: false,
        };
        a.write(&mut out, "\"mine\"", true, Some(&info));
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["usage"], json!({"prompt_tokens":4,"completion_tokens":5}));
        assert_eq!(v["_usage_info"]["tokens_used"], 9);
        assert!(Answer::parse(r#"{"error":null}"#).is_some_and(|a| !a.has_error()));
        assert!(Answer::parse(r#"{"error":{"message":"x"}}"#).is_some_and(|a| a.has_error()));
        for bad in ["[1]", "", "{", "<html>"] {
            assert!(Answer::parse(bad).is_none(), "{bad}");
        }
    }
}
