//! SPEC §4 OAuth sign-in against a mock OAuth2 server on 127.0.0.1: the
//! authorization-code flow with PKCE, the state rules (single-use, browser
//! bound, 10 minutes, survives a restart), the redirect_uri allowlist, the
//! hand-back forms, account creation and linking, and the provider list.

mod common;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use common::*;
use reqwest::header;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tollgate::config::{Config, OAuthConfig, Secret};

// ---------------------------------------------------------------- mock server

#[derive(Default)]
struct IdpState {
    /// code → (code_challenge, redirect_uri, userinfo)
    codes: Mutex<HashMap<String, (String, String, Value)>>,
    /// access token → userinfo
    tokens: Mutex<HashMap<String, Value>>,
    /// The userinfo the next /authorize signs in as.
    next_user: Mutex<Value>,
    /// Every /authorize query.
    authorize_queries: Mutex<Vec<HashMap<String, String>>>,
    /// Headers of every /userinfo request.
    userinfo_headers: Mutex<Vec<HeaderMap>>,
    /// Store a wrong challenge, so the verifier cannot match.
    tamper_challenge: Mutex<bool>,
    counter: Mutex<u64>,
}

struct Idp {
    url: String,
    st: Arc<IdpState>,
}

impl Idp {
    async fn start() -> Idp {
        let st = Arc::new(IdpState::default());
        let app = Router::new()
            .route("/authorize", get(idp_authorize))
            .route("/token", post(idp_token))
            .route("/userinfo", get(idp_userinfo))
            .with_state(st.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Idp {
            url: format!("http://{addr}"),
            st,
        }
    }

    fn sign_in_as(&self, userinfo: Value) {
        *self.st.next_user.lock().unwrap() = userinfo;
    }

    /// A generic provider section pointing at this mock.
    fn config(&self) -> OAuthConfig {
        OAuthConfig {
            name: Some("Mock IdP".into()),
            client_id: "mock-client".into(),
            client_secret: Secret::new("mock-secret"),
            auth_url: format!("{}/authorize", self.url),
            token_url: format!("{}/token", self.url),
            userinfo_url: format!("{}/userinfo", self.url),
            scopes: vec!["openid".into(), "profile".into()],
            subject_field: Some("sub".into()),
            username_field: Some("preferred_username".into()),
            email_field: None,
        }
    }
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn next_id(st: &IdpState, prefix: &str) -> String {
    let mut c = st.counter.lock().unwrap();
    *c += 1;
    format!("{prefix}{c}")
}

async fn idp_authorize(
    State(st): State<Arc<IdpState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    st.authorize_queries.lock().unwrap().push(q.clone());
    let code = next_id(&st, "code-");
    let mut challenge = q.get("code_challenge").cloned().unwrap_or_default();
    if *st.tamper_challenge.lock().unwrap() {
        challenge = b64url(&Sha256::digest(b"some other verifier"));
    }
    let user = st.next_user.lock().unwrap().clone();
    let redirect = q["redirect_uri"].clone();
    st.codes
        .lock()
        .unwrap()
        .insert(code.clone(), (challenge, redirect.clone(), user));
    let loc = format!("{redirect}?code={code}&state={}", q["state"]);
    (StatusCode::FOUND, [(header::LOCATION.as_str(), loc)]).into_response()
}

async fn idp_token(
    State(st): State<Arc<IdpState>>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let err = |e: &str| (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response();
    // Client authentication: HTTP Basic (the oauth2 crate's default) or the body.
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let expected_basic = format!("Basic {}", {
        let raw = b"mock-client:mock-secret";
        let mut s = b64url(raw).replace('-', "+").replace('_', "/");
        while !s.len().is_multiple_of(4) {
            s.push('=');
        }
        s
    });
    let body_auth = f.get("client_secret").map(String::as_str) == Some("mock-secret");
    if basic.as_deref() != Some(expected_basic.as_str()) && !body_auth {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    if f.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return err("unsupported_grant_type");
    }
    let Some((challenge, redirect, user)) = f
        .get("code")
        .and_then(|c| st.codes.lock().unwrap().remove(c))
    else {
        return err("invalid_grant");
    };
    if f.get("redirect_uri") != Some(&redirect) {
        return err("invalid_grant");
    }
    let verifier = f.get("code_verifier").cloned().unwrap_or_default();
    if b64url(&Sha256::digest(verifier.as_bytes())) != challenge {
        return err("invalid_grant");
    }
    let token = next_id(&st, "at-");
    st.tokens.lock().unwrap().insert(token.clone(), user);
    Json(json!({"access_token": token, "token_type": "bearer", "scope": "openid"})).into_response()
}

async fn idp_userinfo(State(st): State<Arc<IdpState>>, headers: HeaderMap) -> Response {
    st.userinfo_headers.lock().unwrap().push(headers.clone());
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    match st.tokens.lock().unwrap().get(token) {
        Some(u) => Json(u.clone()).into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

// ---------------------------------------------------------------- the browser

const PUBLIC_URL: &str = "http://tollgate.test";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A browser: its own cookie for the binding.
#[derive(Default, Clone)]
struct Browser {
    cookie: Option<String>,
}

struct Started {
    /// The provider's authorize URL tollgate sent the browser to.
    authorize_url: String,
    query: HashMap<String, String>,
}

impl Browser {
    /// GET /auth/{provider}/login; keeps the binding cookie.
    async fn login(
        &mut self,
        s: &TestServer,
        provider: &str,
        query: &[(&str, &str)],
        bearer: Option<&str>,
    ) -> reqwest::Response {
        let mut rb = no_redirects()
            .get(s.url(&format!("/auth/{provider}/login")))
            .query(query);
        if let Some(c) = &self.cookie {
            rb = rb.header(header::COOKIE, c);
        }
        if let Some(b) = bearer {
            rb = rb.bearer_auth(b);
        }
        let r = rb.send().await.unwrap();
        if let Some(sc) = r.headers().get(header::SET_COOKIE) {
            let sc = sc.to_str().unwrap();
            self.cookie = Some(sc.split(';').next().unwrap().to_owned());
        }
        r
    }

    async fn start(
        &mut self,
        s: &TestServer,
        provider: &str,
        query: &[(&str, &str)],
        bearer: Option<&str>,
    ) -> Started {
        let r = self.login(s, provider, query, bearer).await;
        assert_eq!(r.status(), 302, "login answers a redirect");
        let loc = r.headers()[header::LOCATION].to_str().unwrap().to_owned();
        let u = reqwest::Url::parse(&loc).unwrap();
        Started {
            query: u.query_pairs().into_owned().collect(),
            authorize_url: loc,
        }
    }

    /// The provider's answer: tollgate's callback path and query.
    async fn authorize(&self, started: &Started) -> String {
        let r = no_redirects()
            .get(&started.authorize_url)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        let loc = r.headers()[header::LOCATION].to_str().unwrap();
        let prefix = format!("{PUBLIC_URL}/auth/");
        assert!(loc.starts_with(&prefix), "{loc}");
        loc.trim_start_matches(PUBLIC_URL).to_owned()
    }

    async fn callback(
        &self,
        s: &TestServer,
        path: &str,
        accept: Option<&str>,
    ) -> reqwest::Response {
        let mut rb = no_redirects().get(s.url(path));
        if let Some(c) = &self.cookie {
            rb = rb.header(header::COOKIE, c);
        }
        if let Some(a) = accept {
            rb = rb.header(header::ACCEPT, a);
        }
        rb.send().await.unwrap()
    }

    /// The whole sign-in; returns the callback's answer.
    async fn sign_in(
        &mut self,
        s: &TestServer,
        provider: &str,
        accept: Option<&str>,
    ) -> reqwest::Response {
        let started = self.start(s, provider, &[], None).await;
        let path = self.authorize(&started).await;
        self.callback(s, &path, accept).await
    }
}

/// The access token in a hand-back redirect to the web page.
fn token_from_redirect(r: &reqwest::Response, base: &str) -> String {
    assert_eq!(r.status(), 302, "callback redirects");
    let loc = r.headers()[header::LOCATION].to_str().unwrap();
    let frag = loc
        .strip_prefix(&format!("{base}#"))
        .unwrap_or_else(|| panic!("hand-back to {base}: {loc}"));
    let params: HashMap<String, String> = reqwest::Url::parse(&format!("http://x/?{frag}"))
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(params["token_type"], "bearer");
    assert_eq!(params["expires_in"], "3600");
    params["access_token"].clone()
}

async fn me(s: &TestServer, token: &str) -> Value {
    let r = s.get_as("/auth/me", token).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn with_mock(idp: &Idp) -> impl FnOnce(&mut Config) + '_ {
    move |c: &mut Config| {
        c.server.public_url = PUBLIC_URL.into();
        c.oauth.insert("mock".into(), idp.config());
    }
}

async fn setup() -> (Idp, TestServer) {
    let idp = Idp::start().await;
    let s = TestServer::start_with(with_mock(&idp)).await;
    (idp, s)
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn full_sign_in_creates_a_user_and_the_token_works() {
    let (idp, s) = setup().await;
    idp.sign_in_as(
        json!({"sub": 4242, "preferred_username": "ann lee", "email": "ann@example.com"}),
    );
    let mut b = Browser::default();
    let started = b.start(&s, "mock", &[], None).await;
    // What tollgate asked the provider for.
    let q = &started.query;
    assert!(started
        .authorize_url
        .starts_with(&format!("{}/authorize?", idp.url)));
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "mock-client");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43);
    assert_eq!(
        q["redirect_uri"],
        format!("{PUBLIC_URL}/auth/mock/callback")
    );
    assert_eq!(q["scope"], "openid profile");
    assert!(q["state"].len() >= 32);
    let cookie = b.cookie.clone().expect("a binding cookie");
    assert!(cookie.starts_with("tollgate_oauth="));

    let path = b.authorize(&started).await;
    let r = b.callback(&s, &path, None).await;
    assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
    let token = token_from_redirect(&r, "/ui/");
    let u = me(&s, &token).await;
    assert_eq!(u["username"], "ann-lee");
    assert_eq!(u["email"], "ann@example.com");
    assert_eq!(u["role"], "user");
    assert_eq!(u["plan"], "free");

    // Userinfo was read with the provider's token, asking for JSON, with a User-Agent.
    let h = idp
        .st
        .userinfo_headers
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert!(h[header::AUTHORIZATION]
        .to_str()
        .unwrap()
        .starts_with("Bearer at-"));
    assert_eq!(h[header::ACCEPT], "application/json");
    assert!(h.contains_key(header::USER_AGENT));

    // The account has no password: no password signs in.
    for pw in ["", "anything-at-all", "ann-lee"] {
        let r = s
            .client
            .post(s.url("/auth/login"))
            .json(&json!({"username": "ann-lee", "password": pw}))
            .send()
            .await
            .unwrap();
        assert_error_is(r, 401, "invalid_request_error", Some("invalid_credentials")).await;
    }
    // The JWT mints a long-lived key (the editor flow).
    let (_, key) = s.create_key(&token, json!({"name": "editor"})).await;
    assert_eq!(s.me_status(&key).await, 200);
}

#[tokio::test]
async fn login_cookie_is_httponly_lax_scoped_and_short_lived() {
    let (_idp, s) = setup().await;
    let r = Browser::default().login(&s, "mock", &[], None).await;
    let sc = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    for part in ["HttpOnly", "SameSite=Lax", "Path=/auth", "Max-Age=600"] {
        assert!(sc.contains(part), "{sc}");
    }
    assert!(!sc.contains("Secure"), "public_url is http: {sc}");
}

#[tokio::test]
async fn state_is_single_use() {
    let (idp, s) = setup().await;
    idp.sign_in_as(json!({"sub": "1", "preferred_username": "reuse"}));
    let mut b = Browser::default();
    let started = b.start(&s, "mock", &[], None).await;
    let path = b.authorize(&started).await;
    let r = b.callback(&s, &path, None).await;
    token_from_redirect(&r, "/ui/");
    let r = b.callback(&s, &path, None).await;
    let v = assert_error_is(r, 400, "invalid_request_error", None).await;
    assert_eq!(v["error"]["param"], "state");
}

#[tokio::test]
async fn a_state_from_another_browser_is_refused() {
    let (idp, s) = setup().await;
    idp.sign_in_as(json!({"sub": "1", "preferred_username": "victim"}));
    let mut victim = Browser::default();
    let started = victim.start(&s, "mock", &[], None).await;
    let path = victim.authorize(&started).await;
    // The attacker has a binding of its own, from its own login.
    let mut attacker = Browser::default();
    attacker.login(&s, "mock", &[], None).await;
    assert_ne!(attacker.cookie, victim.cookie);
    let r = attacker.callback(&s, &path, None).await;
    assert_error_is(r, 400, "invalid_request_error", None).await;
    // No cookie at all: refused too.
    let r = Browser::default().callback(&s, &path, None).await;
    assert_error_is(r, 400, "invalid_request_error", None).await;
}

#[tokio::test]
async fn an_expired_state_is_refused() {
    let (idp, s) = setup().await;
    idp.sign_in_as(json!({"sub": "1", "preferred_username": "slow"}));
    let mut b = Browser::default();
    let started = b.start(&s, "mock", &[], None).await;
    let path = b.authorize(&started).await;
    s.state.clock.advance(11 * 60);
    let r = b.callback(&s, &path, None).await;
    let v = assert_error_is(r, 400, "invalid_request_error", None).await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("expired"),
        "{v}"
    );
}

#[tokio::test]
async fn a_missing_or_never_issued_state_is_refused() {
    let (_idp, s) = setup().await;
    let mut b = Browser::default();
    b.login(&s, "mock", &[], None).await;
    for path in [
        "/auth/mock/callback?code=abc",
        "/auth/mock/callback?code=abc&state=",
        "/auth/mock/callback?code=abc&state=never-issued-state",
    ] {
        let r = b.callback(&s, path, None).await;
        let v = assert_error_is(r, 400, "invalid_request_error", None).await;
        assert_eq!(v["error"]["param"], "state", "{path}: {v}");
    }
    // In a browser, the refusal is a readable page.
    let r = b
        .callback(&s, "/auth/mock/callback?code=abc", Some("text/html"))
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
}

#[tokio::test]
async fn a_pkce_verifier_mismatch_fails_cleanly() {
    let (idp, s) = setup().await;
    idp.sign_in_as(json!({"sub": "1", "preferred_username": "pkce"}));
    *idp.st.tamper_challenge.lock().unwrap() = true;
    let mut b = Browser::default();
    let r = b.sign_in(&s, "mock", None).await;
    // The provider refused the grant: 400 invalid_grant (the user starts again);
    // a refused client id/secret would be 502 upstream_auth_error.
    let v = assert_error_is(r, 400, "invalid_request_error", Some("invalid_grant")).await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("Mock IdP"),
        "{v}"
    );
    // No account was created.
    let admin = s.admin_token().await;
    let users: Value = s.get_as("/admin/users", &admin).await.json().await.unwrap();
    assert_eq!(users["data"].as_array().unwrap().len(), 1, "{users}");
}

#[tokio::test]
async fn a_wrong_client_secret_is_the_operators_problem() {
    let idp = Idp::start().await;
    let s = TestServer::start_with(|c| {
        c.server.public_url = PUBLIC_URL.into();
        let mut m = idp.config();
        m.client_secret = Secret::new("wrong-secret");
        c.oauth.insert("mock".into(), m);
    })
    .await;
    idp.sign_in_as(json!({"sub": "1", "preferred_username": "x"}));
    let r = Browser::default().sign_in(&s, "mock", None).await;
    assert_error_is(r, 502, "api_error", Some("upstream_auth_error")).await;
}

#[tokio::test]
async fn redirect_uri_must_be_exactly_allowlisted() {
    let idp = Idp::start().await;
    let s = TestServer::start_with(|c| {
        with_mock(&idp)(c);
        c.server.oauth_redirect_allowlist = vec!["vscode://publisher.ext/auth".into()];
    })
    .await;
    let mut b = Browser::default();
    for bad in [
        "vscode://publisher.ext/auth/evil",
        "vscode://publisher.ext",
        "vscode://publisher.ext/auth?x=1",
        "https://evil.example/",
    ] {
        let r = b.login(&s, "mock", &[("redirect_uri", bad)], None).await;
        let v = assert_error_is(r, 400, "invalid_request_error", None).await;
        assert_eq!(v["error"]["param"], "redirect_uri", "{bad}");
    }

    idp.sign_in_as(json!({"sub": "7", "preferred_username": "coder"}));
    let started = b
        .start(
            &s,
            "mock",
            &[("redirect_uri", "vscode://publisher.ext/auth")],
            None,
        )
        .await;
    // The provider still calls back to tollgate; the editor gets the token after.
    assert_eq!(
        started.query["redirect_uri"],
        format!("{PUBLIC_URL}/auth/mock/callback")
    );
    let path = b.authorize(&started).await;
    let r = b.callback(&s, &path, None).await;
    let loc = r.headers()[header::LOCATION].to_str().unwrap().to_owned();
    assert!(!loc.contains('?'), "never in a query string: {loc}");
    let token = token_from_redirect(&r, "vscode://publisher.ext/auth");
    assert_eq!(me(&s, &token).await["username"], "coder");
}

#[tokio::test]
async fn json_hand_back_when_only_json_is_accepted() {
    let (idp, s) = setup().await;
    idp.sign_in_as(json!({"sub": "9", "preferred_username": "jason"}));
    let r = Browser::default()
        .sign_in(&s, "mock", Some("application/json"))
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token_type"], "bearer");
    assert_eq!(v["expires_in"], 3600);
    let token = v["access_token"].as_str().unwrap();
    assert_eq!(me(&s, token).await["username"], "jason");
}

#[tokio::test]
async fn a_second_sign_in_reuses_the_user() {
    let (idp, s) = setup().await;
    idp.sign_in_as(json!({"sub": "55", "preferred_username": "repeat"}));
    let mut b = Browser::default();
    let t1 = token_from_redirect(&b.sign_in(&s, "mock", None).await, "/ui/");
    // The provider-side name changed; the identity is the subject.
    idp.sign_in_as(json!({"sub": "55", "preferred_username": "renamed"}));
    let t2 = token_from_redirect(&b.sign_in(&s, "mock", None).await, "/ui/");
    let (u1, u2) = (me(&s, &t1).await, me(&s, &t2).await);
    assert_eq!(u1["id"], u2["id"]);
    assert_eq!(u2["username"], "repeat");
}

#[tokio::test]
async fn username_collisions_get_a_suffix_and_email_never_links() {
    let (idp, s) = setup().await;
    let admin = s.admin_token().await;
    let r = s
        .client
        .post(s.url("/admin/users"))
        .bearer_auth(&admin)
        .json(&json!({"username": "carol", "password": "carol-password", "email": "carol@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let carol: Value = r.json().await.unwrap();

    // Same username and same email at the provider: a separate account.
    idp.sign_in_as(
        json!({"sub": "c1", "preferred_username": "carol", "email": "carol@example.com"}),
    );
    let t = token_from_redirect(&Browser::default().sign_in(&s, "mock", None).await, "/ui/");
    let u = me(&s, &t).await;
    assert_ne!(u["id"], carol["id"]);
    assert_eq!(u["username"], "carol-2");
    idp.sign_in_as(json!({"sub": "c2", "preferred_username": "Carol"}));
    let t = token_from_redirect(&Browser::default().sign_in(&s, "mock", None).await, "/ui/");
    assert_eq!(me(&s, &t).await["username"], "Carol-3");
    // The existing account is untouched.
    assert!(!s.login("carol", "carol-password").await.is_empty());
    // A provider username of no allowed characters still yields an account.
    idp.sign_in_as(json!({"sub": "c3", "preferred_username": "!!!"}));
    let t = token_from_redirect(&Browser::default().sign_in(&s, "mock", None).await, "/ui/");
    assert_eq!(me(&s, &t).await["username"], "mock-user");
}

#[tokio::test]
async fn a_signed_in_user_links_another_provider() {
    let idp = Idp::start().await;
    let s = TestServer::start_with(|c| {
        with_mock(&idp)(c);
        let mut other = idp.config();
        other.name = None;
        c.oauth.insert("other".into(), other);
    })
    .await;
    let (uid, jwt, key) = s.user_with_key("dave", None).await;

    // Linking changes the account: an API key may not (SPEC §4).
    idp.sign_in_as(json!({"sub": "d0", "preferred_username": "dave-by-key"}));
    let mut b = Browser::default();
    let r = b.login(&s, "mock", &[("link", "1")], Some(&key)).await;
    assert_error_is(r, 403, "permission_error", Some("session_required")).await;

    idp.sign_in_as(json!({"sub": "d1", "preferred_username": "dave-at-mock"}));
    let started = b.start(&s, "mock", &[("link", "1")], Some(&jwt)).await;
    let path = b.authorize(&started).await;
    let t = token_from_redirect(&b.callback(&s, &path, None).await, "/ui/");
    assert_eq!(me(&s, &t).await["id"], uid);

    // The bearer alone also links.
    idp.sign_in_as(json!({"sub": "d2", "preferred_username": "dave-other"}));
    let started = b.start(&s, "other", &[], Some(&jwt)).await;
    let path = b.authorize(&started).await;
    let t = token_from_redirect(&b.callback(&s, &path, None).await, "/ui/");
    assert_eq!(me(&s, &t).await["id"], uid);

    // Both identities now sign in as dave, without a bearer.
    idp.sign_in_as(json!({"sub": "d1", "preferred_username": "whatever"}));
    let t = token_from_redirect(&Browser::default().sign_in(&s, "mock", None).await, "/ui/");
    assert_eq!(me(&s, &t).await["id"], uid);

    // An identity that belongs to someone else cannot be linked: 409.
    idp.sign_in_as(json!({"sub": "e1", "preferred_username": "erin"}));
    Browser::default().sign_in(&s, "mock", None).await;
    let started = b.start(&s, "mock", &[], Some(&jwt)).await;
    let path = b.authorize(&started).await;
    let r = b.callback(&s, &path, None).await;
    assert_error_is(r, 409, "invalid_request_error", Some("conflict")).await;

    // link=1 without a credential, or with a bad one: 401.
    let r = b.login(&s, "mock", &[("link", "1")], None).await;
    assert_error_is(r, 401, "invalid_request_error", Some("invalid_api_key")).await;
    let r = b.login(&s, "mock", &[], Some("not-a-token")).await;
    assert_error_is(r, 401, "invalid_request_error", Some("invalid_api_key")).await;
}

#[tokio::test]
async fn a_disabled_user_cannot_sign_in() {
    let (idp, s) = setup().await;
    idp.sign_in_as(json!({"sub": "f1", "preferred_username": "frank"}));
    let t = token_from_redirect(&Browser::default().sign_in(&s, "mock", None).await, "/ui/");
    let id = me(&s, &t).await["id"].as_i64().unwrap();
    let admin = s.admin_token().await;
    let r = s
        .client
        .patch(s.url(&format!("/admin/users/{id}")))
        .bearer_auth(&admin)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = Browser::default().sign_in(&s, "mock", None).await;
    assert_error_is(r, 403, "permission_error", Some("account_disabled")).await;
}

#[tokio::test]
async fn a_provider_error_is_a_readable_page() {
    let (_idp, s) = setup().await;
    let mut b = Browser::default();
    let started = b.start(&s, "mock", &[], None).await;
    let state = &started.query["state"];
    let path = format!(
        "/auth/mock/callback?error=access_denied&error_description=The+user+said+%3Cno%3E&state={state}"
    );
    let r = b
        .callback(&s, &path, Some("text/html,application/xhtml+xml,*/*;q=0.8"))
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = r.text().await.unwrap();
    assert!(page.contains("The user said &lt;no&gt;"), "{page}");
    assert!(page.contains("Mock IdP"), "{page}");
    // A JSON client gets the error shape.
    let r = b
        .callback(&s, "/auth/mock/callback?error=access_denied", None)
        .await;
    assert_error_is(r, 400, "invalid_request_error", Some("access_denied")).await;
    // The state was spent by the error answer.
    let r = b
        .callback(
            &s,
            &format!("/auth/mock/callback?code=x&state={state}"),
            None,
        )
        .await;
    let v = assert_error_is(r, 400, "invalid_request_error", None).await;
    assert_eq!(v["error"]["param"], "state");
}

#[tokio::test]
async fn providers_lists_enabled_ones_and_unknown_is_404() {
    let idp = Idp::start().await;
    let s = TestServer::start_with(|c| {
        with_mock(&idp)(c);
        // github without a secret is disabled; google is enabled.
        c.oauth.insert(
            "github".into(),
            OAuthConfig {
                client_id: "gh".into(),
                ..Default::default()
            },
        );
        c.oauth.insert(
            "google".into(),
            OAuthConfig {
                client_id: "g".into(),
                client_secret: Secret::new("gs"),
                ..Default::default()
            },
        );
    })
    .await;
    let v: Value = s
        .client
        .get(s.url("/auth/providers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v,
        json!([
            {"id": "google", "name": "Google", "login_url": "/auth/google/login"},
            {"id": "mock", "name": "Mock IdP", "login_url": "/auth/mock/login"},
        ])
    );
    // google's preset URLs need no typing.
    let started = Browser::default().start(&s, "google", &[], None).await;
    assert!(started
        .authorize_url
        .starts_with("https://accounts.google.com/o/oauth2/v2/auth?"));
    assert_eq!(started.query["scope"], "openid email profile");
    for p in ["github", "nope"] {
        let r = Browser::default().login(&s, p, &[], None).await;
        assert_error_is(r, 404, "invalid_request_error", Some("not_found")).await;
        let r = Browser::default()
            .callback(&s, &format!("/auth/{p}/callback?code=a&state=b"), None)
            .await;
        assert_error_is(r, 404, "invalid_request_error", Some("not_found")).await;
    }
}

#[tokio::test]
async fn a_state_survives_a_restart() {
    let (idp, s) = setup().await;
    idp.sign_in_as(json!({"sub": "r1", "preferred_username": "patient"}));
    let mut b = Browser::default();
    let started = b.start(&s, "mock", &[], None).await;
    let path = b.authorize(&started).await;
    let (dir, cfg) = s.stop().await;
    let s = TestServer::start_in(dir, cfg).await;
    let t = token_from_redirect(&b.callback(&s, &path, None).await, "/ui/");
    assert_eq!(me(&s, &t).await["username"], "patient");
}

#[tokio::test]
async fn github_preset_with_urls_pointed_at_the_mock() {
    let idp = Idp::start().await;
    let s = TestServer::start_with(|c| {
        c.server.public_url = format!("{PUBLIC_URL}/");
        c.oauth.insert(
            "github".into(),
            OAuthConfig {
                client_id: "mock-client".into(),
                client_secret: Secret::new("mock-secret"),
                auth_url: format!("{}/authorize", idp.url),
                token_url: format!("{}/token", idp.url),
                userinfo_url: format!("{}/userinfo", idp.url),
                ..Default::default()
            },
        );
    })
    .await;
    idp.sign_in_as(json!({"id": 583231, "login": "octocat", "email": null, "name": "The Octocat"}));
    let mut b = Browser::default();
    let started = b.start(&s, "github", &[], None).await;
    assert_eq!(started.query["scope"], "read:user user:email");
    assert_eq!(
        started.query["redirect_uri"],
        format!("{PUBLIC_URL}/auth/github/callback")
    );
    let path = b.authorize(&started).await;
    let t = token_from_redirect(&b.callback(&s, &path, None).await, "/ui/");
    let u = me(&s, &t).await;
    assert_eq!(u["username"], "octocat");
    assert_eq!(u["email"], Value::Null);
    let providers: Value = s
        .client
        .get(s.url("/auth/providers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(providers[0]["name"], "GitHub");
}
