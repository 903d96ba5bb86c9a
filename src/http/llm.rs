//! The OpenAI-compatible endpoints (`/llm/*`, also under `/v1` and at the
//! root): chat, completions and embeddings through the proxy, the merged model
//! list, and the providers' status.

use super::extract::{AppPath, AppQuery};
use super::RequestId;
use crate::auth::{CurrentUser, Principal};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post, MethodRouter};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The LLM routes, to be mounted at `/llm`, `/v1` and the root.
/// The LLM routes under `prefix` ("/llm", "/v1" or "" for the root). Routes
/// are registered with their full paths rather than nested: a nested router
/// rebuilds the request's URI to strip the prefix on every call.
pub fn routes(prefix: &str) -> Router<AppState> {
    Router::new()
        .route(&format!("{prefix}/models"), get(models))
        .route(&format!("{prefix}/models/{{*id}}"), get(model))
        .route(&format!("{prefix}/providers"), get(providers))
}

/// The generation routes under `/llm`, `/v1` and the root, each a POST into
/// [`generation_door`](super::generation_door), which authenticates: they are
/// mounted outside the authenticated router.
pub fn generation_routes() -> Router<AppState> {
    let mut r = Router::new();
    for prefix in ["/llm", "/v1", ""] {
        for path in [
            "/chat/completions",
            "/completions",
            "/embeddings",
            "/messages",
            "/messages/count_tokens",
            "/responses",
        ] {
            let full = format!("{prefix}{path}");
            if let Some(door) = super::door_of(&full) {
                r = r.route(&full, generation(door));
            }
        }
    }
    r
}

/// The POST route of one door.
fn generation(door: super::Door) -> MethodRouter<AppState> {
    post(
        move |State(st): State<AppState>,
              Extension(rid): Extension<RequestId>,
              req: axum::extract::Request| async move {
            super::generation_door(st, door, rid.0, req).await
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
    headers: axum::http::HeaderMap,
    AppQuery(q): AppQuery<ModelsQuery>,
) -> ApiResult<axum::response::Response> {
    let only = q.provider.as_deref().filter(|s| !s.is_empty());
    if let Some(o) = only {
        if st.providers.get(o).is_none() {
            return Err(ApiError::not_found(format!(
                "There is no provider named {o:?}; see GET /llm/providers."
            )));
        }
    }
    let data = merged(&st, &p, only).await;
    if headers.contains_key("anthropic-version") {
        // Anthropic's shape, for its SDKs and Claude Code.
        let data: Vec<Value> = data
            .iter()
            .map(|m| {
                let created = chrono::DateTime::from_timestamp(m.created, 0).unwrap_or_default();
                json!({"type": "model", "id": m.id, "display_name": m.id,
                       "created_at": crate::db::ts(created)})
            })
            .collect();
        let first = data.first().map(|m| m["id"].clone()).unwrap_or(Value::Null);
        let last = data.last().map(|m| m["id"].clone()).unwrap_or(Value::Null);
        return Ok(Json(
            json!({"data": data, "has_more": false, "first_id": first, "last_id": last}),
        )
        .into_response());
    }
    Ok(Json(json!({"object": "list", "data": data})).into_response())
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
