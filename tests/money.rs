//! Money (SPEC §12) against a real listener, a real database (SQLite, or
//! PostgreSQL with `TOLLGATE_TEST_BACKEND=postgres`) and the mock upstream:
//! USD budgets under concurrency, a key's USD limit below the plan's,
//! pay-as-you-go credit, credit across a restart, unpriced models, and the
//! money fields of `_usage_info` and `/subscriptions/me`.

mod common;
use common::mock::{use_mock, Mock};
use common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tollgate::config::{Config, PricingConfig, Unpriced};

/// A call the mock answers with 10 prompt and 20 completion tokens and
/// reports as costing $0.000437 (437 micro-dollars).
const PRICED: &str = "aiml/usage:10:20+cost:0.000437";
const COST: i64 = 437;
/// An unpriced model (no `[pricing]`, no list price).
const UNPRICED: &str = "aiml/usage:10:20";

/// `[pricing]` for `model` at $20 per million tokens each way: with the
/// gateway's prompt estimate of `hi` (8 tokens) and `max_tokens` 20 a call
/// reserves 8 × 20 + 20 × 20 = 560 micro-dollars, above what the mock reports.
fn priced(cfg: &mut Config, model: &str) {
    cfg.pricing.insert(
        model.to_owned(),
        PricingConfig {
            prompt: 20.0,
            completion: 20.0,
            max_output_tokens: None,
        },
    );
}

async fn setup(edit: impl FnOnce(&mut Config)) -> (Mock, TestServer) {
    let mock = Mock::start().await;
    let s = TestServer::start_with(|cfg| {
        use_mock(cfg, &mock, &["openrouter", "aiml"]);
        priced(cfg, PRICED);
        priced(cfg, &format!("{PRICED}+delay:100"));
        edit(cfg);
    })
    .await;
    (mock, s)
}

async fn admin_post(s: &TestServer, path: &str, body: Value) -> reqwest::Response {
    let admin = s.admin_token().await;
    s.client
        .post(s.url(path))
        .bearer_auth(&admin)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn create_plan(s: &TestServer, body: Value) {
    let r = admin_post(s, "/admin/plans", body.clone()).await;
    assert_eq!(r.status(), 201, "{body}: {}", r.text().await.unwrap());
}

async fn top_up(s: &TestServer, user: i64, amount: &str) {
    let r = admin_post(
        s,
        &format!("/admin/users/{user}/credits"),
        json!({"amount_usd": amount, "note": "test"}),
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

async fn chat(s: &TestServer, key: &str, model: &str) -> reqwest::Response {
    s.client
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

async fn me(s: &TestServer, cred: &str) -> Value {
    s.get_as("/subscriptions/me", cred)
        .await
        .json()
        .await
        .unwrap()
}

/// Micro-dollars of a JSON amount of dollars (six decimals survive a
/// double; the exact text is checked where amounts are written).
fn micros(v: &Value) -> i64 {
    let usd = v.as_f64().unwrap_or_else(|| panic!("not an amount: {v}"));
    (usd * 1e6).round() as i64
}

fn calls_to(mock: &Mock, model_part: &str) -> usize {
    mock.state
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| {
            c.body["model"]
                .as_str()
                .is_some_and(|m| m.contains(model_part))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_calls_never_spend_more_than_a_one_cent_budget() {
    let (_mock, s) = setup(|_| {}).await;
    create_plan(
        &s,
        json!({"name": "cent", "monthly_tokens": 10_000_000, "requests_per_minute": 100_000, "monthly_usd": 0.01}),
    )
    .await;
    let (uid, token, key) = s.user_with_key("spender", Some("cent")).await;

    // Charged plus reserved money, sampled while the calls run.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (st, stop) = (s.state.clone(), stop.clone());
        let period = tollgate::metering::period_of(st.clock.now());
        tokio::spawn(async move {
            let mut max = 0;
            while !stop.load(Ordering::SeqCst) {
                let (b, _, _) = st
                    .metering
                    .quotas
                    .balances(uid, None, &period)
                    .await
                    .unwrap();
                max = max.max(b.usd_used + b.usd_reserved);
                tokio::time::sleep(Duration::from_micros(300)).await;
            }
            max
        })
    };
    let model = format!("{PRICED}+delay:100");
    let calls = (0..100).map(|_| {
        let (s, key, model) = (&s, &key, &model);
        async move {
            let r = chat(s, key, model).await;
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    });
    let results = futures_util::future::join_all(calls).await;
    stop.store(true, Ordering::SeqCst);
    let max = watcher.await.unwrap();

    let mut served = 0;
    let mut charged = 0;
    for (status, body) in &results {
        match status {
            200 => {
                served += 1;
                let info = &body["_usage_info"];
                charged += micros(&info["cost_usd"]);
                assert!(info["remaining_usd"].is_number(), "{body}");
            }
            429 => {
                assert_eq!(body["error"]["code"], "insufficient_quota", "{body}");
                assert!(
                    body["error"]["message"].as_str().unwrap().contains('$'),
                    "the refusal speaks of money: {body}"
                );
            }
            _ => panic!("unexpected {status}: {body}"),
        }
    }
    // $0.01 pays 22 calls of $0.000437; a call is refused when less than its
    // smallest reservation is left, so never more.
    assert!((1..=22).contains(&served), "{served} calls served");
    assert!(
        max <= 10_000,
        "charged + reserved reached {max} µ$ of 10,000"
    );
    assert_eq!(charged, COST * served, "charges are the upstream's costs");

    let m = me(&s, &token).await;
    assert_eq!(micros(&m["usd_used"]), COST * served, "{m}");
    assert_eq!(micros(&m["usd_reserved"]), 0, "{m}");
    assert_eq!(micros(&m["monthly_usd"]), 10_000, "{m}");
    assert_eq!(micros(&m["remaining_usd"]), 10_000 - COST * served, "{m}");
    let admin = s.admin_token().await;
    let recs: Value = s
        .get_as("/admin/requests?user=spender&limit=500", &admin)
        .await
        .json()
        .await
        .unwrap();
    let recorded: i64 = recs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| micros(&r["cost_usd"]))
        .sum();
    assert_eq!(recorded, COST * served, "the records hold every charge");
}

#[tokio::test]
async fn a_keys_usd_limit_binds_below_the_plans() {
    let (mock, s) = setup(|_| {}).await;
    create_plan(
        &s,
        json!({"name": "dollar", "monthly_tokens": 10_000_000, "requests_per_minute": 1000, "monthly_usd": 1}),
    )
    .await;
    let (_, token, _) = s.user_with_key("keyed", Some("dollar")).await;
    // $0.001: two calls of $0.000437 fit, a third (reserving $0.00056) does not.
    let (_, key) = s
        .create_key(
            &token,
            json!({"name": "small", "monthly_usd_limit": "0.001"}),
        )
        .await;
    for i in 0..2 {
        let r = chat(&s, &key, PRICED).await;
        assert_eq!(r.status(), 200, "call {i}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(micros(&v["_usage_info"]["cost_usd"]), COST);
        assert_eq!(
            micros(&v["_usage_info"]["remaining_usd"]),
            1000 - COST * (i + 1),
            "{v}"
        );
    }
    let before = calls_to(&mock, "cost:0.000437");
    let r = chat(&s, &key, PRICED).await;
    let v = assert_error(r, 429).await;
    assert_eq!(v["error"]["code"], "insufficient_quota", "{v}");
    assert_eq!(
        calls_to(&mock, "cost:0.000437"),
        before,
        "refused before the upstream"
    );
    // Another key of the same user still has the plan's dollar.
    let (_, other) = s.create_key(&token, json!({"name": "big"})).await;
    assert_eq!(chat(&s, &other, PRICED).await.status(), 200);
}

#[tokio::test]
async fn pay_as_you_go_spends_credit_and_refuses_a_micro_dollar() {
    let (mock, s) = setup(|_| {}).await;
    create_plan(
        &s,
        json!({"name": "payg", "monthly_tokens": 10_000_000, "requests_per_minute": 1000, "pay_as_you_go": true}),
    )
    .await;
    let (poor, poor_token, poor_key) = s.user_with_key("poor", Some("payg")).await;
    top_up(&s, poor, "0.000001").await;
    assert_eq!(micros(&me(&s, &poor_token).await["credit_usd"]), 1);
    let r = chat(&s, &poor_key, PRICED).await;
    let v = assert_error(r, 429).await;
    assert_eq!(v["error"]["code"], "insufficient_quota", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("credit"),
        "{v}"
    );
    assert_eq!(calls_to(&mock, "cost:"), 0, "the upstream was never called");

    // With a cent the calls go through and each is paid from the credit.
    let (rich, rich_token, rich_key) = s.user_with_key("rich", Some("payg")).await;
    top_up(&s, rich, "0.01").await;
    for _ in 0..3 {
        assert_eq!(chat(&s, &rich_key, PRICED).await.status(), 200);
    }
    let m = me(&s, &rich_token).await;
    assert_eq!(micros(&m["credit_usd"]), 10_000 - 3 * COST, "{m}");
    assert_eq!(micros(&m["remaining_usd"]), 10_000 - 3 * COST, "{m}");
    assert_eq!(micros(&m["usd_used"]), 3 * COST, "{m}");
    // A top-up while the server runs counts at once.
    top_up(&s, rich, "1").await;
    let m = me(&s, &rich_token).await;
    assert_eq!(micros(&m["credit_usd"]), 1_010_000 - 3 * COST, "{m}");
}

#[tokio::test]
async fn credit_survives_a_restart() {
    let (mock, s) = setup(|_| {}).await;
    create_plan(
        &s,
        json!({"name": "payg", "monthly_tokens": 10_000_000, "requests_per_minute": 1000, "pay_as_you_go": true}),
    )
    .await;
    let (uid, _, key) = s.user_with_key("keeper", Some("payg")).await;
    top_up(&s, uid, "2.5").await;
    assert_eq!(chat(&s, &key, PRICED).await.status(), 200);
    let (dir, cfg) = s.stop().await;
    let s = TestServer::start_in(dir, cfg).await;
    let token = s.login("keeper", "user-password-1").await;
    let m = me(&s, &token).await;
    assert_eq!(micros(&m["credit_usd"]), 2_500_000 - COST, "{m}");
    // And it still pays for calls after the restart.
    assert_eq!(chat(&s, &key, PRICED).await.status(), 200);
    let m = me(&s, &token).await;
    assert_eq!(micros(&m["credit_usd"]), 2_500_000 - 2 * COST, "{m}");
    drop(mock);
}

#[tokio::test]
async fn an_unpriced_model_is_refused_under_a_usd_limit() {
    let (mock, s) = setup(|_| {}).await;
    create_plan(
        &s,
        json!({"name": "dollar", "monthly_tokens": 10_000_000, "requests_per_minute": 1000, "monthly_usd": 1}),
    )
    .await;
    let (_, _, key) = s.user_with_key("careful", Some("dollar")).await;
    let r = chat(&s, &key, UNPRICED).await;
    let v = assert_error(r, 403).await;
    assert_eq!(v["error"]["code"], "model_not_priced", "{v}");
    assert_eq!(calls_to(&mock, "usage:10:20"), 0);
    // A plan without a USD limit calls it, and `_usage_info` has no
    // remaining_usd.
    let (_, _, free_key) = s.user_with_key("tokens_only", None).await;
    let r = chat(&s, &free_key, UNPRICED).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["_usage_info"].get("remaining_usd").is_none(), "{v}");
    assert!(v["_usage_info"]["remaining_tokens"].is_number(), "{v}");
    let m = me(&s, &s.login("tokens_only", "user-password-1").await).await;
    assert!(
        m["remaining_usd"].is_null() && m["monthly_usd"].is_null(),
        "{m}"
    );
}

#[tokio::test]
async fn unpriced_allow_lets_unpriced_models_through_at_no_cost() {
    let (_mock, s) = setup(|cfg| cfg.metering.unpriced = Unpriced::Allow).await;
    create_plan(
        &s,
        json!({"name": "dollar", "monthly_tokens": 10_000_000, "requests_per_minute": 1000, "monthly_usd": 1}),
    )
    .await;
    let (_, _, key) = s.user_with_key("lenient", Some("dollar")).await;
    let r = chat(&s, &key, UNPRICED).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(micros(&v["_usage_info"]["cost_usd"]), 0, "{v}");
    assert_eq!(micros(&v["_usage_info"]["remaining_usd"]), 1_000_000, "{v}");
}
