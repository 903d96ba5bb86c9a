//! Prometheus metrics (`GET /metrics`): requests, latency and time-to-first-
//! token histograms, upstream errors and retries, tokens and cost. Labels are
//! provider, model, endpoint and status only — never a user or a key — and
//! the proxy folds model names nobody configured into `other`.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
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
            Ok(h) => Some(h),
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

pub fn record_request(provider: &str, model: &str, endpoint: &str, status: u16, secs: f64) {
    let labels = [
        ("provider", provider.to_owned()),
        ("model", model.to_owned()),
        ("endpoint", endpoint.to_owned()),
        ("status", status.to_string()),
    ];
    metrics::counter!("tollgate_requests_total", &labels).increment(1);
    metrics::histogram!("tollgate_request_duration_seconds", &labels).record(secs);
}

pub fn record_ttft(provider: &str, model: &str, endpoint: &str, secs: f64) {
    let labels = [
        ("provider", provider.to_owned()),
        ("model", model.to_owned()),
        ("endpoint", endpoint.to_owned()),
    ];
    metrics::histogram!("tollgate_time_to_first_token_seconds", &labels).record(secs);
}

pub fn record_upstream_error(provider: &str, model: &str, endpoint: &str, status: u16) {
    let labels = [
        ("provider", provider.to_owned()),
        ("model", model.to_owned()),
        ("endpoint", endpoint.to_owned()),
        ("status", status.to_string()),
    ];
    metrics::counter!("tollgate_upstream_errors_total", &labels).increment(1);
}

pub fn record_retry(provider: &str, model: &str, endpoint: &str) {
    let labels = [
        ("provider", provider.to_owned()),
        ("model", model.to_owned()),
        ("endpoint", endpoint.to_owned()),
    ];
    metrics::counter!("tollgate_upstream_retries_total", &labels).increment(1);
}

pub fn record_tokens(provider: &str, model: &str, prompt: i64, completion: i64, cost_usd: f64) {
    let labels = [
        ("provider", provider.to_owned()),
        ("model", model.to_owned()),
    ];
    metrics::counter!("tollgate_prompt_tokens_total", &labels).increment(prompt.max(0) as u64);
    metrics::counter!("tollgate_completion_tokens_total", &labels)
        .increment(completion.max(0) as u64);
    // Counters are integers: cost is counted in micro-dollars.
    metrics::counter!("tollgate_cost_usd_micros_total", &labels)
        .increment((cost_usd * 1e6).round().max(0.0) as u64);
}
