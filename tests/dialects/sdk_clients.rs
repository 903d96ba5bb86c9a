//! The dialects driven by the official Python SDKs (`tests/sdk/`): the
//! anthropic SDK on `/v1/messages`, the openai SDK on `/v1/responses` and on
//! chat completions to an Anthropic provider, each to both provider kinds;
//! and the mock itself checked against the same SDKs.

use super::*;

both_providers!(
    anthropic_sdk_create,
    anthropic_sdk_stream,
    anthropic_sdk_tool_round_trip,
    anthropic_sdk_tool_stream,
    responses_sdk_create,
    responses_sdk_stream,
    responses_sdk_tool_round_trip,
    responses_sdk_tool_stream,
);

// ---- anthropic SDK -------------------------------------------------------

async fn anthropic_sdk_create(p: &str) {
    let Some(py) = sdk::python() else { return };
    let e = setup().await;
    let model = format!("{p}/usage:12:34");
    let out = e.sdk(&py, "anthropic_messages", "create", &model).await;
    assert_eq!(out["text"], "Hello world", "{out}");
    assert_eq!(out["stop_reason"], "end_turn", "{out}");
    assert_eq!(out["usage"]["input_tokens"], 12, "{out}");
    assert_eq!(out["usage"]["output_tokens"], 34, "{out}");
    let raw = &out["raw"];
    assert_eq!(raw["type"], "message", "{raw}");
    assert_eq!(raw["role"], "assistant", "{raw}");
    assert_eq!(
        raw["model"], model,
        "answers name the model as the client did"
    );
    assert_no_empty_text(raw);
    assert_usage_info(&raw["_usage_info"], 12, 34);

    let up = e.upstream(p, 1);
    assert_eq!(up[0].body["model"], "usage:12:34");
    assert_eq!(up[0].body["max_tokens"], 256);
    assert_record(&e.records(1).await[0], "messages", &model, 12, 34);
}

async fn anthropic_sdk_stream(p: &str) {
    let Some(py) = sdk::python() else { return };
    let e = setup().await;
    let model = format!("{p}/usage:12:34");
    let out = e.sdk(&py, "anthropic_messages", "stream", &model).await;
    let raw = &out["raw"];
    let types = &raw["types"];
    assert_eq!(types[0], "message_start", "{types}");
    assert_eq!(
        types.as_array().unwrap().last().unwrap(),
        "message_stop",
        "{types}"
    );
    let (start, delta) = (
        position(types, "content_block_start"),
        position(types, "content_block_delta"),
    );
    let (stop, msg_delta) = (
        position(types, "content_block_stop"),
        position(types, "message_delta"),
    );
    assert!(start < delta && delta < stop && stop < msg_delta, "{types}");
    assert!(
        !types.as_array().unwrap().contains(&json!("error")),
        "{raw}"
    );
    assert_eq!(raw["text"], "Hello world", "{raw}");
    let events = &raw["events"];
    assert_eq!(event(events, "message_start")["message"]["model"], model);
    assert_eq!(
        event(events, "content_block_delta")["delta"]["type"],
        "text_delta"
    );
    let md = event(events, "message_delta");
    assert_eq!(md["delta"]["stop_reason"], "end_turn", "{md}");
    assert_eq!(md["usage"]["output_tokens"], 34, "{md}");
    assert_usage_info(&md["usage"]["_usage_info"], 12, 34);

    let helper = &out["helper"];
    assert_eq!(helper["text"], "Hello world", "{helper}");
    assert_eq!(helper["stop_reason"], "end_turn", "{helper}");
    assert_eq!(helper["final"]["usage"]["output_tokens"], 34, "{helper}");
    assert_eq!(helper["final"]["usage"]["input_tokens"], 12, "{helper}");

    for c in e.upstream(p, 2) {
        assert_eq!(c.body["stream"], true);
        if p == "aiml" {
            assert_eq!(c.body["stream_options"]["include_usage"], true);
        }
    }
    for rec in e.records(2).await {
        assert_record(&rec, "messages", &model, 12, 34);
    }
}

async fn anthropic_sdk_tool_round_trip(p: &str) {
    let Some(py) = sdk::python() else { return };
    let e = setup().await;
    let model = format!("{p}/tool+usage:15:25");
    let out = e.sdk(&py, "anthropic_messages", "tool", &model).await;
    assert_eq!(out["stop_reason"], "tool_use", "{out}");
    let uses = out["tool_uses"].as_array().expect("tool uses");
    assert_eq!(uses.len(), 1, "{out}");
    assert_eq!(uses[0]["name"], "get_weather");
    assert_eq!(uses[0]["input"], json!({"city": "Paris"}));
    assert!(uses[0]["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_no_empty_text(&out["first"]);
    assert_eq!(out["second_text"], "Tool said: sunny", "{out}");
    assert_eq!(out["second_stop_reason"], "end_turn", "{out}");

    let up = e.upstream(p, 2);
    let schema: Value = serde_json::from_str(WEATHER_SCHEMA).unwrap();
    if p == "anth" {
        assert_eq!(up[0].body["tools"][0]["name"], "get_weather");
        assert_eq!(up[0].body["tools"][0]["input_schema"], schema);
        let last = up[1].body["messages"].as_array().unwrap().last().unwrap();
        assert_eq!(last["content"][0]["type"], "tool_result", "{last}");
        assert_eq!(last["content"][0]["tool_use_id"], "toolu_mock1", "{last}");
    } else {
        let tool = &up[0].body["tools"][0];
        assert_eq!(tool["type"], "function", "{tool}");
        assert_eq!(tool["function"]["name"], "get_weather", "{tool}");
        assert_eq!(tool["function"]["parameters"], schema, "{tool}");
        assert_chat_history_has_the_call(&up[1].body);
    }
    for rec in e.records(2).await {
        assert_record(&rec, "messages", &model, 15, 25);
    }
}

async fn anthropic_sdk_tool_stream(p: &str) {
    let Some(py) = sdk::python() else { return };
    let e = setup().await;
    let model = format!("{p}/tool+usage:15:25");
    let out = e
        .sdk(&py, "anthropic_messages", "tool_stream", &model)
        .await;
    let raw = &out["raw"];
    let events = raw["events"].as_array().unwrap();
    let start = events
        .iter()
        .find(|ev| ev["type"] == "content_block_start" && ev["content_block"]["type"] == "tool_use")
        .unwrap_or_else(|| panic!("no tool_use block in {raw}"));
    assert_eq!(start["content_block"]["name"], "get_weather");
    assert!(
        events
            .iter()
            .any(|ev| ev["delta"]["type"] == "input_json_delta"),
        "{raw}"
    );
    assert_eq!(json_of(&raw["partial_json"]), json!({"city": "Paris"}));
    let md = event(&raw["events"], "message_delta");
    assert_eq!(md["delta"]["stop_reason"], "tool_use", "{md}");
    assert_usage_info(&md["usage"]["_usage_info"], 15, 25);

    let helper = &out["helper"];
    assert_eq!(helper["stop_reason"], "tool_use", "{helper}");
    assert_eq!(helper["tool_uses"][0]["name"], "get_weather", "{helper}");
    assert_eq!(helper["tool_uses"][0]["input"], json!({"city": "Paris"}));
    assert_no_empty_text(&helper["final"]);
    e.upstream(p, 2);
    for rec in e.records(2).await {
        assert_record(&rec, "messages", &model, 15, 25);
    }
}

// ---- openai SDK, Responses ------------------------------------------------

async fn responses_sdk_create(p: &str) {
    let Some(py) = sdk::python() else { return };
    let e = setup().await;
    let model = format!("{p}/usage:12:34");
    let out = e.sdk(&py, "openai_responses", "create", &model).await;
    assert_eq!(out["output_text"], "Hello world", "{out}");
    assert_eq!(out["status"], "completed", "{out}");
    assert_eq!(out["usage"]["input_tokens"], 12, "{out}");
    assert_eq!(out["usage"]["output_tokens"], 34, "{out}");
    assert_eq!(out["usage"]["total_tokens"], 46, "{out}");
    let raw = &out["raw"];
    assert_eq!(raw["object"], "response", "{raw}");
    assert_eq!(raw["model"], model, "{raw}");
    assert_eq!(raw["output"][0]["type"], "message", "{raw}");
    assert_eq!(raw["output"][0]["content"][0]["type"], "output_text");
    assert_usage_info(&raw["_usage_info"], 12, 34);

    let up = e.upstream(p, 1);
    let cap = &up[0].body;
    assert!(
        cap["max_tokens"] == 256 || cap["max_completion_tokens"] == 256,
        "max_output_tokens becomes the upstream's cap: {cap}"
    );
    assert_record(&e.records(1).await[0], "responses", &model, 12, 34);
}

async fn responses_sdk_stream(p: &str) {
    let Some(py) = sdk::python() else { return };
    let e = setup().await;
    let model = format!("{p}/usage:12:34");
    let out = e.sdk(&py, "openai_responses", "stream", &model).await;
    let raw = &out["raw"];
    let types = &raw["types"];
    assert_eq!(types[0], "response.created", "{types}");
    assert_eq!(
        types.as_array().unwrap().last().unwrap(),
        "response.completed",
        "{types}"
    );
    let added = position(types, "response.output_item.added");
    let delta = position(types, "response.output_text.delta");
    let done = position(types, "response.output_item.done");
    assert!(added < delta && delta < done, "{types}");
    let mut last = -1;
    for ev in raw["events"].as_array().unwrap() {
        let n = ev["sequence_number"].as_i64().expect("sequence_number");
        assert!(n > last, "sequence numbers increase: {types}");
        last = n;
    }
    assert_eq!(raw["text"], "Hello world", "{raw}");
    let done = &raw["completed"];
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["model"], model, "{done}");
    assert_eq!(done["output"][0]["content"][0]["text"], "Hello world");
    assert_eq!(done["usage"]["input_tokens"], 12, "{done}");
    assert_eq!(done["usage"]["output_tokens"], 34, "{done}");
    assert_usage_info(&done["usage"]["_usage_info"], 12, 34);
    assert_eq!(out["helper"]["text"], "Hello world", "{out}");

    for c in e.upstream(p, 2) {
        assert_eq!(c.body["stream"], true);
    }
    for rec in e.records(2).await {
        assert_record(&rec, "responses", &model, 12, 34);
    }
}

async fn responses_sdk_tool_round_trip(p: &str) {
    let Some(py) = sdk::python() else { return };
    let e = setup().await;
    let model = format!("{p}/tool+usage:15:25");
    let out = e.sdk(&py, "openai_responses", "tool", &model).await;
    let calls = out["calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 1, "{out}");
    assert_eq!(calls[0]["type"], "function_call");
    assert_eq!(calls[0]["name"], "get_weather");
    assert!(calls[0]["call_id"].as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(out["arguments"], json!({"city": "Paris"}));
    assert_eq!(out["second_text"], "Tool said: sunny", "{out}");

    let up = e.upstream(p, 2);
    let schema: Value = serde_json::from_str(WEATHER_SCHEMA).unwrap();
    if p == "anth" {
        assert_eq!(up[0].body["tools"][0]["name"], "get_weather");
        assert_eq!(up[0].body["tools"][0]["input_schema"], schema);
        let msgs = up[1].body["messages"].as_array().unwrap();
        let last = msgs.last().unwrap();
        assert_eq!(last["role"], "user", "{last}");
        assert_eq!(last["content"][0]["type"], "tool_result", "{last}");
        assert_eq!(last["content"][0]["tool_use_id"], "toolu_mock1", "{last}");
    } else {
        let tool = &up[0].body["tools"][0];
        assert_eq!(tool["function"]["name"], "get_weather", "{tool}");
        assert_eq!(tool["function"]["parameters"], schema, "{tool}");
        assert_chat_history_has_the_call(&up[1].body);
    }
    for rec in e.records(2).await {
        assert_record(&rec, "responses", &model, 15, 25);
    }
}

async fn responses_sdk_tool_stream(p: &str) {
    let Some(py) = sdk::python() else { return };
    let e = setup().await;
    let model = format!("{p}/tool+usage:15:25");
    let out = e.sdk(&py, "openai_responses", "tool_stream", &model).await;
    position(&out["types"], "response.function_call_arguments.delta");
    assert_eq!(json_of(&out["arguments"]), json!({"city": "Paris"}));
    let done = &out["completed"];
    let call = done["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == "function_call")
        .unwrap_or_else(|| panic!("no function_call in {done}"));
    assert_eq!(call["name"], "get_weather");
    assert_eq!(json_of(&call["arguments"]), json!({"city": "Paris"}));
    assert_usage_info(&done["usage"]["_usage_info"], 15, 25);
    e.upstream(p, 1);
    assert_record(&e.records(1).await[0], "responses", &model, 15, 25);
}

// ---- openai SDK, chat completions to an Anthropic provider ---------------

#[tokio::test]
async fn chat_sdk_streams_a_tool_call_from_anthropic() {
    let Some(py) = sdk::python() else { return };
    let e = setup().await;
    // Anthropic's cache tokens are input: prompt = 15 + 3 + 4.
    let model = "anth/tool+usage:15:25+cache:3:4";
    let out = e.sdk(&py, "openai_chat", "tool_stream", model).await;
    let calls = out["calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 1, "{out}");
    assert_eq!(calls[0]["name"], "get_weather", "{out}");
    assert!(calls[0]["id"].as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(json_of(&calls[0]["arguments"]), json!({"city": "Paris"}));
    assert_eq!(out["finish_reason"], "tool_calls", "{out}");
    assert_eq!(out["text"], "Let me check.", "{out}");
    let usage = &out["usage"];
    assert_eq!(usage["prompt_tokens"], 22, "{usage}");
    assert_eq!(usage["completion_tokens"], 25, "{usage}");
    assert_eq!(usage["total_tokens"], 47, "{usage}");
    assert_usage_info(&usage["_usage_info"], 22, 25);
    for c in out["chunks"].as_array().unwrap() {
        assert_eq!(c["model"], model, "{c}");
    }

    let up = e.upstream("anth", 1);
    let body = &up[0].body;
    assert_eq!(body["stream"], true);
    assert_eq!(body["max_tokens"], 256);
    assert_eq!(body["tools"][0]["name"], "get_weather", "{body}");
    assert!(body.get("stream_options").is_none(), "{body}");
    assert_record(&e.records(1).await[0], "chat/completions", model, 22, 25);
}

#[tokio::test]
async fn chat_sdk_tool_round_trip_through_anthropic() {
    let Some(py) = sdk::python() else { return };
    let e = setup().await;
    let model = "anth/tool+usage:15:25";
    let out = e.sdk(&py, "openai_chat", "tool", model).await;
    let choice = &out["first"]["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{out}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather", "{out}");
    assert_eq!(
        json_of(&call["function"]["arguments"]),
        json!({"city": "Paris"})
    );
    assert_eq!(out["first"]["usage"]["prompt_tokens"], 15, "{out}");
    assert_usage_info(&out["first"]["_usage_info"], 15, 25);
    assert_eq!(out["second_text"], "Tool said: sunny", "{out}");

    let up = e.upstream("anth", 2);
    let msgs = up[1].body["messages"].as_array().unwrap();
    let asked = msgs
        .iter()
        .flat_map(|m| m["content"].as_array().into_iter().flatten())
        .find(|b| b["type"] == "tool_use")
        .unwrap_or_else(|| panic!("no tool_use in {msgs:?}"));
    assert_eq!(asked["id"], "toolu_mock1");
    assert_eq!(asked["input"], json!({"city": "Paris"}));
    let last = msgs.last().unwrap();
    assert_eq!(last["role"], "user", "{last}");
    assert_eq!(last["content"][0]["type"], "tool_result", "{last}");
    assert_eq!(last["content"][0]["tool_use_id"], "toolu_mock1", "{last}");
    for rec in e.records(2).await {
        assert_record(&rec, "chat/completions", model, 15, 25);
    }
}

// ---- the mock itself, as the official SDKs read it -----------------------

#[tokio::test]
async fn the_mock_speaks_anthropic_to_the_sdk() {
    let Some(py) = sdk::python() else { return };
    let mock = Mock::start().await;
    let url = format!("{}/anth", mock.url);
    let headers = json!({"x-api-key": "k", "anthropic-version": "2023-06-01"}).to_string();
    for mode in ["create", "stream", "tool", "tool_stream"] {
        let out = sdk::run(
            &py,
            "anthropic_messages",
            &[
                ("TOLLGATE_URL", &url),
                ("TOLLGATE_KEY", "k"),
                ("HEADERS", &headers),
                ("MODEL", "tool+usage:3:4+cache:1:2"),
                ("MODE", mode),
            ],
        )
        .await;
        match mode {
            "create" => {
                assert_eq!(out["stop_reason"], "tool_use", "{out}");
                assert_eq!(out["usage"]["cache_read_input_tokens"], 2, "{out}");
            }
            "tool" => assert_eq!(out["second_text"], "Tool said: sunny", "{out}"),
            "stream" | "tool_stream" => {
                let h = &out["helper"];
                assert_eq!(h["text"], "Let me check.", "{out}");
                assert_eq!(h["tool_uses"][0]["input"], json!({"city": "Paris"}));
                assert_eq!(h["final"]["usage"]["input_tokens"], 3, "{out}");
                assert_eq!(h["final"]["usage"]["output_tokens"], 4, "{out}");
            }
            _ => unreachable!(),
        }
    }
}

#[tokio::test]
async fn the_mock_streams_chat_tool_calls_to_the_sdk() {
    let Some(py) = sdk::python() else { return };
    let mock = Mock::start().await;
    let url = format!("{}/aiml", mock.url);
    let env = |mode| {
        [
            ("TOLLGATE_URL", url.clone()),
            ("TOLLGATE_KEY", "k".to_owned()),
            ("MODEL", "tool+usage:3:4".to_owned()),
            ("MODE", mode),
        ]
    };
    let e = env("tool_stream".into());
    let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = sdk::run(&py, "openai_chat", &e).await;
    assert_eq!(out["calls"][0]["name"], "get_weather", "{out}");
    assert_eq!(
        json_of(&out["calls"][0]["arguments"]),
        json!({"city": "Paris"})
    );
    assert_eq!(out["finish_reason"], "tool_calls", "{out}");
    assert_eq!(out["usage"]["total_tokens"], 7, "{out}");
    let e = env("tool".into());
    let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = sdk::run(&py, "openai_chat", &e).await;
    assert_eq!(out["second_text"], "Tool said: sunny", "{out}");
}
