//! The prompt estimate of a generation request (SPEC §6), counted while
//! serde_json reads the body: about four characters a token, 4 for each chat
//! message, a fixed allowance for an image. The visitors here sum what they
//! see without keeping it, accept any shape (an odd one counts little), and
//! never recurse deeper than serde_json's own limit.

use super::proxy::Endpoint;
use crate::json::{self, Str};
use crate::metering::estimate::{tokens_of_chars, tokens_of_text};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::fmt;

/// Tokens of a JSON text kept as it is (tool definitions, tool calls): its
/// characters, four to a token.
pub fn tokens_of_raw(raw: &RawValue) -> i64 {
    tokens_of_text(raw.get())
}

/// Visitor methods for scalars: a string's tokens, `$n` for a number or a
/// boolean, 0 for null.
macro_rules! scalar_tokens {
    ($t:ident, $n:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<$t, E> {
            Ok($t($n))
        }
        fn visit_i64<E>(self, _: i64) -> Result<$t, E> {
            Ok($t($n))
        }
        fn visit_u64<E>(self, _: u64) -> Result<$t, E> {
            Ok($t($n))
        }
        fn visit_f64<E>(self, _: f64) -> Result<$t, E> {
            Ok($t($n))
        }
        fn visit_unit<E>(self) -> Result<$t, E> {
            Ok($t(0))
        }
        fn visit_str<E>(self, s: &str) -> Result<$t, E> {
            Ok($t(tokens_of_text(s)))
        }
    };
}

/// `key` read as `field`, as an upstream might: exactly, or (for a decoder
/// that ignores letter case) in other cases. What any upstream could count
/// as prompt is counted.
fn is(key: &str, field: &str) -> bool {
    key == field || json::case_variant(key, field)
}

/// A content part: its `text`'s tokens, or a fixed allowance for an image
/// or any other part.
struct PartTokens(i64);

impl<'de> Deserialize<'de> for PartTokens {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PartTokens;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a content part")
            }
            scalar_tokens!(PartTokens, 1);
            fn visit_seq<A: SeqAccess<'de>>(self, s: A) -> Result<PartTokens, A::Error> {
                json::skip_seq(s).map(|()| PartTokens(1))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<PartTokens, A::Error> {
                let mut text = 0;
                while let Some(Str(k)) = m.next_key::<Str>()? {
                    if is(&k, "text") {
                        text += tokens_of_chars(m.next_value::<json::Chars>()?.0);
                    } else if is(&k, "content") {
                        // An Anthropic tool result: a string or parts.
                        text += m.next_value::<ContentTokens>()?.0;
                    } else if is(&k, "input") {
                        // An Anthropic tool use: its arguments as written.
                        text += tokens_of_raw(m.next_value::<&RawValue>()?);
                    } else {
                        m.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(PartTokens(if text > 0 { text } else { 85 }))
            }
        }
        d.deserialize_any(V)
    }
}

/// A message `content`: a string, or parts.
struct ContentTokens(i64);

impl<'de> Deserialize<'de> for ContentTokens {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ContentTokens;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a message content")
            }
            scalar_tokens!(ContentTokens, 1);
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<ContentTokens, A::Error> {
                let mut n = 0;
                while let Some(p) = s.next_element::<PartTokens>()? {
                    n += p.0;
                }
                Ok(ContentTokens(n))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<ContentTokens, A::Error> {
                json::skip_map(m).map(|()| ContentTokens(85))
            }
        }
        d.deserialize_any(V)
    }
}

/// A chat message: its content, tool calls (as written) and name.
/// A field given twice, or in another letter case, counts each time: an
/// upstream may read either.
struct MessageTokens(i64);

impl<'de> Deserialize<'de> for MessageTokens {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MessageTokens;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a message")
            }
            scalar_tokens!(MessageTokens, 1);
            fn visit_seq<A: SeqAccess<'de>>(self, s: A) -> Result<MessageTokens, A::Error> {
                json::skip_seq(s).map(|()| MessageTokens(1))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<MessageTokens, A::Error> {
                let mut n = 0;
                while let Some(Str(k)) = m.next_key::<Str>()? {
                    if is(&k, "content") {
                        n += m.next_value::<ContentTokens>()?.0;
                    } else if is(&k, "tool_calls") || is(&k, "arguments") {
                        // Chat tool calls; a Responses function call's arguments.
                        n += tokens_of_raw(m.next_value::<&RawValue>()?);
                    } else if is(&k, "output") {
                        // A Responses function call's output.
                        n += m.next_value::<ContentTokens>()?.0;
                    } else if is(&k, "name") {
                        n += tokens_of_chars(m.next_value::<json::Chars>()?.0);
                    } else {
                        m.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(MessageTokens(n))
            }
        }
        d.deserialize_any(V)
    }
}

/// An item of a completion `prompt` or an embeddings `input`: a string, a
/// token (one each) or a token array.
struct InputTokens(i64);

impl<'de> Deserialize<'de> for InputTokens {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = InputTokens;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an input")
            }
            scalar_tokens!(InputTokens, 1);
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<InputTokens, A::Error> {
                let mut n = 0;
                while s.next_element::<IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(InputTokens(n))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<InputTokens, A::Error> {
                json::skip_map(m).map(|()| InputTokens(1))
            }
        }
        d.deserialize_any(V)
    }
}

/// The prompt field of a request as read: its estimated tokens, or a shape
/// the endpoint does not take.
#[derive(Debug, PartialEq, Eq)]
pub enum Prompt {
    Tokens(i64),
    WrongShape,
}

/// Reads the prompt field of `ep` (`messages`, `prompt` or `input`).
pub struct PromptSeed(pub Endpoint);

impl<'de> DeserializeSeed<'de> for PromptSeed {
    type Value = Prompt;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Prompt, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PromptSeed {
    type Value = Prompt;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a prompt")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Prompt, E> {
        Ok(match self.0 {
            Endpoint::Chat | Endpoint::Messages => Prompt::WrongShape,
            Endpoint::Completions => Prompt::Tokens(1 + tokens_of_text(s)),
            Endpoint::Embeddings => Prompt::Tokens(tokens_of_text(s)),
            // A Responses `input` string is one user message.
            Endpoint::Responses => Prompt::Tokens(3 + 4 + tokens_of_text(s)),
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Prompt, A::Error> {
        let mut n = 0;
        match self.0 {
            Endpoint::Chat | Endpoint::Messages | Endpoint::Responses => {
                n += 3;
                while let Some(m) = s.next_element::<MessageTokens>()? {
                    n += 4 + m.0;
                }
            }
            Endpoint::Completions | Endpoint::Embeddings => {
                if self.0 == Endpoint::Completions {
                    n += 1;
                }
                // A token array is a token each; anything else item by item.
                while let Some(i) = s.next_element::<InputTokens>()? {
                    n += i.0;
                }
            }
        }
        Ok(Prompt::Tokens(n))
    }

    fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Prompt, A::Error> {
        json::skip_map(m).map(|()| Prompt::WrongShape)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Prompt, E> {
        Ok(Prompt::WrongShape)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Prompt, E> {
        Ok(Prompt::WrongShape)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Prompt, E> {
        Ok(Prompt::WrongShape)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Prompt, E> {
        Ok(Prompt::WrongShape)
    }
    fn visit_unit<E>(self) -> Result<Prompt, E> {
        Ok(Prompt::WrongShape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimate(ep: Endpoint, v: &str) -> Prompt {
        let mut de = serde_json::Deserializer::from_str(v);
        PromptSeed(ep).deserialize(&mut de).unwrap()
    }

    #[test]
    fn prompts_are_counted_as_read() {
        let chat = |v: &str| estimate(Endpoint::Chat, v);
        assert_eq!(
            chat(r#"[{"role":"user","content":"abcdefgh"}]"#),
            Prompt::Tokens(3 + 4 + 2)
        );
        // Escapes are decoded before counting: "é😀" is two characters.
        assert_eq!(
            chat(r#"[{"content":"\u00e9\ud83d\ude00","name":"ab"}]"#),
            Prompt::Tokens(3 + 4 + 1 + 1)
        );
        let parts = r#"[
            {"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"x"}},"bare",7]},
            "not an object",
            {"role":"assistant","content":null,"tool_calls":[{"id":"t"}]}
        ]"#;
        assert_eq!(
            chat(parts),
            Prompt::Tokens(3 + (4 + 1 + 85 + 1 + 1) + (4 + 4) + (4 + 3))
        );
        // Given twice, or as a Go decoder would read it, content counts.
        assert_eq!(
            chat(r#"[{"content":"abcd","Content":"abcdefgh","CONTENT":"abcd"}]"#),
            Prompt::Tokens(3 + 4 + 1 + 2 + 1)
        );
        assert_eq!(chat(r#""hi""#), Prompt::WrongShape);
        assert_eq!(chat("{}"), Prompt::WrongShape);
        assert_eq!(
            estimate(Endpoint::Completions, r#"["abcd","efgh"]"#),
            Prompt::Tokens(1 + 2)
        );
        assert_eq!(
            estimate(Endpoint::Embeddings, "[[1,2],[3]]"),
            Prompt::Tokens(3)
        );
        assert_eq!(estimate(Endpoint::Embeddings, "[1,2,3]"), Prompt::Tokens(3));
        assert_eq!(
            estimate(Endpoint::Embeddings, r#""abcde""#),
            Prompt::Tokens(2)
        );
        assert_eq!(estimate(Endpoint::Embeddings, "7"), Prompt::WrongShape);
    }
}
