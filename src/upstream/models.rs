//! Tolerant parsing of the upstream providers' model lists (`GET /models`).
//!
//! Every provider answers in its own shape (see `PROVIDERS.md` §1):
//!
//! - OpenRouter: `{"data":[{id, created, context_length, pricing{prompt, completion},
//!   top_provider{max_completion_tokens, context_length}}]}`, prices as strings in USD per token;
//! - Glama: a bare array `[{id, added, maxTokensInput, maxTokensOutput, pricePerToken{input, output}}]`;
//! - Requesty: `{"data":[{id, input_price, output_price, context_window, max_output_tokens}]}`;
//! - AI/ML API: `{"data":[{id, type, info{developer, contextLength, maxTokens}, pricing?{units[]}}]}`;
//! - custom servers: the OpenAI shape `{"object":"list","data":[{id, created, owned_by}]}`, a bare
//!   array of such objects, or Ollama's `{"models":[{name, model, modified_at}]}`.
//!
//! The parser is deliberately a superset: every entry is read for all the known fields, so any kind
//! also accepts the plain OpenAI shape. Prices are converted to USD per **million** tokens. Nothing
//! here performs I/O.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::upstream::providers::Kind;

/// One model as a provider lists it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelInfo {
    /// The provider's own id (no gateway prefix).
    pub id: String,
    /// Unix seconds, 0 when unknown.
    pub created: i64,
    pub owned_by: Option<String>,
    /// USD per million prompt tokens.
    pub prompt_price: Option<f64>,
    /// USD per million completion tokens.
    pub completion_price: Option<f64>,
    pub max_output_tokens: Option<u64>,
    pub context_length: Option<u64>,
}

/// Parses a provider's model list body. Entries without a usable id are skipped, duplicate ids
/// keep their first occurrence; only a body that is not JSON or has no recognisable list fails.
pub fn parse_model_list(kind: Kind, body: &[u8]) -> Result<Vec<ModelInfo>, String> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let root: Value =
        serde_json::from_slice(body).map_err(|_| "model list is not JSON".to_string())?;
    let (entries, from_models_key) = entries_of(&root)?;
    // Ollama-like entries carry their id in `model` / `name`; elsewhere `name` is a display name.
    let name_ids = kind == Kind::Custom || from_models_key;

    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for entry in entries {
        let Some(obj) = entry.as_object() else {
            continue;
        };
        if kind == Kind::Aiml && !aiml_type_usable(obj) {
            continue;
        }
        let Some(info) = parse_entry(obj, name_ids) else {
            continue;
        };
        if seen.insert(info.id.clone()) {
            out.push(info);
        }
    }
    Ok(out)
}

/// Finds the list of entries: a bare array, `data`, or Ollama's `models`.
fn entries_of(root: &Value) -> Result<(&[Value], bool), String> {
    match root {
        Value::Array(items) => Ok((items, false)),
        Value::Object(obj) => {
            if let Some(Value::Array(items)) = obj.get("data") {
                return Ok((items, false));
            }
            if let Some(Value::Array(items)) = obj.get("models") {
                return Ok((items, true));
            }
            if obj.contains_key("error") {
                // The upstream's message is not repeated: it may echo a credential.
                return Err("model list answer is an error object".to_string());
            }
            Err("model list has no data array".to_string())
        }
        _ => Err("model list has no data array".to_string()),
    }
}

/// AI/ML API lists image, audio, responses and anthropic-only models too: keep only those usable
/// on `/chat/completions` or `/embeddings` (or untyped ones).
fn aiml_type_usable(obj: &Map<String, Value>) -> bool {
    match obj.get("type") {
        Some(Value::String(t)) => {
            t == "openai/chat-completions" || t.to_ascii_lowercase().contains("embedding")
        }
        _ => true,
    }
}

fn parse_entry(obj: &Map<String, Value>, name_ids: bool) -> Option<ModelInfo> {
    let id = str_field(obj, "id").or_else(|| {
        if name_ids {
            str_field(obj, "model").or_else(|| str_field(obj, "name"))
        } else {
            None
        }
    })?;
    let info = obj.get("info").and_then(Value::as_object);
    let top = obj.get("top_provider").and_then(Value::as_object);

    let created = ["created", "added", "created_at", "modified_at"]
        .iter()
        .find_map(|k| obj.get(*k).and_then(parse_timestamp))
        .unwrap_or(0);
    let owned_by =
        str_field(obj, "owned_by").or_else(|| info.and_then(|i| str_field(i, "developer")));
    let (prompt_price, completion_price) = prices(obj);
    let context_length = first_u64(
        obj,
        &[
            "context_length",
            "context_window",
            "maxTokensInput",
            "max_model_len",
            "max_context_length",
        ],
    )
    .or_else(|| info.and_then(|i| first_u64(i, &["contextLength", "context_length"])))
    .or_else(|| top.and_then(|t| first_u64(t, &["context_length"])));
    let max_output_tokens = top
        .and_then(|t| first_u64(t, &["max_completion_tokens"]))
        .or_else(|| {
            first_u64(
                obj,
                &[
                    "max_output_tokens",
                    "maxTokensOutput",
                    "max_completion_tokens",
                ],
            )
        })
        .or_else(|| info.and_then(|i| first_u64(i, &["maxTokens", "max_tokens"])));

    Some(ModelInfo {
        id,
        created,
        owned_by,
        prompt_price,
        completion_price,
        max_output_tokens,
        context_length,
    })
}

/// A non-empty, trimmed string field.
fn str_field(obj: &Map<String, Value>, key: &str) -> Option<String> {
    match obj.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    }
}

/// The first of `keys` holding a positive integer (number or numeric string); 0 counts as unknown.
fn first_u64(obj: &Map<String, Value>, keys: &[&str]) -> Option<u64> {
    keys.iter()
        .find_map(|k| obj.get(*k).and_then(as_positive_u64))
}

fn as_positive_u64(v: &Value) -> Option<u64> {
    let n = match v {
        Value::Number(n) => match n.as_u64() {
            Some(u) => Some(u),
            None => n.as_f64().and_then(float_to_u64),
        },
        Value::String(s) => {
            let s = s.trim();
            s.parse::<u64>()
                .ok()
                .or_else(|| s.parse::<f64>().ok().and_then(float_to_u64))
        }
        _ => None,
    }?;
    (n > 0).then_some(n)
}

fn float_to_u64(f: f64) -> Option<u64> {
    // `as` saturates; the range check keeps absurd values out.
    (0.0..1e18).contains(&f).then_some(f as u64)
}

/// Prompt and completion prices in USD per million tokens, from whichever shape the entry uses.
fn prices(obj: &Map<String, Value>) -> (Option<f64>, Option<f64>) {
    let mut prompt = None;
    let mut completion = None;
    if let Some(pricing) = obj.get("pricing").and_then(Value::as_object) {
        // OpenRouter: strings in USD per token.
        prompt = pricing.get("prompt").and_then(per_token_to_per_million);
        completion = pricing.get("completion").and_then(per_token_to_per_million);
        // AI/ML API: pricing.units[] with price/per.
        if let Some(units) = pricing.get("units").and_then(Value::as_array) {
            let (p, c) = aiml_unit_prices(units);
            prompt = prompt.or(p);
            completion = completion.or(c);
        }
    }
    // Glama: pricePerToken{input, output}, strings or null.
    if let Some(ppt) = obj.get("pricePerToken").and_then(Value::as_object) {
        prompt = prompt.or_else(|| ppt.get("input").and_then(per_token_to_per_million));
        completion = completion.or_else(|| ppt.get("output").and_then(per_token_to_per_million));
    }
    // Requesty: input_price / output_price, USD per token.
    prompt = prompt.or_else(|| obj.get("input_price").and_then(per_token_to_per_million));
    completion = completion.or_else(|| obj.get("output_price").and_then(per_token_to_per_million));
    (prompt, completion)
}

fn aiml_unit_prices(units: &[Value]) -> (Option<f64>, Option<f64>) {
    let mut prompt = None;
    let mut completion = None;
    for unit in units.iter().filter_map(Value::as_object) {
        let field_is = |key: &str, wanted: &str| match unit.get(key) {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.eq_ignore_ascii_case(wanted),
            Some(_) => false,
        };
        if !field_is("type", "charge") || !field_is("name", "token") || !field_is("content", "text")
        {
            continue;
        }
        let role = match unit.get("origin").and_then(Value::as_str) {
            Some("provided") => Some(true),
            Some("generated") => Some(false),
            Some(_) => None,
            None => match unit.get("measure").and_then(Value::as_str) {
                Some("input") => Some(true),
                Some("output") => Some(false),
                _ => None,
            },
        };
        let Some(is_prompt) = role else {
            continue;
        };
        let (Some(price), Some(per)) = (
            unit.get("price").and_then(price_value),
            unit.get("per").and_then(price_value),
        ) else {
            continue;
        };
        if per <= 0.0 {
            continue;
        }
        let value = to_per_million(price / per);
        if is_prompt {
            prompt = prompt.or(value);
        } else {
            completion = completion.or(value);
        }
    }
    (prompt, completion)
}

fn per_token_to_per_million(v: &Value) -> Option<f64> {
    price_value(v).and_then(to_per_million)
}

/// A price as a number or numeric string; negative (OpenRouter's "-1" = variable) or non-finite
/// values are unknown.
fn price_value(v: &Value) -> Option<f64> {
    let f = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }?;
    if !f.is_finite() || f < 0.0 {
        return None;
    }
    Some(if f == 0.0 { 0.0 } else { f })
}

/// USD per token → USD per million tokens, rounded to 1e-9 to remove float noise.
fn to_per_million(per_token: f64) -> Option<f64> {
    let v = (per_token * 1e6 * 1e9).round() / 1e9;
    v.is_finite().then_some(v)
}

/// A creation time: unix seconds (or milliseconds) as a number or string, or an ISO-8601 date.
fn parse_timestamp(v: &Value) -> Option<i64> {
    let secs = match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && f.abs() < 1e18)
                .map(|f| f as i64)
        }),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>().ok().or_else(|| parse_iso_datetime(s))
        }
        _ => None,
    }?;
    if secs < 0 {
        return None;
    }
    // Values this large are milliseconds (year 5138 in seconds).
    Some(if secs > 100_000_000_000 {
        secs / 1000
    } else {
        secs
    })
}

/// Parses `YYYY-MM-DD[(T| )HH:MM[:SS[.fff]]][Z|±HH[:]MM]` into unix seconds (UTC when no zone).
fn parse_iso_datetime(s: &str) -> Option<i64> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp());
    }
    let zoned = [
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M:%S%z",
    ];
    if let Some(t) = zoned
        .iter()
        .find_map(|f| DateTime::parse_from_str(s, f).ok())
    {
        return Some(t.timestamp());
    }
    let s = s.strip_suffix(['Z', 'z']).unwrap_or(s);
    let naive = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ];
    if let Some(t) = naive
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
    {
        return Some(t.and_utc().timestamp());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(kind: Kind, body: &str) -> Vec<ModelInfo> {
        parse_model_list(kind, body.as_bytes()).unwrap()
    }

    #[test]
    fn openrouter_full_entry() {
        let body = r#"{"data":[{
            "id":"anthropic/claude-3.5-sonnet","canonical_slug":"anthropic/claude-3.5-sonnet",
            "name":"Anthropic: Claude 3.5 Sonnet","created":1718841600,"description":"x",
            "context_length":200000,
            "architecture":{"input_modalities":["text","image"],"output_modalities":["text"],"tokenizer":"Claude","instruct_type":null},
            "pricing":{"prompt":"0.000003","completion":"0.000015","request":"0","image":"0.0048","web_search":"0","internal_reasoning":"0","input_cache_read":"0.0000003","input_cache_write":"0.00000375"},
            "top_provider":{"context_length":200000,"max_completion_tokens":8192,"is_moderated":true},
            "per_request_limits":null,"supported_parameters":["tools","max_tokens"]}]}"#;
        let models = parse(Kind::OpenRouter, body);
        assert_eq!(
            models,
            vec![ModelInfo {
                id: "anthropic/claude-3.5-sonnet".into(),
                created: 1_718_841_600,
                owned_by: None,
                prompt_price: Some(3.0),
                completion_price: Some(15.0),
                max_output_tokens: Some(8192),
                context_length: Some(200_000),
            }]
        );
    }

    #[test]
    fn openrouter_free_variable_and_missing_prices() {
        let body = r#"{"data":[
            {"id":"meta/llama:free","created":1,"pricing":{"prompt":"0","completion":"0"},"top_provider":{"max_completion_tokens":null,"context_length":8192}},
            {"id":"openrouter/auto","pricing":{"prompt":"-1","completion":"-1"},"context_length":2000000},
            {"id":"x/no-pricing"},
            {"id":"x/tiny","pricing":{"prompt":"0.0000000001","completion":"0.00000125"}}
        ]}"#;
        let models = parse(Kind::OpenRouter, body);
        assert_eq!(models.len(), 4);
        assert_eq!(models[0].prompt_price, Some(0.0));
        assert_eq!(models[0].completion_price, Some(0.0));
        assert_eq!(models[0].max_output_tokens, None);
        // Model context falls back to the top provider's.
        assert_eq!(models[0].context_length, Some(8192));
        assert_eq!(models[1].prompt_price, None);
        assert_eq!(models[1].completion_price, None);
        assert_eq!(models[1].created, 0);
        assert_eq!(models[1].context_length, Some(2_000_000));
        assert_eq!(
            models[2],
            ModelInfo {
                id: "x/no-pricing".into(),
                ..Default::default()
            }
        );
        assert_eq!(models[3].prompt_price, Some(0.0001));
        assert_eq!(models[3].completion_price, Some(1.25));
    }

    #[test]
    fn per_million_rounding_removes_float_noise() {
        for (s, want) in [
            ("0.000003", 3.0),
            ("0.0000006", 0.6),
            ("0.00000015", 0.15),
            ("0.000075", 75.0),
            ("0.0000011", 1.1),
            ("1", 1_000_000.0),
        ] {
            assert_eq!(
                per_token_to_per_million(&Value::String(s.into())),
                Some(want),
                "{s}"
            );
        }
    }

    #[test]
    fn glama_bare_array() {
        let body = r#"[
            {"id":"anthropic/claude-3-5-sonnet","added":"2024-10-22T00:00:00.000Z",
             "capabilities":["caching","input:image","function_calling"],
             "maxTokensInput":200000,"maxTokensOutput":8192,
             "pricePerToken":{"input":"0.000003","output":"0.000015","cacheRead":"0.0000003","cacheWrite":"0.00000375"}},
            {"id":"openai/gpt-4o","added":"not a date","maxTokensInput":128000,"maxTokensOutput":null,
             "pricePerToken":{"input":null,"output":null}},
            {"id":"google/gemini","added":"2024-02-29"}
        ]"#;
        let models = parse(Kind::Glama, body);
        assert_eq!(models.len(), 3);
        assert_eq!(
            models[0],
            ModelInfo {
                id: "anthropic/claude-3-5-sonnet".into(),
                created: 1_729_555_200,
                owned_by: None,
                prompt_price: Some(3.0),
                completion_price: Some(15.0),
                max_output_tokens: Some(8192),
                context_length: Some(200_000),
            }
        );
        assert_eq!(models[1].created, 0);
        assert_eq!(models[1].prompt_price, None);
        assert_eq!(models[1].completion_price, None);
        assert_eq!(models[1].max_output_tokens, None);
        assert_eq!(models[1].context_length, Some(128_000));
        assert_eq!(models[2].created, 1_709_164_800);
    }

    #[test]
    fn requesty_numbers_and_strings() {
        let body = r#"{"data":[
            {"id":"openai/gpt-4o-mini","description":"d","input_price":0.00000015,"output_price":0.0000006,
             "caching_price":0,"cached_price":0.000000075,"context_window":128000,"max_output_tokens":16384,
             "supports_vision":true,"supports_caching":false,"supports_reasoning":false},
            {"id":"anthropic/claude","input_price":"0.000003","output_price":"0.000015","context_window":"200000","max_output_tokens":0},
            {"id":"bad/prices","input_price":-1,"output_price":"abc"}
        ]}"#;
        let models = parse(Kind::Requesty, body);
        assert_eq!(
            models[0],
            ModelInfo {
                id: "openai/gpt-4o-mini".into(),
                created: 0,
                owned_by: None,
                prompt_price: Some(0.15),
                completion_price: Some(0.6),
                max_output_tokens: Some(16384),
                context_length: Some(128_000),
            }
        );
        assert_eq!(models[1].prompt_price, Some(3.0));
        assert_eq!(models[1].completion_price, Some(15.0));
        assert_eq!(models[1].context_length, Some(200_000));
        assert_eq!(models[1].max_output_tokens, None);
        assert_eq!(models[2].prompt_price, None);
        assert_eq!(models[2].completion_price, None);
    }

    #[test]
    fn aiml_filters_types_and_reads_info() {
        let body = r#"{"data":[
            {"id":"gpt-4o","type":"openai/chat-completions",
             "info":{"name":"GPT-4o","developer":"Open AI","description":"d","contextLength":128000,"maxTokens":16384,"url":"u","docs_url":"d","isHottest":true},
             "features":["openai/chat-completion.function"],"endpoints":["/v1/chat/completions"]},
            {"id":"dall-e-3","type":"openai/images/generations","info":{"developer":"Open AI"}},
            {"id":"o1-pro","type":"responses"},
            {"id":"claude-native","type":"anthropic/messages"},
            {"id":"text-embedding-3-small","type":"openai/embeddings","info":{"developer":"Open AI","contextLength":8000}},
            {"id":"untyped-model"}
        ]}"#;
        let models = parse(Kind::Aiml, body);
        let ids: Vec<_> = models.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["gpt-4o", "text-embedding-3-small", "untyped-model"]);
        assert_eq!(models[0].owned_by.as_deref(), Some("Open AI"));
        assert_eq!(models[0].context_length, Some(128_000));
        assert_eq!(models[0].max_output_tokens, Some(16384));
        assert_eq!(models[0].prompt_price, None);
        assert_eq!(models[1].context_length, Some(8000));
    }

    #[test]
    fn aiml_pricing_units() {
        let body = r#"{"data":[{"id":"gpt-4o","type":"openai/chat-completions","info":{"developer":"Open AI"},
            "pricing":{"units":[
              {"type":"charge","name":"token","content":"text","measure":"input","origin":"cached","author":"user","phase":"inference","price":1.25,"per":1000000},
              {"type":"charge","name":"token","content":"text","measure":"input","origin":"provided","author":"user","phase":"inference","price":2.5,"per":1000000},
              {"type":"charge","name":"token","content":"text","measure":"output","origin":"generated","author":"model","phase":"inference","price":"10","per":"1000000"},
              {"type":"charge","name":"token","content":"text","measure":"input","origin":"cache_write","price":3.75,"per":1000000},
              {"type":"charge","name":"image","origin":"provided","price":99,"per":1}
            ]}}]}"#;
        let models = parse(Kind::Aiml, body);
        assert_eq!(models[0].prompt_price, Some(2.5));
        assert_eq!(models[0].completion_price, Some(10.0));
    }

    #[test]
    fn aiml_pricing_measure_fallback_and_bad_per() {
        let body = r#"{"data":[
            {"id":"a","pricing":{"units":[{"type":"charge","name":"token","measure":"input","price":0.5,"per":1000},
                                          {"type":"charge","name":"token","measure":"output","price":1,"per":0}]}},
            {"id":"b","pricing":{"units":[{"type":"charge","name":"token","origin":"provided","price":-1,"per":1000000}]}}
        ]}"#;
        let models = parse(Kind::Aiml, body);
        assert_eq!(models[0].prompt_price, Some(500.0));
        assert_eq!(models[0].completion_price, None);
        assert_eq!(models[1].prompt_price, None);
    }

    #[test]
    fn custom_openai_shape() {
        let body = r#"{"object":"list","data":[
            {"id":"llama-3-70b","object":"model","created":1700000000,"owned_by":"meta"},
            {"id":"mistral","object":"model","owned_by":"mistralai"}
        ]}"#;
        let models = parse(Kind::Custom, body);
        assert_eq!(
            models,
            vec![
                ModelInfo {
                    id: "llama-3-70b".into(),
                    created: 1_700_000_000,
                    owned_by: Some("meta".into()),
                    ..Default::default()
                },
                ModelInfo {
                    id: "mistral".into(),
                    owned_by: Some("mistralai".into()),
                    ..Default::default()
                },
            ]
        );
    }

    #[test]
    fn custom_bare_array_and_vllm_fields() {
        let body = r#"[{"id":"m1","created":1700000000123,"owned_by":"vllm","max_model_len":32768},{"id":"m2","created":"1700000001"}]"#;
        let models = parse(Kind::Custom, body);
        assert_eq!(models[0].created, 1_700_000_000);
        assert_eq!(models[0].context_length, Some(32768));
        assert_eq!(models[1].created, 1_700_000_001);
    }

    #[test]
    fn custom_ollama_tags() {
        let body = r#"{"models":[
            {"name":"llama3:latest","model":"llama3:latest","modified_at":"2024-05-20T10:11:12.123456789-07:00","size":4661224676,"digest":"abc","details":{"family":"llama"}},
            {"name":"phi3:mini","modified_at":"2024-05-20T17:11:12Z"}
        ]}"#;
        let models = parse(Kind::Custom, body);
        assert_eq!(models.len(), 2);
        assert_eq!(models[0].id, "llama3:latest");
        assert_eq!(models[0].created, 1_716_225_072);
        assert_eq!(models[1].id, "phi3:mini");
        assert_eq!(models[1].created, 1_716_225_072);
        // The `models` key makes `name` an id for any kind.
        assert_eq!(parse(Kind::OpenRouter, body).len(), 2);
    }

    #[test]
    fn name_is_not_an_id_outside_custom() {
        let body = r#"{"data":[{"name":"Display Name"},{"id":"real"}]}"#;
        assert_eq!(parse(Kind::Requesty, body).len(), 1);
        assert_eq!(parse(Kind::Custom, body).len(), 2);
    }

    #[test]
    fn every_kind_accepts_openai_shape() {
        let body = r#"{"object":"list","data":[{"id":"gpt-4","object":"model","created":1687882411,"owned_by":"openai"}]}"#;
        for kind in [
            Kind::OpenRouter,
            Kind::Glama,
            Kind::Requesty,
            Kind::Aiml,
            Kind::Custom,
        ] {
            let models = parse(kind, body);
            assert_eq!(
                models,
                vec![ModelInfo {
                    id: "gpt-4".into(),
                    created: 1_687_882_411,
                    owned_by: Some("openai".into()),
                    ..Default::default()
                }],
                "{kind:?}"
            );
        }
    }

    #[test]
    fn skips_entries_without_string_id_and_duplicates() {
        let body = r#"{"data":[{"id":42},{"id":null},{"id":""},"gpt-4",7,null,{"id":"a","created":1},{"id":"a","created":2},{"id":" b "}]}"#;
        let models = parse(Kind::OpenRouter, body);
        let ids: Vec<_> = models.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(models[0].created, 1);
    }

    #[test]
    fn empty_lists() {
        assert!(parse(Kind::OpenRouter, r#"{"data":[]}"#).is_empty());
        assert!(parse(Kind::Glama, "[]").is_empty());
    }

    #[test]
    fn errors() {
        let err = |kind, body: &str| parse_model_list(kind, body.as_bytes()).unwrap_err();
        assert_eq!(
            err(Kind::OpenRouter, "<html>502</html>"),
            "model list is not JSON"
        );
        assert_eq!(err(Kind::Glama, ""), "model list is not JSON");
        assert_eq!(
            err(Kind::Requesty, r#"{"object":"list"}"#),
            "model list has no data array"
        );
        assert_eq!(
            err(Kind::Custom, r#"{"data":{"id":"x"}}"#),
            "model list has no data array"
        );
        assert_eq!(err(Kind::Aiml, "42"), "model list has no data array");
        let e = err(
            Kind::Requesty,
            r#"{"error":{"message":"bad key sk-secret"}}"#,
        );
        assert!(!e.contains("sk-secret"));
    }

    #[test]
    fn bom_is_tolerated() {
        let mut body = b"\xEF\xBB\xBF".to_vec();
        body.extend_from_slice(br#"{"data":[{"id":"x"}]}"#);
        assert_eq!(parse_model_list(Kind::Custom, &body).unwrap().len(), 1);
    }

    #[test]
    fn iso_dates() {
        assert_eq!(parse_iso_datetime("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_iso_datetime("2024-10-22T00:00:00.000Z"),
            Some(1_729_555_200)
        );
        assert_eq!(
            parse_iso_datetime("2024-10-22 01:02:03"),
            Some(1_729_555_200 + 3723)
        );
        assert_eq!(
            parse_iso_datetime("2024-10-22T02:00:00+02:00"),
            Some(1_729_555_200)
        );
        assert_eq!(
            parse_iso_datetime("2024-10-22T02:00:00+0200"),
            Some(1_729_555_200)
        );
        assert_eq!(parse_iso_datetime("2024-10-22T00:00"), Some(1_729_555_200));
        assert_eq!(parse_iso_datetime("2000-03-01"), Some(951_868_800));
        assert_eq!(parse_iso_datetime("2023-02-29"), None);
        assert_eq!(parse_iso_datetime("2024-13-01"), None);
        assert_eq!(parse_iso_datetime("2024-10-22T25:00:00Z"), None);
        assert_eq!(parse_iso_datetime("2024-10-22Tgarbage"), None);
        assert_eq!(parse_iso_datetime("Oct 22 2024"), None);
        assert_eq!(parse_iso_datetime("2024-10-22T00:00:00Q"), None);
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp(&serde_json::json!(-5)), None);
        assert_eq!(
            parse_timestamp(&serde_json::json!(1.7e9)),
            Some(1_700_000_000)
        );
        assert_eq!(parse_timestamp(&serde_json::json!("1969-12-31")), None);
        assert_eq!(parse_timestamp(&serde_json::json!(true)), None);
    }
}
