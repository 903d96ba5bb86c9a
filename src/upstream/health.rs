//! Provider health over a time window: a provider whose recent calls mostly
//! fail is reported `degraded` (one error is not enough), and recovers by
//! itself as failures age out of the window.

use hashbrown::HashMap;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
const MIN_CALLS: usize = 5;
/// At most this many recent calls per provider are kept by each thread.
const KEEP: usize = 1000;

type Calls = HashMap<String, VecDeque<(Instant, bool)>>;

/// Each thread that records calls keeps them in its own shard, so that the
/// serving threads never take a lock another one holds or just held; a
/// report reads every shard.
pub struct Health {
    id: u64,
    shards: Mutex<Vec<Arc<Mutex<Calls>>>>,
}

impl Default for Health {
    fn default() -> Health {
        static IDS: AtomicU64 = AtomicU64::new(0);
        Health {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            shards: Mutex::default(),
        }
    }
}

thread_local! {
    /// This thread's shard of each `Health` it has recorded for.
    static MINE: RefCell<Vec<(u64, Arc<Mutex<Calls>>)>> = const { RefCell::new(Vec::new()) };
}

impl Health {
    fn shard(&self) -> Arc<Mutex<Calls>> {
        MINE.with(|mine| {
            let mut mine = mine.borrow_mut();
            if let Some((_, s)) = mine.iter().find(|(id, _)| *id == self.id) {
                return s.clone();
            }
            let s = Arc::new(Mutex::new(Calls::new()));
            self.shards
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(s.clone());
            mine.push((self.id, s.clone()));
            s
        })
    }

    pub fn record(&self, provider: &str, ok: bool) {
        let now = Instant::now();
        // The shard's reference count is touched by this thread only.
        let shard = self.shard();
        push(
            &mut shard.lock().unwrap_or_else(|e| e.into_inner()),
            provider,
            now,
            ok,
        );
    }

    /// Why the provider is degraded, if its recent calls mostly failed.
    pub fn degraded_reason(&self, provider: &str) -> Option<String> {
        let now = Instant::now();
        let shards = self
            .shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (mut total, mut failed) = (0, 0);
        for s in shards {
            let m = s.lock().unwrap_or_else(|e| e.into_inner());
            for (_, ok) in m
                .get(provider)
                .into_iter()
                .flatten()
                .filter(|(t, _)| now.duration_since(*t) <= WINDOW)
            {
                total += 1;
                failed += usize::from(!ok);
            }
        }
        (total >= MIN_CALLS && failed * 2 > total)
            .then(|| format!("{failed} of its last {total} calls failed within a minute"))
    }
}

fn push(m: &mut Calls, provider: &str, now: Instant, ok: bool) {
    // Looked up before inserting: no key allocated on every call.
    let q = match m.get_mut(provider) {
        Some(q) => q,
        None => m.entry(provider.to_owned()).or_default(),
    };
    q.push_back((now, ok));
    while q
        .front()
        .is_some_and(|(t, _)| now.duration_since(*t) > WINDOW)
        || q.len() > KEEP
    {
        q.pop_front();
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

    #[test]
    fn calls_recorded_on_every_thread_count() {
        let h = std::sync::Arc::new(super::Health::default());
        let other = super::Health::default();
        // Four failures here and two on another thread: six of six failed.
        for _ in 0..4 {
            h.record("a", false);
        }
        let h2 = h.clone();
        std::thread::spawn(move || {
            h2.record("a", false);
            h2.record("a", false);
        })
        .join()
        .unwrap();
        assert_eq!(
            h.degraded_reason("a").as_deref(),
            Some("6 of its last 6 calls failed within a minute")
        );
        // Another `Health` on the same threads has its own shards.
        assert!(other.degraded_reason("a").is_none());
        other.record("a", true);
        assert!(h.degraded_reason("b").is_none());
    }
}
