//! What every scenario shares: the cached value, key names, a cheap random
//! generator, statistics, clean-up of the keys a run wrote, and the report.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// How long every key a run writes lives in Redis at most, in case a run is
/// killed before it cleans up.
pub const SAFETY_TTL_SECS: u64 = 600;

/// The value every scenario caches: a typical row, about 300 bytes as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub id: u64,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price_cents: u64,
    pub currency: String,
    pub stock: u32,
    pub tags: Vec<String>,
    pub updated_at_ms: u64,
}

impl Product {
    pub fn sample(id: u64) -> Self {
        Self {
            id,
            sku: format!("SKU-{id:012}"),
            name: format!("Stoneware teapot no. {id}"),
            description: "Hand-glazed stoneware teapot, 1.2 litres, with a removable \
                          stainless steel infuser and a drip-free spout."
                .to_string(),
            price_cents: 2_990 + id % 1_000,
            currency: "EUR".to_string(),
            stock: (id % 500) as u32,
            tags: vec!["kitchen".into(), "tea".into(), "ceramic".into()],
            updated_at_ms: 1_700_000_000_000 + id,
        }
    }

    /// Size of the JSON form, for the report.
    pub fn json_len(&self) -> usize {
        serde_json::to_vec(self).map_or(0, |v| v.len())
    }
}

/// The caller's key of item `i`: twelve digits, the same shape as
/// `redis-benchmark`'s `__rand_int__`, so it can read exactly these keys.
/// How the bench's caches reach a single Redis node (`--redis-client`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RedisClient {
    /// The cache's own auto-pipelining connection (the library's default).
    Pipelined,
    /// redis-rs's `ConnectionManager`.
    RedisRs,
}

impl RedisClient {
    pub fn as_env(self) -> &'static str {
        match self {
            RedisClient::Pipelined => "pipelined",
            RedisClient::RedisRs => "redis-rs",
        }
    }
}

/// Carries `--redis-client` to this process's caches and its children's.
pub const REDIS_CLIENT_ENV: &str = "STRATACACHE_BENCH_REDIS_CLIENT";

/// A cache builder set up as `--redis-client` says.
pub fn cache_builder() -> stratacache::CacheBuilder {
    let redis_rs = std::env::var(REDIS_CLIENT_ENV).is_ok_and(|v| v == "redis-rs");
    stratacache::Cache::builder().redis_auto_pipelining(!redis_rs)
}

pub fn item_key(i: u64) -> String {
    format!("k:{i:012}")
}

/// A namespace nobody else uses: `bench-<pid>-<ms>`.
pub fn unique_namespace(scenario: &str) -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("bench-{scenario}-{}-{ms}", std::process::id())
}

/// The key under which stratacache stores `key` in namespace `ns`
/// (`{ns}:{<key>}`, see the library's key module).
pub fn stored_key(ns: &str, key: &str) -> String {
    format!("{ns}:{{{key}}}")
}

/// xorshift64*: cheap, deterministic, good enough to pick keys uniformly.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

/// A latency histogram in nanoseconds, from 1 ns to 60 s, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// p50 / p99 / p99.9 / max / mean in microseconds.
pub fn latency_json(h: &Histogram<u64>) -> Value {
    let us = |ns: f64| round(ns / 1_000.0, 2);
    json!({
        "samples": h.len(),
        "mean_us": us(h.mean()),
        "p50_us": us(h.value_at_quantile(0.50) as f64),
        "p99_us": us(h.value_at_quantile(0.99) as f64),
        "p999_us": us(h.value_at_quantile(0.999) as f64),
        "max_us": us(h.max() as f64),
    })
}

pub fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// `a / b`, rounded for the report.
pub fn ratio(a: f64, b: f64) -> f64 {
    round(a / b, 3)
}

/// Progress for the operator; stdout is reserved for the report.
#[macro_export]
macro_rules! progress {
    ($($arg:tt)*) => { eprintln!("[bench] {}", format!($($arg)*)) };
}

/// Delete the keys a run wrote (DEL in batches; never a pattern or a flush).
pub async fn delete_keys(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &[String],
) -> Result<usize> {
    let mut deleted = 0usize;
    for batch in keys.chunks(1_000) {
        let n: usize = redis::cmd("DEL")
            .arg(batch)
            .query_async(conn)
            .await
            .context("DEL of the benchmark's keys")?;
        deleted += n;
    }
    Ok(deleted)
}

/// Connect a bare multiplexed connection (the baseline, and for set-up).
pub async fn bare_connection(url: &str) -> Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url).with_context(|| format!("redis URL {url}"))?;
    client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// Print the report: exactly one JSON object, the last line of stdout.
pub fn emit(report: &Value) {
    println!(
        "{}",
        serde_json::to_string(report).expect("a JSON value serializes")
    );
}
