//! The dialects over plain HTTP (no SDK needed): answers and streams in each
//! shape, what is sent upstream, the cap, auth, errors and hostile input.

use super::*;

both_providers!(messages_over_plain_http, responses_over_plain_http);

async fn messages_over_plain_http(p: &str) {
    let e = setup().await;
    let model = format!("{p}/usage:5:6");
    let r = e.post("/v1/messages", anthropic_body(&model)).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "message", "{v}");
    assert_eq!(v["model"], model, "{v}");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "Hello world"}])
    );
    assert_eq!(v["stop_reason"], "end_turn", "{v}");
    assert_eq!(v["usage"]["input_tokens"], 5, "{v}");
    assert_eq!(v["usage"]["output_tokens"], 6, "{v}");

    let mut body = anthropic_body(&model);
    body["stream"] = json!(true);
    let r = e.post("/v1/messages", body).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = named_events(&r.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str(), "event name and type agree");
    }
    let text: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "Hello world");
    // Claude Code shows the context from these, as Anthropic's SDKs add
    // them up: message_start has the provider's count (passed through) or
    // the gateway's estimate (translated), and a count in message_delta
    // replaces it.
    let start = &events[0].1["message"]["usage"];
    assert!(start["input_tokens"].as_i64().unwrap() > 0, "{start}");
    let (_, delta) = events.iter().find(|(n, _)| n == "message_delta").unwrap();
    let input = match &delta["usage"]["input_tokens"] {
        Value::Null => &start["input_tokens"],
        n => n,
    };
    assert_eq!(input, 5, "{start} {delta}");
    assert_eq!(delta["usage"]["output_tokens"], 6, "{delta}");
    e.upstream(p, 2);
    for rec in e.records(2).await {
        assert_record(&rec, "messages", &model, 5, 6);
    }
}

async fn responses_over_plain_http(p: &str) {
    let e = setup().await;
    let model = format!("{p}/usage:5:6");
    let body = json!({"model": model, "input": "Say hello", "instructions": "Be brief",
                      "max_output_tokens": 100, "store": false});
    let r = e.post("/v1/responses", body.clone()).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "response", "{v}");
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(v["model"], model, "{v}");
    assert_eq!(v["output"][0]["type"], "message", "{v}");
    assert_eq!(v["output"][0]["role"], "assistant", "{v}");
    assert_eq!(v["output"][0]["content"][0]["type"], "output_text", "{v}");
    assert_eq!(v["output"][0]["content"][0]["text"], "Hello world", "{v}");
    assert_eq!(v["usage"]["input_tokens"], 5, "{v}");
    assert_eq!(v["usage"]["output_tokens"], 6, "{v}");
    assert_eq!(v["usage"]["total_tokens"], 11, "{v}");
    assert_usage_info(&v["_usage_info"], 5, 6);

    let up = e.upstream(p, 1);
    let sent = &up[0].body;
    if p == "anth" {
        assert_eq!(sent["system"], "Be brief", "{sent}");
        assert_eq!(sent["max_tokens"], 100, "{sent}");
        assert_eq!(sent["messages"][0]["role"], "user", "{sent}");
    } else {
        let msgs = sent["messages"].as_array().unwrap();
        assert_eq!(msgs[0]["role"], "system", "{sent}");
        assert_eq!(msgs[0]["content"], "Be brief", "{sent}");
        assert_eq!(msgs[1]["role"], "user", "{sent}");
        assert_eq!(msgs[1]["content"], "Say hello", "{sent}");
    }
    for field in ["store", "instructions", "input", "max_output_tokens"] {
        assert!(
            sent.get(field).is_none(),
            "{field} is no chat field: {sent}"
        );
    }
    assert_record(&e.records(1).await[0], "responses", &model, 5, 6);
}

#[tokio::test]
async fn chat_completions_reach_an_anthropic_provider() {
    let e = setup().await;
    let model = "anth/usage:5:6";
    let chat = json!({"model": model, "max_tokens": 50, "stop": ["END"],
                      "messages": [{"role": "system", "content": "Be brief"},
                                   {"role": "user", "content": "Say hello"}]});
    let r = e.post("/v1/chat/completions", chat.clone()).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion", "{v}");
    assert_eq!(v["model"], model, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello world", "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    assert_eq!(v["usage"]["prompt_tokens"], 5, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 6, "{v}");
    assert_usage_info(&v["_usage_info"], 5, 6);

    let mut streamed = chat;
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let r = e.post("/v1/chat/completions", streamed).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let chunks = data_events(&text);
    let said: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(said, "Hello world", "{text}");
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "stop"));
    let usage = chunks
        .iter()
        .find(|c| c["usage"].is_object())
        .map(|c| &c["usage"])
        .unwrap_or_else(|| panic!("no usage chunk: {text}"));
    assert_eq!(usage["prompt_tokens"], 5, "{text}");
    assert_eq!(usage["completion_tokens"], 6, "{text}");

    let up = e.upstream("anth", 2);
    for c in &up {
        assert_eq!(c.body["system"], "Be brief", "{}", c.body);
        assert_eq!(c.body["max_tokens"], 50, "{}", c.body);
        assert_eq!(c.body["stop_sequences"], json!(["END"]), "{}", c.body);
        assert!(c.body.get("stop").is_none(), "{}", c.body);
        assert!(c.body.get("stream_options").is_none(), "{}", c.body);
        let roles: Vec<&Value> = c.body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| &m["role"])
            .collect();
        assert_eq!(roles, vec!["user"], "no system role at Anthropic");
    }
    for rec in e.records(2).await {
        assert_record(&rec, "chat/completions", model, 5, 6);
    }
}

#[tokio::test]
async fn anthropic_cache_tokens_are_charged_as_input() {
    let e = setup().await;
    let model = "anth/usage:10:20+cache:30:40";
    let r = e.post("/v1/messages", anthropic_body(model)).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["usage"]["cache_creation_input_tokens"], 30,
        "passed through"
    );
    assert_eq!(v["usage"]["cache_read_input_tokens"], 40, "passed through");
    assert_usage_info(&v["_usage_info"], 80, 20);
    assert_record(&e.records(1).await[0], "messages", model, 80, 20);
}

// ---- plain HTTP: what is sent upstream -------------------------------------

#[tokio::test]
async fn messages_pass_through_to_an_anthropic_provider() {
    let e = setup().await;
    let mut body = anthropic_body("anth/usage:5:6");
    body["metadata"] = json!({"user_id": "u"});
    body["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
    body["context_management"] = json!({"edits": []});
    body["max_tokens"] = json!(2000);
    let r =
        e.s.client
            .post(e.s.url("/v1/messages?beta=true"))
            .header("x-api-key", &e.key)
            .header("anthropic-version", "2023-06-01")
            .header("anthropic-beta", "context-management-2025-06-27")
            .json(&body)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let up = e.upstream("anth", 1);
    let sent = &up[0].body;
    assert_eq!(sent["model"], "usage:5:6");
    assert_eq!(sent["metadata"], json!({"user_id": "u"}), "{sent}");
    assert_eq!(sent["thinking"], body["thinking"], "{sent}");
    assert_eq!(sent["context_management"], body["context_management"]);
    assert_eq!(sent["max_tokens"], 2000, "a cap the plan allows is kept");
    assert_eq!(sent["messages"], body["messages"]);
    assert_eq!(
        up[0].headers["anthropic-beta"], "context-management-2025-06-27",
        "the betas the client asked for reach Anthropic"
    );
}

#[tokio::test]
async fn messages_are_translated_for_an_openai_provider() {
    let e = setup().await;
    let mut body = anthropic_body("aiml/usage:5:6");
    body["system"] = json!([{"type": "text", "text": "Be brief"}]);
    body["stop_sequences"] = json!(["END"]);
    body["temperature"] = json!(0.5);
    body["metadata"] = json!({"user_id": "u"});
    body["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
    let r = e.post("/v1/messages?beta=true", body).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let up = e.upstream("aiml", 1);
    let sent = &up[0].body;
    assert_eq!(sent["model"], "usage:5:6", "{sent}");
    assert_eq!(sent["max_tokens"], 100, "{sent}");
    assert_eq!(sent["stop"], json!(["END"]), "{sent}");
    assert_eq!(sent["temperature"], 0.5, "{sent}");
    let msgs = sent["messages"].as_array().unwrap();
    assert_eq!(msgs[0]["role"], "system", "{sent}");
    assert_eq!(msgs[0]["content"], "Be brief", "{sent}");
    assert_eq!(msgs[1]["role"], "user", "{sent}");
    assert_eq!(msgs[1]["content"], "Say hello", "{sent}");
    for field in ["stop_sequences", "system", "thinking", "stream"] {
        let absent_or_false = sent.get(field).is_none() || sent[field] == false;
        assert!(absent_or_false, "{field} stays out of a chat body: {sent}");
    }
}

#[tokio::test]
async fn a_large_cap_is_lowered_to_the_balance_never_refused() {
    // Claude Code asks for 128000 tokens; a free plan has 10000.
    let e = setup_on("free").await;
    let mut big = anthropic_body("anth/x");
    big["max_tokens"] = json!(128000);
    let r = e.post("/v1/messages", big.clone()).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    big["model"] = json!("aiml/x");
    let r = e.post("/v1/messages", big).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let responses = json!({"model": "aiml/x", "input": "hi", "max_output_tokens": 128000});
    let r = e.post("/v1/responses", responses).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let responses = json!({"model": "anth/x", "input": "hi", "max_output_tokens": 128000});
    let r = e.post("/v1/responses", responses).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let calls = e.mock.generation_calls();
    assert_eq!(calls.len(), 4);
    for c in calls {
        let cap = c.body["max_tokens"]
            .as_u64()
            .or(c.body["max_completion_tokens"].as_u64())
            .unwrap_or_else(|| panic!("no cap sent: {}", c.body));
        assert!((9000..10000).contains(&cap), "cap {cap} in {}", c.body);
    }
}

// ---- plain HTTP: auth, errors, hostile input ----------------------------

#[tokio::test]
async fn messages_accept_x_api_key_on_every_path() {
    let e = setup().await;
    for path in ["/v1/messages", "/llm/messages", "/messages"] {
        let r =
            e.s.client
                .post(e.s.url(path))
                .header("x-api-key", &e.key)
                .header("anthropic-version", "2023-06-01")
                .json(&anthropic_body("anth/m"))
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["content"][0]["text"], "Hello world", "{path}: {v}");
    }
    for path in ["/v1/responses", "/llm/responses", "/responses"] {
        let r = e
            .post(path, json!({"model": "anth/m", "input": "hi"}))
            .await;
        assert_eq!(r.status(), 200, "{path}");
    }
    e.upstream("anth", 6);
}

#[tokio::test]
async fn messages_errors_are_in_anthropic_shape() {
    let e = setup().await;
    let url = e.s.url("/v1/messages");
    let c = &e.s.client;
    let body = anthropic_body("anth/m");

    let r = c.post(&url).json(&body).send().await.unwrap();
    assert_anthropic_error(r, 401, "authentication_error").await;
    let r = c
        .post(&url)
        .header("x-api-key", "sk_live_not_a_key_at_all_not_a_key_at_all_000")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_anthropic_error(r, 401, "authentication_error").await;

    let r = e.post_raw("/v1/messages", "{\"model\": \"anth/m\",").await;
    assert_anthropic_error(r, 400, "invalid_request_error").await;
    let mut no_cap = body.clone();
    no_cap.as_object_mut().unwrap().remove("max_tokens");
    let r = e.post("/v1/messages", no_cap).await;
    let v = assert_anthropic_error(r, 400, "invalid_request_error").await;
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_tokens"));
    assert!(e.mock.generation_calls().is_empty());

    for p in ["anth", "aiml"] {
        let r = e
            .post("/v1/messages", anthropic_body(&format!("{p}/error:429")))
            .await;
        assert!(r.headers().contains_key("retry-after"), "{p}");
        assert_anthropic_error(r, 429, "rate_limit_error").await;
        let r = e
            .post("/v1/messages", anthropic_body(&format!("{p}/error:404")))
            .await;
        assert_anthropic_error(r, 404, "not_found_error").await;
    }
    // A stream that fails before it starts is a plain error too.
    let mut streamed = anthropic_body("anth/error:429");
    streamed["stream"] = json!(true);
    let r = e.post("/v1/messages", streamed).await;
    assert_anthropic_error(r, 429, "rate_limit_error").await;
}

#[tokio::test]
async fn ambiguous_keys_are_refused_on_both_dialects() {
    let e = setup().await;
    let rest_messages = r#""max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]"#;
    let rest_responses = r#""input": "hi""#;
    for (path, rest) in [
        ("/v1/messages", rest_messages),
        ("/v1/responses", rest_responses),
    ] {
        for head in [
            r#""model": "anth/a", "model": "aiml/b""#,
            r#""model": "anth/a", "mod\u0065l": "aiml/b""#,
            r#""model": "anth/a", "Model": "aiml/b""#,
            r#""model": "anth/a", "stream": false, "stream": true"#,
        ] {
            let body = format!("{{{head}, {rest}}}");
            let r = e.post_raw(path, &body).await;
            if path == "/v1/messages" {
                assert_anthropic_error(r, 400, "invalid_request_error").await;
            } else {
                let v = assert_error(r, 400).await;
                assert_eq!(v["error"]["type"], "invalid_request_error", "{body}: {v}");
            }
        }
    }
    let r = e
        .post_raw(
            "/v1/messages",
            r#"{"model": "anth/a", "max_tokens": 10, "max_tokens": 100000, "messages": []}"#,
        )
        .await;
    assert_anthropic_error(r, 400, "invalid_request_error").await;
    let r = e
        .post_raw(
            "/v1/responses",
            r#"{"model": "anth/a", "input": "hi", "max_output_tokens": 1, "max_output_tokens": 9}"#,
        )
        .await;
    assert_error(r, 400).await;
    assert!(e.mock.generation_calls().is_empty());
}

#[tokio::test]
async fn deep_nesting_is_refused_on_both_dialects() {
    let e = setup().await;
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let r = e
        .post_raw(
            "/v1/messages",
            &format!(
                r#"{{"model": "anth/a", "max_tokens": 10, "metadata": {deep}, "messages": [{{"role": "user", "content": "hi"}}]}}"#
            ),
        )
        .await;
    assert_anthropic_error(r, 400, "invalid_request_error").await;
    let r = e
        .post_raw(
            "/v1/responses",
            &format!(r#"{{"model": "anth/a", "input": "hi", "metadata": {deep}}}"#),
        )
        .await;
    assert_error(r, 400).await;
    assert!(e.mock.generation_calls().is_empty());

    // Within the limit, nesting is forwarded as it came.
    let fine = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let r = e
        .post_raw(
            "/v1/messages",
            &format!(
                r#"{{"model": "anth/a", "max_tokens": 10, "metadata": {fine}, "messages": [{{"role": "user", "content": "hi"}}]}}"#
            ),
        )
        .await;
    assert_eq!(r.status(), 200);
    e.upstream("anth", 1);
}

#[tokio::test]
async fn count_tokens_answers_an_estimate() {
    let e = setup().await;
    let short = json!({"model": "anth/m",
                       "messages": [{"role": "user", "content": "Hello there"}]});
    let long = json!({"model": "anth/m", "system": "You are a helpful assistant.",
                      "messages": [{"role": "user",
                                    "content": "Hello there, ".repeat(50)}]});
    let mut counts = vec![];
    for body in [short, long] {
        let r = e.post("/v1/messages/count_tokens", body).await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        let n = v["input_tokens"].as_u64().unwrap_or_else(|| panic!("{v}"));
        assert!(n > 0, "{v}");
        counts.push(n);
    }
    assert!(counts[1] > counts[0], "{counts:?}");
    assert!(e.mock.generation_calls().is_empty(), "an estimate, no call");
}

#[tokio::test]
async fn models_answer_anthropic_shape_to_anthropic_clients() {
    let e = setup().await;
    let r =
        e.s.client
            .get(e.s.url("/v1/models"))
            .header("x-api-key", &e.key)
            .header("anthropic-version", "2023-06-01")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["has_more"], false, "{v}");
    let data = v["data"].as_array().expect("data");
    assert!(data.iter().any(|m| m["id"] == "aiml/m1"), "{v}");
    assert!(data.iter().any(|m| m["id"] == "anth/m1"), "{v}");
    for m in data {
        assert_eq!(m["type"], "model", "{m}");
        assert!(m["display_name"].as_str().is_some_and(|n| !n.is_empty()));
        let created = m["created_at"].as_str().expect("created_at");
        assert!(chrono::DateTime::parse_from_rfc3339(created).is_ok(), "{m}");
    }
    let v: Value = e.s.get_as("/v1/models", &e.key).await.json().await.unwrap();
    assert_eq!(v["object"], "list", "without the header, OpenAI's shape");
}

#[tokio::test]
async fn stored_responses_are_refused() {
    let e = setup().await;
    for extra in [
        json!({"previous_response_id": "resp_123"}),
        json!({"store": true}),
    ] {
        let mut body = json!({"model": "aiml/m", "input": "hi"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let r = e.post("/v1/responses", body).await;
        let v = assert_error(r, 400).await;
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    }
    assert!(e.mock.generation_calls().is_empty());
}

#[tokio::test]
async fn stop_reasons_are_translated() {
    let e = setup().await;
    let v: Value = e
        .post("/v1/messages", anthropic_body("aiml/length"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["stop_reason"], "max_tokens", "chat length: {v}");
    let chat = json!({"model": "anth/length", "messages": [{"role": "user", "content": "hi"}]});
    let v: Value = e
        .post("/v1/chat/completions", chat)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    for p in ["aiml", "anth"] {
        let body = json!({"model": format!("{p}/length"), "input": "hi"});
        let v: Value = e.post("/v1/responses", body).await.json().await.unwrap();
        assert_eq!(v["status"], "incomplete", "{v}");
        assert_eq!(
            v["incomplete_details"]["reason"], "max_output_tokens",
            "{v}"
        );
    }
    let mut streamed = anthropic_body("aiml/length");
    streamed["stream"] = json!(true);
    let text = e.post("/v1/messages", streamed).await.text().await.unwrap();
    let events = named_events(&text);
    let md = events
        .iter()
        .find(|(n, _)| n == "message_delta")
        .unwrap_or_else(|| panic!("no message_delta: {text}"));
    assert_eq!(md.1["delta"]["stop_reason"], "max_tokens", "{text}");
}

#[tokio::test]
async fn tool_choice_and_images_are_translated() {
    let e = setup().await;
    let weather = json!({"name": "get_weather", "description": "The weather",
                         "input_schema": serde_json::from_str::<Value>(WEATHER_SCHEMA).unwrap()});
    let image = json!({"type": "image",
                       "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}});
    let body = json!({"model": "aiml/m", "max_tokens": 100, "tools": [weather],
                      "tool_choice": {"type": "tool", "name": "get_weather"},
                      "messages": [{"role": "user", "content": [
                          {"type": "text", "text": "What is this?"}, image]}]});
    let r = e.post("/v1/messages", body).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let chat = json!({"model": "anth/m", "tool_choice": "required",
                      "tools": [{"type": "function", "function": {"name": "get_weather",
                                 "parameters": serde_json::from_str::<Value>(WEATHER_SCHEMA).unwrap()}}],
                      "messages": [{"role": "user", "content": [
                          {"type": "text", "text": "What is this?"},
                          {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]});
    let r = e.post("/v1/chat/completions", chat).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let calls = e.mock.generation_calls();
    let to_chat = &calls[0].body;
    assert_eq!(
        to_chat["tool_choice"],
        json!({"type": "function", "function": {"name": "get_weather"}}),
        "{to_chat}"
    );
    let parts = &to_chat["messages"][0]["content"];
    assert_eq!(
        parts[0],
        json!({"type": "text", "text": "What is this?"}),
        "{to_chat}"
    );
    assert_eq!(parts[1]["type"], "image_url", "{to_chat}");
    assert_eq!(
        parts[1]["image_url"]["url"], "data:image/png;base64,iVBORw0KGgo=",
        "{to_chat}"
    );
    let to_anth = &calls[1].body;
    assert_eq!(to_anth["tool_choice"], json!({"type": "any"}), "{to_anth}");
    assert_eq!(to_anth["tools"][0]["name"], "get_weather", "{to_anth}");
    let blocks = &to_anth["messages"][0]["content"];
    assert_eq!(
        blocks[0],
        json!({"type": "text", "text": "What is this?"}),
        "{to_anth}"
    );
    assert_eq!(blocks[1], image, "{to_anth}");
}

#[tokio::test]
async fn codex_style_responses_requests_are_accepted() {
    // Codex sends store: false, include, reasoning and tools that are not
    // functions: a chat provider gets the function tools, and the call works.
    let e = setup().await;
    for p in ["aiml", "anth"] {
        let body = json!({
            "model": format!("{p}/m"), "instructions": "You are Codex.", "store": false,
            "include": ["reasoning.encrypted_content"], "reasoning": {"effort": "low"},
            "input": [{"type": "message", "role": "user",
                       "content": [{"type": "input_text", "text": "hi"}]}],
            "tools": [
                {"type": "function", "name": "get_weather", "parameters":
                    serde_json::from_str::<Value>(WEATHER_SCHEMA).unwrap()},
                {"type": "web_search"}, {"type": "local_shell"},
                {"type": "custom", "name": "apply_patch", "description": "patch files"}
            ],
            "tool_choice": "auto", "parallel_tool_calls": false, "stream": true
        });
        let r = e.post("/v1/responses", body).await;
        assert_eq!(r.status(), 200, "{p}");
        let text = r.text().await.unwrap();
        let events = data_events(&text);
        assert_eq!(
            events.last().unwrap()["type"],
            "response.completed",
            "{text}"
        );
    }
    let calls = e.mock.generation_calls();
    let chat_tools = calls[0].body["tools"].as_array().unwrap();
    assert_eq!(chat_tools.len(), 1, "{}", calls[0].body);
    assert_eq!(chat_tools[0]["function"]["name"], "get_weather");
    let anth_tools = calls[1].body["tools"].as_array().unwrap();
    assert!(
        anth_tools.iter().any(|t| t["name"] == "get_weather"),
        "{}",
        calls[1].body
    );
    assert_eq!(calls[1].body["system"], "You are Codex.");
}

#[tokio::test]
async fn an_error_inside_a_stream_reaches_the_client_as_an_error_event() {
    let e = setup().await;
    for p in ["aiml", "anth"] {
        let mut body = anthropic_body(&format!("{p}/stream_error"));
        body["stream"] = json!(true);
        let r = e.post("/v1/messages", body).await;
        assert_eq!(r.status(), 200, "{p}");
        let text = r.text().await.unwrap();
        let events = named_events(&text);
        let (name, last) = events.last().unwrap();
        assert_eq!(name, "error", "{p}: {text}");
        assert_eq!(last["type"], "error", "{p}: {text}");
        assert!(last["error"]["message"].is_string(), "{p}: {text}");
        let body = json!({"model": format!("{p}/stream_error"), "input": "hi", "stream": true});
        let text = e.post("/v1/responses", body).await.text().await.unwrap();
        let events = data_events(&text);
        let last = events.last().unwrap();
        assert!(
            last["type"] == "error" || last["type"] == "response.failed",
            "{p}: {text}"
        );
    }
    for rec in e.records(4).await {
        assert_eq!(rec["outcome"], "upstream_error", "{rec}");
    }
}

/// Claude Code names models by itself (`claude-haiku-4-5-20251001` for
/// background work): an alias sends them to the Anthropic provider, and the
/// answer names the model as Claude Code did.
#[tokio::test]
async fn claude_code_model_names_follow_an_alias() {
    let e = setup().await;
    let model = "claude-haiku-4-5-20251001";
    let mut body = anthropic_body(model);
    body["stream"] = json!(true);
    let r = e.post("/v1/messages", body).await;
    assert_eq!(r.status(), 200);
    let events = named_events(&r.text().await.unwrap());
    assert_eq!(events[0].0, "message_start");
    assert_eq!(events[0].1["message"]["model"], model, "{:?}", events[0]);
    let r = e.post("/v1/messages", anthropic_body(model)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["model"], model);
    for c in e.upstream("anth", 2) {
        assert_eq!(c.body["model"], model, "{}", c.body);
    }
    for rec in e.records(2).await {
        assert_eq!(rec["provider"], "anth", "{rec}");
        assert_eq!(rec["model"], format!("anth/{model}"), "{rec}");
    }
}

/// A `response` object repeats the request's settings, as OpenAI's does
/// (the SDKs expose them: `response.instructions`, `response.tools` …),
/// whole and in the stream's `response.created` and `response.completed`.
#[tokio::test]
async fn responses_repeat_the_request_settings() {
    let e = setup().await;
    let tools = json!([{"type": "function", "name": "get_weather", "description": "Weather",
                        "parameters": {"type": "object", "properties": {}}}]);
    let mut body = json!({"model": "aiml/usage:5:6", "input": "Say hello",
        "instructions": "Be brief", "max_output_tokens": 50, "temperature": 0.25,
        "tools": tools, "tool_choice": "auto", "metadata": {"ticket": "T-1"}, "user": "u-7"});
    let check = |r: &Value| {
        assert_eq!(r["instructions"], "Be brief", "{r}");
        assert_eq!(r["max_output_tokens"], 50, "{r}");
        assert_eq!(r["temperature"], 0.25, "{r}");
        assert_eq!(r["tools"], tools, "{r}");
        assert_eq!(r["tool_choice"], "auto", "{r}");
        assert_eq!(r["metadata"], json!({"ticket": "T-1"}), "{r}");
        assert_eq!(r["user"], "u-7", "{r}");
        // What the request left out keeps OpenAI's defaults.
        assert_eq!(r["top_p"], Value::Null, "{r}");
        assert_eq!(r["parallel_tool_calls"], true, "{r}");
        assert_eq!(r["store"], false, "{r}");
    };
    let r = e.post("/v1/responses", body.clone()).await;
    assert_eq!(r.status(), 200);
    check(&r.json::<Value>().await.unwrap());

    body["stream"] = json!(true);
    let r = e.post("/v1/responses", body).await;
    assert_eq!(r.status(), 200);
    let events = named_events(&r.text().await.unwrap());
    for name in ["response.created", "response.completed"] {
        let (_, d) = events
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no {name}"));
        check(&d["response"]);
    }
}
