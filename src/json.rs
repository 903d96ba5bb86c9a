//! JSON objects as the gateway reads and writes them, through serde_json.
//!
//! Requests and answers are read with [`Fields`]: one pass of serde_json over
//! the text gives the top-level fields in order, each key decoded (escapes
//! and all, exactly as any JSON parser reads it) and each value kept as its
//! raw text ([`RawValue`]), syntax-checked but not built into a tree. The
//! gateway acts only on decoded keys, and writes bodies back with [`Writer`]
//! from those decoded keys, so that what it checked is what the next parser
//! reads. No code here scans JSON by hand.

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// Nesting deeper than this is refused (SPEC §9).
pub const MAX_DEPTH: usize = 128;

/// A JSON string, borrowed from the text when it has no escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Str<'a>(pub Cow<'a, str>);

impl<'a> Str<'a> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The top-level fields of a JSON object, in order: decoded keys, raw values.
/// Duplicated keys are all kept; callers decide (a request with one is
/// refused, an answer keeps the last, as JSON parsers do).
#[derive(Debug, Default)]
pub struct Fields<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
                while let Some(Str(key)) = map.next_key::<Str<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    out.push((key, value));
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> Fields<'a> {
    /// Reads `text` as one JSON object. The error is serde_json's; a value
    /// that is valid JSON but not an object reads "expected a JSON object".
    pub fn parse(text: &'a str) -> Result<Fields<'a>, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The last field named `key` (the one a JSON parser keeps).
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// The first key that appears more than once, if any.
    pub fn duplicate(&self) -> Option<&str> {
        let keys: Vec<&str> = self.0.iter().map(|(k, _)| k.as_ref()).collect();
        duplicate(&keys).map(|k| {
            let at = keys.iter().position(|j| *j == k).unwrap_or(0);
            self.0[at].0.as_ref()
        })
    }

    /// Keeps only the last of each duplicated key, in its place: what a JSON
    /// parser would have read.
    pub fn dedup_last(&mut self) {
        if self.duplicate().is_none() {
            return;
        }
        let mut seen = hashbrown::HashSet::with_capacity(self.0.len());
        let mut kept: Vec<_> = self
            .0
            .drain(..)
            .rev()
            .filter(|(k, _)| seen.insert(k.clone()))
            .collect();
        kept.reverse();
        self.0 = kept;
    }
}

/// The first of `keys` that appears more than once, if any.
pub fn duplicate<K: AsRef<str>>(keys: &[K]) -> Option<&str> {
    if keys.len() <= 16 {
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|j| j.as_ref() == k.as_ref()) {
                return Some(k.as_ref());
            }
        }
        return None;
    }
    let mut seen = hashbrown::HashSet::with_capacity(keys.len());
    keys.iter().map(AsRef::as_ref).find(|k| !seen.insert(*k))
}

/// The field of `fields` (lower-case ASCII names) that `key` spells with
/// other letter cases, as a case-insensitive decoder (Go's `encoding/json`)
/// would match it: `"Model"`, `"MODEL"`, or Unicode folds such as `"ſtream"`
/// (long s) for `stream`. An exact match is not a variant.
pub fn case_variant_of<'f>(key: &str, fields: &[&'f str]) -> Option<&'f str> {
    // Lower-case ASCII folds to itself: only an exact match could be equal.
    if key.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        return None;
    }
    let folded: String = key
        .chars()
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        .collect();
    fields.iter().copied().find(|f| folded == *f && key != *f)
}

/// Whether `key` is a letter-case variant of `field` (see [`case_variant_of`]).
pub fn case_variant(key: &str, field: &str) -> bool {
    case_variant_of(key, &[field]).is_some()
}

/// A JSON value read for the characters of its text: a string's decoded
/// characters, 0 for anything else. The string is never copied.
pub struct Chars(pub usize);

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
            fn visit_seq<A: de::SeqAccess<'de>>(self, s: A) -> Result<Chars, A::Error> {
                skip_seq(s).map(|()| Chars(0))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Chars, A::Error> {
                skip_map(m).map(|()| Chars(0))
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads and drops the rest of a sequence.
pub fn skip_seq<'de, A: de::SeqAccess<'de>>(mut s: A) -> Result<(), A::Error> {
    while s.next_element::<de::IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Reads and drops the rest of a map.
pub fn skip_map<'de, A: MapAccess<'de>>(mut m: A) -> Result<(), A::Error> {
    while m.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Refuses JSON nested deeper than [`MAX_DEPTH`]. A text with no more
/// opening brackets than that cannot be deeper, and is passed at the cost of
/// a byte count; otherwise serde_json walks it, counting levels as it goes.
pub fn check_depth(text: &str) -> Result<(), serde_json::Error> {
    let opens = memchr::memchr2_iter(b'[', b'{', text.as_bytes()).count();
    if opens <= MAX_DEPTH {
        return Ok(());
    }
    let mut de = serde_json::Deserializer::from_str(text);
    // serde_json's own limit stops at 127 levels; this walk stops at 128.
    de.disable_recursion_limit();
    Depth { left: MAX_DEPTH }.deserialize(&mut de)?;
    de.end()
}

/// Walks any JSON value through serde's data model, refusing it past `left`
/// more levels of nesting. Recursion is bounded by that count.
#[derive(Clone, Copy)]
struct Depth {
    left: usize,
}

impl Depth {
    fn enter<E: de::Error>(self) -> Result<Depth, E> {
        match self.left.checked_sub(1) {
            Some(left) => Ok(Depth { left }),
            None => Err(E::custom(format!("nested deeper than {MAX_DEPTH} levels"))),
        }
    }
}

impl<'de> de::DeserializeSeed<'de> for Depth {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Depth {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
        let inner = self.enter()?;
        while s.next_element_seed(inner)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let inner = self.enter()?;
        while m.next_key::<de::IgnoredAny>()?.is_some() {
            m.next_value_seed(inner)?;
        }
        Ok(())
    }
}

/// Writes a JSON object field by field into a buffer: keys quoted by
/// serde_json, values as raw JSON text.
pub struct Writer<'b> {
    out: &'b mut Vec<u8>,
    first: bool,
}

impl<'b> Writer<'b> {
    /// Starts an object at the end of `out`.
    pub fn new(out: &'b mut Vec<u8>) -> Writer<'b> {
        out.push(b'{');
        Writer { out, first: true }
    }

    /// Adds `"key":` followed by `raw` (JSON text).
    pub fn raw(&mut self, key: &str, raw: &str) {
        self.key(key).extend_from_slice(raw.as_bytes());
    }

    /// Adds `"key":` and returns the buffer for the value to be written into.
    pub fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        push_quoted(self.out, key);
        self.out.push(b':');
        self.out
    }

    /// Adds `"key":` and `value` serialized by serde_json.
    pub fn value<T: serde::Serialize + ?Sized>(&mut self, key: &str, value: &T) {
        let out = self.key(key);
        let mark = out.len();
        if serde_json::to_writer(&mut *out, value).is_err() {
            out.truncate(mark);
            out.extend_from_slice(b"null");
        }
    }

    /// Closes the object.
    pub fn finish(self) {
        self.out.push(b'}');
    }
}

/// A JSON text rewritten at the places serde_json located: the raw values
/// of fields it read ([`RawValue`]s borrowed from the text) are replaced, and
/// fields can be added before the top-level object's closing brace. All else
/// is copied as it came.
pub struct Splice<'t> {
    text: &'t str,
    edits: Vec<(std::ops::Range<usize>, Cow<'t, str>)>,
}

impl<'t> Splice<'t> {
    pub fn new(text: &'t str) -> Splice<'t> {
        Splice {
            text,
            edits: Vec::with_capacity(4),
        }
    }

    /// Replaces the text at `at` (a value's range) with `with`.
    pub fn replace(&mut self, at: std::ops::Range<usize>, with: impl Into<Cow<'t, str>>) {
        self.edits.push((at, with.into()));
    }

    /// Adds `fields` (`"key":value` pairs, comma-separated) as the last
    /// fields of the top-level object, which already has fields.
    pub fn append(&mut self, fields: String) {
        // serde_json read the text as one object: it ends with its brace,
        // whitespace after it aside.
        let close = self.text.trim_end().len().saturating_sub(1);
        self.edits
            .push((close..close, Cow::Owned(format!(",{fields}"))));
    }

    /// The text with its edits, appended to `out`.
    pub fn write(mut self, out: &mut Vec<u8>) {
        self.edits.sort_by_key(|(r, _)| (r.start, r.end));
        let t = self.text.as_bytes();
        let mut at = 0;
        for (r, with) in &self.edits {
            if r.start < at {
                continue; // overlapping: cannot come from distinct values
            }
            out.extend_from_slice(&t[at..r.start]);
            out.extend_from_slice(with.as_bytes());
            at = r.end;
        }
        out.extend_from_slice(&t[at..]);
    }
}

/// Where `inner`, a slice of `outer` (a raw value serde_json borrowed from
/// it), lies in `outer`; `None` if it is not part of it.
pub fn range_in(outer: &str, inner: &str) -> Option<std::ops::Range<usize>> {
    let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    (start + inner.len() <= outer.len()).then(|| start..start + inner.len())
}

/// `s` as a JSON string, appended to `out` (serde_json's escaping). Text
/// with nothing to escape, as names and keys almost always are, is copied
/// between quotes.
pub fn push_quoted(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Serializing a `str` into a Vec cannot fail.
        let _ = serde_json::to_writer(out, s);
    }
}

/// `s` as a JSON string.
pub fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn keys_are_decoded_and_values_kept_as_written() {
        let text = r#" { "m\u006fdel" : "a" , "x":[1, {"y" : 2}],"model":"b","n":1e5 } "#;
        let f = Fields::parse(text).unwrap();
        let keys: Vec<&str> = f.0.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, ["model", "x", "model", "n"]);
        assert_eq!(f.get("model").unwrap().get(), "\"b\"");
        assert_eq!(f.get("x").unwrap().get(), r#"[1, {"y" : 2}]"#);
        assert_eq!(f.get("n").unwrap().get(), "1e5");
        assert_eq!(f.duplicate(), Some("model"));
        let mut f = f;
        f.dedup_last();
        let kept: Vec<(&str, &str)> = f.0.iter().map(|(k, v)| (k.as_ref(), v.get())).collect();
        assert_eq!(
            kept,
            [("x", r#"[1, {"y" : 2}]"#), ("model", "\"b\""), ("n", "1e5")]
        );
        for bad in [
            "[1]",
            "\"s\"",
            "{",
            "{\"a\":}",
            "{\"a\":1}x",
            "{\"a\":01}",
            "",
        ] {
            assert!(Fields::parse(bad).is_err(), "{bad}");
        }
        // Many keys: the duplicate check does not go quadratic.
        let many: String = (0..5000).map(|i| format!("\"k{i}\":0,")).collect();
        let text = format!("{{{many}\"k4999\":1}}");
        assert_eq!(Fields::parse(&text).unwrap().duplicate(), Some("k4999"));
    }

    #[test]
    fn case_variants_of_a_field() {
        for k in ["Model", "MODEL", "mOdel", "\u{17f}tream", "n\u{212a}"] {
            let field = if k.contains('\u{17f}') {
                "stream"
            } else if k.starts_with('n') {
                "nk"
            } else {
                "model"
            };
            assert!(case_variant(k, field), "{k}");
        }
        for k in ["model", "models", "mode", "x_model", "Mode"] {
            assert!(!case_variant(k, "model"), "{k}");
        }
    }

    #[test]
    fn depth_is_bounded_without_recursion_on_our_side() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(check_depth(&deep(MAX_DEPTH)).is_ok());
        assert!(check_depth(&deep(MAX_DEPTH + 1)).is_err());
        assert!(check_depth(&deep(100_000)).is_err());
        // Exactly 128 levels with many brackets besides: serde_json's walk
        // agrees with the cheap bound.
        let wide_and_deep = |d: usize| format!("[{}{}]", deep(d - 1), ",[]".repeat(200));
        assert!(check_depth(&wide_and_deep(MAX_DEPTH)).is_ok());
        assert!(check_depth(&wide_and_deep(MAX_DEPTH + 1)).is_err());
        let wide = format!("[{}]", vec!["{}"; 10_000].join(","));
        assert!(check_depth(&wide).is_ok());
        // Brackets inside strings count toward the cheap bound only.
        let quoted = format!("{{\"a\":\"{}\"}}", "[".repeat(500));
        assert!(check_depth(&quoted).is_ok());
    }

    #[test]
    fn writer_quotes_keys_like_serde_json() {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out);
        w.raw("a\"b", "[1, 2]");
        w.value("é\n", &json!({"x": null}));
        w.raw("model", "\"m\"");
        w.finish();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, r#"{"a\"b":[1, 2],"é\n":{"x":null},"model":"m"}"#);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["a\"b"], json!([1, 2]));
        assert_eq!(quoted("x\u{1}"), "\"x\\u0001\"");
        for k in [
            "",
            "plain",
            "a\"b",
            "back\\slash",
            "tab\t",
            "é😀",
            "\u{7f}",
            "\u{1f}",
        ] {
            let mut out = Vec::new();
            push_quoted(&mut out, k);
            assert_eq!(out, serde_json::to_vec(k).unwrap(), "{k:?}");
        }
        let mut out = b"data: ".to_vec();
        Writer::new(&mut out).finish();
        assert_eq!(out, b"data: {}");
    }
}
