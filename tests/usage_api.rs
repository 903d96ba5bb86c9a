//! The usage routes: `/subscriptions/{me,plans,usage,usage/daily}`,
//! `/admin/usage` and `/admin/requests`, checked against the numbers the mock
//! upstream reported; month rollover with the injected clock, and a restart.

mod common;
use common::mock::{use_mock, Mock};
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use tollgate::config::{Config, PricingConfig};

/// Priced by `[pricing]`: 100 × 30 / 1e6 + 50 × 60 / 1e6.
const PRICED: &str = "aiml/usage:100:50";
const PRICED_COST: f64 = 0.006;
/// Priced by the upstream's own `usage.cost`.
const REPORTED: &str = "openrouter/usage:40:10+cost:0.5";

fn pricing(cfg: &mut Config) {
    cfg.pricing.insert(
        PRICED.into(),
        PricingConfig {
            prompt: 30.0,
            completion: 60.0,
            max_output_tokens: None,
        },
    );
}

async fn setup() -> (Mock, TestServer) {
    let mock = Mock::start().await;
    let s = TestServer::start_with(|cfg| {
        use_mock(cfg, &mock, &["openrouter", "aiml"]);
        pricing(cfg);
    })
    .await;
    (mock, s)
}

async fn chat(s: &TestServer, key: &str, model: &str, stream: bool) -> reqwest::Response {
    let mut body =
        json!({"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]});
    if stream {
        body["stream"] = json!(true);
    }
    let r = s
        .client
        .post(s.url("/llm/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    r
}

async fn ok_call(s: &TestServer, key: &str, model: &str, stream: bool) -> String {
    let r = chat(s, key, model, stream).await;
    assert_eq!(r.status(), 200, "{model}");
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let text = r.text().await.unwrap();
    assert!(!text.contains("\"error\""), "{text}");
    rid
}

async fn get(s: &TestServer, cred: &str, path: &str, query: &[(&str, &str)]) -> reqwest::Response {
    s.client
        .get(s.url(path))
        .bearer_auth(cred)
        .query(query)
        .send()
        .await
        .unwrap()
}

async fn get_json(s: &TestServer, cred: &str, path: &str, query: &[(&str, &str)]) -> Value {
    let r = get(s, cred, path, query).await;
    assert_eq!(r.status(), 200, "{path} {query:?}");
    r.json().await.unwrap()
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-9)
}

fn keys_of(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn set(words: &[&str]) -> BTreeSet<String> {
    words.iter().map(|s| s.to_string()).collect()
}

fn today() -> chrono::NaiveDate {
    chrono::Utc::now().date_naive()
}

struct Fixture {
    mock: Mock,
    s: TestServer,
    uma: i64,
    uma_token: String,
    uma_key_id: i64,
    vic: i64,
    vic_token: String,
}

/// uma: two priced aiml calls, two openrouter calls with a reported cost (one
/// streamed), one failed call; vic: one priced aiml call.
async fn fixture() -> Fixture {
    let (mock, s) = setup().await;
    let (uma, uma_token, _) = s.user_with_key("uma", Some("pro")).await;
    let (uma_key_id, uma_key) = s.create_key(&uma_token, json!({"name": "k2"})).await;
    let (vic, vic_token, vic_key) = s.user_with_key("vic", Some("pro")).await;
    ok_call(&s, &uma_key, PRICED, false).await;
    ok_call(&s, &uma_key, PRICED, true).await;
    ok_call(&s, &uma_key, REPORTED, false).await;
    ok_call(&s, &uma_key, REPORTED, true).await;
    let r = chat(&s, &uma_key, "aiml/error:400", false).await;
    assert_eq!(r.status(), 400);
    ok_call(&s, &vic_key, PRICED, false).await;
    Fixture {
        mock,
        s,
        uma,
        uma_token,
        uma_key_id,
        vic,
        vic_token,
    }
}

#[tokio::test]
async fn usage_totals_match_what_the_upstream_reported() {
    let f = fixture().await;
    let (s, t) = (&f.s, &f.uma_token);
    let (start, end) = tollgate::metering::period_bounds(chrono::Utc::now());
    let (start, end) = (tollgate::db::ts(start), tollgate::db::ts(end));

    let v = get_json(s, t, "/subscriptions/usage", &[]).await;
    assert_eq!(
        keys_of(&v),
        set(&[
            "provider",
            "tokens_used",
            "requests_count",
            "cost_total",
            "average_tokens_per_request",
            "period_start",
            "period_end"
        ])
    );
    assert_eq!(v["provider"], Value::Null);
    assert_eq!(v["tokens_used"], 400);
    assert_eq!(v["requests_count"], 4, "the failed call is not counted");
    assert!(close(&v["cost_total"], 2.0 * PRICED_COST + 1.0), "{v}");
    assert!(close(&v["average_tokens_per_request"], 100.0), "{v}");
    assert_eq!(v["period_start"], start.as_str());
    assert_eq!(v["period_end"], end.as_str());

    let v = get_json(s, t, "/subscriptions/usage", &[("provider", "aiml")]).await;
    assert_eq!(v["provider"], "aiml");
    assert_eq!(v["tokens_used"], 300);
    assert_eq!(v["requests_count"], 2);
    assert!(close(&v["cost_total"], 2.0 * PRICED_COST), "{v}");
    assert!(close(&v["average_tokens_per_request"], 150.0), "{v}");

    let v = get_json(s, t, "/subscriptions/usage", &[("model", REPORTED)]).await;
    assert_eq!(v["tokens_used"], 100);
    assert_eq!(v["requests_count"], 2);
    assert!(close(&v["cost_total"], 1.0), "{v}");
    let v = get_json(
        s,
        t,
        "/subscriptions/usage",
        &[("provider", "aiml"), ("model", REPORTED)],
    )
    .await;
    assert_eq!(
        (v["tokens_used"].as_i64(), v["requests_count"].as_i64()),
        (Some(0), Some(0))
    );
    assert!(close(&v["average_tokens_per_request"], 0.0));

    // from inclusive, to exclusive; dates or RFC 3339.
    let d0 = today().format("%Y-%m-%d").to_string();
    let d1 = today().succ_opt().unwrap().format("%Y-%m-%d").to_string();
    let v = get_json(s, t, "/subscriptions/usage", &[("from", &d0), ("to", &d1)]).await;
    assert_eq!(v["tokens_used"], 400);
    assert_eq!(v["period_start"], format!("{d0}T00:00:00Z"));
    assert_eq!(v["period_end"], format!("{d1}T00:00:00Z"));
    let v = get_json(
        s,
        t,
        "/subscriptions/usage",
        &[("from", &format!("{d0}T00:00:00Z"))],
    )
    .await;
    assert_eq!(v["tokens_used"], 400);
    let v = get_json(s, t, "/subscriptions/usage", &[("to", &d0)]).await;
    assert_eq!(v["tokens_used"], 0, "to is exclusive");
    let v = get_json(s, t, "/subscriptions/usage", &[("from", &d1)]).await;
    assert_eq!(v["tokens_used"], 0);
    let r = get(s, t, "/subscriptions/usage", &[("from", "yesterday")]).await;
    let e = assert_error(r, 400).await;
    assert_eq!(e["error"]["param"], "from");

    // Another user's usage is their own.
    let v = get_json(s, &f.vic_token, "/subscriptions/usage", &[]).await;
    assert_eq!(v["tokens_used"], 150);
    assert_eq!(v["requests_count"], 1);
    assert!(close(&v["cost_total"], PRICED_COST));
}

#[tokio::test]
async fn daily_usage_has_one_row_per_day_provider_and_model() {
    let f = fixture().await;
    let (s, t) = (&f.s, &f.uma_token);
    let v = get_json(s, t, "/subscriptions/usage/daily", &[]).await;
    let days = v["days"].as_array().unwrap();
    assert_eq!(days.len(), 2, "{v}");
    let d0 = today().format("%Y-%m-%d").to_string();
    let aiml = days.iter().find(|d| d["provider"] == "aiml").unwrap();
    assert_eq!(
        keys_of(aiml),
        set(&["date", "provider", "model", "tokens", "requests", "cost_usd"])
    );
    assert_eq!(aiml["date"], d0.as_str());
    assert_eq!(aiml["model"], PRICED);
    assert_eq!(
        (aiml["tokens"].as_i64(), aiml["requests"].as_i64()),
        (Some(300), Some(2))
    );
    assert!(close(&aiml["cost_usd"], 2.0 * PRICED_COST));
    let or = days.iter().find(|d| d["provider"] == "openrouter").unwrap();
    assert_eq!(or["model"], REPORTED);
    assert_eq!(
        (or["tokens"].as_i64(), or["requests"].as_i64()),
        (Some(100), Some(2))
    );
    assert!(close(&or["cost_usd"], 1.0));

    let v = get_json(
        s,
        t,
        "/subscriptions/usage/daily",
        &[("provider", "openrouter")],
    )
    .await;
    assert_eq!(v["days"].as_array().unwrap().len(), 1);
    assert_eq!(v["days"][0]["tokens"], 100);
    let v = get_json(s, t, "/subscriptions/usage/daily", &[("model", PRICED)]).await;
    assert_eq!(v["days"].as_array().unwrap().len(), 1);
    assert_eq!(v["days"][0]["tokens"], 300);
    let v = get_json(s, t, "/subscriptions/usage/daily", &[("to", &d0)]).await;
    assert!(v["days"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn admin_usage_groups_by_day_user_provider_and_model() {
    let f = fixture().await;
    let s = &f.s;
    let admin = s.admin_token().await;
    let row = |v: &Value, key: &str| -> (i64, i64, f64) {
        let r = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == key)
            .unwrap_or_else(|| panic!("no row {key}: {v}"))
            .clone();
        assert_eq!(keys_of(&r), set(&["key", "tokens", "requests", "cost_usd"]));
        (
            r["tokens"].as_i64().unwrap(),
            r["requests"].as_i64().unwrap(),
            r["cost_usd"].as_f64().unwrap(),
        )
    };
    let approx = |(t, r, c): (i64, i64, f64), (t2, r2, c2): (i64, i64, f64)| {
        assert_eq!((t, r), (t2, r2));
        assert!((c - c2).abs() < 1e-9, "{c} != {c2}");
    };

    let v = get_json(s, &admin, "/admin/usage", &[("group_by", "user")]).await;
    assert_eq!(v["group_by"], "user");
    assert_eq!(v["rows"].as_array().unwrap().len(), 2);
    approx(row(&v, "uma"), (400, 4, 2.0 * PRICED_COST + 1.0));
    approx(row(&v, "vic"), (150, 1, PRICED_COST));

    let v = get_json(s, &admin, "/admin/usage", &[("group_by", "provider")]).await;
    assert_eq!(v["rows"].as_array().unwrap().len(), 2);
    approx(row(&v, "aiml"), (450, 3, 3.0 * PRICED_COST));
    approx(row(&v, "openrouter"), (100, 2, 1.0));

    let v = get_json(s, &admin, "/admin/usage", &[("group_by", "model")]).await;
    assert_eq!(v["rows"].as_array().unwrap().len(), 2);
    approx(row(&v, PRICED), (450, 3, 3.0 * PRICED_COST));
    approx(row(&v, REPORTED), (100, 2, 1.0));

    let d0 = today().format("%Y-%m-%d").to_string();
    let v = get_json(s, &admin, "/admin/usage", &[("group_by", "day")]).await;
    assert_eq!(v["rows"].as_array().unwrap().len(), 1);
    approx(row(&v, &d0), (550, 5, 3.0 * PRICED_COST + 1.0));
    let v = get_json(
        s,
        &admin,
        "/admin/usage",
        &[("group_by", "day"), ("to", &d0)],
    )
    .await;
    assert!(v["rows"].as_array().unwrap().is_empty());

    let r = get(s, &admin, "/admin/usage", &[("group_by", "key")]).await;
    let e = assert_error(r, 400).await;
    assert_eq!(e["error"]["param"], "group_by");
    // Admin routes are for admins.
    let r = get(s, &f.uma_token, "/admin/usage", &[("group_by", "user")]).await;
    assert_error(r, 403).await;
}

#[tokio::test]
async fn the_request_log_filters_and_pages() {
    let f = fixture().await;
    let s = &f.s;
    let admin = s.admin_token().await;
    let all = get_json(s, &admin, "/admin/requests", &[]).await;
    let rows = all["data"].as_array().unwrap();
    assert_eq!(rows.len(), 6, "{all}");
    assert_eq!(all["next_before"], Value::Null);
    let ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let fields = [
        "id",
        "request_id",
        "user_id",
        "username",
        "key_id",
        "provider",
        "model",
        "upstream_model",
        "endpoint",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cost_usd",
        "estimated",
        "http_status",
        "outcome",
        "latency_ms",
        "ttft_ms",
        "created_at",
    ];
    for r in rows {
        for k in fields {
            assert!(r.get(k).is_some(), "record lacks {k}: {r}");
        }
    }
    // The first uma call, fully.
    let first = rows.last().unwrap();
    assert_eq!(first["username"], "uma");
    assert_eq!(first["user_id"], f.uma);
    assert_eq!(first["key_id"], f.uma_key_id);
    assert_eq!(first["provider"], "aiml");
    assert_eq!(first["model"], PRICED);
    assert_eq!(first["upstream_model"], "usage:100:50");
    assert_eq!(first["endpoint"], "chat/completions");
    assert_eq!(
        (
            first["prompt_tokens"].as_i64(),
            first["completion_tokens"].as_i64(),
            first["total_tokens"].as_i64()
        ),
        (Some(100), Some(50), Some(150))
    );
    assert!(close(&first["cost_usd"], PRICED_COST));
    assert_eq!(first["estimated"], false);
    assert_eq!(first["http_status"], 200);
    assert_eq!(first["outcome"], "ok");
    assert!(first["created_at"].as_str().unwrap().ends_with('Z'));

    let by_name = get_json(s, &admin, "/admin/requests", &[("user", "uma")]).await;
    assert_eq!(by_name["data"].as_array().unwrap().len(), 5);
    let by_id = get_json(
        s,
        &admin,
        "/admin/requests",
        &[("user", &f.vic.to_string())],
    )
    .await;
    let vic_rows = by_id["data"].as_array().unwrap();
    assert_eq!(vic_rows.len(), 1);
    assert_eq!(vic_rows[0]["username"], "vic");
    let nobody = get_json(s, &admin, "/admin/requests", &[("user", "nobody")]).await;
    assert!(nobody["data"].as_array().unwrap().is_empty());
    let or = get_json(s, &admin, "/admin/requests", &[("provider", "openrouter")]).await;
    let or = or["data"].as_array().unwrap();
    assert_eq!(or.len(), 2);
    assert!(or
        .iter()
        .all(|r| close(&r["cost_usd"], 0.5) && r["total_tokens"] == 50));
    let failed = get_json(
        s,
        &admin,
        "/admin/requests",
        &[("status", "upstream_error")],
    )
    .await;
    let failed = failed["data"].as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["http_status"], 400);
    assert_eq!(failed[0]["total_tokens"], 0);
    let ok = get_json(
        s,
        &admin,
        "/admin/requests",
        &[("status", "ok"), ("user", "uma")],
    )
    .await;
    assert_eq!(ok["data"].as_array().unwrap().len(), 4);

    // Pages of 4 then 2; the last page says there is no next one.
    let p1 = get_json(s, &admin, "/admin/requests", &[("limit", "4")]).await;
    let p1_ids: Vec<i64> = p1["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(p1_ids, ids[..4]);
    let before = p1["next_before"].as_i64().expect("next_before");
    assert_eq!(before, ids[3]);
    let p2 = get_json(
        s,
        &admin,
        "/admin/requests",
        &[("limit", "4"), ("before", &before.to_string())],
    )
    .await;
    let p2_ids: Vec<i64> = p2["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(p2_ids, ids[4..]);
    assert_eq!(p2["next_before"], Value::Null);
    // A page that exactly fills the limit with nothing after it has no next page either.
    let p = get_json(s, &admin, "/admin/requests", &[("limit", "6")]).await;
    assert_eq!(p["data"].as_array().unwrap().len(), 6);
    assert_eq!(p["next_before"], Value::Null);
    let p = get_json(s, &admin, "/admin/requests", &[("limit", "500")]).await;
    assert_eq!(p["data"].as_array().unwrap().len(), 6);

    for bad in [
        ("limit", "501"),
        ("limit", "0"),
        ("limit", "x"),
        ("before", "x"),
        ("status", "great"),
    ] {
        let r = get(s, &admin, "/admin/requests", &[bad]).await;
        let e = assert_error(r, 400).await;
        assert_eq!(e["error"]["param"], bad.0);
    }
    drop(f.mock);
}

#[tokio::test]
async fn me_and_plans_have_their_shapes() {
    let (_mock, s) = setup().await;
    let (_, token, key) = s.user_with_key("wes", None).await;
    let v = get_json(&s, &token, "/subscriptions/plans", &[]).await;
    let plans = v.as_array().expect("a bare array");
    let names: Vec<&str> = plans.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["free", "pro", "enterprise"]);
    for p in plans {
        assert_eq!(
            keys_of(p),
            set(&[
                "name",
                "monthly_tokens",
                "monthly_usd",
                "requests_per_minute",
                "price_usd_month",
                "allowed_models",
                "pay_as_you_go"
            ])
        );
        assert_eq!(p["requests_per_minute"], 60);
        assert_eq!(p["allowed_models"], json!(["*"]));
    }
    assert_eq!(plans[0]["monthly_tokens"], 10_000);
    assert_eq!(plans[1]["monthly_tokens"], 100_000);
    assert_eq!(plans[2]["monthly_tokens"], 1_000_000);

    let me = get_json(&s, &key, "/subscriptions/me", &[]).await;
    assert_eq!(
        keys_of(&me),
        set(&[
            "plan",
            "monthly_tokens",
            "tokens_used",
            "tokens_reserved",
            "remaining_tokens",
            "monthly_usd",
            "usd_used",
            "usd_reserved",
            "remaining_usd",
            "credit_usd",
            "period_start",
            "period_end"
        ])
    );
    // No USD limit on this plan: the money limits are null, the sums 0.
    assert!(
        me["monthly_usd"].is_null() && me["remaining_usd"].is_null(),
        "{me}"
    );
    assert_eq!(
        (me["usd_used"].as_f64(), me["credit_usd"].as_f64()),
        (Some(0.0), Some(0.0))
    );
    assert_eq!(me["plan"], "free");
    assert_eq!(me["monthly_tokens"], 10_000);
    assert_eq!(
        (me["tokens_used"].as_i64(), me["tokens_reserved"].as_i64()),
        (Some(0), Some(0))
    );
    assert_eq!(me["remaining_tokens"], 10_000);
    let (start, end) = tollgate::metering::period_bounds(chrono::Utc::now());
    assert_eq!(me["period_start"], tollgate::db::ts(start));
    assert_eq!(me["period_end"], tollgate::db::ts(end));
    ok_call(&s, &key, PRICED, false).await;
    let me = get_json(&s, &token, "/subscriptions/me", &[]).await;
    assert_eq!(me["tokens_used"], 150);
    assert_eq!(me["remaining_tokens"], 10_000 - 150);
    // Money is counted without a USD limit too.
    assert_eq!(me["usd_used"].as_f64(), Some(PRICED_COST), "{me}");
    assert!(me["remaining_usd"].is_null(), "{me}");
}

#[tokio::test]
async fn a_new_month_starts_from_zero_without_a_restart() {
    let (_mock, s) = setup().await;
    let (uid, token, key) = s.user_with_key("xia", Some("free")).await;
    ok_call(&s, &key, PRICED, false).await;
    let me = get_json(&s, &token, "/subscriptions/me", &[]).await;
    assert_eq!(me["tokens_used"], 150);
    let old_start = me["period_start"].as_str().unwrap().to_owned();
    let old_end = me["period_end"].as_str().unwrap().to_owned();

    // (The JWT expires on the way; the key does not.)
    // Into the next month, an hour past its start.
    let now = s.state.clock.now();
    let (_, end) = tollgate::metering::period_bounds(now);
    s.state.clock.advance((end - now).num_seconds() + 3600);
    let (new_start, new_end) = tollgate::metering::period_bounds(s.state.clock.now());
    let me = get_json(&s, &key, "/subscriptions/me", &[]).await;
    assert_eq!(me["tokens_used"], 0);
    assert_eq!(me["remaining_tokens"], 10_000);
    assert_eq!(me["period_start"], old_end.as_str());
    assert_eq!(me["period_start"], tollgate::db::ts(new_start));
    assert_eq!(me["period_end"], tollgate::db::ts(new_end));
    let u = get_json(&s, &key, "/subscriptions/usage", &[]).await;
    assert_eq!(u["tokens_used"], 0, "usage defaults to the new period");
    assert_eq!(u["requests_count"], 0);
    assert_eq!(u["period_start"], old_end.as_str());
    let d = get_json(&s, &key, "/subscriptions/usage/daily", &[]).await;
    assert!(d["days"].as_array().unwrap().is_empty(), "{d}");
    // The old month is still there when asked for.
    let u = get_json(
        &s,
        &key,
        "/subscriptions/usage",
        &[("from", &old_start), ("to", &old_end)],
    )
    .await;
    assert_eq!(u["tokens_used"], 150);

    // A call now is charged to the new month.
    let r = chat(&s, &key, "aiml/usage:7:3", false).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["_usage_info"]["remaining_tokens"], 10_000 - 10);
    let me = get_json(&s, &key, "/subscriptions/me", &[]).await;
    assert_eq!(me["tokens_used"], 10);
    let u = get_json(&s, &key, "/subscriptions/usage", &[]).await;
    assert_eq!(
        (u["tokens_used"].as_i64(), u["requests_count"].as_i64()),
        (Some(10), Some(1))
    );
    let d = get_json(&s, &key, "/subscriptions/usage/daily", &[]).await;
    assert_eq!(d["days"].as_array().unwrap().len(), 1);
    assert_eq!(
        d["days"][0]["date"],
        s.state.clock.now().format("%Y-%m-%d").to_string()
    );
    let b = s.balance(uid).await;
    assert_eq!((b.used, b.reserved), (10, 0));
}

#[tokio::test]
async fn a_restart_keeps_the_period_usage() {
    let (mock, s) = setup().await;
    let (_, token, key) = s.user_with_key("yan", Some("free")).await;
    let (kid, limited) = s
        .create_key(
            &token,
            json!({"name": "limited", "monthly_token_limit": 1000}),
        )
        .await;
    ok_call(&s, &key, PRICED, false).await;
    ok_call(&s, &limited, PRICED, true).await;
    ok_call(&s, &limited, "aiml/usage:3:4", false).await;
    let before = get_json(&s, &token, "/subscriptions/me", &[]).await;
    assert_eq!(before["tokens_used"], 307);
    let (dir, cfg) = s.stop().await;

    let s = TestServer::start_in(dir, cfg).await;
    let me = get_json(&s, &token, "/subscriptions/me", &[]).await;
    assert_eq!(me, before, "the same balance after a restart");
    assert_eq!(me["tokens_reserved"], 0);
    assert_eq!(s.key_balance(kid).await.used, 157, "key totals survive too");
    let me = get_json(&s, &limited, "/subscriptions/me", &[]).await;
    assert_eq!(me["remaining_tokens"], 1000 - 157);
    let u = get_json(&s, &token, "/subscriptions/usage", &[]).await;
    assert_eq!(
        (u["tokens_used"].as_i64(), u["requests_count"].as_i64()),
        (Some(307), Some(3))
    );
    drop(mock);
}
