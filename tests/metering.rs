//! Metering against a real listener, a real SQLite file and the mock upstream:
//! reservations under concurrency, the completion cap, key limits, allowed
//! models, client disconnects, rate limits, plan changes, and the other
//! endpoints (embeddings, legacy completions).

mod common;
use common::mock::{use_mock, Mock};
use common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tollgate::config::{Config, OnDisconnect};

/// `hi` as the only user message: 3 + 4 + 1 tokens by the gateway's estimate.
const PROMPT_ESTIMATE: i64 = 8;

fn hi() -> Value {
    json!([{"role": "user", "content": "hi"}])
}

async fn setup(edit: impl FnOnce(&mut Config)) -> (Mock, TestServer) {
    let mock = Mock::start().await;
    let s = TestServer::start_with(|cfg| {
        use_mock(cfg, &mock, &["openrouter", "aiml"]);
        edit(cfg);
    })
    .await;
    (mock, s)
}

async fn create_plan(s: &TestServer, name: &str, tokens: i64, rpm: i64, allowed: Option<Value>) {
    let admin = s.admin_token().await;
    let mut body = json!({"name": name, "monthly_tokens": tokens, "requests_per_minute": rpm});
    if let Some(a) = allowed {
        body["allowed_models"] = a;
    }
    let r = s
        .client
        .post(s.url("/admin/plans"))
        .bearer_auth(&admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "creating plan {name}");
}

async fn post(s: &TestServer, path: &str, key: &str, body: Value) -> reqwest::Response {
    s.client
        .post(s.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn chat(s: &TestServer, key: &str, body: Value) -> reqwest::Response {
    post(s, "/llm/chat/completions", key, body).await
}

fn period(s: &TestServer) -> String {
    tollgate::metering::period_of(s.state.clock.now())
}

fn sse_data(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("SSE data is JSON"))
        .collect()
}

async fn assert_quota_refusal(r: reqwest::Response) {
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.headers()
            .get("x-should-retry")
            .map(|v| v.to_str().unwrap()),
        Some("false")
    );
    let v = assert_error(r, 429).await;
    assert_eq!(v["error"]["type"], "insufficient_quota", "{v}");
    assert_eq!(v["error"]["code"], "insufficient_quota", "{v}");
}

/// Samples the user's charged + reserved tokens while calls run; returns the maximum seen.
fn watch_balance(s: &TestServer, user: i64) -> (Arc<AtomicBool>, tokio::task::JoinHandle<i64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (st, stop2, p) = (s.state.clone(), stop.clone(), period(s));
    let h = tokio::spawn(async move {
        let mut max = 0;
        while !stop2.load(Ordering::SeqCst) {
            let b = st.metering.quotas.balances(user, None, &p).await.unwrap().0;
            max = max.max(b.used + b.reserved);
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        max
    });
    (stop, h)
}

/// What one of the parallel calls ended as.
enum End {
    Ok(i64),
    Quota,
    Failed,
}

/// Sends one chat call and reads it to the end; streaming calls ask for usage
/// so that `_usage_info` arrives in the usage chunk.
async fn one_call(
    client: reqwest::Client,
    url: String,
    key: String,
    model: String,
    stream: bool,
) -> End {
    let mut body = json!({"model": model, "max_tokens": 100, "messages": hi()});
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    let r = client
        .post(url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    match r.status().as_u16() {
        429 => {
            assert_quota_refusal(r).await;
            End::Quota
        }
        200 if stream => {
            let chunks = sse_data(&r.text().await.unwrap());
            if chunks.iter().any(|c| c.get("error").is_some()) {
                return End::Failed;
            }
            let info = chunks
                .iter()
                .find_map(|c| c.get("_usage_info"))
                .expect("usage chunk with _usage_info");
            assert_eq!(info["estimated"], false);
            End::Ok(info["tokens_used"].as_i64().unwrap())
        }
        200 => {
            let v: Value = r.json().await.unwrap();
            End::Ok(v["_usage_info"]["tokens_used"].as_i64().unwrap())
        }
        502 => End::Failed,
        other => panic!("unexpected status {other}: {}", r.text().await.unwrap()),
    }
}

/// 100 parallel calls against a balance that covers exactly ten of them: each
/// reserves 8 + 100 = 108 and the upstream reports exactly 108, so ten fit in
/// 1,100 and the 20 left cannot hold 8 + min_completion_tokens (16).
async fn hundred_calls(models: &[&str], stream_every: usize) -> (Mock, TestServer, i64, Vec<End>) {
    let (mock, s) = setup(|_| {}).await;
    create_plan(&s, "ten", 1100, 100_000, None).await;
    let (uid, _, key) = s.user_with_key("bob", Some("ten")).await;
    let (stop, watcher) = watch_balance(&s, uid);
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let model = models[i % models.len()].to_owned();
            let stream = stream_every > 0 && i % stream_every == 0;
            tokio::spawn(one_call(
                s.client.clone(),
                s.url("/llm/chat/completions"),
                key.clone(),
                model,
                stream,
            ))
        })
        .collect();
    let mut ends = Vec::new();
    for t in tasks {
        ends.push(t.await.unwrap());
    }
    stop.store(true, Ordering::SeqCst);
    let max_seen = watcher.await.unwrap();
    assert!(
        max_seen <= 1100,
        "charged + reserved reached {max_seen} > 1100"
    );
    (mock, s, uid, ends)
}

fn successes(ends: &[End]) -> (usize, i64) {
    ends.iter().fold((0, 0), |(n, t), e| match e {
        End::Ok(tokens) => (n + 1, t + tokens),
        _ => (n, t),
    })
}

#[tokio::test]
async fn parallel_calls_never_overdraw_the_balance() {
    let (mock, s, uid, ends) = hundred_calls(&["aiml/usage:8:100"], 0).await;
    let (ok, tokens) = successes(&ends);
    let quota = ends.iter().filter(|e| matches!(e, End::Quota)).count();
    assert_eq!(ok, 10, "exactly the calls the balance covers succeed");
    assert_eq!(quota, 90, "the rest are refused for quota");
    assert_eq!(
        mock.generation_calls().len(),
        10,
        "refused calls never reach the upstream"
    );
    let b = s.balance(uid).await;
    assert_eq!(b.reserved, 0, "nothing left reserved");
    assert_eq!(b.used, tokens);
    assert_eq!(b.used, 1080);
    for c in mock.generation_calls() {
        assert_eq!(c.body["max_tokens"], 100);
    }
}

#[tokio::test]
async fn parallel_streams_never_overdraw_the_balance() {
    let (mock, s, uid, ends) = hundred_calls(&["aiml/usage:8:100"], 1).await;
    let (ok, tokens) = successes(&ends);
    assert_eq!(ok, 10);
    assert_eq!(ends.iter().filter(|e| matches!(e, End::Quota)).count(), 90);
    assert_eq!(mock.generation_calls().len(), 10);
    let b = s.balance(uid).await;
    assert_eq!((b.used, b.reserved), (tokens, 0));
    assert_eq!(b.used, 1080);
}

#[tokio::test]
async fn failed_calls_under_load_charge_nothing() {
    let models = ["aiml/error:500", "aiml/die+usage:8:100", "aiml/usage:8:100"];
    // Every call streams except the `error:500` ones, so `die` dies mid-stream.
    let (mock, s, uid, ends) = {
        let (mock, s) = setup(|_| {}).await;
        create_plan(&s, "ten", 1100, 100_000, None).await;
        let (uid, _, key) = s.user_with_key("bob", Some("ten")).await;
        let (stop, watcher) = watch_balance(&s, uid);
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let model = models[i % 3].to_owned();
                tokio::spawn(one_call(
                    s.client.clone(),
                    s.url("/llm/chat/completions"),
                    key.clone(),
                    model,
                    i % 3 != 0,
                ))
            })
            .collect();
        let mut ends = Vec::new();
        for t in tasks {
            ends.push(t.await.unwrap());
        }
        stop.store(true, Ordering::SeqCst);
        let max_seen = watcher.await.unwrap();
        assert!(max_seen <= 1100, "charged + reserved reached {max_seen}");
        (mock, s, uid, ends)
    };
    let (ok, tokens) = successes(&ends);
    let failed = ends.iter().filter(|e| matches!(e, End::Failed)).count();
    assert!((1..=10).contains(&ok), "{ok} successes");
    assert!(failed >= 1, "some calls failed");
    let good_upstream = mock
        .generation_calls()
        .iter()
        .filter(|c| c.body["model"] == "usage:8:100")
        .count();
    assert_eq!(
        good_upstream, ok,
        "every good call that went upstream succeeded"
    );
    let b = s.balance(uid).await;
    assert_eq!(b.reserved, 0);
    assert_eq!(b.used, tokens, "failures charged nothing");
    assert!(b.used <= 1100);

    let rows = s.records("status=upstream_error&limit=500").await;
    assert_eq!(rows.len(), failed, "one record per failed call");
    for r in &rows {
        assert_eq!(r["total_tokens"], 0, "{r}");
        assert_eq!(r["cost_usd"], 0.0, "{r}");
    }
}

#[tokio::test]
async fn the_completion_cap_follows_the_balance() {
    let (mock, s) = setup(|_| {}).await;
    create_plan(&s, "small", 500, 1000, None).await;
    let (uid, _, key) = s.user_with_key("carol", Some("small")).await;
    let mut used = 0;
    let last_call = || mock.generation_calls().last().unwrap().body.clone();

    // The client's cap is lowered to what the balance holds, in the client's field.
    let r = chat(
        &s,
        &key,
        json!({"model": "aiml/usage:8:10", "max_tokens": 1000, "messages": hi()}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(last_call()["max_tokens"], 500 - PROMPT_ESTIMATE);
    used += 18;

    let r = chat(
        &s,
        &key,
        json!({"model": "aiml/usage:8:10", "max_completion_tokens": 1000, "messages": hi()}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let sent = last_call();
    assert_eq!(sent["max_completion_tokens"], 500 - used - PROMPT_ESTIMATE);
    assert!(sent.get("max_tokens").is_none(), "{sent}");
    used += 18;

    // n divides what is left between the choices.
    let r = chat(
        &s,
        &key,
        json!({"model": "aiml/usage:8:10", "max_tokens": 1000, "n": 3, "messages": hi()}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        last_call()["max_tokens"],
        (500 - used - PROMPT_ESTIMATE) / 3
    );
    used += 18;

    // No client cap: the provider's cap_field, default_max_tokens lowered by the balance.
    let r = chat(
        &s,
        &key,
        json!({"model": "aiml/usage:8:10", "messages": hi()}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(last_call()["max_tokens"], 500 - used - PROMPT_ESTIMATE);
    used += 18;

    // A client's own small cap is sent as it is.
    let r = chat(
        &s,
        &key,
        json!({"model": "aiml/usage:8:10", "max_tokens": 7, "messages": hi()}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(last_call()["max_tokens"], 7);
    used += 18;
    let b = s.balance(uid).await;
    assert_eq!((b.used, b.reserved), (used, 0));
}

#[tokio::test]
async fn a_cap_below_the_minimum_is_refused_without_calling_upstream() {
    let (mock, s) = setup(|_| {}).await;
    // 20 tokens: 8 of prompt leave 12, below min_completion_tokens (16).
    create_plan(&s, "crumbs", 20, 1000, None).await;
    let (uid, _, key) = s.user_with_key("dan", Some("crumbs")).await;
    let r = chat(
        &s,
        &key,
        json!({"model": "aiml/usage:8:5", "max_tokens": 100, "messages": hi()}),
    )
    .await;
    assert_quota_refusal(r).await;
    let r = chat(
        &s,
        &key,
        json!({"model": "aiml/usage:8:5", "messages": hi()}),
    )
    .await;
    assert_quota_refusal(r).await;
    assert!(
        mock.generation_calls().is_empty(),
        "the upstream was never called"
    );

    // A client's own cap of 5 fits and is sent unchanged.
    let r = chat(
        &s,
        &key,
        json!({"model": "aiml/usage:8:5", "max_tokens": 5, "messages": hi()}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["_usage_info"]["tokens_used"], 13);
    assert_eq!(v["_usage_info"]["remaining_tokens"], 7);
    assert_eq!(mock.generation_calls()[0].body["max_tokens"], 5);
    // 7 left: not even the prompt fits.
    let r = chat(
        &s,
        &key,
        json!({"model": "aiml/usage:8:5", "max_tokens": 1, "messages": hi()}),
    )
    .await;
    assert_quota_refusal(r).await;
    assert_eq!(mock.generation_calls().len(), 1);
    let b = s.balance(uid).await;
    assert_eq!((b.used, b.reserved), (13, 0));

    let rows = s.records("status=refused").await;
    assert_eq!(rows.len(), 3, "refusals are in the request log");
    assert!(rows
        .iter()
        .all(|r| r["http_status"] == 429 && r["total_tokens"] == 0));
}

#[tokio::test]
async fn a_key_limit_bounds_calls_made_with_that_key() {
    let (mock, s) = setup(|_| {}).await;
    let (uid, token, free_key) = s.user_with_key("erin", Some("pro")).await;
    let (kid, limited) = s
        .create_key(
            &token,
            json!({"name": "limited", "monthly_token_limit": 120}),
        )
        .await;
    let body = json!({"model": "aiml/usage:8:100", "max_tokens": 100, "messages": hi()});
    let r = chat(&s, &limited, body.clone()).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["_usage_info"]["remaining_tokens"], 12,
        "the key's balance is the smaller"
    );
    // 12 left on the key: refused, though the plan has plenty.
    assert_quota_refusal(chat(&s, &limited, body.clone()).await).await;
    assert_eq!(mock.generation_calls().len(), 1);
    // Another key of the same user is not bound by it.
    let r = chat(&s, &free_key, body).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["_usage_info"]["remaining_tokens"], 100_000 - 216);
    assert_eq!(s.key_balance(kid).await.used, 108);
    assert_eq!(s.balance(uid).await.used, 216);
    // /subscriptions/me seen through the limited key shows the key's balance.
    let me: Value = s
        .client
        .get(s.url("/subscriptions/me"))
        .bearer_auth(&limited)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["tokens_used"], 216);
    assert_eq!(me["remaining_tokens"], 12);
}

#[tokio::test]
async fn models_outside_the_plan_or_key_are_forbidden() {
    let (mock, s) = setup(|_| {}).await;
    create_plan(&s, "aiml-only", 100_000, 1000, Some(json!(["aiml/*"]))).await;
    let (_, token, key) = s.user_with_key("fay", Some("aiml-only")).await;
    let r = chat(
        &s,
        &key,
        json!({"model": "openrouter/usage:1:1", "messages": hi()}),
    )
    .await;
    let v = assert_error(r, 403).await;
    assert_eq!(v["error"]["type"], "permission_error");
    let r = post(
        &s,
        "/llm/embeddings",
        &key,
        json!({"model": "openrouter/x", "input": "a"}),
    )
    .await;
    assert_error(r, 403).await;
    assert!(mock.generation_calls().is_empty());
    let r = chat(
        &s,
        &key,
        json!({"model": "aiml/usage:1:1", "messages": hi()}),
    )
    .await;
    assert_eq!(r.status(), 200);

    let (_, narrow) = s
        .create_key(
            &token,
            json!({"name": "narrow", "allowed_models": ["aiml/usage:1:*"]}),
        )
        .await;
    let r = chat(
        &s,
        &narrow,
        json!({"model": "aiml/usage:2:2", "messages": hi()}),
    )
    .await;
    let v = assert_error(r, 403).await;
    assert_eq!(v["error"]["type"], "permission_error");
    assert_eq!(mock.generation_calls().len(), 1);
    let r = chat(
        &s,
        &narrow,
        json!({"model": "aiml/usage:1:5", "messages": hi()}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(mock.generation_calls().len(), 2);
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn record_of(s: &TestServer, request_id: &str) -> Value {
    let all = s.records("limit=500").await;
    let rows: Vec<&Value> = all
        .iter()
        .filter(|r| r["request_id"] == request_id)
        .collect();
    assert_eq!(rows.len(), 1, "one record for {request_id}: {all:?}");
    rows[0].clone()
}

#[tokio::test]
async fn a_disconnect_cancels_the_upstream_and_charges_an_estimate() {
    let (mock, s) = setup(|_| {}).await;
    let (uid, _, key) = s.user_with_key("gus", Some("pro")).await;
    let mut r = chat(
        &s,
        &key,
        json!({"model": "aiml/endless", "stream": true, "max_tokens": 1000, "messages": hi()}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let mut got = String::new();
    while !got.contains(" more") {
        got.push_str(std::str::from_utf8(&r.chunk().await.unwrap().unwrap()).unwrap());
    }
    drop(r);
    wait_for("the upstream to be cancelled", || {
        mock.state.dropped_streams.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("the reservation to be released", || async {
        s.balance(uid).await.reserved == 0
    })
    .await;
    let rec = record_of(&s, &rid).await;
    assert_eq!(rec["outcome"], "client_cancelled", "{rec}");
    assert_eq!(rec["estimated"], true);
    assert_eq!(rec["prompt_tokens"], PROMPT_ESTIMATE);
    // "Hello" then k × " more": ceil((5 + 5k) / 4) tokens, k ≥ 1 since the client saw one.
    let completion = rec["completion_tokens"].as_i64().unwrap();
    assert!(
        (1..10_000).any(|k| (5 + 5 * k + 3) / 4 == completion),
        "completion estimate {completion} does not match the generated text"
    );
    assert_eq!(rec["total_tokens"], PROMPT_ESTIMATE + completion);
    let b = s.balance(uid).await;
    assert_eq!((b.used, b.reserved), (PROMPT_ESTIMATE + completion, 0));
    assert_eq!(mock.state.finished_streams.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn with_drain_a_disconnect_is_charged_exactly() {
    let (mock, s) = setup(|cfg| cfg.metering.on_disconnect = OnDisconnect::Drain).await;
    let (uid, _, key) = s.user_with_key("hal", Some("pro")).await;
    let mut r = chat(
        &s,
        &key,
        json!({"model": "aiml/gated+usage:30:70", "stream": true, "max_tokens": 1000, "messages": hi()}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let mut got = String::new();
    while !got.contains("Hello") {
        got.push_str(std::str::from_utf8(&r.chunk().await.unwrap().unwrap()).unwrap());
    }
    drop(r);
    // Let the gateway notice the client is gone before the upstream goes on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        s.balance(uid).await.reserved > 0,
        "still reserved while draining"
    );
    mock.state.gate.notify_one();
    wait_for("the upstream to finish", || {
        mock.state.finished_streams.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("the call to settle", || async {
        s.balance(uid).await.reserved == 0
    })
    .await;
    assert_eq!(
        mock.state.dropped_streams.load(Ordering::SeqCst),
        0,
        "drained, not cancelled"
    );
    let b = s.balance(uid).await;
    assert_eq!(b.used, 100, "exactly the upstream's usage");
    let rec = record_of(&s, &rid).await;
    assert_eq!(rec["estimated"], false, "{rec}");
    assert_eq!(rec["prompt_tokens"], 30);
    assert_eq!(rec["completion_tokens"], 70);
    assert_eq!(rec["total_tokens"], 100);
    assert_eq!(rec["outcome"], "client_cancelled");
}

#[tokio::test]
async fn embeddings_and_legacy_completions_are_metered() {
    let (_mock, s) = setup(|_| {}).await;
    let (uid, _, key) = s.user_with_key("ivy", Some("pro")).await;

    let r = post(
        &s,
        "/llm/embeddings",
        &key,
        json!({"model": "aiml/usage:12", "input": ["abcd", "efgh"]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let rid_e = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["_usage_info"]["tokens_used"], 12);
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(s.balance(uid).await.used, 12);

    let r = post(
        &s,
        "/llm/completions",
        &key,
        json!({"model": "aiml/usage:5:7", "prompt": "Say hi"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let rid_c = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["_usage_info"]["tokens_used"], 12);
    assert_eq!(v["choices"][0]["text"], "Hello world");
    assert_eq!(s.balance(uid).await.used, 24);

    // Streaming, usage asked for: the usage chunk carries it.
    let r = post(
        &s,
        "/llm/completions",
        &key,
        json!({"model": "aiml/usage:6:9", "prompt": "Say hi", "stream": true, "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let chunks = sse_data(&r.text().await.unwrap());
    let info = chunks
        .iter()
        .find_map(|c| c.get("_usage_info"))
        .expect("usage chunk");
    assert_eq!(info["tokens_used"], 15);
    assert_eq!(s.balance(uid).await.used, 39);

    // Streaming, usage not asked for: still charged what the upstream reported.
    let r = post(
        &s,
        "/llm/completions",
        &key,
        json!({"model": "aiml/usage:4:4", "prompt": "Say hi", "stream": true}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let rid_s = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let text = r.text().await.unwrap();
    let chunks = sse_data(&text);
    let t: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(t, "Hello world");
    let b = s.balance(uid).await;
    assert_eq!((b.used, b.reserved), (47, 0));

    let e = record_of(&s, &rid_e).await;
    assert_eq!(
        (e["endpoint"].as_str(), e["total_tokens"].as_i64()),
        (Some("embeddings"), Some(12))
    );
    let c = record_of(&s, &rid_c).await;
    assert_eq!(
        (c["endpoint"].as_str(), c["total_tokens"].as_i64()),
        (Some("completions"), Some(12))
    );
    let st = record_of(&s, &rid_s).await;
    assert_eq!(st["total_tokens"], 8);
    assert_eq!(st["estimated"], false);
    assert_eq!(st["outcome"], "ok");
}

#[tokio::test]
async fn an_embeddings_call_larger_than_the_balance_is_refused() {
    let (mock, s) = setup(|_| {}).await;
    create_plan(&s, "crumbs", 5, 1000, None).await;
    let (_, _, key) = s.user_with_key("jay", Some("crumbs")).await;
    let long = "abcd".repeat(10);
    let r = post(
        &s,
        "/llm/embeddings",
        &key,
        json!({"model": "aiml/usage:10", "input": long}),
    )
    .await;
    assert_quota_refusal(r).await;
    assert!(mock.generation_calls().is_empty());
}

#[tokio::test]
async fn the_rate_limit_counts_every_credential_of_a_user() {
    let (mock, s) = setup(|_| {}).await;
    create_plan(&s, "slow", 100_000, 3, None).await;
    let (_, token, key) = s.user_with_key("kim", Some("slow")).await;
    let body = json!({"model": "aiml/usage:1:1", "messages": hi()});
    for cred in [&key, &token, &key] {
        assert_eq!(chat(&s, cred, body.clone()).await.status(), 200);
    }
    let r = chat(&s, &token, body.clone()).await;
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "Retry-After {retry}");
    let v = assert_error(r, 429).await;
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert_eq!(
        mock.generation_calls().len(),
        3,
        "the refused call never went upstream"
    );
}

#[tokio::test]
async fn after_retry_after_a_call_succeeds_again() {
    let (_mock, s) = setup(|_| {}).await;
    let (_, _, key) = s.user_with_key("lee", Some("pro")).await; // 60 a minute: one a second after the burst
    let body = json!({"model": "aiml/usage:1:1", "max_tokens": 10, "messages": hi()});
    let tasks: Vec<_> = (0..70)
        .map(|_| {
            let (c, url, key, body) = (
                s.client.clone(),
                s.url("/llm/chat/completions"),
                key.clone(),
                body.clone(),
            );
            tokio::spawn(async move {
                c.post(url)
                    .bearer_auth(key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut waits = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        if r.status() == 429 {
            let w: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let v = assert_error(r, 429).await;
            assert_eq!(v["error"]["code"], "rate_limit_exceeded");
            waits.push(w);
        } else {
            assert_eq!(r.status(), 200);
        }
    }
    assert!(!waits.is_empty(), "70 calls at once exceed 60 a minute");
    let wait = *waits.iter().max().unwrap();
    assert!(wait <= 2, "Retry-After {wait} at 60 a minute");
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(chat(&s, &key, body).await.status(), 200);
}

#[tokio::test]
async fn moving_a_user_to_another_plan_changes_the_limit_at_once() {
    let (_mock, s) = setup(|_| {}).await;
    create_plan(&s, "crumbs", 20, 1000, None).await;
    let (uid, _, key) = s.user_with_key("max", Some("crumbs")).await;
    let body = json!({"model": "aiml/usage:8:100", "max_tokens": 100, "messages": hi()});
    assert_quota_refusal(chat(&s, &key, body.clone()).await).await;
    let admin = s.admin_token().await;
    let r = s
        .client
        .patch(s.url(&format!("/admin/users/{uid}")))
        .bearer_auth(&admin)
        .json(&json!({"plan": "pro"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = chat(&s, &key, body.clone()).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["_usage_info"]["remaining_tokens"], 100_000 - 108);
    // And back down: 108 used of 20 → refused again.
    let r = s
        .client
        .patch(s.url(&format!("/admin/users/{uid}")))
        .bearer_auth(&admin)
        .json(&json!({"plan": "crumbs"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_quota_refusal(chat(&s, &key, body).await).await;
    let me: Value = s
        .client
        .get(s.url("/subscriptions/me"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["plan"], "crumbs");
    assert_eq!(me["remaining_tokens"], 0);
    assert_eq!(me["tokens_used"], 108);
}

#[tokio::test]
async fn a_plan_in_use_cannot_be_deleted() {
    let (_mock, s) = setup(|_| {}).await;
    create_plan(&s, "temp", 1000, 10, None).await;
    let uid = s.create_user("ned", "user-password-1", Some("temp")).await;
    let admin = s.admin_token().await;
    let r = s
        .client
        .delete(s.url("/admin/plans/temp"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let v = assert_error(r, 409).await;
    assert_eq!(v["error"]["code"], "conflict");
    let r = s
        .client
        .patch(s.url(&format!("/admin/users/{uid}")))
        .bearer_auth(&admin)
        .json(&json!({"plan": "free"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .client
        .delete(s.url("/admin/plans/temp"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

#[tokio::test]
async fn streams_cut_at_the_end_of_the_grace_period_are_settled_and_recorded() {
    let (mock, s) = setup(|cfg| cfg.server.shutdown_grace_secs = 1).await;
    let (uid, _, key) = s.user_with_key("ola", Some("pro")).await;
    let mut r = chat(
        &s,
        &key,
        json!({"model": "aiml/endless", "stream": true, "max_tokens": 1000, "messages": hi()}),
    )
    .await;
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let mut got = String::new();
    while !got.contains(" more") {
        got.push_str(std::str::from_utf8(&r.chunk().await.unwrap().unwrap()).unwrap());
    }
    let reader = tokio::spawn(async move {
        while let Ok(Some(c)) = r.chunk().await {
            got.push_str(&String::from_utf8_lossy(&c));
        }
        got
    });
    let state = s.state.clone();
    let (dir, cfg) = s.stop().await;
    assert_eq!(
        state.metering.calls.live(),
        0,
        "every call settled before serve returned"
    );
    let p = tollgate::metering::period_of(state.clock.now());
    let b = state
        .metering
        .quotas
        .balances(uid, None, &p)
        .await
        .unwrap()
        .0;
    assert_eq!(b.reserved, 0);
    assert!(
        b.used > PROMPT_ESTIMATE,
        "charged for what was generated: {b:?}"
    );
    let got = reader.await.unwrap();
    let last = sse_data(&got).pop().unwrap();
    assert_eq!(last["error"]["code"], "shutting_down", "{last}");
    wait_for("the upstream to be cancelled", || {
        mock.state.dropped_streams.load(Ordering::SeqCst) == 1
    })
    .await;

    let s = TestServer::start_in(dir, cfg).await;
    let rec = record_of(&s, &rid).await;
    assert_eq!(rec["outcome"], "client_cancelled", "{rec}");
    assert_eq!(rec["estimated"], true);
    assert_eq!(rec["total_tokens"], b.used);
    assert_eq!(s.balance(uid).await.used, b.used, "durable");
}
