//! Token estimates, used to reserve before a call and to charge when the
//! upstream reports no usage: about four characters a token, rounded up, plus
//! a small per-message overhead.

use serde_json::Value;

pub fn tokens_of_text(s: &str) -> i64 {
    tokens_of_chars(s.chars().count())
}

/// Tokens of a text of `n` characters.
pub fn tokens_of_chars(n: usize) -> i64 {
    (n as i64 + 3) / 4
}

#[cfg(test)]
fn text_of_content(v: &Value) -> i64 {
    match v {
        Value::String(s) => tokens_of_text(s),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p.get("text") {
                Some(Value::String(s)) => tokens_of_text(s),
                // an image or other part: a fixed allowance
                _ if p.is_object() => 85,
                _ => text_of_content(p),
            })
            .sum(),
        Value::Null => 0,
        other => tokens_of_text(&other.to_string()),
    }
}

/// The prompt of a chat completion: every message's content, tool calls and
/// tool definitions. This is the definition on a parsed body, kept for the
/// tests: the request path computes the same count on the JSON text
/// (`service::request`), and its tests check the two agree.
#[cfg(test)]
pub fn chat_prompt(body: &serde_json::Map<String, Value>) -> i64 {
    let mut n = 3;
    if let Some(Value::Array(msgs)) = body.get("messages") {
        for m in msgs {
            n += 4;
            if let Some(c) = m.get("content") {
                n += text_of_content(c);
            }
            if let Some(t) = m.get("tool_calls") {
                n += tokens_of_text(&t.to_string());
            }
            if let Some(Value::String(name)) = m.get("name") {
                n += tokens_of_text(name);
            }
        }
    }
    if let Some(tools) = body.get("tools") {
        n += tokens_of_text(&tools.to_string());
    }
    n
}

/// The prompt of a legacy completion (`prompt`: a string or an array).
#[cfg(test)]
pub fn completion_prompt(body: &serde_json::Map<String, Value>) -> i64 {
    1 + body.get("prompt").map(input_tokens).unwrap_or(0)
}

/// An embeddings `input`: a string, strings, or token arrays.
pub fn input_tokens(v: &Value) -> i64 {
    match v {
        Value::String(s) => tokens_of_text(s),
        Value::Array(items) if items.iter().all(Value::is_number) => items.len() as i64,
        Value::Array(items) => items.iter().map(input_tokens).sum(),
        Value::Null => 0,
        other => tokens_of_text(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn estimates() {
        assert_eq!(tokens_of_text(""), 0);
        assert_eq!(tokens_of_text("abcd"), 1);
        assert_eq!(tokens_of_text("abcde"), 2);
        let b = json!({"messages":[{"role":"user","content":"abcdefgh"}]});
        assert_eq!(chat_prompt(b.as_object().unwrap()), 3 + 4 + 2);
        assert_eq!(input_tokens(&json!([1, 2, 3])), 3);
        assert_eq!(input_tokens(&json!(["abcd", "abcd"])), 2);
        assert_eq!(input_tokens(&json!([[1, 2], [3]])), 3);
    }
}
