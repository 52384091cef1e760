//! What the cache reports through the `metrics` facade.
//!
//! The application installs a recorder (Prometheus, StatsD …); without one,
//! every call below is a no-op. Handles are resolved once per policy and kept,
//! so the hot path pays an atomic increment, not a registry lookup.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `stratacache_hits_total` | counter | `cache`, `policy`, `tier` (`l1`, `l2`) |
//! | `stratacache_misses_total` | counter | `cache`, `policy`, `tier` |
//! | `stratacache_negative_hits_total` | counter | `cache`, `policy` |
//! | `stratacache_loads_total` | counter | `cache`, `policy` |
//! | `stratacache_load_errors_total` | counter | `cache`, `policy` |
//! | `stratacache_coalesced_total` | counter | `cache`, `policy` — callers that joined another's load |
//! | `stratacache_stale_served_total` | counter | `cache`, `policy` — stale values returned (SWR, soft timeout, fail-safe) |
//! | `stratacache_fail_safe_total` | counter | `cache`, `policy` — failed loads answered with a stale value |
//! | `stratacache_lease_waits_total` | counter | `cache`, `policy` — loads left to another instance's lease |
//! | `stratacache_refreshes_total` | counter | `cache`, `policy` — background refreshes started (eager refresh, SWR) |
//! | `stratacache_not_modified_total` | counter | `cache`, `policy` — conditional refreshes that kept the value |
//! | `stratacache_get_duration_seconds` | histogram | `cache`, `policy` |
//! | `stratacache_load_duration_seconds` | histogram | `cache`, `policy` |
//! | `stratacache_redis_errors_total` | counter | `cache`, `kind` (`timeout`, `io`, `server`) |
//! | `stratacache_redis_skipped_total` | counter | `cache` — calls not made because the breaker was open |
//! | `stratacache_redis_batched_reads_total` | counter | `cache` — reads sent as part of an MGET because many were in flight |
//! | `stratacache_breaker_open` | gauge | `cache` — 1 while open |
//! | `stratacache_breaker_opened_total` | counter | `cache` |
//! | `stratacache_corrupt_entries_total` | counter | `cache` — damaged entries (not an envelope, truncated, bad compression), deleted |
//! | `stratacache_foreign_entries_total` | counter | `cache` — entries of another schema version or type (a rolling deploy), left alone |
//! | `stratacache_invalidations_deferred_total` | counter | `cache` — invalidations that could not reach Redis or the other instances, replayed when it answers |
//! | `stratacache_oversized_values_total` | counter | `cache` — values refused for size |
//! | `stratacache_fills_refused_total` | counter | `cache`, `guard` (`lease`, `version`) — loads that overlapped an invalidation, kept out of Redis |
//! | `stratacache_l1_evictions_total` | counter | `cache`, `cause` (`size`, `expired`) |
//! | `stratacache_l1_bytes` / `stratacache_l1_entries` | gauge | `cache` |

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram, Label};

/// Handles of one policy.
pub(crate) struct PolicyMetrics {
    pub(crate) l1_hits: Counter,
    pub(crate) l1_misses: Counter,
    pub(crate) l2_hits: Counter,
    pub(crate) l2_misses: Counter,
    pub(crate) negative_hits: Counter,
    pub(crate) loads: Counter,
    pub(crate) load_errors: Counter,
    pub(crate) coalesced: Counter,
    pub(crate) stale_served: Counter,
    pub(crate) fail_safe: Counter,
    pub(crate) lease_waits: Counter,
    pub(crate) refreshes: Counter,
    pub(crate) not_modified: Counter,
    pub(crate) get_seconds: Histogram,
    pub(crate) load_seconds: Histogram,
    /// Whether latencies are recorded: reading the clock costs tens of ns
    /// on the L1 hit path, not worth paying when nobody listens.
    timed: bool,
}

impl PolicyMetrics {
    /// Start timing a call (a no-op when metrics are off).
    pub(crate) fn start(&self) -> Option<Instant> {
        self.timed.then(Instant::now)
    }

    /// Record a get's latency from [`start`](Self::start).
    pub(crate) fn record_get(&self, started: Option<Instant>) {
        if let Some(started) = started {
            self.get_seconds.record(started.elapsed().as_secs_f64());
        }
    }
}

/// Handles that belong to the cache as a whole.
pub(crate) struct CacheMetrics {
    pub(crate) redis_timeouts: Counter,
    /// Timeouts noticed long after their deadline: this process was too busy
    /// to look at the call in time (not counted toward the breaker).
    pub(crate) redis_timeouts_late: Counter,
    pub(crate) redis_io_errors: Counter,
    pub(crate) redis_server_errors: Counter,
    pub(crate) redis_skipped: Counter,
    pub(crate) redis_batched_reads: Counter,
    pub(crate) breaker_open: Gauge,
    pub(crate) breaker_opened: Counter,
    pub(crate) corrupt_entries: Counter,
    pub(crate) foreign_entries: Counter,
    pub(crate) invalidations_deferred: Counter,
    pub(crate) oversized_values: Counter,
    pub(crate) fills_refused_lease: Counter,
    pub(crate) fills_refused_version: Counter,
    pub(crate) l1_evicted_size: Counter,
    pub(crate) l1_evicted_expired: Counter,
    pub(crate) l1_bytes: Gauge,
    pub(crate) l1_entries: Gauge,
}

/// The metrics of one cache instance.
pub(crate) struct Metrics {
    enabled: bool,
    cache: Arc<str>,
    default_policy: PolicyMetrics,
    /// The handles of the policies the cache was built with: fixed at
    /// build, so a call reads them without a lock or a reference count.
    registered: HashMap<Arc<str>, PolicyMetrics>,
    /// Policies named only by options the cache was not built with.
    unregistered: RwLock<HashMap<Arc<str>, Arc<PolicyMetrics>>>,
    pub(crate) global: Arc<CacheMetrics>,
}

const DEFAULT_POLICY: &str = "default";

impl Metrics {
    pub(crate) fn new(enabled: bool, cache: &str) -> Self {
        let cache: Arc<str> = Arc::from(cache);
        let c = |name: &'static str, extra: &[(&'static str, &'static str)]| -> Counter {
            if !enabled {
                return Counter::noop();
            }
            let mut labels = vec![Label::new("cache", cache.to_string())];
            labels.extend(extra.iter().map(|(k, v)| Label::new(*k, *v)));
            counter!(name, labels)
        };
        let g = |name: &'static str| -> Gauge {
            if enabled {
                gauge!(name, "cache" => cache.to_string())
            } else {
                Gauge::noop()
            }
        };
        let global = Arc::new(CacheMetrics {
            redis_timeouts: c("stratacache_redis_errors_total", &[("kind", "timeout")]),
            redis_timeouts_late: c("stratacache_redis_late_timeouts_total", &[]),
            redis_io_errors: c("stratacache_redis_errors_total", &[("kind", "io")]),
            redis_server_errors: c("stratacache_redis_errors_total", &[("kind", "server")]),
            redis_skipped: c("stratacache_redis_skipped_total", &[]),
            redis_batched_reads: c("stratacache_redis_batched_reads_total", &[]),
            breaker_open: g("stratacache_breaker_open"),
            breaker_opened: c("stratacache_breaker_opened_total", &[]),
            corrupt_entries: c("stratacache_corrupt_entries_total", &[]),
            foreign_entries: c("stratacache_foreign_entries_total", &[]),
            invalidations_deferred: c("stratacache_invalidations_deferred_total", &[]),
            oversized_values: c("stratacache_oversized_values_total", &[]),
            fills_refused_lease: c("stratacache_fills_refused_total", &[("guard", "lease")]),
            fills_refused_version: c("stratacache_fills_refused_total", &[("guard", "version")]),
            l1_evicted_size: c("stratacache_l1_evictions_total", &[("cause", "size")]),
            l1_evicted_expired: c("stratacache_l1_evictions_total", &[("cause", "expired")]),
            l1_bytes: g("stratacache_l1_bytes"),
            l1_entries: g("stratacache_l1_entries"),
        });
        let default_policy = Self::policy_handles(enabled, &cache, DEFAULT_POLICY);
        Self {
            enabled,
            cache,
            default_policy,
            registered: HashMap::new(),
            unregistered: RwLock::new(HashMap::new()),
            global,
        }
    }

    fn policy_handles(enabled: bool, cache: &str, policy: &str) -> PolicyMetrics {
        if !enabled {
            return PolicyMetrics {
                l1_hits: Counter::noop(),
                l1_misses: Counter::noop(),
                l2_hits: Counter::noop(),
                l2_misses: Counter::noop(),
                negative_hits: Counter::noop(),
                loads: Counter::noop(),
                load_errors: Counter::noop(),
                coalesced: Counter::noop(),
                stale_served: Counter::noop(),
                fail_safe: Counter::noop(),
                lease_waits: Counter::noop(),
                refreshes: Counter::noop(),
                not_modified: Counter::noop(),
                get_seconds: Histogram::noop(),
                load_seconds: Histogram::noop(),
                timed: false,
            };
        }
        let (cache, policy) = (cache.to_string(), policy.to_string());
        let tiered = |name: &'static str, tier: &'static str| counter!(name, "cache" => cache.clone(), "policy" => policy.clone(), "tier" => tier);
        let plain = |name: &'static str| counter!(name, "cache" => cache.clone(), "policy" => policy.clone());
        let hist = |name: &'static str| histogram!(name, "cache" => cache.clone(), "policy" => policy.clone());
        PolicyMetrics {
            l1_hits: tiered("stratacache_hits_total", "l1"),
            l1_misses: tiered("stratacache_misses_total", "l1"),
            l2_hits: tiered("stratacache_hits_total", "l2"),
            l2_misses: tiered("stratacache_misses_total", "l2"),
            negative_hits: plain("stratacache_negative_hits_total"),
            loads: plain("stratacache_loads_total"),
            load_errors: plain("stratacache_load_errors_total"),
            coalesced: plain("stratacache_coalesced_total"),
            stale_served: plain("stratacache_stale_served_total"),
            fail_safe: plain("stratacache_fail_safe_total"),
            lease_waits: plain("stratacache_lease_waits_total"),
            refreshes: plain("stratacache_refreshes_total"),
            not_modified: plain("stratacache_not_modified_total"),
            get_seconds: hist("stratacache_get_duration_seconds"),
            load_seconds: hist("stratacache_load_duration_seconds"),
            timed: true,
        }
    }

    /// Make the handles of the policies `names` once, at build.
    pub(crate) fn register_policies<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        if !self.enabled {
            return;
        }
        for name in names {
            let handles = Self::policy_handles(true, &self.cache, name);
            self.registered.insert(Arc::from(name), handles);
        }
    }

    /// The handles for a policy name (`None`: the default policy).
    ///
    /// The default policy's and the registered policies' are lent, not
    /// shared: every call of every worker asks for them, and taking a lock
    /// or raising a reference count would make all workers write the same
    /// cache line on every read. Options naming a policy this cache was not
    /// built with (made by [`Policy::new`](crate::Policy::new) alone) take
    /// the slower, locked path.
    pub(crate) fn policy(&self, name: Option<&Arc<str>>) -> PolicyRef<'_> {
        let Some(name) = name.filter(|_| self.enabled) else {
            return PolicyRef::Lent(&self.default_policy);
        };
        if let Some(handles) = self.registered.get(name) {
            return PolicyRef::Lent(handles);
        }
        if let Some(found) = self.unregistered.read().expect("metrics lock").get(name) {
            return PolicyRef::Shared(found.clone());
        }
        let handles = Arc::new(Self::policy_handles(true, &self.cache, name));
        PolicyRef::Shared(
            self.unregistered
                .write()
                .expect("metrics lock")
                .entry(name.clone())
                .or_insert(handles)
                .clone(),
        )
    }
}

/// A policy's metric handles, as [`Metrics::policy`] gives them out.
pub(crate) enum PolicyRef<'a> {
    Lent(&'a PolicyMetrics),
    Shared(Arc<PolicyMetrics>),
}

impl std::ops::Deref for PolicyRef<'_> {
    type Target = PolicyMetrics;

    fn deref(&self) -> &PolicyMetrics {
        match self {
            Self::Lent(handles) => handles,
            Self::Shared(handles) => handles,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lent(handles: &PolicyRef<'_>) -> bool {
        matches!(handles, PolicyRef::Lent(_))
    }

    #[test]
    fn registered_policies_are_lent_and_others_shared() {
        let mut metrics = Metrics::new(true, "shop");
        metrics.register_policies(["prices", "sessions"]);
        // Options carry their own `Arc` of the name, not the registry's.
        assert!(lent(&metrics.policy(Some(&Arc::from("prices")))));
        assert!(lent(&metrics.policy(Some(&Arc::from("sessions")))));
        assert!(lent(&metrics.policy(None)));
        let adhoc: Arc<str> = Arc::from("adhoc");
        assert!(!lent(&metrics.policy(Some(&adhoc))));
        assert!(!lent(&metrics.policy(Some(&adhoc))), "and again");
    }

    #[test]
    fn without_metrics_every_policy_lends_the_no_op_handles() {
        let mut metrics = Metrics::new(false, "shop");
        metrics.register_policies(["prices"]);
        assert!(lent(&metrics.policy(Some(&Arc::from("prices")))));
        assert!(lent(&metrics.policy(Some(&Arc::from("adhoc")))));
    }
}
