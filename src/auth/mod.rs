//! Authentication: passwords, JWTs, API keys, the in-memory credential cache,
//! login throttling and the request extractors.

pub mod api_key;
pub mod cache;
pub mod extract;
pub mod jwt;
pub mod oauth;
pub mod password;
pub mod throttle;

pub use extract::{AdminOrAdminKey, AdminUser, CurrentUser, Principal, SessionUser};

/// `GET /auth/providers`: the enabled OAuth sign-in providers
/// (`[{"id","name","login_url"}]`).
pub fn oauth_providers_list(state: &crate::state::AppState) -> Vec<serde_json::Value> {
    oauth::enabled(&state.config)
        .into_iter()
        .map(|p| {
            serde_json::json!({
                "id": p.id,
                "name": p.name,
                "login_url": format!("/auth/{}/login", p.id),
            })
        })
        .collect()
}
