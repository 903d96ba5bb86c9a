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
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, Visitor};
use serde_json::value::RawValue;
use std::fmt;

/// Visitor methods that accept any other JSON value and read it as `$v`.
macro_rules! lenient {
    ($t:ty, $v:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<$t, E> {
            Ok($v)
        }
        fn visit_i64<E>(self, _: i64) -> Result<$t, E> {
            Ok($v)
        }
        fn visit_u64<E>(self, _: u64) -> Result<$t, E> {
            Ok($v)
        }
        fn visit_f64<E>(self, _: f64) -> Result<$t, E> {
            Ok($v)
        }
        fn visit_str<E>(self, _: &str) -> Result<$t, E> {
            Ok($v)
        }
        fn visit_unit<E>(self) -> Result<$t, E> {
            Ok($v)
        }
    };
}

/// Reads the fields of a map: `f(key, map)` consumes the value of each key
/// it wants and returns `false` for the others, which are skipped.
fn fields<'de, A: de::MapAccess<'de>>(
    mut m: A,
    mut f: impl FnMut(&str, &mut A) -> Result<bool, A::Error>,
) -> Result<(), A::Error> {
    while let Some(crate::json::Str(k)) = m.next_key::<crate::json::Str>()? {
        if !f(&k, &mut m)? {
            m.next_value::<IgnoredAny>()?;
        }
    }
    Ok(())
}

/// Generated characters in a value of one of the shapes below, counted as
/// it is read: anything of another shape counts nothing.
macro_rules! counting {
    ($name:ident, $what:literal, |$m:ident| $body:block) => {
        struct $name(usize);
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($what)
                    }
                    lenient!($name, $name(0));
                    fn visit_seq<A: de::SeqAccess<'de>>(self, s: A) -> Result<$name, A::Error> {
                        json::skip_seq(s).map(|()| $name(0))
                    }
                    fn visit_map<A: de::MapAccess<'de>>(self, $m: A) -> Result<$name, A::Error> {
                        $body
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

// A tool call: the characters of `function.arguments`.
counting!(ToolCallChars, "a tool call", |m| {
    let mut n = 0;
    fields(m, |k, m| {
        Ok(k == "function" && {
            n += m.next_value::<FunctionChars>()?.0;
            true
        })
    })?;
    Ok(ToolCallChars(n))
});

counting!(FunctionChars, "a function call", |m| {
    let mut n = 0;
    fields(m, |k, m| {
        Ok(k == "arguments" && {
            n += m.next_value::<json::Chars>()?.0;
            true
        })
    })?;
    Ok(FunctionChars(n))
});

/// Tool calls: the sum of their arguments' characters.
struct ToolCallsChars(usize);

impl<'de> Deserialize<'de> for ToolCallsChars {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ToolCallsChars;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("tool calls")
            }
            lenient!(ToolCallsChars, ToolCallsChars(0));
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<ToolCallsChars, A::Error> {
                let mut n = 0;
                while let Some(c) = s.next_element::<ToolCallChars>()? {
                    n += c.0;
                }
                Ok(ToolCallsChars(n))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, m: A) -> Result<ToolCallsChars, A::Error> {
                json::skip_map(m).map(|()| ToolCallsChars(0))
            }
        }
        d.deserialize_any(V)
    }
}

// A choice's `message` (whole answer) or `delta` (stream chunk): its text,
// reasoning and tool-call arguments.
counting!(TurnChars, "a message", |m| {
    let mut n = 0;
    fields(m, |k, m| {
        Ok(match k {
            "content" | "reasoning" => {
                n += m.next_value::<json::Chars>()?.0;
                true
            }
            "tool_calls" => {
                n += m.next_value::<ToolCallsChars>()?.0;
                true
            }
            _ => false,
        })
    })?;
    Ok(TurnChars(n))
});

/// Whether a value is other than `null` (read without keeping it).
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Present;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Present, E> {
                Ok(Present(true))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Present, E> {
                Ok(Present(true))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Present, E> {
                Ok(Present(true))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Present, E> {
                Ok(Present(true))
            }
            fn visit_str<E>(self, _: &str) -> Result<Present, E> {
                Ok(Present(true))
            }
            fn visit_unit<E>(self) -> Result<Present, E> {
                Ok(Present(false))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, s: A) -> Result<Present, A::Error> {
                json::skip_seq(s).map(|()| Present(true))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, m: A) -> Result<Present, A::Error> {
                json::skip_map(m).map(|()| Present(true))
            }
        }
        d.deserialize_any(V)
    }
}

/// What `choices` says: generated characters (text, reasoning, tool-call
/// arguments), whether a choice finished, and how many choices there are.
/// Read in one pass; a choice of another shape counts no text.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChoicesRead {
    pub chars: usize,
    pub finished: bool,
    pub count: usize,
}

/// One choice, read for [`ChoicesRead`].
struct ChoiceRead {
    chars: usize,
    finished: bool,
}

impl<'de> Deserialize<'de> for ChoiceRead {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ChoiceRead;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a choice")
            }
            lenient!(
                ChoiceRead,
                ChoiceRead {
                    chars: 0,
                    finished: false
                }
            );
            fn visit_seq<A: de::SeqAccess<'de>>(self, s: A) -> Result<ChoiceRead, A::Error> {
                json::skip_seq(s).map(|()| ChoiceRead {
                    chars: 0,
                    finished: false,
                })
            }
            fn visit_map<A: de::MapAccess<'de>>(self, m: A) -> Result<ChoiceRead, A::Error> {
                let mut c = ChoiceRead {
                    chars: 0,
                    finished: false,
                };
                fields(m, |k, m| {
                    Ok(match k {
                        "message" | "delta" => {
                            c.chars += m.next_value::<TurnChars>()?.0;
                            true
                        }
                        // Legacy completions.
                        "text" => {
                            c.chars += m.next_value::<json::Chars>()?.0;
                            true
                        }
                        "finish_reason" => {
                            c.finished |= m.next_value::<Present>()?.0;
                            true
                        }
                        _ => false,
                    })
                })?;
                Ok(c)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for ChoicesRead {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ChoicesRead;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("choices")
            }
            lenient!(ChoicesRead, ChoicesRead::default());
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<ChoicesRead, A::Error> {
                let mut out = ChoicesRead::default();
                while let Some(c) = s.next_element::<ChoiceRead>()? {
                    out.count += 1;
                    out.chars += c.chars;
                    out.finished |= c.finished;
                }
                Ok(out)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, m: A) -> Result<ChoicesRead, A::Error> {
                json::skip_map(m).map(|()| ChoicesRead::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// The top-level fields of an answer the gateway reads or edits: kept as
/// raw values, with where their keys are.
const KEPT: [&str; 4] = ["model", "usage", "_usage_info", "error"];

/// Kept too when asked for (a stream's first chunk): what a usage chunk the
/// gateway writes itself repeats.
const IDS: [&str; 3] = ["id", "created", "object"];

/// What [`Answer::parse`] reads besides the fields it always keeps.
#[derive(Clone, Copy, Debug, Default)]
pub struct Wanted {
    /// `id`, `created` and `object`.
    pub ids: bool,
    /// `choices`, counted as it is read (else kept as a raw value, to be
    /// counted only when asked, with [`Answer::choices`]).
    pub choices: bool,
}

/// A kept field: its decoded key, where the key's opening quote is in the
/// text (`None` when the key was written with escapes), and its raw value.
struct Kept<'a> {
    key: &'static str,
    key_at: Option<usize>,
    value: &'a RawValue,
}

/// An answer object (or a stream chunk) as read in one pass: the fields the
/// gateway reads or edits, and what `choices` says. Where a key appears
/// twice, the last counts, as in JSON parsers.
pub struct Answer<'a> {
    text: &'a str,
    wanted: Wanted,
    kept: Vec<Kept<'a>>,
    /// Every key's opening quote, in order (`None` for an escaped key).
    keys_at: Vec<Option<usize>>,
    choices: Option<ChoicesRead>,
    choices_raw: Option<&'a RawValue>,
}

/// The top-level object, read into an [`Answer`].
struct Reader<'r, 'a>(&'r mut Answer<'a>);

impl<'de> de::DeserializeSeed<'de> for Reader<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Reader<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let a = self.0;
        while let Some(json::Str(key)) = m.next_key::<json::Str>()? {
            // A borrowed key is the text itself, just after its opening quote.
            let key_at = match &key {
                std::borrow::Cow::Borrowed(k) => {
                    json::range_in(a.text, k).map(|r| r.start.saturating_sub(1))
                }
                std::borrow::Cow::Owned(_) => None,
            };
            a.keys_at.push(key_at);
            let name = KEPT
                .iter()
                .chain(a.wanted.ids.then_some(&IDS).into_iter().flatten());
            if let Some(name) = name.copied().find(|n| *n == key) {
                a.kept.push(Kept {
                    key: name,
                    key_at,
                    value: m.next_value()?,
                });
            } else if key == "choices" {
                if a.wanted.choices {
                    a.choices = Some(m.next_value()?);
                } else {
                    a.choices_raw = Some(m.next_value()?);
                }
            } else {
                m.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

impl<'a> Answer<'a> {
    /// Reads `text` as a JSON object; `None` if it is not one.
    pub fn parse(text: &'a str, wanted: Wanted) -> Option<Answer<'a>> {
        let mut a = Answer {
            text,
            wanted,
            kept: Vec::with_capacity(4),
            keys_at: Vec::with_capacity(8),
            choices: None,
            choices_raw: None,
        };
        let mut de = serde_json::Deserializer::from_str(text);
        de::DeserializeSeed::deserialize(Reader(&mut a), &mut de).ok()?;
        de.end().ok()?;
        Some(a)
    }

    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.kept
            .iter()
            .rev()
            .find(|k| k.key == key)
            .map(|k| k.value)
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

    /// What `choices` says, when the answer has it.
    pub fn choices(&self) -> Option<ChoicesRead> {
        self.choices.or_else(|| {
            self.choices_raw
                .map(|raw| serde_json::from_str(raw.get()).unwrap_or_default())
        })
    }

    /// The raw text of a kept field (`id`, `created`, `object` when asked for).
    pub fn raw(&self, key: &str) -> Option<&'a str> {
        self.get(key).map(RawValue::get)
    }

    /// Writes the answer for the client into `out`: `model` as the client
    /// named it (`model_json`, a JSON string), `usage` left out unless
    /// `keep_usage` (and then only its last occurrence kept), an upstream's
    /// `_usage_info` left out, and `usage_info` added as the last field when
    /// given. The upstream's text is copied
    /// with those edits made where serde_json found the fields.
    pub fn write(
        &self,
        out: &mut Vec<u8>,
        model_json: &str,
        keep_usage: bool,
        usage_info: Option<&UsageInfo>,
    ) {
        let t = self.text;
        // `usage` given twice: only the last (the one charged) is passed on.
        let last_usage = self.get("usage").map(|u| u.get().as_ptr());
        let removed = |k: &Kept| {
            k.key == "_usage_info"
                || (k.key == "usage" && (!keep_usage || Some(k.value.get().as_ptr()) != last_usage))
        };
        let info_field = usage_info.and_then(|info| {
            let mut field = b"\"_usage_info\":".to_vec();
            serde_json::to_writer(&mut field, info).ok()?;
            String::from_utf8(field).ok()
        });
        let mut edit = json::Splice::new(t);
        let gone = self.kept.iter().filter(|k| removed(k)).count();
        if gone > 0 && gone == self.keys_at.len() {
            // Every field goes: what is left is `_usage_info`, if anything.
            edit.replace(self.inside(), info_field.unwrap_or_default());
        } else {
            for k in &self.kept {
                let Some(at) = json::range_in(t, k.value.get()) else {
                    return self.write_again(out, model_json, keep_usage, usage_info);
                };
                if k.key == "model" {
                    edit.replace(at, model_json);
                } else if removed(k) {
                    match self.removal(k, at.end, &removed) {
                        Some(r) => edit.replace(r, ""),
                        None => return self.write_again(out, model_json, keep_usage, usage_info),
                    }
                }
            }
            if let Some(field) = info_field {
                edit.append(field);
            }
        }
        out.reserve(t.len() + 256);
        edit.write(out);
    }

    /// The text between the object's braces.
    fn inside(&self) -> std::ops::Range<usize> {
        let t = self.text;
        let open = t.len() - t.trim_start().len();
        let close = t.trim_end().len().saturating_sub(1);
        open + 1..close.max(open + 1)
    }

    /// The range that removing the kept field `k` (its value ends at `end`)
    /// takes out: the field and one comma beside it, as serde_json laid them
    /// out. Fields removed before it that lead the object go with it up to
    /// the next field kept. `None` when a key's place is unknown (written
    /// with escapes).
    fn removal(
        &self,
        k: &Kept,
        end: usize,
        removed: &impl Fn(&Kept) -> bool,
    ) -> Option<std::ops::Range<usize>> {
        let t = self.text.as_bytes();
        let start = k.key_at?;
        let before = t[..start].trim_ascii_end();
        if before.last() == Some(&b',') {
            return Some(before.len() - 1..end);
        }
        // The first field: it goes with the comma after it, and so do the
        // removed fields that follow it, up to the first field kept.
        let i = self.keys_at.iter().position(|a| *a == Some(start))?;
        if i != 0 {
            return None;
        }
        let kept_after = self.keys_at.iter().skip(1).find(|at| {
            !self
                .kept
                .iter()
                .any(|k| k.key_at == **at && at.is_some() && removed(k))
        });
        match kept_after {
            Some(Some(next)) => Some(start..*next),
            // A field is kept whose place is unknown; or none is (handled
            // by the caller).
            _ => None,
        }
    }

    /// The general way, for answers whose keys are written with escapes:
    /// every field written again from its decoded key.
    fn write_again(
        &self,
        out: &mut Vec<u8>,
        model_json: &str,
        keep_usage: bool,
        usage_info: Option<&UsageInfo>,
    ) {
        let Ok(mut fields) = Fields::parse(self.text) else {
            return;
        };
        fields.dedup_last();
        let mut w = json::Writer::new(out);
        for (k, v) in &fields.0 {
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

    const ALL: Wanted = Wanted {
        ids: true,
        choices: true,
    };

    fn choices(v: Value) -> ChoicesRead {
        serde_json::from_str(&v.to_string()).unwrap()
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
        assert_eq!(choices(json!({"a": 1})), ChoicesRead::default());
        // Escapes are decoded before counting.
        let c: ChoicesRead =
            serde_json::from_str(r#"[{"delta":{"content":"\u00e9\ud83d\ude00"}}]"#).unwrap();
        assert_eq!(c.chars, 2);
    }

    fn info() -> UsageInfo {
        UsageInfo {
            tokens_used: 9,
            prompt_tokens: 4,
            completion_tokens: 5,
            cost_usd: 500_000,
            remaining_tokens: 1,
            remaining_usd: None,
            provider: "p".into(),
            request_id: "r".into(),
            estimated: false,
        }
    }

    /// Writes `text` as the client would get it; checks it is JSON.
    fn written(text: &str, keep_usage: bool, with_info: bool) -> String {
        let a = Answer::parse(text, ALL).unwrap();
        let mut out = Vec::new();
        let info = info();
        a.write(&mut out, "\"mine\"", keep_usage, with_info.then_some(&info));
        let out = String::from_utf8(out).unwrap();
        serde_json::from_str::<Value>(&out).unwrap_or_else(|e| panic!("{text} -> {out}: {e}"));
        out
    }

    #[test]
    fn answers_are_edited_where_serde_json_found_the_fields() {
        // The text is the upstream's, with model, usage and _usage_info edited.
        let text = r#"{"id":"c1", "model" : "up","choices":[],"usage":{"prompt_tokens":4}}"#;
        assert_eq!(
            written(text, false, false),
            r#"{"id":"c1", "model" : "mine","choices":[]}"#
        );
        assert_eq!(
            written(text, true, true),
            r#"{"id":"c1", "model" : "mine","choices":[],"usage":{"prompt_tokens":4},"_usage_info":{"tokens_used":9,"prompt_tokens":4,"completion_tokens":5,"cost_usd":0.5,"remaining_tokens":1,"provider":"p","request_id":"r","estimated":false}}"#
        );
        // Removed first, in the middle, last, several, all.
        for (text, want) in [
            (r#"{"usage":null,"a":1}"#, r#"{"a":1}"#),
            (r#"{ "usage" : null , "a":1 }"#, r#"{ "a":1 }"#),
            (r#"{"a":1,"usage":null,"b":2}"#, r#"{"a":1,"b":2}"#),
            (r#"{"a":1,"usage":null}"#, r#"{"a":1}"#),
            (r#"{"usage":null,"_usage_info":{},"a":1}"#, r#"{"a":1}"#),
            (
                r#"{"a":1,"usage":1,"_usage_info":2,"usage":3}"#,
                r#"{"a":1}"#,
            ),
            (r#"{"usage":null,"_usage_info":{}}"#, r#"{}"#),
        ] {
            assert_eq!(written(text, false, false), want, "{text}");
        }
        assert_eq!(
            written(r#"{"usage":null,"_usage_info":{}}"#, false, true),
            r#"{"_usage_info":{"tokens_used":9,"prompt_tokens":4,"completion_tokens":5,"cost_usd":0.5,"remaining_tokens":1,"provider":"p","request_id":"r","estimated":false}}"#
        );
    }

    #[test]
    fn the_last_of_a_duplicate_counts_and_escaped_keys_are_written_again() {
        let text = r#"{"id":"c1","m\u006fdel":"up","usage":{"total_tokens":1},"usage":{"prompt_tokens":4,"completion_tokens":5},"_us\u0061ge_info":{"forged":true},"choices":[]}"#;
        let a = Answer::parse(text, ALL).unwrap();
        let u = a.usage().unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (4, 5));
        assert!(!a.has_error());
        let v: Value = serde_json::from_str(&written(text, false, false)).unwrap();
        assert_eq!(v, json!({"id":"c1","model":"mine","choices":[]}));
        let v: Value = serde_json::from_str(&written(text, true, true)).unwrap();
        assert_eq!(v["usage"], json!({"prompt_tokens":4,"completion_tokens":5}));
        assert_eq!(v["_usage_info"]["tokens_used"], 9);
        assert!(Answer::parse(r#"{"error":null}"#, ALL).is_some_and(|a| !a.has_error()));
        assert!(Answer::parse(r#"{"error":{"message":"x"}}"#, ALL).is_some_and(|a| a.has_error()));
        for bad in ["[1]", "", "{", "<html>", r#"{"a":1}x"#] {
            assert!(Answer::parse(bad, ALL).is_none(), "{bad}");
        }
    }
}
