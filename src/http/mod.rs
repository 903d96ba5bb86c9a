//! The HTTP surface: one route table, its layers (CORS, body limit,
//! authentication), the 404/405 fallbacks, and [`dispatch`], which runs each
//! request through it with an id, a log line and a panic guard.

pub mod admin_credits;
pub mod admin_keys;
pub mod admin_plans;
pub mod admin_usage;
pub mod admin_users;
pub mod auth;
pub mod extract;
pub mod keys;
pub mod llm;
pub mod oauth;
pub mod subscriptions;
pub mod views;
pub mod web;

use crate::auth::extract::RequireAuthLayer;
use crate::config::MetricsAccess;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use std::time::Instant;

/// The request id of this request (also sent back as `x-request-id`).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// `req_` and 20 letters and digits. Ids must be unique, not secret: each
/// thread counts from a random start and scrambles the count (splitmix64, a
/// bijection), which costs a few dozen instructions instead of a CSPRNG draw
/// per character.
pub fn new_request_id() -> String {
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    thread_local! {
        static NEXT: std::cell::Cell<u64> = std::cell::Cell::new(rand::random());
    }
    let mut s = String::with_capacity(24);
    s.push_str("req_");
    for _ in 0..2 {
        let mut z = NEXT.with(|n| {
            let v = n.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
            n.set(v);
            v
        });
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // 62^10 < 2^64: ten digits per draw.
        for _ in 0..10 {
            s.push(char::from(DIGITS[(z % 62) as usize]));
            z /= 62;
        }
    }
    s
}

/// The largest body a route without a credential reads (or `max_body_bytes`
/// when that is smaller).
pub const PUBLIC_BODY_LIMIT: usize = 64 * 1024;

/// Builds the whole router for `state`.
pub fn router(state: AppState) -> Router {
    let mut public = Router::new()
        .route("/health", get(health))
        .route("/auth/register", post(auth::register))
        .route("/auth/login", post(auth::login))
        .route("/auth/providers", get(auth::providers))
        .route("/auth/{provider}/login", get(oauth::login))
        .route("/auth/{provider}/callback", get(oauth::callback))
        .merge(web::router());
    if state.config.server.metrics == MetricsAccess::Public {
        public = public.route("/metrics", get(metrics_text));
    }
    // Nobody is known yet on these routes: a sign-in is small, so an
    // unauthenticated client cannot make the server hold megabytes.
    let public_limit = PUBLIC_BODY_LIMIT.min(state.config.server.max_body_bytes);
    let public =
        public
            .layer(DefaultBodyLimit::max(public_limit))
            .layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    small_bodies_only(public_limit, req, next)
                },
            ));

    let protected = Router::new()
        .route("/auth/me", get(auth::me))
        .route("/auth/password", post(auth::change_password))
        .route("/api/keys", get(keys::list).post(keys::create))
        .route("/api/keys/{id}", delete(keys::revoke).patch(keys::update))
        .route(
            "/admin/users",
            get(admin_users::list).post(admin_users::create),
        )
        .route(
            "/admin/users/{id}",
            delete(admin_users::delete).patch(admin_users::update),
        )
        .route(
            "/admin/users/{id}/credits",
            get(admin_credits::list).post(admin_credits::add),
        )
        .route(
            "/admin/plans",
            get(admin_plans::list).post(admin_plans::create),
        )
        .route(
            "/admin/plans/{name}",
            delete(admin_plans::delete).patch(admin_plans::update),
        )
        .route("/admin/keys", get(admin_keys::list))
        .route("/admin/keys/{id}", delete(admin_keys::revoke))
        .route("/admin/usage", get(admin_usage::usage))
        .route("/admin/requests", get(admin_usage::requests))
        .route("/subscriptions/plans", get(subscriptions::plans))
        .route("/subscriptions/me", get(subscriptions::me))
        .route("/subscriptions/usage", get(subscriptions::usage))
        .route("/subscriptions/usage/daily", get(subscriptions::daily))
        .route("/subscriptions/credits", get(subscriptions::credits))
        .merge(llm::routes("/llm"))
        .merge(llm::routes("/v1"))
        .merge(llm::routes(""));
    // Generation calls authenticate and read their body in the one door
    // (`generation_door`), reached from here when the router is needed
    // (a browser's request, for CORS) and straight from `dispatch` otherwise.
    let generation = llm::generation_routes();
    let protected = match state.config.server.metrics {
        MetricsAccess::Admin => protected.route("/metrics", get(metrics_admin)),
        _ => protected,
    };
    let protected = protected.route_layer(RequireAuthLayer(state.clone()));

    let mut app = Router::new()
        .merge(public)
        .merge(protected)
        .merge(generation)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes));
    if let Some(cors) = cors_layer(&state) {
        app = app.layer(cors);
    }
    app.with_state(state)
}

/// 413 from the head for a body declared larger than the public routes take.
async fn small_bodies_only(
    limit: usize,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if declared_too_large(req.headers(), limit) {
        return crate::error::body_too_large().into_response();
    }
    next.run(req).await
}

/// The request's `Content-Length` says its body is larger than `limit`: it
/// can be refused before a byte of it is read.
pub fn declared_too_large(headers: &axum::http::HeaderMap, limit: usize) -> bool {
    headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit as u64)
}

fn panic_response() -> Response {
    ApiError::internal("a request handler panicked").into_response()
}

/// `ok`, or 503 `degraded` with the reason while usage records wait because
/// the database refuses writes (SPEC §13).
async fn health(State(st): State<AppState>) -> axum::response::Response {
    match st.metering.writer.failure() {
        None => axum::Json(serde_json::json!({"status": "ok"})).into_response(),
        Some(reason) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "degraded", "reason": reason})),
        )
            .into_response(),
    }
}

async fn metrics_text(State(st): State<AppState>) -> impl IntoResponse {
    crate::telemetry::set_pending_records(st.metering.writer.pending());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::telemetry::render(),
    )
}

async fn metrics_admin(st: State<AppState>, _: crate::auth::AdminOrAdminKey) -> impl IntoResponse {
    metrics_text(st).await
}

async fn not_found(State(_): State<AppState>) -> ApiError {
    ApiError::not_found(
        "Unknown path. The API lives under /llm, /v1, /auth, /api, /subscriptions and /admin.",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        Some("method_not_allowed"),
        "This path does not accept that method.",
    )
}

/// Runs one request through `app`: gives it an id (`x-request-id` on the
/// answer) and logs it, path only (query strings can carry OAuth codes and
/// never reach the log). A panicking handler answers a JSON 500 instead of
/// dropping the connection; metering guards settle while it unwinds.
pub async fn dispatch<B>(
    mut app: Router,
    fast: Option<AppState>,
    mut req: axum::http::Request<B>,
) -> Response
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    use futures_util::FutureExt;
    use std::panic::AssertUnwindSafe;
    use tower::Service;
    let id = new_request_id();
    let start = Instant::now();
    let id_header = HeaderValue::from_str(&id).ok();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let resp = match fast.zip(fast_endpoint(&req)) {
        // The generation routes, the hot path, go straight to their handler.
        Some((st, door)) => {
            AssertUnwindSafe(generation_door(st, door, id, req))
                .catch_unwind()
                .await
        }
        None => {
            req.extensions_mut().insert(RequestId(id));
            match std::panic::catch_unwind(AssertUnwindSafe(|| app.call(req))) {
                Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await.map(|r| match r {
                    Ok(r) => r,
                    Err(never) => match never {},
                }),
                Err(p) => Err(p),
            }
        }
    };
    finish(resp, id_header, &method, uri.path(), start)
}

/// The common end of every request: a panic becomes a JSON 500, the answer
/// gets its `x-request-id`, and a failure (or, at debug level, any request) is logged.
fn finish(
    resp: std::thread::Result<Response>,
    id_header: Option<HeaderValue>,
    method: &Method,
    path: &str,
    start: Instant,
) -> Response {
    let mut resp = match resp {
        Ok(r) => r,
        Err(_) => panic_response(),
    };
    let status = resp.status();
    if let Some(v) = id_header {
        // A static name: a `&str` name not in the standard set is copied.
        resp.headers_mut()
            .insert(axum::http::HeaderName::from_static("x-request-id"), v);
    }
    let failed = status.is_server_error();
    if failed || tracing::enabled!(tracing::Level::DEBUG) {
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        let id = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if failed {
            tracing::warn!(request_id = %id, %method, %path, status = status.as_u16(), ms, "request failed");
        } else {
            tracing::debug!(request_id = %id, %method, %path, status = status.as_u16(), ms, "request");
        }
    }
    resp
}

/// A generation call the router need not see: a POST to one of the door's
/// paths without an `Origin` (a browser's request goes through the router
/// and its CORS layer, then through the same door).
fn fast_endpoint<B>(req: &axum::http::Request<B>) -> Option<Door> {
    if req.method() != Method::POST || req.headers().contains_key(axum::http::header::ORIGIN) {
        return None;
    }
    door_of(req.uri().path())
}

/// What a request through the door asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// A metered call of a generation endpoint.
    Call(crate::service::proxy::Endpoint),
    /// `POST /v1/messages/count_tokens`: the gateway's estimate.
    CountTokens,
}

impl Door {
    /// The dialect its errors are written in.
    fn dialect(self) -> crate::service::proxy::Endpoint {
        match self {
            Door::Call(ep) => ep,
            Door::CountTokens => crate::service::proxy::Endpoint::Messages,
        }
    }
}

/// The door `path` leads to, if any: the generation endpoints under `/v1`,
/// `/llm` or the root.
pub fn door_of(path: &str) -> Option<Door> {
    use crate::service::proxy::Endpoint;
    let rest = path
        .strip_prefix("/v1")
        .or_else(|| path.strip_prefix("/llm"))
        .unwrap_or(path);
    match rest {
        "/chat/completions" => Some(Door::Call(Endpoint::Chat)),
        "/completions" => Some(Door::Call(Endpoint::Completions)),
        "/embeddings" => Some(Door::Call(Endpoint::Embeddings)),
        "/messages" => Some(Door::Call(Endpoint::Messages)),
        "/responses" => Some(Door::Call(Endpoint::Responses)),
        "/messages/count_tokens" => Some(Door::CountTokens),
        _ => None,
    }
}

/// The one door into a generation call, whichever way the request came:
/// authentication (from the head: a wrong credential never has its body
/// read), the body limit, reading the body, then the proxy. Errors are in
/// the shape of the endpoint's dialect.
pub async fn generation_door<B>(
    st: AppState,
    door: Door,
    request_id: String,
    mut req: axum::http::Request<B>,
) -> Response
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    use http_body_util::BodyExt;
    let shape = door.dialect();
    let p = match crate::auth::extract::authenticate_or_look_up(&st, req.headers()).await {
        Ok(p) => p,
        Err(e) => return crate::dialect::error_response(shape, e),
    };
    let limit = st.config.server.max_body_bytes;
    if declared_too_large(req.headers(), limit) {
        return crate::dialect::error_response(shape, crate::error::body_too_large());
    }
    let headers = std::mem::take(req.headers_mut());
    let body = match http_body_util::Limited::new(req.into_body(), limit)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(e) => return crate::dialect::error_response(shape, crate::error::body_read_error(&*e)),
    };
    match door {
        Door::Call(ep) => {
            let incoming = crate::service::proxy::Incoming::new(ep, body, &headers);
            crate::service::proxy::handle(st, p, request_id, ep, incoming).await
        }
        Door::CountTokens => match crate::service::proxy::count_tokens(body) {
            Ok(n) => axum::Json(serde_json::json!({ "input_tokens": n })).into_response(),
            Err(e) => crate::dialect::error_response(shape, e),
        },
    }
}

/// Whether `[server] cors_allowed_origins` names any origin.
pub fn cors_configured(state: &AppState) -> bool {
    !state.config.server.cors_allowed_origins.is_empty()
}

fn cors_layer(state: &AppState) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
    let origins = &state.config.server.cors_allowed_origins;
    if origins.is_empty() {
        return None;
    }
    let patterns = crate::glob::Patterns::lenient(origins);
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
                origin
                    .to_str()
                    .map(|o| patterns.matches(o))
                    .unwrap_or(false)
            }))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers([axum::http::HeaderName::from_static("x-request-id")])
            .max_age(std::time::Duration::from_secs(3600)),
    )
}

#[cfg(test)]
mod request_id_tests {
    #[test]
    fn request_ids_are_distinct_and_well_formed() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| super::new_request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(100) {
            assert_eq!(id.len(), 24);
            assert!(id.starts_with("req_"));
            assert!(id[4..].bytes().all(|c| c.is_ascii_alphanumeric()), "{id}");
        }
    }
}
