//! SPEC §3 error shape on every failure path, unknown paths, body limits,
//! `x-request-id` on every answer, and CORS.

mod common;
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn malformed_json_is_400_in_openai_shape() {
    let s = TestServer::start().await;
    let t = s.admin_token().await;
    for (path, auth) in [
        ("/api/keys", true),
        ("/auth/login", false),
        ("/admin/users", true),
    ] {
        let mut rb = s
            .client
            .post(s.url(path))
            .header("content-type", "application/json")
            .body("{\"name\": ");
        if auth {
            rb = rb.bearer_auth(&t);
        }
        let r = rb.send().await.unwrap();
        assert!(r.headers().contains_key("x-request-id"));
        assert_error_is(r, 400, "invalid_request_error", None).await;
    }
}

#[tokio::test]
async fn missing_or_wrong_typed_field_names_it() {
    let s = TestServer::start().await;
    let r = s
        .client
        .post(s.url("/auth/login"))
        .json(&json!({"username": "admin"}))
        .send()
        .await
        .unwrap();
    let v = assert_error_is(r, 400, "invalid_request_error", None).await;
    assert_eq!(v["error"]["param"], "password", "{v}");
    let r = s
        .client
        .post(s.url("/auth/login"))
        .json(&json!({"username": 5, "password": "x"}))
        .send()
        .await
        .unwrap();
    let v = assert_error_is(r, 400, "invalid_request_error", None).await;
    assert_eq!(v["error"]["param"], "username", "{v}");

    let t = s.admin_token().await;
    let r = s
        .client
        .post(s.url("/api/keys"))
        .bearer_auth(&t)
        .json(&json!({"name": "k", "allowed_models": "aiml/*"}))
        .send()
        .await
        .unwrap();
    let v = assert_error_is(r, 400, "invalid_request_error", None).await;
    assert_eq!(v["error"]["param"], "allowed_models", "{v}");
    let r = s
        .client
        .post(s.url("/auth/password"))
        .bearer_auth(&t)
        .json(&json!({"current_password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    let v = assert_error_is(r, 400, "invalid_request_error", None).await;
    assert_eq!(v["error"]["param"], "new_password", "{v}");
}

#[tokio::test]
async fn oversized_body_is_413() {
    let s = TestServer::start_with(|c| c.server.max_body_bytes = 1024).await;
    let t = s.admin_token().await;
    let big = json!({"name": "x".repeat(2000)});
    let r = s
        .client
        .post(s.url("/api/keys"))
        .bearer_auth(&t)
        .json(&big)
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("x-request-id"));
    assert_error_is(r, 413, "invalid_request_error", Some("request_too_large")).await;
    // Public routes too, and a body that does not announce its length.
    let r = s
        .client
        .post(s.url("/auth/login"))
        .json(&json!({"username": "admin", "password": "p".repeat(2000)}))
        .send()
        .await
        .unwrap();
    assert_error_is(r, 413, "invalid_request_error", Some("request_too_large")).await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(b"{\"name\":\"".to_vec()),
        Ok(vec![b'y'; 3000]),
        Ok(b"\"}".to_vec()),
    ];
    let r = post_streamed(&s, "/api/keys", &t, chunks).await;
    assert_error_is(r, 413, "invalid_request_error", Some("request_too_large")).await;
    // A body under the limit is fine.
    let r = s
        .client
        .post(s.url("/api/keys"))
        .bearer_auth(&t)
        .json(&json!({"name": "small"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn unknown_path_is_404_with_or_without_a_credential() {
    let s = TestServer::start().await;
    let (_, token, key) = s.user_with_key("alice", None).await;
    for path in ["/nope", "/api/nope", "/admin/nope", "/auth/nope/deeper"] {
        let r = s.client.get(s.url(path)).send().await.unwrap();
        assert!(r.headers().contains_key("x-request-id"), "{path}");
        assert_error_is(r, 404, "invalid_request_error", Some("not_found")).await;
        for cred in [&token, &key, &"sk_live_bogus".to_string()] {
            let r = s.get_as(path, cred).await;
            assert_error_is(r, 404, "invalid_request_error", Some("not_found")).await;
        }
        let r = s
            .client
            .post(s.url(path))
            .header("x-api-key", &key)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_error_is(r, 404, "invalid_request_error", Some("not_found")).await;
    }
}

#[tokio::test]
async fn every_answer_has_a_request_id() {
    let s = TestServer::start().await;
    let t = s.admin_token().await;
    let mut ids = std::collections::HashSet::new();
    let answers = vec![
        s.client.get(s.url("/health")).send().await.unwrap(),
        s.client.get(s.url("/auth/me")).send().await.unwrap(),
        s.get_as("/auth/me", &t).await,
        s.get_as("/missing", &t).await,
        s.client.get(s.url("/auth/login")).send().await.unwrap(),
        s.client
            .post(s.url("/auth/login"))
            .json(&json!({"username": "admin", "password": "wrong-wrong"}))
            .send()
            .await
            .unwrap(),
        s.client
            .post(s.url("/auth/password"))
            .bearer_auth(&t)
            .body("nope")
            .send()
            .await
            .unwrap(),
        s.client.get(s.url("/")).send().await.unwrap(),
    ];
    for r in answers {
        let id = r
            .headers()
            .get("x-request-id")
            .unwrap_or_else(|| panic!("{} lacks x-request-id", r.url()));
        assert!(!id.is_empty());
        assert!(
            ids.insert(id.to_str().unwrap().to_owned()),
            "request ids are unique"
        );
        if r.status().is_client_error() {
            let v: Value = r.json().await.unwrap();
            for f in ["message", "type", "code", "param"] {
                assert!(v["error"].get(f).is_some(), "{v}");
            }
        }
    }
}

#[tokio::test]
async fn cors_allows_configured_origins_only() {
    let s = TestServer::start_with(|c| {
        c.server.cors_allowed_origins = vec!["vscode-webview://*".into()]
    })
    .await;
    let t = s.admin_token().await;
    let allowed = "vscode-webview://1abc2def";

    let r = s
        .client
        .get(s.url("/auth/me"))
        .bearer_auth(&t)
        .header("origin", allowed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap()),
        Some(allowed)
    );

    let r = s
        .client
        .request(reqwest::Method::OPTIONS, s.url("/api/keys"))
        .header("origin", allowed)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "preflight: {}", r.status());
    assert_eq!(
        r.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap()),
        Some(allowed)
    );
    let methods = r
        .headers()
        .get("access-control-allow-methods")
        .expect("allow-methods")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(methods.contains("POST"), "{methods}");
    let headers = r
        .headers()
        .get("access-control-allow-headers")
        .expect("allow-headers")
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(headers.contains("authorization"), "{headers}");
    assert!(r.headers().contains_key("x-request-id"));

    for other in ["https://evil.example", "vscode-file://x"] {
        let r = s
            .client
            .get(s.url("/auth/me"))
            .bearer_auth(&t)
            .header("origin", other)
            .send()
            .await
            .unwrap();
        assert!(
            r.headers().get("access-control-allow-origin").is_none(),
            "{other}"
        );
        let r = s
            .client
            .request(reqwest::Method::OPTIONS, s.url("/api/keys"))
            .header("origin", other)
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert!(
            r.headers().get("access-control-allow-origin").is_none(),
            "preflight from {other}"
        );
    }
    // Errors carry the CORS header too, so the webview can read them.
    let r = s
        .client
        .get(s.url("/auth/me"))
        .header("origin", allowed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap()),
        Some(allowed)
    );
}

#[tokio::test]
async fn no_cors_headers_without_configuration() {
    let s = TestServer::start().await;
    let r = s
        .client
        .get(s.url("/health"))
        .header("origin", "vscode-webview://abc")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn form_login_missing_field_names_it() {
    let s = TestServer::start().await;
    let r = s
        .client
        .post(s.url("/auth/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=admin")
        .send()
        .await
        .unwrap();
    let v = assert_error_is(r, 400, "invalid_request_error", None).await;
    assert_eq!(v["error"]["param"], "password", "{v}");
}

#[tokio::test]
async fn oversized_form_body_is_413() {
    let s = TestServer::start_with(|c| c.server.max_body_bytes = 1024).await;
    let r = s
        .client
        .post(s.url("/auth/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("username=admin&password={}", "p".repeat(2000)))
        .send()
        .await
        .unwrap();
    assert_error_is(r, 413, "invalid_request_error", Some("request_too_large")).await;
}

#[tokio::test]
async fn errors_do_not_echo_secrets_sent_in_the_wrong_field() {
    // SPEC §3: no error ever contains a user's API key or a password, even one
    // the client put in the wrong place.
    let s = TestServer::start().await;
    let (_, token, key) = s.user_with_key("alice", None).await;
    let id = s
        .get_as("/api/keys", &token)
        .await
        .json::<Value>()
        .await
        .unwrap()["data"][0]["id"]
        .as_i64()
        .unwrap();
    let r = s
        .client
        .patch(s.url(&format!("/api/keys/{id}")))
        .bearer_auth(&token)
        .json(&json!({"monthly_token_limit": key}))
        .send()
        .await
        .unwrap();
    let v = assert_error_is(r, 400, "invalid_request_error", None).await;
    assert_eq!(v["error"]["param"], "monthly_token_limit", "{v}");
    assert!(!v.to_string().contains(&key[8..]), "the key is echoed: {v}");

    let r = s
        .client
        .post(s.url("/auth/login"))
        .json(&json!({"username": "alice", "password": 9_876_543_210_u64}))
        .send()
        .await
        .unwrap();
    let v = assert_error_is(r, 400, "invalid_request_error", None).await;
    assert_eq!(v["error"]["param"], "password", "{v}");
    assert!(
        !v.to_string().contains("9876543210"),
        "the password is echoed: {v}"
    );

    let r = s
        .client
        .post(s.url("/auth/password"))
        .bearer_auth(&token)
        .json(&json!({"current_password": 31_415_926_535_u64, "new_password": "new-password-1"}))
        .send()
        .await
        .unwrap();
    let v = assert_error_is(r, 400, "invalid_request_error", None).await;
    assert_eq!(v["error"]["param"], "current_password", "{v}");
    assert!(
        !v.to_string().contains("31415926535"),
        "the password is echoed: {v}"
    );
}

/// Generation calls skip the router (`http::dispatch`): their errors must be
/// the same as everywhere else.
#[tokio::test]
async fn generation_routes_answer_like_the_rest() {
    let s = TestServer::start_with(|c| c.server.max_body_bytes = 1024).await;
    let (_, _, key) = s.user_with_key("gen", None).await;
    for path in [
        "/v1/chat/completions",
        "/llm/chat/completions",
        "/chat/completions",
        "/v1/embeddings",
    ] {
        // No credential: 401, with a request id.
        let r = s
            .client
            .post(s.url(path))
            .json(&json!({"model": "m", "messages": []}))
            .send()
            .await
            .unwrap();
        assert!(r.headers().contains_key("x-request-id"), "{path}");
        assert_error_is(r, 401, "invalid_request_error", Some("invalid_api_key")).await;
        // Too large: 413, announced or streamed.
        let big =
            json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(2000)}]});
        let r = s
            .client
            .post(s.url(path))
            .bearer_auth(&key)
            .json(&big)
            .send()
            .await
            .unwrap();
        assert_error_is(r, 413, "invalid_request_error", Some("request_too_large")).await;
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
            Ok(big.to_string().into_bytes()[..600].to_vec()),
            Ok(vec![b' '; 600]),
        ];
        let r = post_streamed(&s, path, &key, chunks).await;
        assert_error_is(r, 413, "invalid_request_error", Some("request_too_large")).await;
        // Not JSON: 400.
        let r = s
            .client
            .post(s.url(path))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body("{")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        // Another method: 405 from the router.
        let r = s
            .client
            .get(s.url(path))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_error_is(r, 405, "invalid_request_error", Some("method_not_allowed")).await;
    }
    // A path that only looks like one: 404.
    let r = s
        .client
        .post(s.url("/v1/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// POSTs a JSON body sent in `chunks`, without a Content-Length.
async fn post_streamed(
    s: &TestServer,
    path: &str,
    bearer: &str,
    chunks: Vec<Result<Vec<u8>, std::io::Error>>,
) -> reqwest::Response {
    s.client
        .post(s.url(path))
        .bearer_auth(bearer)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap()
}
