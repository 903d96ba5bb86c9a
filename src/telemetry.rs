//! Prometheus metrics (`GET /metrics`): requests, latency and time-to-first-
//! token histograms, upstream errors and retries, tokens and cost. Labels are
//! provider, model, endpoint and status only — never a user or a key — and
//! the proxy folds model names nobody configured into `other`.

use hashbrown::{Equivalent, HashMap};
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::cell::RefCell;
use std::sync::OnceLock;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once; later calls reuse it.
pub fn init() {
    HANDLE.get_or_init(|| {
        let buckets = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            60.0, 120.0,
        ];
        match PrometheusBuilder::new()
            .set_buckets(&buckets)
            .and_then(|b| b.install_recorder())
        {
            Ok(h) => {
                // Histogram samples are kept raw until they are folded into
                // buckets, which `render` did only when /metrics was scraped:
                // unscraped, they grew by 16 bytes a call without bound.
                let upkeep = h.clone();
                let spawned = std::thread::Builder::new()
                    .name("metrics-upkeep".into())
                    .spawn(move || loop {
                        std::thread::sleep(std::time::Duration::from_secs(1));
                        upkeep.run_upkeep();
                    });
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "cannot start the metrics upkeep thread");
                }
                Some(h)
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed");
                None
            }
        }
    });
}

/// Usage records waiting to be written (all writers of the process).
static PENDING_RECORDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Set from the usage writer's count when /metrics is scraped.
pub fn set_pending_records(n: usize) {
    PENDING_RECORDS.store(n, std::sync::atomic::Ordering::Relaxed);
}

/// The Prometheus text exposition.
pub fn render() -> String {
    init();
    flush_local();
    metrics::gauge!("tollgate_usage_records_pending")
        .set(PENDING_RECORDS.load(std::sync::atomic::Ordering::Relaxed) as f64);
    HANDLE
        .get()
        .and_then(|h| h.as_ref())
        .map(|h| h.render())
        .unwrap_or_default()
}

/// Metric handles resolved once per label set: building labels and finding
/// them in the registry cost more than the update itself on every call.
/// Looked up with borrowed labels (no allocation) through `Equivalent`.
#[derive(Hash, PartialEq, Eq)]
struct LabelsOwned {
    provider: String,
    model: String,
    endpoint: &'static str,
    status: u16,
}

#[derive(Hash)]
struct LabelsRef<'a> {
    provider: &'a str,
    model: &'a str,
    endpoint: &'a str,
    status: u16,
}

impl Equivalent<LabelsOwned> for LabelsRef<'_> {
    fn equivalent(&self, k: &LabelsOwned) -> bool {
        self.provider == k.provider
            && self.model == k.model
            && self.endpoint == k.endpoint
            && self.status == k.status
    }
}

/// A metric's labels: provider and model, then endpoint and status when given.
type Labels = Vec<(&'static str, String)>;

fn labels(provider: &str, model: &str, endpoint: &str, status: Option<u16>) -> Labels {
    let mut l = vec![
        ("provider", provider.to_owned()),
        ("model", model.to_owned()),
    ];
    if !endpoint.is_empty() {
        l.push(("endpoint", endpoint.to_owned()));
    }
    if let Some(s) = status {
        l.push(("status", s.to_string()));
    }
    l
}

type Cache<V> = std::thread::LocalKey<RefCell<HashMap<LabelsOwned, V>>>;

/// A counter's increments not yet added to it.
struct PendingCounter(Counter, u64);

impl PendingCounter {
    fn flush(&mut self) {
        if self.1 > 0 {
            self.0.increment(std::mem::take(&mut self.1));
        }
    }
}

/// A histogram's samples not yet recorded in it.
struct PendingHistogram(Histogram, Vec<f64>);

impl PendingHistogram {
    fn new(h: Histogram) -> PendingHistogram {
        PendingHistogram(h, Vec::with_capacity(FLUSH_EVERY as usize))
    }
    fn flush(&mut self) {
        for s in self.1.drain(..) {
            self.0.record(s);
        }
    }
}

// Per thread: a serving thread finds its handles without a lock or a
// reference count shared with the other threads (the handles themselves
// point at the one registry), and adds to them in batches: every update of a
// shared metric is an atomic write on a line the other serving threads also
// write, so it is paid once per batch instead of once per call.
thread_local! {
    static REQUESTS: RefCell<HashMap<LabelsOwned, (PendingCounter, PendingHistogram)>> = RefCell::new(HashMap::new());
    static TTFT: RefCell<HashMap<LabelsOwned, PendingHistogram>> = RefCell::new(HashMap::new());
    static TOKENS: RefCell<HashMap<LabelsOwned, [PendingCounter; 3]>> = RefCell::new(HashMap::new());
    static PENDING: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// A thread's updates are added to the shared metrics after this many calls,
/// and whenever the thread goes idle ([`flush_local`] runs before a serving
/// thread parks), so /metrics lags by at most a burst of calls.
const FLUSH_EVERY: u32 = 32;

/// Adds this thread's pending updates to the shared metrics.
pub fn flush_local() {
    if PENDING.with(|p| p.replace(0)) == 0 {
        return;
    }
    REQUESTS.with(|c| {
        for (count, duration) in c.borrow_mut().values_mut() {
            count.flush();
            duration.flush();
        }
    });
    TTFT.with(|c| {
        c.borrow_mut()
            .values_mut()
            .for_each(PendingHistogram::flush)
    });
    TOKENS.with(|c| {
        for counters in c.borrow_mut().values_mut() {
            counters.iter_mut().for_each(PendingCounter::flush);
        }
    });
}

fn pending_update() {
    let n = PENDING.with(|p| {
        let n = p.get() + 1;
        p.set(n);
        n
    });
    if n >= FLUSH_EVERY {
        flush_local();
    }
}

/// Runs `update` on the cached handles of a label set (`status` 0 and an
/// empty `endpoint` are not labels), registering them with `make` on first use.
fn with_handles<V>(
    cache: &'static Cache<V>,
    (provider, model, endpoint, status): (&str, &str, &'static str, u16),
    make: impl FnOnce(&Labels) -> V,
    update: impl FnOnce(&mut V),
) {
    let key = LabelsRef {
        provider,
        model,
        endpoint,
        status,
    };
    cache.with(|c| {
        if let Some(v) = c.borrow_mut().get_mut(&key) {
            return update(v);
        }
        let mut v = make(&labels(
            provider,
            model,
            endpoint,
            (status != 0).then_some(status),
        ));
        update(&mut v);
        // Label sets stay few: models are folded into `other` unless configured or listed.
        c.borrow_mut().insert(
            LabelsOwned {
                provider: provider.to_owned(),
                model: model.to_owned(),
                endpoint,
                status,
            },
            v,
        );
    });
    pending_update();
}

pub fn record_request(provider: &str, model: &str, endpoint: &'static str, status: u16, secs: f64) {
    with_handles(
        &REQUESTS,
        (provider, model, endpoint, status),
        |l| {
            (
                PendingCounter(metrics::counter!("tollgate_requests_total", l), 0),
                PendingHistogram::new(metrics::histogram!("tollgate_request_duration_seconds", l)),
            )
        },
        |(count, duration)| {
            count.1 += 1;
            duration.1.push(secs);
        },
    );
}

pub fn record_ttft(provider: &str, model: &str, endpoint: &'static str, secs: f64) {
    with_handles(
        &TTFT,
        (provider, model, endpoint, 0),
        |l| {
            PendingHistogram::new(metrics::histogram!(
                "tollgate_time_to_first_token_seconds",
                l
            ))
        },
        |h| h.1.push(secs),
    );
}

pub fn record_upstream_error(provider: &str, model: &str, endpoint: &str, status: u16) {
    let l = labels(provider, model, endpoint, Some(status));
    metrics::counter!("tollgate_upstream_errors_total", &l).increment(1);
}

pub fn record_retry(provider: &str, model: &str, endpoint: &str) {
    let l = labels(provider, model, endpoint, None);
    metrics::counter!("tollgate_upstream_retries_total", &l).increment(1);
}

pub fn record_tokens(provider: &str, model: &str, prompt: i64, completion: i64, cost_micros: i64) {
    with_handles(
        &TOKENS,
        (provider, model, "", 0),
        |l| {
            [
                PendingCounter(metrics::counter!("tollgate_prompt_tokens_total", l), 0),
                PendingCounter(metrics::counter!("tollgate_completion_tokens_total", l), 0),
                // Counters are integers: cost is counted in micro-dollars.
                PendingCounter(metrics::counter!("tollgate_cost_usd_micros_total", l), 0),
            ]
        },
        |[p, c, usd]| {
            p.1 += prompt.max(0) as u64;
            c.1 += completion.max(0) as u64;
            usd.1 += cost_micros.max(0) as u64;
        },
    );
}

#[cfg(test)]
mod tests {
    fn count_of(model: &str) -> Option<u64> {
        super::render()
            .lines()
            .find(|l| l.starts_with("tollgate_requests_total") && l.contains(model))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// Updates are added to the shared metrics in batches: after FLUSH_EVERY
    /// calls, or when the thread flushes (before it parks, or to render).
    #[test]
    fn a_threads_updates_reach_the_metrics_in_batches() {
        super::init();
        let n = super::FLUSH_EVERY as usize;
        std::thread::spawn(move || {
            for _ in 0..3 {
                super::record_request("p", "batch-a", "chat", 200, 0.01);
            }
            super::flush_local();
            for _ in 0..n {
                super::record_request("p", "batch-b", "chat", 200, 0.01);
            }
            // Not flushed by hand: the last call filled the batch.
        })
        .join()
        .unwrap();
        assert_eq!(count_of("batch-a"), Some(3));
        assert_eq!(count_of("batch-b"), Some(n as u64));
        // Rendering flushes the rendering thread's own updates.
        super::record_request("p", "batch-c", "chat", 200, 0.01);
        assert_eq!(count_of("batch-c"), Some(1));
    }

    /// Without upkeep, every histogram sample stays in memory until the next
    /// scrape of /metrics.
    #[test]
    fn the_recorder_comes_with_an_upkeep_thread() {
        super::init();
        let names: Vec<String> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .collect();
        assert!(
            names.iter().any(|n| n.trim() == "metrics-upkeep"),
            "{names:?}"
        );
    }
}
