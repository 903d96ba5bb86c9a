//! The model catalogue: each active provider's model list, fetched from its
//! `models_url`, parsed by `models`, cached for `models_ttl_secs` and refreshed
//! in the background. A failing list is remembered with its reason (shown in
//! `/llm/providers`) and never fails the merged list.

use super::models::{parse_model_list, ModelInfo};
use super::providers::{Provider, Providers};
use hashbrown::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Entry {
    models: Option<Arc<Vec<ModelInfo>>>,
    fetched_at: Option<Instant>,
    error: Option<String>,
}

pub struct Catalog {
    entries: RwLock<HashMap<String, Entry>>,
    /// One fetch at a time per provider.
    fetching: tokio::sync::Mutex<()>,
    /// The largest model list read (`[routing] max_response_bytes`).
    max_bytes: usize,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog::new(64 * 1024 * 1024)
    }
}

impl Catalog {
    /// An empty catalogue reading lists of at most `max_bytes`.
    pub fn new(max_bytes: usize) -> Catalog {
        Catalog {
            entries: Default::default(),
            fetching: Default::default(),
            max_bytes,
        }
    }

    fn fresh(&self, p: &Provider) -> Option<Arc<Vec<ModelInfo>>> {
        let m = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let e = m.get(&p.id)?;
        let age = e.fetched_at?.elapsed();
        (age < p.models_ttl).then(|| e.models.clone()).flatten()
    }

    /// The cached list, without fetching.
    pub fn cached(&self, provider_id: &str) -> Option<Arc<Vec<ModelInfo>>> {
        let m = self.entries.read().unwrap_or_else(|e| e.into_inner());
        m.get(provider_id).and_then(|e| e.models.clone())
    }

    /// Why the last fetch failed, if it did.
    pub fn error(&self, provider_id: &str) -> Option<String> {
        let m = self.entries.read().unwrap_or_else(|e| e.into_inner());
        m.get(provider_id).and_then(|e| e.error.clone())
    }

    /// `f` of one model of a provider's cached list, read in place (no copy
    /// of the entry or of the list's handle: this runs on every call).
    pub fn with_model<R>(
        &self,
        provider_id: &str,
        upstream_model: &str,
        f: impl FnOnce(&ModelInfo) -> R,
    ) -> Option<R> {
        let m = self.entries.read().unwrap_or_else(|e| e.into_inner());
        m.get(provider_id)?
            .models
            .as_ref()?
            .iter()
            .find(|m| m.id == upstream_model)
            .map(f)
    }

    /// The provider's list: fresh from the cache, else fetched now. A stale list
    /// is better than none when the refresh fails.
    pub async fn list(&self, p: &Provider) -> Result<Arc<Vec<ModelInfo>>, String> {
        if let Some(m) = self.fresh(p) {
            return Ok(m);
        }
        let _guard = self.fetching.lock().await;
        if let Some(m) = self.fresh(p) {
            return Ok(m);
        }
        self.refresh(p).await
    }

    /// Fetches the provider's list now and stores the result.
    pub async fn refresh(&self, p: &Provider) -> Result<Arc<Vec<ModelInfo>>, String> {
        let result = match super::client::get_models(p, self.max_bytes).await {
            Ok(body) => parse_model_list(p.kind, &body).map(Arc::new),
            Err(e) => Err(e),
        };
        let mut m = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(p.id.clone()).or_default();
        e.fetched_at = Some(Instant::now());
        match result {
            Ok(models) => {
                e.models = Some(models.clone());
                e.error = None;
                Ok(models)
            }
            Err(reason) => {
                tracing::warn!(provider = %p.id, %reason, "model list unavailable");
                e.error = Some(reason.clone());
                match &e.models {
                    Some(stale) => Ok(stale.clone()),
                    None => Err(reason),
                }
            }
        }
    }

    /// Keeps every active provider's list fresh, checking every few seconds.
    pub async fn refresh_loop(self: Arc<Self>, providers: Arc<Providers>) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for p in providers.list.iter().filter(|p| p.active()) {
                if self.fresh(p).is_none() {
                    let _guard = self.fetching.lock().await;
                    if self.fresh(p).is_none() {
                        let _ = self.refresh(p).await;
                    }
                }
            }
        }
    }
}
