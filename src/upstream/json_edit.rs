//! Edits of one top-level field of a JSON object, in place in its text, so the
//! proxy can rename `model`, drop `usage` or append `_usage_info` without
//! parsing a whole answer into a tree and printing it again. The text must be
//! valid JSON (callers check that first, e.g. with `serde::de::IgnoredAny`).

/// Where a top-level field sits: from its key's opening quote to its value's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub key_start: usize,
    pub value_start: usize,
    pub value_end: usize,
}

pub fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The index just past the string that opens at `i`. Most strings in an API
/// answer are short: a plain loop finds their end faster than a vectorised
/// search's set-up; long ones go to `memchr`.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        if j >= b.len() {
            return None;
        }
        let stop = (j + 24).min(b.len());
        while j < stop && b[j] != b'"' && b[j] != b'\\' {
            j += 1;
        }
        if j == stop {
            j += memchr::memchr2(b'"', b'\\', b.get(j..)?)?;
        }
        if b[j] == b'"' {
            return Some(j + 1);
        }
        j += 2;
    }
}

/// The index just past the value that starts at `i`.
pub fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            Some(j)
        }
    }
}

/// Finds the top-level field `key` of the object `json`.
#[cfg(test)]
pub fn find(json: &str, key: &str) -> Option<Field> {
    let b = json.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(b, i);
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_start = i;
        let key_end = string_end(b, i)?;
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let value_start = skip_ws(b, i + 1);
        let end = value_end(b, value_start)?;
        if &json[key_start + 1..key_end - 1] == key {
            return Some(Field {
                key_start,
                value_start,
                value_end: end,
            });
        }
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i += 1,
            _ => return None,
        }
    }
}

/// Walks the object that opens at `i` in `b`: for each field, `f(key,
/// key_start, value_start)` consumes the value and returns where it ends (a
/// caller not interested in a value returns [`value_end`]). Returns the index
/// just past the closing brace; `None` if the object is not well formed or
/// `f` gave up. Allocates nothing.
pub fn walk_object<'a>(
    b: &'a [u8],
    i: usize,
    f: impl FnMut(&'a [u8], usize, usize) -> Option<usize>,
) -> Option<usize> {
    if b.get(i) != Some(&b'{') {
        return None;
    }
    let i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return Some(i + 1);
    }
    walk_fields(b, i, f)
}

/// [`walk_object`] from the key at `i` onward: for resuming a walk in the
/// middle of an object whose earlier fields are already known.
pub fn walk_fields<'a>(
    b: &'a [u8],
    mut i: usize,
    mut f: impl FnMut(&'a [u8], usize, usize) -> Option<usize>,
) -> Option<usize> {
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_start = i;
        let key_end = string_end(b, i)?;
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let value_start = skip_ws(b, i + 1);
        let end = f(&b[key_start + 1..key_end - 1], key_start, value_start)?;
        if end <= value_start {
            return None;
        }
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return Some(i + 1),
            _ => return None,
        }
    }
}

/// Walks the array that opens at `i` in `b`: `f(value_start)` consumes each
/// element and returns where it ends. Returns the index just past the closing
/// bracket; `None` if the array is not well formed or `f` gave up.
pub fn walk_array(b: &[u8], i: usize, mut f: impl FnMut(usize) -> Option<usize>) -> Option<usize> {
    if b.get(i) != Some(&b'[') {
        return None;
    }
    let mut i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b']') {
        return Some(i + 1);
    }
    loop {
        let end = f(i)?;
        if end <= i {
            return None;
        }
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b']') => return Some(i + 1),
            _ => return None,
        }
    }
}

/// Every top-level field of the object `json`, in order, walking it to its
/// closing brace (only whitespace may follow). A structural check — strings
/// closed, brackets balanced, fields separated — rather than a full parse.
pub fn fields(json: &str) -> Option<Vec<(&str, Field)>> {
    let b = json.as_bytes();
    let mut out = Vec::with_capacity(8);
    let end = walk_object(b, skip_ws(b, 0), |key, key_start, value_start| {
        let end = value_end(b, value_start)?;
        out.push((
            std::str::from_utf8(key).ok()?,
            Field {
                key_start,
                value_start,
                value_end: end,
            },
        ));
        Some(end)
    })?;
    (skip_ws(b, end) == b.len()).then_some(out)
}

/// What [`check`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked<'a> {
    /// A JSON object, with its top-level fields in order.
    Object(Vec<(&'a str, Field)>),
    /// Valid JSON that is not an object.
    Other,
    Invalid,
}

/// Nesting deeper than this is reported [`Checked::Invalid`], so the check
/// never recurses deeper (see [`check`]).
const MAX_DEPTH: u32 = 128;

/// A strict check that `text` is exactly one JSON value (RFC 8259, read as
/// serde_json reads it, whitespace around it allowed), locating the
/// top-level fields on the way when the value is an object: one pass, no
/// tree. It accepts what `serde_json::from_str::<IgnoredAny>` accepts (tested
/// against it), except nesting deeper than 128 levels, which serde_json's
/// ignoring walk allows: callers ask serde_json when the text is refused,
/// for a detailed message or for that rare case.
pub fn check(text: &str) -> Checked<'_> {
    let b = text.as_bytes();
    let mut v = Check {
        b,
        i: skip_ws(b, 0),
        depth: 0,
    };
    let checked = if b.get(v.i) == Some(&b'{') {
        let mut top = Vec::with_capacity(8);
        v.object(Some(&mut top)).map(|()| {
            Checked::Object(
                top.into_iter()
                    .map(|(key_end, f): (usize, Field)| (&text[f.key_start + 1..key_end - 1], f))
                    .collect(),
            )
        })
    } else {
        v.value().map(|()| Checked::Other)
    };
    match checked {
        Some(c) if skip_ws(b, v.i) == b.len() => c,
        _ => Checked::Invalid,
    }
}

struct Check<'a> {
    b: &'a [u8],
    i: usize,
    depth: u32,
}

impl Check<'_> {
    fn value(&mut self) -> Option<()> {
        match *self.b.get(self.i)? {
            b'{' => self.object(None),
            b'[' => self.array(),
            b'"' => self.string(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }

    fn digits(&mut self) -> Option<()> {
        let start = self.i;
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        (self.i > start).then_some(())
    }

    fn number(&mut self) -> Option<()> {
        if self.b[self.i] == b'-' {
            self.i += 1;
        }
        match *self.b.get(self.i)? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits()?,
            _ => return None,
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            self.digits()?;
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.digits()?;
        }
        Some(())
    }

    /// A string opening at `self.i`: no raw control characters, valid escapes.
    fn string(&mut self) -> Option<()> {
        let b = self.b;
        let mut j = self.i + 1;
        loop {
            match *b.get(j)? {
                b'"' => {
                    self.i = j + 1;
                    return Some(());
                }
                b'\\' => match *b.get(j + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => j += 2,
                    b'u' => {
                        let hex = b.get(j + 2..j + 6)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        j += 6;
                    }
                    _ => return None,
                },
                0..=0x1f => return None,
                _ => j += 1,
            }
        }
    }

    /// A container opening at `self.i` and closing with `close`: its items,
    /// each read by `item`, separated by commas. Depth is bounded here.
    fn items(&mut self, close: u8, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        self.i = skip_ws(self.b, self.i + 1);
        if self.b.get(self.i) != Some(&close) {
            loop {
                item(self)?;
                self.i = skip_ws(self.b, self.i);
                match *self.b.get(self.i)? {
                    b',' => self.i = skip_ws(self.b, self.i + 1),
                    c if c == close => break,
                    _ => return None,
                }
            }
        }
        self.i += 1;
        self.depth -= 1;
        Some(())
    }

    fn array(&mut self) -> Option<()> {
        self.items(b']', Self::value)
    }

    /// An object; with `top`, its fields are recorded with their key's end.
    fn object(&mut self, mut top: Option<&mut Vec<(usize, Field)>>) -> Option<()> {
        self.items(b'}', |v| {
            if v.b.get(v.i) != Some(&b'"') {
                return None;
            }
            let key_start = v.i;
            v.string()?;
            let key_end = v.i;
            v.i = skip_ws(v.b, v.i);
            if v.b.get(v.i) != Some(&b':') {
                return None;
            }
            v.i = skip_ws(v.b, v.i + 1);
            let value_start = v.i;
            v.value()?;
            if let Some(top) = top.as_deref_mut() {
                top.push((
                    key_end,
                    Field {
                        key_start,
                        value_start,
                        value_end: v.i,
                    },
                ));
            }
            Some(())
        })
    }
}

/// `s` as a JSON string, appended to `out`. Identical to serde_json's output;
/// text with nothing to escape (names, ids) is copied as it is.
pub fn push_quoted(out: &mut String, s: &str) {
    if s.bytes().any(|c| c == b'"' || c == b'\\' || c < 0x20) {
        out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
    } else {
        out.reserve(s.len() + 2);
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

/// `s` as a JSON string (see [`push_quoted`]).
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_quoted(&mut out, s);
    out
}

/// The field's value text.
pub fn value<'a>(json: &'a str, f: &Field) -> &'a str {
    &json[f.value_start..f.value_end]
}

/// `json` with the field's value replaced by `new_value` (JSON text).
#[cfg(test)]
pub fn replace(json: &str, f: &Field, new_value: &str) -> String {
    edited(json, &mut [Edit::replace(f, new_value)])
}

/// The byte range that removing the field takes out: the field and the comma
/// that separated it from its neighbour.
pub fn removal_range(json: &str, f: &Field) -> (usize, usize) {
    let b = json.as_bytes();
    let after = skip_ws(b, f.value_end);
    if b.get(after) == Some(&b',') {
        (f.key_start, skip_ws(b, after + 1))
    } else {
        // The last field: take the comma before it instead.
        let mut s = f.key_start;
        while s > 0 && matches!(b[s - 1], b' ' | b'\t' | b'\n' | b'\r') {
            s -= 1;
        }
        if s > 0 && b[s - 1] == b',' {
            s -= 1;
        }
        (s, f.value_end)
    }
}

/// `json` without the field (and the comma that separated it).
#[cfg(test)]
pub fn remove(json: &str, f: &Field) -> String {
    edited(json, &mut [Edit::remove(json, f)])
}

/// The elements of the array `json` (its text, brackets included), as byte
/// ranges of their values; `None` if it is not a well-formed array.
#[cfg(test)]
pub fn elements(json: &str) -> Option<Vec<(usize, usize)>> {
    let b = json.as_bytes();
    let mut out = Vec::new();
    let end = walk_array(b, skip_ws(b, 0), |i| {
        let end = value_end(b, i)?;
        out.push((i, end));
        Some(end)
    })?;
    (skip_ws(b, end) == b.len()).then_some(out)
}

/// The number of characters a JSON string literal (`raw`, quotes included)
/// decodes to, counted without decoding it; `None` if `raw` is not a string.
pub fn string_chars(raw: &str) -> Option<usize> {
    let b = raw.as_bytes();
    if b.len() < 2 || b[0] != b'"' || b[b.len() - 1] != b'"' {
        return None;
    }
    let body = &b[1..b.len() - 1];
    let mut n = 0;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\\' if body.get(i + 1) == Some(&b'u') => {
                // A surrogate pair (two escapes) is one character.
                let high = std::str::from_utf8(body.get(i + 2..i + 6)?)
                    .ok()
                    .and_then(|h| u16::from_str_radix(h, 16).ok())?;
                i += 6;
                if (0xD800..0xDC00).contains(&high) && body.get(i..i + 2) == Some(b"\\u") {
                    i += 6;
                }
                n += 1;
            }
            b'\\' => {
                i += 2;
                n += 1;
            }
            c => {
                // Count UTF-8 lead bytes, not continuation bytes.
                if c & 0xC0 != 0x80 {
                    n += 1;
                }
                i += 1;
            }
        }
    }
    Some(n)
}

/// `json` (an object) with `"key": value_json` added as its last field.
#[cfg(test)]
pub fn append(json: &str, key: &str, value_json: &str) -> Option<String> {
    let close = json.rfind('}')?;
    let before = json[..close].trim_end();
    let empty = before.ends_with('{');
    let mut out = String::with_capacity(json.len() + key.len() + value_json.len() + 4);
    out.push_str(before);
    if !empty {
        out.push(',');
    }
    out.push('"');
    out.push_str(key);
    out.push_str("\":");
    out.push_str(value_json);
    out.push_str(&json[close..]);
    Some(out)
}

/// One change to a JSON text: the bytes `start..end` replaced by `with`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edit<'a> {
    pub start: usize,
    pub end: usize,
    pub with: std::borrow::Cow<'a, str>,
}

impl<'a> Edit<'a> {
    /// The field's value becomes `with` (JSON text).
    pub fn replace(f: &Field, with: impl Into<std::borrow::Cow<'a, str>>) -> Edit<'a> {
        Edit {
            start: f.value_start,
            end: f.value_end,
            with: with.into(),
        }
    }

    /// The field goes, with the comma that separated it.
    pub fn remove(json: &str, f: &Field) -> Edit<'a> {
        let (start, end) = removal_range(json, f);
        Edit {
            start,
            end,
            with: "".into(),
        }
    }

    /// `fields` (`"key":value`, comma-separated) become the last fields of
    /// the object `obj`, whose text starts at `offset` in the text edited: an
    /// insertion before its closing brace, after a comma unless it is empty.
    pub fn append(obj: &str, offset: usize, fields: &str) -> Option<Edit<'a>> {
        let close = obj.rfind('}')?;
        let with = if obj[..close].trim_end().ends_with('{') {
            fields.to_owned()
        } else {
            let mut w = String::with_capacity(fields.len() + 1);
            w.push(',');
            w.push_str(fields);
            w
        };
        Some(Edit {
            start: offset + close,
            end: offset + close,
            with: with.into(),
        })
    }
}

/// Writes `text` with `edits` applied into `out`. The edits' ranges must not
/// overlap (distinct fields never do); they are applied in text order.
pub fn apply(text: &str, edits: &mut [Edit], out: &mut impl bytes::BufMut) {
    edits.sort_by_key(|e| (e.start, e.end));
    let mut at = 0;
    for e in edits.iter() {
        if e.start < at {
            continue; // overlapping: cannot come from distinct fields
        }
        out.put_slice(&text.as_bytes()[at..e.start]);
        out.put_slice(e.with.as_bytes());
        at = e.end;
    }
    out.put_slice(&text.as_bytes()[at..]);
}

/// `text` with `edits` applied, as a string.
pub fn edited(text: &str, edits: &mut [Edit]) -> String {
    let extra: usize = edits.iter().map(|e| e.with.len()).sum();
    let mut out = Vec::with_capacity(text.len() + extra);
    apply(text, edits, &mut out);
    // Edits replace whole JSON values or fields with JSON text: still UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const CHUNK: &str = r#"{"id":"c1","model":"gpt-4","choices":[{"delta":{"content":"say \"model\": \"x\" {"},"finish_reason":null}],"nested":{"model":"no"},"usage":null}"#;

    #[test]
    fn finds_only_top_level_keys() {
        let f = find(CHUNK, "model").unwrap();
        assert_eq!(value(CHUNK, &f), "\"gpt-4\"");
        assert_eq!(value(CHUNK, &find(CHUNK, "usage").unwrap()), "null");
        assert!(find(CHUNK, "delta").is_none());
        assert!(find(CHUNK, "content").is_none());
        assert!(find("[1]", "a").is_none());
        assert_eq!(
            value(
                r#" { "a" : [1, {"b": "]"}] , "b" : 2 }"#,
                &find(r#" { "a" : [1, {"b": "]"}] , "b" : 2 }"#, "b").unwrap()
            ),
            "2"
        );
    }

    #[test]
    fn lists_top_level_fields_and_checks_structure() {
        let f = fields(CHUNK).unwrap();
        let keys: Vec<&str> = f.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["id", "model", "choices", "nested", "usage"]);
        assert_eq!(value(CHUNK, &f[1].1), "\"gpt-4\"");
        assert_eq!(fields(" { } ").unwrap().len(), 0);
        for bad in [
            "",
            "[1]",
            r#"{"a":"x\"#,
            r#"{"a":"x\\"#,
            r#"{"a\"#,
            r#"{"a":1"#,
            r#"{"a":1}x"#,
            r#"{"a":[1,2}"#,
            r#"{"a":"unterminated}"#,
            r#"{"a":}"#,
            r#"{"a" 1}"#,
            r#"{"a":1,}"#,
            "<html>",
        ] {
            assert!(fields(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn never_panics_on_cut_or_garbled_text() {
        let texts = [CHUNK, r#"{"a":"\\\"x\u00e9","b":[{"c":"d\\"}]}"#];
        for t in texts {
            for end in 0..=t.len() {
                let Some(cut) = t.get(..end) else { continue };
                let whole = end == t.len();
                assert_eq!(fields(cut).is_some(), whole, "{cut}");
                let _ = elements(cut);
                let _ = find(cut, "model");
                let _ = string_chars(cut);
            }
            for (i, _) in t.char_indices() {
                let garbled = format!("{}\\{}", &t[..i], &t[i..]);
                let _ = fields(&garbled);
                let _ = find(&garbled, "usage");
            }
        }
    }

    #[test]
    fn walks_arrays_and_counts_string_characters() {
        let a = r#"[1, {"a":[2]}, "x]" ]"#;
        let e = elements(a).unwrap();
        let vals: Vec<&str> = e.iter().map(|(s, t)| &a[*s..*t]).collect();
        assert_eq!(vals, ["1", r#"{"a":[2]}"#, r#""x]""#]);
        assert_eq!(elements("[]").unwrap().len(), 0);
        for bad in ["[1,", "[1 2]", "{}", "[1,]"] {
            assert!(elements(bad).is_none(), "{bad}");
        }
        for s in [
            "",
            "abc",
            "é😀",
            "a\"b\\c\n",
            "\u{e9}\u{1f600}x",
            "tab\there",
        ] {
            let raw = serde_json::to_string(s).unwrap();
            assert_eq!(string_chars(&raw), Some(s.chars().count()), "{raw}");
        }
        let escaped = r#""\u00e9\ud83d\ude00""#;
        let decoded: String = serde_json::from_str(escaped).unwrap();
        assert_eq!(string_chars(escaped), Some(decoded.chars().count()));
        assert_eq!(string_chars("null"), None);
        assert_eq!(string_chars("12"), None);
    }

    /// `check`'s verdict and serde_json's agree.
    fn agrees(t: &str) {
        let serde = serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok();
        let mine = check(t);
        assert_eq!(mine != Checked::Invalid, serde, "{t:?}: {mine:?}");
        // (A tree cannot hold a lone surrogate; the shape is judged where it can.)
        let tree = serde_json::from_str::<Value>(t).ok();
        if let Checked::Object(f) = mine {
            assert!(tree.is_none_or(|v| v.is_object()), "{t:?}");
            assert_eq!(Some(f), fields(t), "{t:?}");
        } else if serde {
            assert!(!t.trim_start().starts_with('{'), "{t:?}");
        }
    }

    #[test]
    fn check_accepts_what_serde_json_accepts() {
        let valid = [
            CHUNK,
            r#"{"a":"\\\"x\u00e9\/\b\f\n\r\t","b":[{"c":"d\\"}], "e" : -0.5e+3 , "f":[],"g":{},"h":[true,false,null,0,-0,1.0,2E5,3e-2]}"#,
            r#"  {"model":"m","messages":[{"role":"user","content":"hi"}]}  "#,
            "{}",
            "[]",
            "\"s\"",
            "12",
            "null",
            " true ",
            r#"{"a":1,"a":2}"#,
            r#"{"\ud83d":"lone surrogates are consumed, not judged"}"#,
        ];
        let invalid = [
            "",
            " ",
            "{",
            "}",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "[1,]",
            "[01]",
            "[1.]",
            "[.5]",
            "[1e]",
            "[-]",
            "[+1]",
            "[tru]",
            "[nul]",
            "[\"\\x\"]",
            "[\"\\u12\"]",
            "[\"\\u12g4\"]",
            "{\"a\":1}x",
            "{\"a\":1}{}",
            "{a:1}",
            "{'a':1}",
            "[\"tab\there\"]",
            "[\"nl\nhere\"]",
            "[1 2]",
            "NaN",
            "[Infinity]",
            "{\"a\" 1}",
            "{,}",
            "[,1]",
        ];
        for t in valid.iter().chain(invalid.iter()) {
            agrees(t);
        }
        for t in valid {
            for end in 0..=t.len() {
                if let Some(cut) = t.get(..end) {
                    agrees(cut);
                }
            }
            for (i, _) in t.char_indices() {
                for c in [
                    "\\", "\"", "{", "]", ",", ":", "1", "-", ".", "e", " ", "\u{1}", "x",
                ] {
                    agrees(&format!("{}{c}{}", &t[..i], &t[i..]));
                    if let Some(rest) = t.get(i + 1..) {
                        agrees(&format!("{}{c}{rest}", &t[..i]));
                    }
                }
            }
        }
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        agrees(&deep(127));
        agrees(&deep(128));
        agrees(&format!("{{\"a\":{}}}", deep(127)));
        // Deeper is refused without recursing further (serde_json's
        // IgnoredAny walks any depth; callers fall back to it).
        assert_eq!(check(&deep(129)), Checked::Invalid);
        assert_eq!(check(&deep(100_000)), Checked::Invalid);
        assert_eq!(check(&format!("{{\"a\":{}}}", deep(128))), Checked::Invalid);
    }

    #[test]
    fn quoted_is_serde_jsons_string() {
        for s in [
            "",
            "gpt-4o",
            "a\"b",
            "back\\slash",
            "line\nbreak",
            "\u{1}",
            "é😀",
            "\u{7f}",
        ] {
            assert_eq!(quoted(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn edits_keep_valid_json() {
        let f = find(CHUNK, "model").unwrap();
        let renamed: Value = serde_json::from_str(&replace(CHUNK, &f, "\"aiml/gpt-4\"")).unwrap();
        assert_eq!(renamed["model"], "aiml/gpt-4");
        assert_eq!(renamed["nested"]["model"], "no");
        let removed = remove(CHUNK, &find(CHUNK, "usage").unwrap());
        let v: Value = serde_json::from_str(&removed).unwrap();
        assert!(v.get("usage").is_none());
        let first = r#"{"usage": null, "a": 1}"#;
        let v: Value =
            serde_json::from_str(&remove(first, &find(first, "usage").unwrap())).unwrap();
        assert_eq!(v, json!({"a": 1}));
        let only = r#"{"usage":{"x":1}}"#;
        assert_eq!(remove(only, &find(only, "usage").unwrap()), "{}");
        let v: Value =
            serde_json::from_str(&append(CHUNK, "_usage_info", r#"{"n":1}"#).unwrap()).unwrap();
        assert_eq!(v["_usage_info"], json!({"n": 1}));
        assert_eq!(append("{ }", "k", "1").unwrap(), r#"{"k":1}"#);
    }
}
