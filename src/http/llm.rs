//! The OpenAI-compatible endpoints (`/llm/*`, also under `/v1` and at the
//! root): chat, completions and embeddings through the proxy, the merged model
//! list, and the providers' status.

use super::extract::{AppPath, AppQuery};
use super::RequestId;
use crate::auth::{CurrentUser, Principal};
use crate::error::{ApiError, ApiResult};
use crate::service::proxy::{self, Endpoint};
use crate::state::AppState;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post, MethodRouter};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The LLM routes, to be mounted at `/llm`, `/v1` and the root.
/// The LLM routes under `prefix` ("/llm", "/v1" or "" for the root). Routes
/// are registered with their full paths rather than nested: a nested router
/// rebuilds the request's URI to strip the prefix on every call.
pub fn routes(prefix: &str) -> Router<AppState> {
    Router::new()
        .route(
            &format!("{prefix}/chat/completions"),
            generation(Endpoint::Chat),
        )
        .route(
            &format!("{prefix}/completions"),
            generation(Endpoint::Completions),
        )
        .route(
            &format!("{prefix}/embeddings"),
            generation(Endpoint::Embeddings),
        )
        .route(&format!("{prefix}/models"), get(models))
        .route(&format!("{prefix}/models/{{*id}}"), get(model))
        .route(&format!("{prefix}/providers"), get(providers))
}

/// The POST route of one generation endpoint, handed to the proxy.
fn generation(ep: Endpoint) -> MethodRouter<AppState> {
    post(
        move |State(st): State<AppState>,
              CurrentUser(p): CurrentUser,
              Extension(rid): Extension<RequestId>,
              body: Result<Bytes, BytesRejection>| async move {
            match body {
                Ok(b) => proxy::handle(st, p, rid.0, ep, b).await,
                Err(r) => ApiError::from(r).into_response(),
            }
        },
    )
}

#[derive(Deserialize)]
pub struct ModelsQuery {
    provider: Option<String>,
}

#[derive(Serialize, Clone)]
struct Pricing {
    prompt: f64,
    completion: f64,
}

#[derive(Serialize, Clone)]
struct ModelEntry {
    id: String,
    object: &'static str,
    created: i64,
    owned_by: String,
    provider: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pricing: Option<Pricing>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
}

/// Every active provider's list merged (one failing is left out), filtered to
/// what the caller's plan and key allow.
async fn merged(st: &AppState, p: &Principal, only: Option<&str>) -> Vec<ModelEntry> {
    let wanted: Vec<_> = st
        .providers
        .list
        .iter()
        .filter(|prov| prov.active() && only.is_none_or(|o| o == prov.id))
        .cloned()
        .collect();
    let lists =
        futures_util::future::join_all(wanted.iter().map(|prov| st.catalog.list(prov))).await;
    let allowed = |id: &str| {
        p.plan.as_ref().is_some_and(|pl| pl.allowed.matches(id))
            && p.key
                .as_ref()
                .and_then(|k| k.allowed_models.as_ref())
                .is_none_or(|a| a.matches(id))
    };
    let mut out = Vec::new();
    for (prov, list) in wanted.iter().zip(lists) {
        let Ok(list) = list else { continue };
        for m in list.iter() {
            let id = format!("{}/{}", prov.id, m.id);
            if !allowed(&id) {
                continue;
            }
            let configured = st.config.pricing.get(&id);
            let pricing = match configured {
                Some(c) => Some(Pricing {
                    prompt: c.prompt,
                    completion: c.completion,
                }),
                None => m
                    .prompt_price
                    .zip(m.completion_price)
                    .map(|(prompt, completion)| Pricing { prompt, completion }),
            };
            out.push(ModelEntry {
                object: "model",
                created: m.created,
                owned_by: prov.id.clone(),
                provider: prov.id.clone(),
                pricing,
                max_output_tokens: configured
                    .and_then(|c| c.max_output_tokens)
                    .or(m.max_output_tokens),
                id,
            });
        }
    }
    out
}

async fn models(
    State(st): State<AppState>,
    CurrentUser(p): CurrentUser,
    AppQuery(q): AppQuery<ModelsQuery>,
) -> ApiResult<impl IntoResponse> {
    let only = q.provider.as_deref().filter(|s| !s.is_empty());
    if let Some(o) = only {
        if st.providers.get(o).is_none() {
            return Err(ApiError::not_found(format!(
                "There is no provider named {o:?}; see GET /llm/providers."
            )));
        }
    }
    let data = merged(&st, &p, only).await;
    Ok(Json(json!({"object": "list", "data": data})))
}

async fn model(
    State(st): State<AppState>,
    CurrentUser(p): CurrentUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<impl IntoResponse> {
    let route = st.providers.route(&id);
    let data = merged(&st, &p, Some(&route.provider.id)).await;
    let canonical = format!("{}/{}", route.provider.id, route.upstream_model);
    data.into_iter()
        .find(|m| m.id == id || m.id == canonical)
        .map(Json)
        .ok_or_else(|| {
            ApiError::model_not_found(format!(
                "The model {id:?} does not exist or is not available to you."
            ))
        })
}

async fn providers(State(st): State<AppState>, _: CurrentUser) -> impl IntoResponse {
    let list: Vec<Value> = st
        .providers
        .list
        .iter()
        .map(|prov| {
            let (status, reason) = if let Some(r) = prov.inactive_reason() {
                ("inactive", Some(r))
            } else if let Some(r) = st.catalog.error(&prov.id) {
                ("degraded", Some(r))
            } else if let Some(r) = st.health.degraded_reason(&prov.id) {
                ("degraded", Some(r))
            } else {
                ("active", None)
            };
            let mut v = json!({
                "id": prov.id,
                "name": prov.name,
                "status": status,
                "base_url": prov.base_url,
                "default": prov.is_default,
            });
            if let Some(r) = reason {
                v["reason"] = json!(r);
            }
            v
        })
        .collect();
    Json(list)
}
