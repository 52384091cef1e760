//! Operations: `POST /admin/invalidate` (the operator's: [`Operator`]),
//! `GET /health`, `GET /metrics`, `GET /dashboard` and the figures it
//! polls, `GET /dashboard/stats`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use stratacache::BreakerState;

use crate::app::Shared;
use crate::auth::Operator;
use crate::error::{ApiError, JsonBody};
use crate::keys::{reaches_listing, LISTING_TAG};
use crate::redis_link::RedisMemory;
use crate::telemetry::{library_hits, prometheus, prometheus_sum, LatencyWindow};

/// `POST /admin/invalidate` body: exactly one of the three.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invalidation {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
}

/// `POST /admin/invalidate` `{"key": …}` | `{"tag": …}` | `{"prefix": …}`.
pub async fn invalidate(
    _: Operator,
    State(state): State<Shared>,
    JsonBody(what): JsonBody<Invalidation>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let bad = || {
        ApiError::BadRequest("give exactly one of \"key\", \"tag\", \"prefix\" (non-empty)".into())
    };
    let Some(cache) = state.caching.cache() else {
        return Ok(Json(
            serde_json::json!({ "invalidated": false, "reason": "the cache is off" }),
        ));
    };
    let answer = match (what.key, what.tag, what.prefix) {
        (Some(key), None, None) if !key.is_empty() => {
            cache.delete(&key).await?;
            serde_json::json!({ "invalidated": true, "key": key })
        }
        (None, Some(tag), None) if !tag.is_empty() => {
            cache.invalidate_tag(&tag).await?;
            // Listing responses are tagged as a whole (see the listing seam).
            if reaches_listing(&tag) {
                cache.invalidate_tag(LISTING_TAG).await?;
            }
            serde_json::json!({ "invalidated": true, "tag": tag })
        }
        (None, None, Some(prefix)) if !prefix.is_empty() => {
            let removed = cache.invalidate_prefix(&prefix).await?;
            serde_json::json!({ "invalidated": true, "prefix": prefix, "removed": removed })
        }
        _ => return Err(bad()),
    };
    Ok(Json(answer))
}

fn breaker_name(state: Option<BreakerState>) -> &'static str {
    match state {
        None => "off",
        Some(BreakerState::Closed) => "closed",
        Some(BreakerState::Open) => "open",
    }
}

/// `GET /health`: 200 while PostgreSQL answers (Redis down is degraded, not
/// down: the service still answers from the database), 503 otherwise.
pub async fn health(State(state): State<Shared>) -> Response {
    let (postgres, redis) = tokio::join!(state.db.ping(), state.redis.ping());
    let breaker = breaker_name(state.caching.breaker());
    let status = if !postgres {
        "down"
    } else if !redis || breaker == "open" {
        "degraded"
    } else {
        "ok"
    };
    let body = Json(serde_json::json!({
        "status": status,
        "postgres": if postgres { "up" } else { "down" },
        "redis": if redis { "up" } else { "down" },
        "breaker": breaker,
        "cache": state.caching.cache().is_some(),
    }));
    let code = if postgres {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body).into_response()
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics() -> Response {
    match prometheus() {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "another metrics recorder is installed\n",
        )
            .into_response(),
    }
}

/// `GET /dashboard`.
pub async fn dashboard() -> Html<&'static str> {
    Html(include_str!("../dashboard.html"))
}

/// The dashboard's figures: totals (the page turns them into rates) and the
/// last second's latency percentiles.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stats {
    /// Seconds since the instance started.
    pub uptime_s: f64,
    /// Whether the cache is on.
    pub cache: bool,
    /// Requests served.
    pub requests: u64,
    /// Reads that asked the cache.
    pub cache_lookups: u64,
    /// Database loads those reads caused (background refreshes included).
    pub cache_loads: u64,
    /// Answers from L1 or L2, as the cache counts them.
    pub cache_hits: f64,
    /// Cache lookups, as the cache counts them (L1 hits + L1 misses).
    pub cache_lookups_counted: f64,
    /// Queries sent to PostgreSQL.
    pub db_queries: u64,
    /// Latency of the last second.
    pub latency: LatencyWindow,
    /// Breaker state: off, closed, open.
    pub breaker: String,
    /// Redis used memory, if Redis answers.
    pub redis_used_memory_bytes: Option<u64>,
    /// Redis evicted keys, if Redis answers.
    pub redis_evicted_keys: Option<u64>,
    /// L1 evictions (size and expiry) since start, from the cache's metrics.
    pub l1_evictions: f64,
    /// L1 entries now.
    pub l1_entries: u64,
    /// Users in the data set.
    pub users: i64,
    /// Instruments in the data set.
    pub instruments: i64,
}

/// `GET /dashboard/stats`.
pub async fn stats(State(state): State<Shared>) -> Json<Stats> {
    let memory: Option<RedisMemory> = state.redis.memory().await;
    let rendered = prometheus().map(|h| h.render()).unwrap_or_default();
    let l1_evictions = prometheus_sum(&rendered, "stratacache_l1_evictions_total");
    let (cache_hits, cache_lookups_counted) = match state.caching.cache() {
        Some(cache) => library_hits(&rendered, cache.namespace()),
        None => (0.0, 0.0),
    };
    let counters = state.caching.counters();
    Json(Stats {
        uptime_s: state.telemetry.uptime(),
        cache: state.caching.cache().is_some(),
        requests: state.telemetry.requests(),
        cache_lookups: counters.lookups(),
        cache_loads: counters.loads(),
        cache_hits,
        cache_lookups_counted,
        db_queries: state.db.queries(),
        latency: state.telemetry.last_window(),
        breaker: breaker_name(state.caching.breaker()).to_string(),
        redis_used_memory_bytes: memory.map(|m| m.used_memory_bytes),
        redis_evicted_keys: memory.map(|m| m.evicted_keys),
        l1_evictions,
        l1_entries: state
            .caching
            .cache()
            .and_then(|c| c.l1_stats())
            .map_or(0, |s| s.entries),
        users: state.seed.map_or(0, |s| s.users),
        instruments: state.seed.map_or(0, |s| s.instruments),
    })
}
