//! Metering on the Messages and Responses paths, passed through and
//! translated (SPEC §6, §10): many calls at once never overdraw the balance
//! and are charged what the provider reported; a client that leaves mid-stream
//! is charged an estimate and its reservation released; an error inside a
//! stream reaches the client in its dialect and is recorded as one.

mod common;
use common::eventually;
use common::mock::{use_mock, Mock};
use common::TestServer;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tollgate::config::{ProviderApi, Secret};

async fn setup() -> (Mock, TestServer) {
    let mock = Mock::start().await;
    let s = TestServer::start_with(|cfg| {
        use_mock(cfg, &mock, &["aiml"]);
        let p = cfg.providers.entry("anth".into()).or_default();
        p.base_url = Some(mock.base("anth"));
        p.api_key = Secret::new("sk-ant-test");
        p.api = Some(ProviderApi::Anthropic);
    })
    .await;
    (mock, s)
}

fn period(s: &TestServer) -> String {
    tollgate::metering::period_of(s.state.clock.now())
}

async fn create_plan(s: &TestServer, name: &str, tokens: i64) {
    let admin = s.admin_token().await;
    let r = s
        .client
        .post(s.url("/admin/plans"))
        .bearer_auth(&admin)
        .json(&json!({"name": name, "monthly_tokens": tokens, "requests_per_minute": 100000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

/// A call of `kind` (`messages`, `responses` or `chat`) to `model`.
fn call(kind: &str, model: &str, stream: bool) -> (&'static str, Value) {
    match kind {
        "messages" => (
            "/v1/messages",
            json!({"model": model, "max_tokens": 100, "stream": stream,
                   "messages": [{"role": "user", "content": "hi"}]}),
        ),
        "responses" => (
            "/v1/responses",
            json!({"model": model, "max_output_tokens": 100, "stream": stream, "input": "hi"}),
        ),
        _ => (
            "/v1/chat/completions",
            json!({"model": model, "max_tokens": 100, "stream": stream,
                   "stream_options": {"include_usage": true},
                   "messages": [{"role": "user", "content": "hi"}]}),
        ),
    }
}

/// `_usage_info` of an answer, whole or streamed; `None` for a refusal.
async fn usage_info(r: reqwest::Response) -> Option<Value> {
    match r.status().as_u16() {
        429 => None,
        200 => {
            let text = r.text().await.unwrap();
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                return Some(v["_usage_info"].clone());
            }
            let info = text
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .find_map(|v| {
                    [
                        &v["_usage_info"],
                        &v["usage"]["_usage_info"],
                        &v["response"]["usage"]["_usage_info"],
                    ]
                    .into_iter()
                    .find(|i| i.is_object())
                    .cloned()
                });
            Some(info.unwrap_or_else(|| panic!("no _usage_info in {text}")))
        }
        s => panic!("unexpected {s}: {}", r.text().await.unwrap()),
    }
}

#[tokio::test]
async fn parallel_calls_in_every_dialect_never_overdraw() {
    let (mock, s) = setup().await;
    // Each call reserves its prompt estimate + 100 and is charged 8 + 100:
    // about ten fit.
    create_plan(&s, "ten", 1200).await;
    let (uid, _, key) = s.user_with_key("ivy", Some("ten")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (st, stop, p) = (s.state.clone(), stop.clone(), period(&s));
        tokio::spawn(async move {
            let mut max = 0;
            while !stop.load(Ordering::SeqCst) {
                let b = st.metering.quotas.balances(uid, None, &p).await.unwrap().0;
                max = max.max(b.used + b.reserved);
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            max
        })
    };
    let kinds = [
        ("messages", "aiml/usage:8:100"),
        ("messages", "anth/usage:8:100"),
        ("responses", "aiml/usage:8:100"),
        ("responses", "anth/usage:8:100"),
        ("chat", "anth/usage:8:100"),
    ];
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let (kind, model) = kinds[i % kinds.len()];
            let (path, body) = call(kind, model, i % 2 == 0);
            let req = s.client.post(s.url(path)).bearer_auth(&key).json(&body);
            tokio::spawn(async move { usage_info(req.send().await.unwrap()).await })
        })
        .collect();
    let mut charged = 0;
    let mut ok = 0;
    for t in tasks {
        if let Some(info) = t.await.unwrap() {
            assert_eq!(info["estimated"], false, "{info}");
            assert_eq!(info["prompt_tokens"], 8, "{info}");
            assert_eq!(info["completion_tokens"], 100, "{info}");
            charged += info["tokens_used"].as_i64().unwrap();
            ok += 1;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let max_seen = watcher.await.unwrap();
    assert!(max_seen <= 1200, "charged + reserved reached {max_seen}");
    assert!((9..=11).contains(&ok), "{ok} calls fit");
    assert_eq!(
        mock.generation_calls().len(),
        ok,
        "refusals never go upstream"
    );
    let b = s.balance(uid).await;
    assert_eq!((b.used, b.reserved), (charged, 0));
    assert_eq!(charged, 108 * ok as i64);
}

/// Waits up to 20 s: a bound for a loaded machine, not a timing claim
/// (5 s timed out while the suite shared 2 cores with a build).
async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..800 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn records(s: &TestServer) -> Vec<Value> {
    s.records("limit=500").await
}

#[tokio::test]
async fn a_client_leaving_a_stream_is_charged_an_estimate_in_every_dialect() {
    let (mock, s) = setup().await;
    let (uid, _, key) = s.user_with_key("jon", Some("pro")).await;
    let cases = [
        ("messages", "aiml/gated", "text_delta"),
        ("messages", "anth/gated", "text_delta"),
        ("responses", "anth/gated", "output_text.delta"),
        ("chat", "anth/gated", "Hello"),
    ];
    for (i, (kind, model, first)) in cases.into_iter().enumerate() {
        let (path, body) = call(kind, model, true);
        let mut r = s
            .client
            .post(s.url(path))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        let mut got = String::new();
        while !got.contains(first) {
            got.push_str(std::str::from_utf8(&r.chunk().await.unwrap().unwrap()).unwrap());
        }
        drop(r);
        eventually("the reservation to be released", || async {
            s.balance(uid).await.reserved == 0
        })
        .await;
        // The held provider sees its reader go without being let go on: the
        // gateway closed the upstream connection.
        wait_for("the upstream to be cancelled", || {
            mock.state.dropped_streams.load(Ordering::SeqCst) == i + 1
        })
        .await;
        let recs = records(&s).await;
        let rec = recs.iter().find(|r| r["request_id"] == rid).unwrap();
        assert_eq!(rec["outcome"], "client_cancelled", "{kind} {model}: {rec}");
        assert_eq!(rec["estimated"], true, "{rec}");
        assert!(rec["completion_tokens"].as_i64().unwrap() >= 1, "{rec}");
        assert_eq!(rec["endpoint"], path.trim_start_matches("/v1/"), "{rec}");
    }
    let b = s.balance(uid).await;
    let total: i64 = records(&s)
        .await
        .iter()
        .map(|r| r["total_tokens"].as_i64().unwrap())
        .sum();
    assert_eq!((b.used, b.reserved), (total, 0));
}

#[tokio::test]
async fn an_error_inside_a_stream_reaches_the_client_in_its_dialect() {
    let (_mock, s) = setup().await;
    let (uid, _, key) = s.user_with_key("kim", Some("pro")).await;
    for (kind, model) in [
        ("messages", "anth/stream_error"),
        ("messages", "aiml/stream_error"),
        ("responses", "aiml/stream_error"),
        ("chat", "anth/stream_error"),
    ] {
        let (path, body) = call(kind, model, true);
        let r = s
            .client
            .post(s.url(path))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        let last: Value = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str(d).ok())
            .next_back()
            .unwrap();
        match kind {
            "messages" => {
                assert!(text.contains("event: error"), "{text}");
                assert_eq!(last["type"], "error", "{text}");
                assert!(last["error"]["message"].is_string(), "{text}");
            }
            "responses" => {
                assert_eq!(last["type"], "error", "{text}");
                assert!(last["message"].is_string(), "{text}");
            }
            _ => assert!(last["error"]["message"].is_string(), "{text}"),
        }
    }
    let recs = records(&s).await;
    assert_eq!(recs.len(), 4);
    assert!(
        recs.iter().all(|r| r["outcome"] == "upstream_error"),
        "{recs:?}"
    );
    let b = s.balance(uid).await;
    assert_eq!(b.reserved, 0);
}
