//! Translations checked piece by piece; the whole paths, with the official
//! SDKs, are in `tests/dialects.rs`.

use super::*;
use serde_json::json;

/// The client's model name of the written answers, no request settings.
const CM: Asked<'static> = Asked {
    model: "cm",
    echo: None,
};

fn info() -> UsageInfo {
    UsageInfo {
        tokens_used: 30,
        prompt_tokens: 10,
        completion_tokens: 20,
        cost_usd: 0,
        remaining_tokens: 70,
        remaining_usd: None,
        provider: "p".into(),
        request_id: "req_1".into(),
        estimated: false,
    }
}

fn events(bytes: &[u8]) -> Vec<(Option<String>, Value)> {
    let text = std::str::from_utf8(bytes).unwrap();
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = None;
            let mut data = Value::Null;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap_or(Value::String(d.to_owned()));
                }
            }
            (name, data)
        })
        .collect()
}

#[test]
fn messages_with_tools_become_chat_and_back() {
    let body = json!({
        "model": "m", "max_tokens": 100, "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "sunny"}]},
                {"type": "text", "text": "And now?"}]}
        ],
        "tools": [{"name": "get_weather", "description": "d", "input_schema": {"type": "object"}},
                  {"type": "web_search_20250305", "name": "web_search"}],
        "tool_choice": {"type": "any"}, "stop_sequences": ["END"], "metadata": {"user_id": "u1"}
    });
    let c = anthropic::parse(&body.to_string()).unwrap();
    assert_eq!(c.system, vec!["Be brief."]);
    assert_eq!(c.tools.len(), 1, "the server tool is left out");
    let chat: Value =
        serde_json::from_slice(&openai_chat::encode(&c, "up", Some(50), "max_tokens", true))
            .unwrap();
    assert_eq!(chat["model"], "up");
    assert_eq!(chat["max_tokens"], 50);
    assert_eq!(chat["stop"], json!(["END"]));
    assert_eq!(chat["user"], "u1");
    assert_eq!(chat["tool_choice"], "required");
    assert_eq!(chat["stream_options"]["include_usage"], true);
    assert_eq!(chat["tools"][0]["function"]["name"], "get_weather");
    let m = chat["messages"].as_array().unwrap();
    assert_eq!(m[0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!(
        m[1]["content"][1]["image_url"]["url"],
        "data:image/png;base64,AAA"
    );
    assert_eq!(
        m[2]["tool_calls"][0]["function"]["arguments"],
        r#"{"city":"Paris"}"#
    );
    assert_eq!(
        m[3],
        json!({"role": "tool", "tool_call_id": "t1", "content": "sunny"})
    );
    assert_eq!(m[4], json!({"role": "user", "content": "And now?"}));

    // And the same conversation written for an Anthropic provider.
    let back: Value =
        serde_json::from_slice(&anthropic::encode(&c, "claude", Some(50), false)).unwrap();
    assert_eq!(back["max_tokens"], 50);
    assert_eq!(back["system"], "Be brief.");
    assert_eq!(
        back["messages"][1]["content"][0]["input"],
        json!({"city": "Paris"})
    );
    assert_eq!(back["messages"][2]["content"][0]["type"], "tool_result");
    assert_eq!(back["messages"][2]["content"][1]["text"], "And now?");
    assert_eq!(back["tool_choice"], json!({"type": "any"}));
}

#[test]
fn chat_tool_turns_become_anthropic_blocks() {
    let body = json!({"model": "m", "messages": [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
            {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "not json"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "two"}]}
    ], "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
       "tool_choice": {"type": "function", "function": {"name": "f"}}, "stop": "X"});
    let c = openai_chat::parse(&body.to_string()).unwrap();
    let a: Value = serde_json::from_slice(&anthropic::encode(&c, "claude", None, true)).unwrap();
    assert_eq!(a["max_tokens"], 4096);
    assert_eq!(a["stream"], true);
    assert_eq!(a["system"], "S");
    assert_eq!(a["stop_sequences"], json!(["X"]));
    assert_eq!(a["tool_choice"], json!({"type": "tool", "name": "f"}));
    let m = a["messages"].as_array().unwrap();
    assert_eq!(m.len(), 3);
    assert_eq!(m[1]["content"][0]["input"], json!({"a": 1}));
    assert_eq!(
        m[1]["content"][1]["input"],
        json!({}),
        "bad arguments become an empty object"
    );
    assert_eq!(
        m[2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": "c1", "content": "one"})
    );
    assert_eq!(m[2]["content"][1]["content"], "two");
}

#[test]
fn responses_items_are_read_and_stored_responses_refused() {
    let body = json!({"model": "m", "instructions": "I", "input": [
        {"role": "user", "content": "hi"},
        {"type": "reasoning", "summary": []},
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "more"},
            {"type": "input_image", "image_url": "https://x/y.png"}]}
    ], "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}},
                 {"type": "local_shell"}, {"type": "custom", "name": "apply_patch"}],
       "store": false});
    let c = responses::parse(&body.to_string()).unwrap();
    assert_eq!(c.system, vec!["I"]);
    assert_eq!(c.tools.len(), 1);
    assert_eq!(c.messages.len(), 3);
    assert!(
        matches!(&c.messages[2].parts[0], Part::ToolResult { content, .. } if content == "sunny")
    );
    assert!(matches!(&c.messages[2].parts[2], Part::Image(u) if u == "https://x/y.png"));
    for bad in [
        json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}),
        json!({"model": "m", "input": "x", "store": true}),
    ] {
        let e = responses::parse(&bad.to_string()).unwrap_err();
        assert_eq!(e.status, 400);
    }
}

#[test]
fn a_chat_stream_becomes_anthropic_events() {
    let mut dec = openai_chat::Decoder::default();
    let mut enc = anthropic::Encoder::new("client/model", "req_1", 12);
    let chunks = [
        json!({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]}),
        json!({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"content": "lo"}}]}),
        json!({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}]}}]}),
        json!({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}}]}),
        json!({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}}]}),
        json!({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        json!({"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 20}}),
    ];
    let mut out = Vec::new();
    let mut deltas = Vec::new();
    for c in &chunks {
        let before = out.len();
        dec.event(&c.to_string(), &mut deltas).unwrap();
        for d in deltas.drain(..) {
            enc.delta(&d, &mut out);
        }
        // Content goes out with the chunk that brought it.
        let text = c["choices"][0]["delta"]["content"].as_str().unwrap_or("");
        if !text.is_empty() {
            assert!(String::from_utf8_lossy(&out[before..]).contains(text));
        }
    }
    dec.event("[DONE]", &mut deltas).unwrap();
    enc.finish(&info(), &mut out);
    let ev = events(&out);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for (n, d) in &ev {
        assert_eq!(
            d["type"],
            n.as_deref().unwrap(),
            "the data's type is the event's name"
        );
    }
    assert_eq!(ev[0].1["message"]["model"], "client/model");
    // The estimate until the provider's count arrives with message_delta.
    assert_eq!(
        ev[0].1["message"]["usage"],
        json!({"input_tokens": 12, "output_tokens": 0})
    );
    assert_eq!(ev[9].1["usage"]["input_tokens"], 10);
    assert_eq!(
        ev[5].1["content_block"],
        json!({"type": "tool_use", "id": "c1", "name": "f", "input": {}})
    );
    assert_eq!(ev[7].1["delta"]["partial_json"], "1}");
    assert_eq!(ev[9].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(ev[9].1["usage"]["output_tokens"], 20);
    assert_eq!(ev[9].1["usage"]["_usage_info"]["tokens_used"], 30);
}

#[test]
fn an_anthropic_stream_becomes_responses_events() {
    let mut dec = anthropic::Decoder::default();
    let mut enc = responses::Encoder::new("m", "req_1", None);
    let events_in = [
        json!({"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 7, "cache_read_input_tokens": 3, "output_tokens": 1}}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "secret"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":1}"}}),
        json!({"type": "content_block_stop", "index": 2}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 20}}),
        json!({"type": "message_stop"}),
    ];
    let mut deltas = Vec::new();
    let mut out = Vec::new();
    for e in &events_in {
        dec.event(&e.to_string(), &mut deltas).unwrap();
    }
    assert!(
        !deltas
            .iter()
            .any(|d| matches!(d, Delta::Text(t) if t == "secret")),
        "thinking stays out"
    );
    assert_eq!(
        deltas
            .iter()
            .rev()
            .find_map(|d| match d {
                Delta::Usage(u) => Some(*u),
                _ => None,
            })
            .unwrap(),
        Usage {
            prompt_tokens: 10,
            completion_tokens: 20,
            total_tokens: 30,
            cost_usd: None
        }
    );
    for d in deltas.drain(..) {
        enc.delta(&d, &mut out);
    }
    enc.finish(&info(), &mut out);
    let ev = events(&out);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let seqs: Vec<u64> = ev
        .iter()
        .map(|(_, d)| d["sequence_number"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
    let done = &ev.last().unwrap().1["response"];
    assert_eq!(done["output"][0]["content"][0]["text"], "Hi");
    assert_eq!(done["output"][1]["call_id"], "toolu_1");
    assert_eq!(done["output"][1]["arguments"], "{\"a\":1}");
    assert_eq!(done["usage"]["input_tokens"], 10);
    assert_eq!(done["usage"]["_usage_info"]["tokens_used"], 30);
}

#[test]
fn whole_answers_cross_both_ways() {
    let a = json!({"id": "msg_1", "type": "message", "content": [{"type": "text", "text": "Hi"},
        {"type": "tool_use", "id": "t", "name": "f", "input": {"x": 1}}], "stop_reason": "tool_use",
        "usage": {"input_tokens": 5, "cache_creation_input_tokens": 5, "output_tokens": 20}});
    let r = anthropic::decode_reply(&a.to_string()).unwrap();
    assert_eq!(r.usage.unwrap().prompt_tokens, 10);
    let chat: Value = serde_json::from_slice(&openai_chat::write_reply(&r, "cm", &info())).unwrap();
    assert_eq!(chat["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(chat["choices"][0]["message"]["content"], "Hi");
    assert_eq!(
        chat["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        r#"{"x":1}"#
    );
    assert_eq!(chat["_usage_info"]["prompt_tokens"], 10);
    let resp: Value = serde_json::from_slice(&responses::write_reply(&r, CM, &info())).unwrap();
    assert_eq!(resp["object"], "response");
    assert_eq!(resp["output"][1]["type"], "function_call");
    assert_eq!(resp["usage"]["output_tokens"], 20);
    assert_eq!(resp["_usage_info"]["tokens_used"], 30);

    let c = json!({"id": "chatcmpl-1", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
        "finish_reason": "length"}], "usage": {"prompt_tokens": 1, "completion_tokens": 2}});
    let r = openai_chat::decode_reply(&c.to_string()).unwrap();
    assert_eq!(r.stop, Stop::Length);
    let m: Value = serde_json::from_slice(&anthropic::write_reply(&r, "cm", &info())).unwrap();
    assert_eq!(m["stop_reason"], "max_tokens");
    assert_eq!(m["content"], json!([{"type": "text", "text": "Hello"}]));
    assert_eq!(m["model"], "cm");
    let resp: Value = serde_json::from_slice(&responses::write_reply(&r, CM, &info())).unwrap();
    assert_eq!(resp["status"], "incomplete");

    assert!(matches!(
        openai_chat::decode_reply(r#"{"error":{"message":"x"}}"#),
        Err(Some(_))
    ));
    assert!(matches!(
        anthropic::decode_reply(
            r#"{"type":"error","error":{"type":"overloaded_error","message":"x"}}"#
        ),
        Err(Some(_))
    ));
    assert!(matches!(anthropic::decode_reply("[1]"), Err(None)));
}
