//! Provider health over a time window: a provider whose recent calls mostly
//! fail is reported `degraded` (one error is not enough), and recovers by
//! itself as failures age out of the window.

use hashbrown::HashMap;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
const MIN_CALLS: usize = 5;

#[derive(Default)]
pub struct Health {
    calls: Mutex<HashMap<String, VecDeque<(Instant, bool)>>>,
}

impl Health {
    pub fn record(&self, provider: &str, ok: bool) {
        let now = Instant::now();
        let mut m = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up before inserting: no key allocated on every call.
        let q = match m.get_mut(provider) {
            Some(q) => q,
            None => m.entry(provider.to_owned()).or_default(),
        };
        q.push_back((now, ok));
        while q
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > WINDOW)
            || q.len() > 1000
        {
            q.pop_front();
        }
    }

    /// Why the provider is degraded, if its recent calls mostly failed.
    pub fn degraded_reason(&self, provider: &str) -> Option<String> {
        let now = Instant::now();
        let m = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let q = m.get(provider)?;
        let recent: Vec<bool> = q
            .iter()
            .filter(|(t, _)| now.duration_since(*t) <= WINDOW)
            .map(|(_, ok)| *ok)
            .collect();
        let failed = recent.iter().filter(|ok| !**ok).count();
        (recent.len() >= MIN_CALLS && failed * 2 > recent.len()).then(|| {
            format!(
                "{failed} of its last {} calls failed within a minute",
                recent.len()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_error_is_not_degraded() {
        let h = super::Health::default();
        h.record("a", false);
        assert!(h.degraded_reason("a").is_none());
        for _ in 0..5 {
            h.record("a", false);
        }
        assert!(h.degraded_reason("a").is_some());
        for _ in 0..10 {
            h.record("a", true);
        }
        assert!(h.degraded_reason("a").is_none());
    }
}
