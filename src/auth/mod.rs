//! Authentication: passwords, JWTs, API keys, the in-memory credential cache,
//! login throttling and the request extractors.

pub mod api_key;
pub mod cache;
pub mod extract;
pub mod jwt;
pub mod password;
pub mod throttle;

pub use extract::{AdminUser, CurrentUser, Principal};

/// `GET /auth/providers`: the enabled OAuth sign-in providers. OAuth sign-in is
/// not built yet, so none is listed (a listed provider must have a working
/// login route).
pub fn oauth_providers_list(_state: &crate::state::AppState) -> Vec<serde_json::Value> {
    Vec::new()
}
