//! The proxy against a mock upstream: routing, bodies, streaming, errors,
//! retries, fallbacks, model lists.

mod common;
use common::mock::{use_mock, Mock};
use common::*;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;

async fn setup(
    edit: impl FnOnce(&mut tollgate::config::Config, &Mock),
) -> (Mock, TestServer, String) {
    let mock = Mock::start().await;
    let s = TestServer::start_with(|cfg| {
        use_mock(cfg, &mock, &["openrouter", "aiml", "requesty", "glama"]);
        edit(cfg, &mock);
    })
    .await;
    let (_, _, key) = s.user_with_key("alice", Some("enterprise")).await;
    (mock, s, key)
}

async fn chat(s: &TestServer, key: &str, body: Value) -> reqwest::Response {
    s.client
        .post(s.url("/llm/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Reads an SSE body into its `data:` payloads.
fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: ").map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn chat_is_routed_rewritten_and_metered() {
    let (mock, s, key) = setup(|_, _| {}).await;
    let r = chat(
        &s,
        &key,
        json!({"model": "aiml/usage:7:5", "messages": [{"role": "user", "content": "hi"}],
               "temperature": 0.5, "vendor_extension": {"keep": [1, 2]}}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["model"], "aiml/usage:7:5",
        "the answer names the model as the client did"
    );
    assert_eq!(v["choices"][0]["message"]["content"], "Hello world");
    let info = &v["_usage_info"];
    assert_eq!(info["tokens_used"], 12);
    assert_eq!(info["prompt_tokens"], 7);
    assert_eq!(info["completion_tokens"], 5);
    assert_eq!(info["provider"], "aiml");
    assert_eq!(info["request_id"], rid.as_str());
    assert_eq!(info["estimated"], false);
    assert_eq!(info["remaining_tokens"], 1_000_000 - 12);

    let calls = mock.generation_calls();
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert_eq!(c.provider, "aiml");
    assert_eq!(c.body["model"], "usage:7:5", "prefix stripped");
    assert_eq!(
        c.body["vendor_extension"],
        json!({"keep": [1, 2]}),
        "unknown fields kept"
    );
    assert_eq!(c.body["temperature"], json!(0.5));
    assert!(
        c.body["max_tokens"].as_i64().unwrap() > 0,
        "a completion cap is always sent"
    );
    assert!(
        c.body.get("stream_options").is_none(),
        "never asked for usage without stream"
    );
    assert_eq!(c.headers["authorization"], "Bearer sk-test-aiml-secret");
}

#[tokio::test]
async fn a_name_without_known_prefix_goes_whole_to_the_default_provider() {
    let (mock, s, key) = setup(|_, _| {}).await;
    let r = chat(
        &s,
        &key,
        json!({"model": "anthropic/claude", "messages": []}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let c = &mock.generation_calls()[0];
    assert_eq!(
        (c.provider.as_str(), c.body["model"].as_str().unwrap()),
        ("openrouter", "anthropic/claude")
    );
    assert_eq!(c.headers["x-title"], "tollgate");
    assert!(c.headers.contains_key("http-referer"));
}

#[tokio::test]
async fn streaming_forwards_chunks_as_they_arrive() {
    let (mock, s, key) = setup(|_, _| {}).await;
    let mut r = chat(
        &s,
        &key,
        json!({"model": "aiml/gated", "stream": true, "messages": []}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    // The upstream is held after its first content chunk: that chunk must already be here.
    let mut got = String::new();
    while !got.contains("Hello") {
        let c = tokio::time::timeout(Duration::from_secs(5), r.chunk())
            .await
            .expect("first chunk in time")
            .unwrap();
        got.push_str(std::str::from_utf8(&c.unwrap()).unwrap());
    }
    assert_eq!(
        mock.state.finished_streams.load(Ordering::SeqCst),
        0,
        "upstream has not finished yet"
    );
    mock.state.gate.notify_one();
    while let Some(c) = r.chunk().await.unwrap() {
        got.push_str(std::str::from_utf8(&c).unwrap());
    }
    let data = sse_data(&got);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.iter().all(|c| c["model"] == "aiml/gated"));
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "usage removed when the client did not ask"
    );
    assert!(
        chunks
            .iter()
            .all(|c| !c["choices"].as_array().unwrap().is_empty()),
        "usage chunk dropped"
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello world");
    assert!(
        got.contains(": OPENROUTER PROCESSING"),
        "comments pass through"
    );
    let up = &mock.generation_calls()[0];
    assert_eq!(
        up.body["stream_options"]["include_usage"], true,
        "usage asked of the upstream"
    );
}

#[tokio::test]
async fn usage_chunk_is_forwarded_with_usage_info_when_asked() {
    let (_mock, s, key) = setup(|_, _| {}).await;
    let r = chat(
        &s,
        &key,
        json!({"model": "openrouter/split+usage:11:4", "stream": true, "stream_options": {"include_usage": true}, "messages": []}),
    )
    .await;
    let text = r.text().await.unwrap();
    let data = sse_data(&text);
    let chunks: Vec<Value> = data
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let usage_chunk = chunks
        .iter()
        .find(|c| c["choices"].as_array().unwrap().is_empty())
        .expect("usage chunk");
    assert_eq!(usage_chunk["usage"]["total_tokens"], 15);
    assert_eq!(usage_chunk["_usage_info"]["tokens_used"], 15);
    assert_eq!(usage_chunk["_usage_info"]["estimated"], false);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        content, "Hello world",
        "events split across reads are reassembled"
    );
}

#[tokio::test]
async fn upstream_dying_mid_stream_ends_with_an_error_event() {
    let (_mock, s, key) = setup(|_, _| {}).await;
    for model in ["aiml/die", "aiml/stream_error"] {
        let r = chat(
            &s,
            &key,
            json!({"model": model, "stream": true, "messages": []}),
        )
        .await;
        assert_eq!(r.status(), 200);
        let text = tokio::time::timeout(Duration::from_secs(10), r.text())
            .await
            .expect("no hang")
            .unwrap();
        let data = sse_data(&text);
        let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
        assert!(
            last["error"]["message"]
                .as_str()
                .unwrap()
                .contains("AIML API"),
            "{model}: {last}"
        );
        assert_eq!(last["error"]["type"], "api_error");
    }
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream() {
    let (mock, s, key) = setup(|_, _| {}).await;
    let mut r = chat(
        &s,
        &key,
        json!({"model": "aiml/endless", "stream": true, "messages": []}),
    )
    .await;
    let _ = r.chunk().await.unwrap();
    drop(r);
    for _ in 0..100 {
        if mock.state.dropped_streams.load(Ordering::SeqCst) == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the upstream stream was not cancelled");
}

#[tokio::test]
async fn upstream_errors_are_normalised() {
    let (_mock, s, key) = setup(|cfg, _| {
        cfg.routing.retries = 0;
    })
    .await;
    // (model, status, type, code)
    let cases = [
        (
            "aiml/error:401:aiml",
            502,
            "api_error",
            Some("upstream_auth_error"),
        ),
        (
            "openrouter/error:402:openrouter",
            502,
            "api_error",
            Some("upstream_auth_error"),
        ),
        (
            "requesty/error:412:requesty",
            502,
            "api_error",
            Some("upstream_auth_error"),
        ),
        (
            "requesty/error:403:key",
            502,
            "api_error",
            Some("upstream_auth_error"),
        ),
        (
            "openrouter/error:403:openrouter",
            403,
            "permission_error",
            None,
        ),
        (
            "aiml/error:400",
            400,
            "invalid_request_error",
            Some("mock_code"),
        ),
        (
            "aiml/error:404:requesty",
            404,
            "invalid_request_error",
            None,
        ),
        ("aiml/error:422:aiml", 422, "invalid_request_error", None),
        (
            "aiml/error:408:openrouter",
            504,
            "api_error",
            Some("upstream_timeout"),
        ),
        (
            "aiml/error:500:text",
            502,
            "api_error",
            Some("upstream_error"),
        ),
        (
            "aiml/error:503:openrouter",
            502,
            "api_error",
            Some("upstream_error"),
        ),
        ("aiml/garbage", 502, "api_error", Some("upstream_error")),
        (
            "openrouter/inline_error",
            502,
            "api_error",
            Some("upstream_error"),
        ),
    ];
    for (model, status, kind, code) in cases {
        let r = chat(&s, &key, json!({"model": model, "messages": []})).await;
        let v = assert_error(r, status).await;
        assert_eq!(v["error"]["type"], kind, "{model}: {v}");
        if let Some(c) = code {
            assert_eq!(v["error"]["code"], c, "{model}: {v}");
        }
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(!msg.contains("sk-test-"), "provider key leaked: {msg}");
        assert!(
            ["AIML API", "OpenRouter", "Requesty"]
                .iter()
                .any(|p| msg.starts_with(p)),
            "the provider is named: {msg}"
        );
    }
    let r = chat(
        &s,
        &key,
        json!({"model": "aiml/error:429:aiml", "messages": []}),
    )
    .await;
    assert_eq!(r.headers()["retry-after"], "7");
    let v = assert_error(r, 429).await;
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
}

#[tokio::test]
async fn unreachable_and_slow_upstreams() {
    let (_mock, s, key) = setup(|cfg, _| {
        cfg.routing.retries = 0;
        let dead = cfg.providers.entry("dead".into()).or_default();
        dead.base_url = Some("http://127.0.0.1:9/v1".into());
        let slow = cfg.providers.entry("aiml".into()).or_default();
        slow.timeout_secs = Some(1);
    })
    .await;
    let v = assert_error(
        chat(&s, &key, json!({"model": "dead/x", "messages": []})).await,
        502,
    )
    .await;
    assert_eq!(v["error"]["code"], "upstream_error");
    let v = assert_error(
        chat(
            &s,
            &key,
            json!({"model": "aiml/delay:3000", "messages": []}),
        )
        .await,
        504,
    )
    .await;
    assert_eq!(v["error"]["code"], "upstream_timeout");
}

#[tokio::test]
async fn a_provider_without_a_key_answers_503() {
    let mock = Mock::start().await;
    let s = TestServer::start_with(|cfg| use_mock(cfg, &mock, &["aiml"])).await;
    let (_, _, key) = s.user_with_key("bob", None).await;
    let v = assert_error(
        chat(&s, &key, json!({"model": "glama/x", "messages": []})).await,
        503,
    )
    .await;
    assert_eq!(v["error"]["code"], "provider_unavailable");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("GLAMA_API_KEY"));
    assert!(mock.generation_calls().is_empty());
}

#[tokio::test]
async fn retries_then_fallbacks_then_no_sdk_retry() {
    let (mock, s, key) = setup(|cfg, _| {
        cfg.routing.retries = 1;
        cfg.routing
            .fallbacks
            .insert("aiml/error:500".into(), vec!["requesty/fb-ok".into()]);
    })
    .await;
    // one 503, then success on the retry
    let r = chat(&s, &key, json!({"model": "aiml/flaky:1", "messages": []})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(mock.generation_calls().len(), 2);
    // always failing: retried once, then the fallback answers
    let r = chat(&s, &key, json!({"model": "aiml/error:500", "messages": []})).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["model"], "aiml/error:500",
        "the client's name even through a fallback"
    );
    assert_eq!(v["_usage_info"]["provider"], "requesty");
    let calls = mock.generation_calls();
    assert_eq!(calls.len(), 5);
    assert_eq!(calls[4].provider, "requesty");
    assert_eq!(calls[4].body["model"], "fb-ok");
    // failing after a retry: the SDK is told not to retry
    let r = chat(&s, &key, json!({"model": "aiml/error:502", "messages": []})).await;
    assert_eq!(r.headers()["x-should-retry"], "false");
    assert_error(r, 502).await;
    // a client error is not retried
    let before = mock.generation_calls().len();
    let r = chat(&s, &key, json!({"model": "aiml/error:400", "messages": []})).await;
    assert_error(r, 400).await;
    assert_eq!(mock.generation_calls().len(), before + 1);
}

#[tokio::test]
async fn models_merge_and_provider_status() {
    let (mock, s, key) = setup(|_, mock| mock.fail_models_of("requesty")).await;
    let r = s
        .client
        .get(s.url("/llm/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"aiml/m1") && ids.contains(&"glama/m2"),
        "{ids:?}"
    );
    assert!(ids.contains(&"openrouter/openai/gpt-4o"));
    assert!(
        !ids.iter().any(|i| i.starts_with("requesty/")),
        "the failing provider is left out"
    );
    let gpt = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "openrouter/openai/gpt-4o")
        .unwrap();
    assert_eq!(gpt["object"], "model");
    assert_eq!(gpt["owned_by"], "openrouter");
    assert_eq!(gpt["provider"], "openrouter");
    assert_eq!(gpt["created"], 1700000000);
    assert_eq!(gpt["pricing"], json!({"prompt": 2.5, "completion": 10.0}));
    assert_eq!(gpt["max_output_tokens"], 16384);

    let r = s
        .client
        .get(s.url("/llm/models?provider=aiml"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert!(v["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["provider"] == "aiml"));
    assert_eq!(v["data"].as_array().unwrap().len(), 2);

    let r = s
        .client
        .get(s.url("/v1/models/openrouter/openai/gpt-4o"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["id"],
        "openrouter/openai/gpt-4o"
    );
    let r = s
        .client
        .get(s.url("/llm/models/aiml/nope"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        assert_error(r, 404).await["error"]["code"],
        "model_not_found"
    );

    let r = s
        .client
        .get(s.url("/llm/providers"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let list: Vec<Value> = r.json().await.unwrap();
    let by = |id: &str| list.iter().find(|p| p["id"] == id).unwrap().clone();
    assert_eq!(by("requesty")["status"], "degraded");
    assert!(by("requesty")["reason"]
        .as_str()
        .unwrap()
        .contains("model list"));
    assert_eq!(by("aiml")["status"], "active");
    assert!(by("aiml").get("reason").is_none());
    assert_eq!(by("openrouter")["default"], true);
    assert_eq!(by("aiml")["name"], "AIML API");
    assert_eq!(by("aiml")["base_url"], mock.base("aiml"));
}

#[tokio::test]
async fn providers_without_keys_are_inactive() {
    let s = TestServer::start().await;
    let t = s.admin_token().await;
    let list: Vec<Value> = s
        .client
        .get(s.url("/llm/providers"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.len(), 4);
    for p in &list {
        assert_eq!(p["status"], "inactive");
        assert!(p["reason"].as_str().unwrap().contains("_API_KEY"));
    }
    let v: Value = s
        .client
        .get(s.url("/models"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"object": "list", "data": []}));
}

#[tokio::test]
async fn the_same_routes_under_v1_and_at_the_root() {
    let (_mock, s, key) = setup(|_, _| {}).await;
    for path in [
        "/v1/chat/completions",
        "/chat/completions",
        "/llm/chat/completions",
    ] {
        let r = s
            .client
            .post(s.url(path))
            .header("x-api-key", &key)
            .json(&json!({"model": "aiml/m1", "messages": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    for path in ["/v1/embeddings", "/embeddings"] {
        let r = s
            .client
            .post(s.url(path))
            .bearer_auth(&key)
            .json(&json!({"model": "aiml/e", "input": ["a", "b"], "encoding_format": "base64"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        assert_eq!(v["_usage_info"]["tokens_used"], 8);
    }
    for path in ["/v1/completions", "/completions"] {
        let r = s
            .client
            .post(s.url(path))
            .bearer_auth(&key)
            .json(&json!({"model": "aiml/c", "prompt": "Say hi"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = s
        .client
        .post(s.url("/v1/chat/completions"))
        .json(&json!({"model": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        assert_error(r, 401).await["error"]["code"],
        "invalid_api_key"
    );
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let (mock, s, key) = setup(|_, _| {}).await;
    let send = |body: &'static str| {
        s.client
            .post(s.url("/llm/chat/completions"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(
        assert_error(send("{not json").await.unwrap(), 400).await["error"]["type"],
        "invalid_request_error"
    );
    assert_eq!(
        assert_error(send("[1]").await.unwrap(), 400).await["error"]["type"],
        "invalid_request_error"
    );
    assert_eq!(
        assert_error(send(r#"{"messages":[]}"#).await.unwrap(), 400).await["error"]["param"],
        "model"
    );
    assert_eq!(
        assert_error(send(r#"{"model":"aiml/x"}"#).await.unwrap(), 400).await["error"]["param"],
        "messages"
    );
    assert_eq!(
        assert_error(
            send(r#"{"model":"aiml/x","messages":[],"max_tokens":"many"}"#)
                .await
                .unwrap(),
            400
        )
        .await["error"]["param"],
        "max_tokens"
    );
    assert_eq!(
        assert_error(
            send(r#"{"model":"aiml/x","messages":[],"stream":"yes"}"#)
                .await
                .unwrap(),
            400
        )
        .await["error"]["param"],
        "stream"
    );
    assert!(mock.generation_calls().is_empty());
}

#[tokio::test]
async fn metrics_are_labelled_and_guarded() {
    let (_mock, s, key) = setup(|cfg, _| {
        cfg.pricing.insert(
            "aiml/m1".into(),
            tollgate::config::PricingConfig {
                prompt: 1.0,
                completion: 2.0,
                max_output_tokens: None,
            },
        );
        // A provider without a key: its calls are refused with 503.
        cfg.providers.get_mut("glama").unwrap().api_key =
            tollgate::config::Secret::new(String::new());
    })
    .await;
    chat(&s, &key, json!({"model": "aiml/m1", "messages": []})).await;
    let r = chat(&s, &key, json!({"model": "glama/m1", "messages": []})).await;
    assert_error(r, 503).await;
    chat(
        &s,
        &key,
        json!({"model": "aiml/random-unknown-model-123", "messages": []}),
    )
    .await;
    let r = s
        .client
        .get(s.url("/metrics"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        assert_error(r, 403).await["error"]["type"],
        "permission_error"
    );
    let r = s.client.get(s.url("/metrics")).send().await.unwrap();
    assert_error(r, 401).await;
    let admin = s.admin_token().await;
    let text = s
        .client
        .get(s.url("/metrics"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("tollgate_requests_total"), "{text}");
    assert!(text.contains("model=\"aiml/m1\""));
    assert!(text.contains("model=\"other\""));
    assert!(
        !text.contains("random-unknown-model-123"),
        "unknown names are folded into other"
    );
    assert!(text.contains("tollgate_request_duration_seconds_bucket"));
    // A refusal takes time too (reading and checking the request): it is
    // not recorded as 0 s.
    let refused = text
        .lines()
        .find(|l| {
            l.starts_with("tollgate_request_duration_seconds_sum")
                && l.contains("provider=\"glama\"")
                && l.contains("status=\"503\"")
        })
        .unwrap_or_else(|| panic!("no duration of the refusal: {text}"));
    let secs: f64 = refused.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(secs > 0.0, "{refused}");
    assert!(!text.contains("alice"), "no user label");

    let off =
        TestServer::start_with(|c| c.server.metrics = tollgate::config::MetricsAccess::Off).await;
    let t = off.admin_token().await;
    assert_error(
        off.client
            .get(off.url("/metrics"))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    let public =
        TestServer::start_with(|c| c.server.metrics = tollgate::config::MetricsAccess::Public)
            .await;
    assert_eq!(
        public
            .client
            .get(public.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn prices_and_limits_come_from_the_provider_list_when_the_config_names_none() {
    let (mock, s, key) = setup(|_, _| {}).await;
    // Fill the catalogue first, as any client listing models would.
    let r = s
        .client
        .get(s.url("/llm/models?provider=openrouter"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = chat(
        &s,
        &key,
        json!({"model": "openrouter/openai/gpt-4o", "messages": []}),
    )
    .await
    .json()
    .await
    .unwrap();
    // 10 prompt + 20 completion tokens at 2.5 and 10 USD per million (the list's per-token strings).
    let cost = v["_usage_info"]["cost_usd"].as_f64().unwrap();
    assert!((cost - 0.000225).abs() < 1e-12, "{cost}");
    let sent = &mock.generation_calls()[0];
    assert_eq!(
        sent.body["max_tokens"], 16384,
        "the model's own completion limit from the list"
    );
    // A model the list does not know costs 0 and is marked unpriced in the request log.
    let v: Value = chat(
        &s,
        &key,
        json!({"model": "openrouter/unlisted", "messages": []}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["_usage_info"]["cost_usd"], 0.0);
    s.state.metering.writer.flush().await;
    let rows = s.records("provider=openrouter").await;
    assert_eq!(rows[0]["model"], "openrouter/unlisted");
    assert_eq!(rows[0]["priced"], false);
    assert_eq!(rows[1]["priced"], true);
}

/// `[routing] aliases`: a name that stands for another model is routed,
/// checked, priced and recorded as that model; the answer, streamed or
/// whole, names it as the client did.
#[tokio::test]
async fn aliases_stand_for_other_models() {
    let (mock, s, key) = setup(|cfg, _| {
        let a = &mut cfg.routing.aliases;
        a.insert("simple".into(), "aiml/usage:5:6".into());
        a.insert("claude-*".into(), "aiml/claude-*".into());
        a.insert("elsewhere".into(), "glama/m1".into());
    })
    .await;
    let r = chat(&s, &key, json!({"model": "simple", "messages": []})).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["model"], "simple", "{v}");
    assert_eq!(v["_usage_info"]["provider"], "aiml", "{v}");
    assert_eq!(v["_usage_info"]["tokens_used"], 11, "{v}");

    let r = chat(
        &s,
        &key,
        json!({"model": "claude-haiku-4-5-20251001", "stream": true, "messages": []}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let chunks: Vec<Value> = sse_data(&r.text().await.unwrap())
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(!chunks.is_empty());
    assert!(
        chunks
            .iter()
            .all(|c| c["model"] == "claude-haiku-4-5-20251001"),
        "{chunks:?}"
    );
    let calls = mock.generation_calls();
    assert_eq!(
        calls
            .iter()
            .map(|c| (c.provider.as_str(), c.body["model"].as_str().unwrap()))
            .collect::<Vec<_>>(),
        [("aiml", "usage:5:6"), ("aiml", "claude-haiku-4-5-20251001")]
    );

    // A key's allowlist is checked against the model the alias names.
    let t = s.login("alice", "user-password-1").await;
    let (_, narrow) = s
        .create_key(
            &t,
            json!({"name": "aiml only", "allowed_models": ["aiml/*"]}),
        )
        .await;
    let narrow = narrow.as_str();
    let r = chat(&s, narrow, json!({"model": "simple", "messages": []})).await;
    assert_eq!(r.status(), 200);
    let r = chat(&s, narrow, json!({"model": "elsewhere", "messages": []})).await;
    assert_eq!(
        assert_error(r, 403).await["error"]["code"],
        "model_not_allowed"
    );
    assert_eq!(
        mock.generation_calls().len(),
        3,
        "refused before the upstream"
    );

    // The record names the model that ran.
    s.state.metering.writer.flush().await;
    let log = s.records("provider=aiml").await;
    let models: Vec<&str> = log.iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert!(models.contains(&"aiml/usage:5:6"), "{models:?}");
    assert!(
        models.contains(&"aiml/claude-haiku-4-5-20251001"),
        "{models:?}"
    );
}
