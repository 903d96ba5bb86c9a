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

/// The Prometheus text exposition.
pub fn render() -> String {
    init();
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

// Per thread: a serving thread finds its handles without a lock or a
// reference count shared with the other threads (the handles themselves
// point at the one registry).
thread_local! {
    static REQUESTS: RefCell<HashMap<LabelsOwned, (Counter, Histogram)>> = RefCell::new(HashMap::new());
    static TTFT: RefCell<HashMap<LabelsOwned, Histogram>> = RefCell::new(HashMap::new());
    static TOKENS: RefCell<HashMap<LabelsOwned, (Counter, Counter, Counter)>> = RefCell::new(HashMap::new());
}

/// Runs `update` on the cached handles of a label set (`status` 0 and an
/// empty `endpoint` are not labels), registering them with `make` on first use.
fn with_handles<V>(
    cache: &'static Cache<V>,
    (provider, model, endpoint, status): (&str, &str, &'static str, u16),
    make: impl FnOnce(&Labels) -> V,
    update: impl FnOnce(&V),
) {
    let key = LabelsRef {
        provider,
        model,
        endpoint,
        status,
    };
    cache.with(|c| {
        if let Some(v) = c.borrow().get(&key) {
            return update(v);
        }
        let v = make(&labels(
            provider,
            model,
            endpoint,
            (status != 0).then_some(status),
        ));
        update(&v);
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
    })
}

pub fn record_request(provider: &str, model: &str, endpoint: &'static str, status: u16, secs: f64) {
    with_handles(
        &REQUESTS,
        (provider, model, endpoint, status),
        |l| {
            (
                metrics::counter!("tollgate_requests_total", l),
                metrics::histogram!("tollgate_request_duration_seconds", l),
            )
        },
        |(count, duration)| {
            count.increment(1);
            duration.record(secs);
        },
    );
}

pub fn record_ttft(provider: &str, model: &str, endpoint: &'static str, secs: f64) {
    with_handles(
        &TTFT,
        (provider, model, endpoint, 0),
        |l| metrics::histogram!("tollgate_time_to_first_token_seconds", l),
        |h| h.record(secs),
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

pub fn record_tokens(provider: &str, model: &str, prompt: i64, completion: i64, cost_usd: f64) {
    with_handles(
        &TOKENS,
        (provider, model, "", 0),
        |l| {
            (
                metrics::counter!("tollgate_prompt_tokens_total", l),
                metrics::counter!("tollgate_completion_tokens_total", l),
                // Counters are integers: cost is counted in micro-dollars.
                metrics::counter!("tollgate_cost_usd_micros_total", l),
            )
        },
        |(p, c, usd)| {
            p.increment(prompt.max(0) as u64);
            c.increment(completion.max(0) as u64);
            usd.increment((cost_usd * 1e6).round().max(0.0) as u64);
        },
    );
}

#[cfg(test)]
mod tests {
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
