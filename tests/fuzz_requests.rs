//! Generated hostile bodies through the real server (SPEC §9): none makes
//! it fail or die, and every call it forwards reaches the mock upstream as
//! a standard parser reads it with the model, completion cap and stream flag
//! the gateway checked, and is recorded with that model.

mod common;
use common::mock::{use_mock, Mock};
use common::*;
use serde_json::Value;

/// The keys of chat bodies.
const CHAT_KEYS: &[&str] = &[
    "model",
    "Model",
    "m\\u006fdel",
    "stream",
    "str\\u0065am",
    "n",
    "best_of",
    "max_tokens",
    "MAX_TOKENS",
    "max_completion_tokens",
    "num_predict",
    "options",
    "stream_options",
    "messages",
    "x",
    "\\u0078",
];

/// The keys of Messages and Responses bodies.
const DIALECT_KEYS: &[&str] = &[
    "model",
    "MODEL",
    "stream",
    "max_tokens",
    "Max_Tokens",
    "max_output_tokens",
    "max_\\u006futput_tokens",
    "messages",
    "input",
    "system",
    "System",
    "instructions",
    "tools",
    "tool_choice",
    "stop_sequences",
    "content",
    "role",
    "type",
    "store",
];

/// A small deterministic generator (xorshift) of bodies with `keys`.
struct Gen(u64, &'static [&'static str]);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }

    fn value(&mut self, depth: usize) -> String {
        match self.next() % 11 {
            0 => "null".into(),
            1 => "true".into(),
            2 => "false".into(),
            3 => self
                .pick(&[
                    "0",
                    "1",
                    "-1",
                    "7",
                    "2.0",
                    "1e5",
                    "99999999999999999999",
                    "128",
                ])
                .into(),
            4 => self
                .pick(&[r#""a""#, r#""b\u0061""#, r#""""#, r#""local/usage:3:4""#])
                .into(),
            5 if depth < 4 => {
                let n = (self.next() % 3) as usize;
                let items: Vec<String> = (0..n).map(|_| self.value(depth + 1)).collect();
                format!("[{}]", items.join(","))
            }
            6 if depth < 4 => self.object(depth + 1, 3),
            7 => {
                let d = (self.next() % 200) as usize;
                format!("{}{}", "[".repeat(d), "]".repeat(d))
            }
            8 => r#"[{"role":"user","content":"hi"}]"#.into(),
            9 => r#"{"include_usage":true,"num_predict":5}"#.into(),
            10 if self.1 == DIALECT_KEYS => self
                .pick(&[
                    r#"[{"role":"user","content":[{"type":"text","text":"x"},{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"r"}]}]}]"#,
                    r#"[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":{"a":[1]}}]}]"#,
                    r#"[{"type":"function_call","call_id":"c","name":"f","arguments":"{"},{"type":"function_call_output","call_id":"c","output":"o"}]"#,
                    r#"[{"name":"f","input_schema":{"type":"object"}},{"type":"function","name":"g","parameters":null}]"#,
                    r#"{"type":"tool","name":"f"}"#,
                    r#""anth/usage:1:2""#,
                ])
                .into(),
            _ => r#""local/usage:1:2""#.into(),
        }
    }

    fn object(&mut self, depth: usize, max: u64) -> String {
        let n = self.next() % (max + 1);
        let fields: Vec<String> = (0..n)
            .map(|_| {
                let k = self.pick(self.1);
                format!("\"{k}\":{}", self.value(depth))
            })
            .collect();
        format!("{{{}}}", fields.join(","))
    }
}

#[tokio::test]
async fn generated_bodies_never_break_the_gateway_or_its_reading() {
    let mock = Mock::start().await;
    let s = TestServer::start_with(|cfg| {
        use_mock(cfg, &mock, &["local"]);
        cfg.routing.default_provider = "local".into();
        cfg.routing.retries = 0;
    })
    .await;
    let (_, _, key) = s.user_with_key("fuzz", Some("enterprise")).await;
    let admin = s.admin_token().await;
    let mut g = Gen(0x2545_F491_4F6C_DD1D, CHAT_KEYS);
    let mut forwarded = 0;
    for i in 0..1000 {
        let mut body = g.object(0, 6);
        if i % 2 == 0 {
            // Half carry a valid core, so that many are forwarded.
            let core = r#""model":"local/usage:3:4","messages":[{"role":"user","content":"hi"}]"#;
            body = if body == "{}" {
                format!("{{{core}}}")
            } else {
                format!("{{{core},{}", &body[1..])
            };
        }
        let before = mock.generation_calls().len();
        let r = s
            .client
            .post(s.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let streamed = r
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"));
        let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        let text = r.text().await.unwrap();
        assert!(status < 500, "{status} for {body}: {text}");
        let calls = mock.generation_calls();
        if calls.len() == before {
            assert_ne!(status, 200, "answered without an upstream call: {body}");
            continue;
        }
        forwarded += 1;
        assert_eq!(status, 200, "{body}: {text}");
        let sent = &calls[calls.len() - 1].body;
        // What the upstream read is what was checked: the routed model, a
        // cap no larger than the plan allows in every length field, and
        // the stream flag the answer followed.
        let model = sent["model"]
            .as_str()
            .unwrap_or_else(|| panic!("{body} -> {sent}"));
        assert!(model.starts_with("usage:"), "{body} -> {sent}");
        assert_eq!(
            sent["stream"] == Value::Bool(true),
            streamed,
            "{body} -> {sent}"
        );
        for f in ["max_tokens", "max_completion_tokens", "num_predict"] {
            if let Some(cap) = sent.get(f).filter(|v| !v.is_null()) {
                let cap = cap.as_i64().unwrap_or_else(|| panic!("{f} in {sent}"));
                assert!((0..=4096).contains(&cap), "{f} = {cap} in {sent}");
            }
        }
        assert!(sent.get("max_tokens").is_some() || sent.get("max_completion_tokens").is_some());
        // Recorded under the model that ran.
        let log: Value = s
            .get_as("/admin/requests?limit=1", &admin)
            .await
            .json()
            .await
            .unwrap();
        let rec = &log["data"][0];
        if rec["request_id"] == rid.as_str() {
            assert_eq!(rec["upstream_model"], model, "{body}");
        }
    }
    assert!(
        forwarded >= 60,
        "only {forwarded} of 1000 bodies were forwarded"
    );
    assert_eq!(
        s.client
            .get(s.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// The same for Messages and Responses bodies, to a provider of each `api`:
/// nothing fails or dies, and what goes upstream carries the routed model
/// and a cap no larger than the plan allows, in the provider's dialect.
#[tokio::test]
async fn generated_dialect_bodies_never_break_the_gateway() {
    let mock = Mock::start().await;
    let s = TestServer::start_with(|cfg| {
        use_mock(cfg, &mock, &["local"]);
        let p = cfg.providers.entry("anth".into()).or_default();
        p.base_url = Some(mock.base("anth"));
        p.api_key = tollgate::config::Secret::new("sk-ant-test");
        p.api = Some(tollgate::config::ProviderApi::Anthropic);
        cfg.routing.default_provider = "local".into();
        cfg.routing.retries = 0;
    })
    .await;
    let admin = s.admin_token().await;
    let r = s
        .client
        .post(s.url("/admin/plans"))
        .bearer_auth(&admin)
        .json(
            &serde_json::json!({"name": "fuzz", "monthly_tokens": 1_000_000_000i64,
                                  "requests_per_minute": 100_000}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (_, _, key) = s.user_with_key("fuzz2", Some("fuzz")).await;
    let mut g = Gen(0x9E37_79B9_7F4A_7C15, DIALECT_KEYS);
    let mut forwarded = 0;
    for i in 0..1000 {
        let (path, core) = match i % 4 {
            0 => (
                "/v1/messages",
                r#""model":"anth/usage:3:4","max_tokens":50,"messages":[{"role":"user","content":"hi"}]"#,
            ),
            1 => (
                "/v1/messages",
                r#""model":"local/usage:3:4","max_tokens":50,"messages":[{"role":"user","content":"hi"}]"#,
            ),
            2 => ("/v1/responses", r#""model":"anth/usage:3:4","input":"hi""#),
            _ => ("/v1/responses", r#""model":"local/usage:3:4","input":"hi""#),
        };
        let with_core = i % 8 < 5;
        let mut body = g.object(0, if with_core { 3 } else { 6 });
        if with_core {
            body = if body == "{}" {
                format!("{{{core}}}")
            } else {
                format!("{{{core},{}", &body[1..])
            };
        }
        let before = mock.generation_calls().len();
        let r = s
            .client
            .post(s.url(path))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert!(status < 500, "{status} for {path} {body}: {text}");
        let calls = mock.generation_calls();
        if calls.len() == before {
            assert_ne!(status, 200, "answered without an upstream call: {body}");
            if path == "/v1/messages" {
                let v: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(v["type"], "error", "Anthropic's shape: {text}");
            }
            continue;
        }
        forwarded += 1;
        assert_eq!(status, 200, "{path} {body}: {text}");
        let call = &calls[calls.len() - 1];
        let sent = &call.body;
        let model = sent["model"].as_str().unwrap_or("");
        assert!(model.starts_with("usage:"), "{body} -> {sent}");
        let cap = sent["max_tokens"]
            .as_i64()
            .unwrap_or_else(|| panic!("no cap: {body} -> {sent}"));
        assert!(
            (0..=50).contains(&cap) || !body.contains("\"max_tokens\":50") && cap <= 4096,
            "cap {cap}: {body} -> {sent}"
        );
        assert_eq!(
            call.provider == "anth",
            call.path == "/messages",
            "{body} -> {}",
            call.path
        );
    }
    assert!(
        forwarded >= 100,
        "only {forwarded} of 1000 bodies were forwarded"
    );
}
