//! The model catalogue: each active provider's model list, fetched from its
//! `models_url`, parsed by `models`, cached for `models_ttl_secs` and refreshed
//! in the background. A failing list is remembered with its reason (shown in
//! `/llm/providers`) and never fails the merged list; the background retries
//! back off from 5 s to 5 min, and only a change (failing, recovered) is logged.

use super::models::{parse_model_list, ModelInfo};
use super::providers::{Provider, Providers};
use hashbrown::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The first wait before retrying a failing list, doubled after each failure.
const RETRY_FIRST: Duration = Duration::from_secs(5);
/// The longest wait between retries of a failing list.
const RETRY_MAX: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Entry {
    models: Option<Arc<Vec<ModelInfo>>>,
    fetched_at: Option<Instant>,
    error: Option<String>,
    /// Failed fetches in a row.
    failures: u32,
    /// Before this, the background loop does not retry a failing list.
    retry_at: Option<Instant>,
}

/// The wait after `failures` failed fetches in a row: 5 s, 10 s, 20 s … 5 min.
fn backoff(failures: u32) -> Duration {
    RETRY_FIRST
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(RETRY_MAX)
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
    /// is better than none when the refresh fails. A list that is failing and
    /// waiting out its backoff is not fetched again for every caller: the
    /// stale list, or the last failure, answers until the retry is due.
    pub async fn list(&self, p: &Provider) -> Result<Arc<Vec<ModelInfo>>, String> {
        if let Some(known) = self.known(p) {
            return known;
        }
        let _guard = self.fetching.lock().await;
        if let Some(known) = self.known(p) {
            return known;
        }
        self.refresh(p).await
    }

    /// What answers without a fetch: a fresh list, or, while a failing list
    /// waits out its backoff, the stale list or the failure.
    fn known(&self, p: &Provider) -> Option<Result<Arc<Vec<ModelInfo>>, String>> {
        if let Some(m) = self.fresh(p) {
            return Some(Ok(m));
        }
        let m = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let e = m.get(&p.id)?;
        if e.retry_at? <= Instant::now() {
            return None;
        }
        match (&e.models, &e.error) {
            (Some(stale), _) => Some(Ok(stale.clone())),
            (None, Some(err)) => Some(Err(err.clone())),
            (None, None) => None,
        }
    }

    /// Whether the background loop should fetch the list now: it is not
    /// fresh, and a failing one has waited out its backoff.
    fn due(&self, p: &Provider) -> bool {
        if self.fresh(p).is_some() {
            return false;
        }
        let m = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let retry_at = m.get(&p.id).and_then(|e| e.retry_at);
        retry_at.is_none_or(|at| Instant::now() >= at)
    }

    /// Fetches the provider's list without storing it (`providers --probe`).
    pub async fn fetch(&self, p: &Provider) -> Result<Vec<ModelInfo>, String> {
        let body = super::client::get_models(p, self.max_bytes).await?;
        parse_model_list(p.kind, &body)
    }

    /// Fetches the provider's list now and stores the result. The log says
    /// when a list starts failing (with the reason) and when it recovers, not
    /// at every retry.
    pub async fn refresh(&self, p: &Provider) -> Result<Arc<Vec<ModelInfo>>, String> {
        let result = self.fetch(p).await.map(Arc::new);
        let mut m = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(p.id.clone()).or_default();
        let now = Instant::now();
        e.fetched_at = Some(now);
        match result {
            Ok(models) => {
                if e.failures > 0 {
                    tracing::info!(provider = %p.id, models = models.len(), "model list available again");
                }
                e.models = Some(models.clone());
                e.error = None;
                e.failures = 0;
                e.retry_at = None;
                Ok(models)
            }
            Err(reason) => {
                e.failures = e.failures.saturating_add(1);
                let wait = backoff(e.failures);
                e.retry_at = Some(now + wait);
                if e.failures == 1 {
                    tracing::warn!(
                        provider = %p.id,
                        %reason,
                        "model list unavailable; retrying in 5 s, then less often (up to every 5 min)"
                    );
                } else {
                    tracing::debug!(provider = %p.id, %reason, failures = e.failures, retry_in_secs = wait.as_secs(), "model list still unavailable");
                }
                e.error = Some(reason.clone());
                match &e.models {
                    Some(stale) => Ok(stale.clone()),
                    None => Err(reason),
                }
            }
        }
    }

    /// Keeps every active provider's list fresh, checking every second (a
    /// look at the cache; a fetch only when a list is stale or its retry due).
    pub async fn refresh_loop(self: Arc<Self>, providers: Arc<Providers>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for p in providers.list.iter().filter(|p| p.active()) {
                if self.due(p) {
                    let _guard = self.fetching.lock().await;
                    if self.due(p) {
                        let _ = self.refresh(p).await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_5_s_to_5_min() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX), RETRY_MAX);
    }
}
