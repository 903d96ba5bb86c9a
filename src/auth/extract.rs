//! Authentication on the request path. [`RequireAuthLayer`] (on every
//! non-public route) resolves `X-API-Key`, `Authorization: Bearer sk_live_…` or
//! `Authorization: Bearer <JWT>` against the in-memory cache and stores the
//! [`Principal`]; handlers take [`CurrentUser`] or [`AdminUser`].

use super::api_key;
use super::cache::{KeyEntry, PlanEntry, Role, UserEntry};
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Who is calling, and with which key (none for a JWT).
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: Arc<UserEntry>,
    pub key: Option<Arc<KeyEntry>>,
    pub plan: Option<Arc<PlanEntry>>,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }

    /// A signed-in session (a JWT), not an API key.
    pub fn is_session(&self) -> bool {
        self.key.is_none()
    }

    /// `Ok` for a session; an API key gets 403 `session_required`.
    pub fn require_session(&self) -> Result<(), ApiError> {
        if self.is_session() {
            Ok(())
        } else {
            Err(ApiError::session_required())
        }
    }
}

fn credential(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or(v);
        let token = token.trim();
        if !token.is_empty() {
            return Some(token);
        }
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Resolves the request's credential to a principal.
pub fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let token = credential(headers).ok_or_else(ApiError::missing_credential)?;
    let now = state.clock.now().timestamp();
    state
        .creds
        .with_snapshot(|snap| resolve(state, snap, token, now))
}

/// [`authenticate`], and when an API key is not in the in-memory snapshot,
/// one look in the database first (see `CredentialCache::find_new_key`): a
/// key made by the CLI or another replica works at its first use.
pub async fn authenticate_or_look_up(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
    let err = match authenticate(state, headers) {
        Ok(p) => return Ok(p),
        Err(e) => e,
    };
    let Some(token) = credential(headers).filter(|t| api_key::looks_like_key(t)) else {
        return Err(err);
    };
    let hash = api_key::hash(token);
    if state.creds.with_snapshot(|s| s.keys.contains_key(&hash)) {
        return Err(err); // known: refused for another reason
    }
    if state.creds.find_new_key(&hash).await {
        return authenticate(state, headers);
    }
    Err(err)
}

fn resolve(
    state: &AppState,
    snap: &super::cache::Snapshot,
    token: &str,
    now: i64,
) -> Result<Principal, ApiError> {
    let (user, key) = if api_key::looks_like_key(token) {
        let key = api_key::find(token, |h| snap.keys.get(h)).ok_or_else(|| {
            ApiError::invalid_api_key("Incorrect API key provided, or the key was revoked.")
        })?;
        if key.expires_at.is_some_and(|e| e <= now) {
            return Err(ApiError::invalid_api_key(
                "This API key has expired; create a new one.",
            ));
        }
        let user = snap
            .users
            .get(&key.user_id)
            .ok_or_else(|| ApiError::invalid_api_key("Incorrect API key provided."))?;
        (user.clone(), Some(key.clone()))
    } else {
        let (uid, ver) = state.jwt.verify(token, now).ok_or_else(|| {
            ApiError::invalid_api_key("Invalid or expired access token; sign in again.")
        })?;
        let user = snap
            .users
            .get(&uid)
            .ok_or_else(|| ApiError::invalid_api_key("Invalid access token; sign in again."))?;
        if user.disabled {
            return Err(ApiError::forbidden_code(
                "account_disabled",
                "This account is disabled; ask an administrator.",
            ));
        }
        if user.token_version != ver {
            return Err(ApiError::invalid_api_key(
                "This access token is no longer valid; sign in again.",
            ));
        }
        (user.clone(), None)
    };
    if user.disabled {
        return Err(ApiError::forbidden_code(
            "account_disabled",
            "This account is disabled; ask an administrator.",
        ));
    }
    if let Some(k) = &key {
        k.touch(now);
    }
    let plan = snap.plans.get(&user.plan).cloned();
    Ok(Principal { user, key, plan })
}

/// Middleware for every route that needs a credential (deny by default).
/// Denies by default: every route under this layer needs a credential. The
/// check is synchronous (an in-memory lookup), so the layer adds no boxed
/// future and no service clone per request, unlike a `from_fn` middleware.
#[derive(Clone)]
pub struct RequireAuthLayer(pub AppState);

impl<S> tower::Layer<S> for RequireAuthLayer {
    type Service = RequireAuth<S>;

    fn layer(&self, inner: S) -> RequireAuth<S> {
        RequireAuth {
            inner,
            state: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RequireAuth<S> {
    inner: S,
    state: AppState,
}

type Slow =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> tower::Service<Request> for RequireAuth<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<std::future::Ready<Result<Response, Infallible>>, Either<S::Future, Slow>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        match authenticate(&self.state, req.headers()) {
            // Known caller, body declared too large: refused before it is read.
            Ok(_)
                if crate::http::declared_too_large(
                    req.headers(),
                    self.state.config.server.max_body_bytes,
                ) =>
            {
                Either::Left(std::future::ready(Ok(
                    crate::error::body_too_large().into_response()
                )))
            }
            Ok(p) => {
                req.extensions_mut().insert(p);
                Either::Right(Either::Left(self.inner.call(req)))
            }
            // An API key missing from memory: looked for in the database
            // (rarely: a key made a moment ago elsewhere), off this path.
            Err(e) if credential(req.headers()).is_some_and(api_key::looks_like_key) => {
                let (state, mut inner) = (self.state.clone(), self.inner.clone());
                Either::Right(Either::Right(Box::pin(async move {
                    match authenticate_or_look_up(&state, req.headers()).await {
                        Ok(_)
                            if crate::http::declared_too_large(
                                req.headers(),
                                state.config.server.max_body_bytes,
                            ) =>
                        {
                            Ok(crate::error::body_too_large().into_response())
                        }
                        Ok(p) => {
                            req.extensions_mut().insert(p);
                            inner.call(req).await
                        }
                        Err(_) => Ok(e.into_response()),
                    }
                })))
            }
            Err(e) => Either::Left(std::future::ready(Ok(e.into_response()))),
        }
    }
}

/// The authenticated caller.
pub struct CurrentUser(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(CurrentUser)
            .ok_or_else(ApiError::missing_credential)
    }
}

/// The caller signed in with a session (a JWT). An API key is a credential
/// for calling models, not for managing the account: with one, this answers
/// 403 `session_required` (SPEC §4 "What a key may do"), so a restricted key
/// can never lift its own restrictions or mint a broader key.
pub struct SessionUser(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for SessionUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, Self::Rejection> {
        let CurrentUser(p) = CurrentUser::from_request_parts(parts, s).await?;
        p.require_session()?;
        Ok(SessionUser(p))
    }
}

fn admins_only() -> ApiError {
    ApiError::forbidden("This route is for administrators only.")
}

/// The caller, an admin signed in with a session (403 otherwise): every
/// `/admin` route.
pub struct AdminUser(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, Self::Rejection> {
        let CurrentUser(p) = CurrentUser::from_request_parts(parts, s).await?;
        if !p.is_admin() {
            return Err(admins_only());
        }
        p.require_session()?;
        Ok(AdminUser(p))
    }
}

/// An admin with a session or an admin's API key: `/metrics` only, since
/// scrapers such as Prometheus hold a long-lived bearer token.
pub struct AdminOrAdminKey(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for AdminOrAdminKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, Self::Rejection> {
        let CurrentUser(p) = CurrentUser::from_request_parts(parts, s).await?;
        if !p.is_admin() {
            return Err(admins_only());
        }
        Ok(AdminOrAdminKey(p))
    }
}
