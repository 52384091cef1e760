//! Request latency and counts: a Prometheus recorder for `/metrics` (one per
//! process) and, for the dashboard, the latency percentiles of the last
//! second, rolled by a ticker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use hdrhistogram::Histogram;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus recorder, installed on first call. `None` if
/// another recorder was installed first (then `/metrics` says so).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .as_ref()
}

/// The sum of every series of the counter `name` in Prometheus text.
pub fn prometheus_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The cache's own count of answers from L1 or L2 (hits) and of lookups
/// (L1 hits + L1 misses) for the cache named `namespace`, from Prometheus
/// text. A caller that joined another caller's load counts as a miss even
/// when that load found the value in Redis, so this errs low.
pub fn library_hits(text: &str, namespace: &str) -> (f64, f64) {
    let label = format!("cache=\"{namespace}\"");
    let mine = |name: &str, tier: &str| -> f64 {
        let tier = format!("tier=\"{tier}\"");
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(&label) && l.contains(&tier))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (l1_hits, l2_hits) = (
        mine("stratacache_hits_total{", "l1"),
        mine("stratacache_hits_total{", "l2"),
    );
    let l1_misses = mine("stratacache_misses_total{", "l1");
    (l1_hits + l2_hits, l1_hits + l1_misses)
}

/// [`library_hits`] per policy: `(hits, lookups)` by policy name.
pub fn library_hits_by_policy(
    text: &str,
    namespace: &str,
) -> std::collections::BTreeMap<String, (f64, f64)> {
    let label = format!("cache=\"{namespace}\"");
    let mut by_policy = std::collections::BTreeMap::<String, (f64, f64)>::new();
    for line in text.lines() {
        let hit = line.starts_with("stratacache_hits_total{");
        let l1_miss = line.starts_with("stratacache_misses_total{") && line.contains("tier=\"l1\"");
        if !(hit || l1_miss) || !line.contains(&label) {
            continue;
        }
        let Some(policy) = line
            .split("policy=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        else {
            continue;
        };
        let Some(n) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let entry = by_policy.entry(policy.to_string()).or_default();
        if hit {
            entry.0 += n;
        }
        if hit && line.contains("tier=\"l1\"") || l1_miss {
            entry.1 += n;
        }
    }
    by_policy
}

/// The middleware recording each request's route, status and latency.
pub async fn record_request(
    State(telemetry): State<Arc<Telemetry>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let response = next.run(request).await;
    telemetry.record(&route, response.status().as_u16(), started.elapsed());
    response
}

/// Latency percentiles of one window, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize)]
pub struct LatencyWindow {
    /// Requests in the window.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

/// Request counts and latencies of one instance.
pub struct Telemetry {
    started: Instant,
    requests: AtomicU64,
    current: Mutex<Histogram<u64>>,
    last: Mutex<LatencyWindow>,
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

impl Telemetry {
    /// Counters at zero; call [`spawn_ticker`](Self::spawn_ticker) to roll windows.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            requests: AtomicU64::new(0),
            current: Mutex::new(histogram()),
            last: Mutex::new(LatencyWindow::default()),
        })
    }

    /// Record one request.
    pub fn record(&self, route: &str, status: u16, elapsed: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let micros = (elapsed.as_micros() as u64).clamp(1, 60_000_000);
        if let Ok(mut h) = self.current.lock() {
            let _ = h.record(micros);
        }
        let class = match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        metrics::counter!("market_http_requests_total", "route" => route.to_string(), "status" => class)
            .increment(1);
        metrics::histogram!("market_http_request_duration_seconds", "route" => route.to_string())
            .record(elapsed.as_secs_f64());
    }

    /// Requests since start.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Seconds since start.
    pub fn uptime(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The last complete one-second window.
    pub fn last_window(&self) -> LatencyWindow {
        self.last.lock().map(|w| *w).unwrap_or_default()
    }

    /// Roll the window every second while the instance lives.
    pub fn spawn_ticker(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { return };
                this.roll();
            }
        })
    }

    fn roll(&self) {
        let finished = match self.current.lock() {
            Ok(mut h) => std::mem::replace(&mut *h, histogram()),
            Err(_) => return,
        };
        let ms = |q: f64| finished.value_at_quantile(q) as f64 / 1000.0;
        let window = LatencyWindow {
            count: finished.len(),
            mean_ms: finished.mean() / 1000.0,
            p50_ms: ms(0.5),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
        };
        if let Ok(mut last) = self.last.lock() {
            *last = window;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_series_of_a_counter_and_nothing_else() {
        let text = "# TYPE a_total counter\na_total{x=\"1\"} 2\na_total{x=\"2\"} 3\na_total_other 7\na_total 1\n";
        assert_eq!(prometheus_sum(text, "a_total"), 6.0);
        assert_eq!(prometheus_sum(text, "missing"), 0.0);
    }

    #[test]
    fn library_hits_count_one_cache_only() {
        let text = "stratacache_hits_total{cache=\"a\",policy=\"p\",tier=\"l1\"} 90\n\
                    stratacache_hits_total{cache=\"a\",policy=\"p\",tier=\"l2\"} 5\n\
                    stratacache_misses_total{cache=\"a\",policy=\"p\",tier=\"l1\"} 10\n\
                    stratacache_misses_total{cache=\"a\",policy=\"p\",tier=\"l2\"} 5\n\
                    stratacache_hits_total{cache=\"b\",policy=\"p\",tier=\"l1\"} 1000\n";
        assert_eq!(library_hits(text, "a"), (95.0, 100.0));
        let by_policy = library_hits_by_policy(text, "a");
        assert_eq!(by_policy.len(), 1);
        assert_eq!(by_policy["p"], (95.0, 100.0));
    }
}
