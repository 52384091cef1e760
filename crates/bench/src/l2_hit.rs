//! L2 hit, one task: `cache.get::<Product>(key)` with L1 disabled against a
//! bare redis-rs `MultiplexedConnection` GET + `serde_json` decode of a plain
//! JSON value of the same product, sequential, in interleaved rounds.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use hdrhistogram::Histogram;
use redis::aio::MultiplexedConnection;
use serde_json::{json, Value};
use stratacache::{Cache, EntryOptions};

use crate::report::{
    bare_connection, delete_keys, item_key, latency_histogram, latency_json, median, ratio, round,
    stored_key, unique_namespace, Product, SAFETY_TTL_SECS,
};
use crate::{progress, L2HitArgs};

const TARGET_MAX_RATIO: f64 = 1.15;

/// One side's pooled results.
struct Side {
    hist: Histogram<u64>,
    ops: u64,
    busy: Duration,
    round_means_ns: Vec<f64>,
}

impl Side {
    fn new() -> Self {
        Self {
            hist: latency_histogram(),
            ops: 0,
            busy: Duration::ZERO,
            round_means_ns: Vec::new(),
        }
    }

    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.busy.as_secs_f64()
    }

    fn json(&self) -> Value {
        let mut v = latency_json(&self.hist);
        v["ops_per_sec"] = json!(round(self.ops_per_sec(), 0));
        v
    }
}

pub async fn run(url: &str, args: &L2HitArgs) -> Result<Value> {
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    let ns = unique_namespace("l2hit");
    let mut conn = bare_connection(url).await?;
    let key = item_key(0);
    let bare_key = format!("{ns}:bare:{}", item_key(0));
    let written = vec![stored_key(&ns, &key), bare_key.clone()];
    progress!("l2-hit: namespace {ns} on {url}");

    let result = measure(url, args, &ns, &key, &bare_key, &mut conn).await;
    match delete_keys(&mut conn, &written).await {
        Ok(n) => progress!("l2-hit: deleted {n} keys"),
        Err(e) => progress!("l2-hit: clean-up failed: {e:#}"),
    }
    result
}

async fn measure(
    url: &str,
    args: &L2HitArgs,
    ns: &str,
    key: &str,
    bare_key: &str,
    conn: &mut MultiplexedConnection,
) -> Result<Value> {
    let cache = crate::report::cache_builder()
        .namespace(ns)
        .redis_url(url)
        .without_l1()
        .build()
        .await?;
    let value = Product::sample(0);
    let opts = EntryOptions::new().ttl(Duration::from_secs(SAFETY_TTL_SECS));
    cache.set(key, &value, &opts).await?;
    let plain = serde_json::to_vec(&value)?;
    redis::cmd("SET")
        .arg(bare_key)
        .arg(&plain)
        .arg("EX")
        .arg(SAFETY_TTL_SECS)
        .query_async::<()>(conn)
        .await
        .context("SET of the baseline value")?;

    // stratacache reads a Redis failure as a miss: make sure both sides really hit.
    ensure!(
        cache.get::<Product>(key).await?.as_ref() == Some(&value),
        "stratacache did not read the value back from Redis (is Redis reachable?)"
    );
    ensure!(
        bare_get(conn, bare_key).await? == value,
        "baseline read back differs"
    );
    let envelope: Vec<u8> = redis::cmd("GET")
        .arg(stored_key(ns, key))
        .query_async(conn)
        .await?;

    let warm = Duration::from_millis(300);
    let (mut ours, mut bare) = (Side::new(), Side::new());
    run_stratacache(&cache, key, warm, &mut Side::new()).await?;
    run_bare(conn, bare_key, warm, &mut Side::new()).await?;

    let slice =
        Duration::from_secs(args.duration_secs).max(Duration::from_millis(200)) / (2 * args.rounds);
    progress!(
        "l2-hit: {} interleaved rounds of {:?} per side, one task",
        args.rounds,
        slice
    );
    for r in 0..args.rounds {
        if r.is_multiple_of(2) {
            run_stratacache(&cache, key, slice, &mut ours).await?;
            run_bare(conn, bare_key, slice, &mut bare).await?;
        } else {
            run_bare(conn, bare_key, slice, &mut bare).await?;
            run_stratacache(&cache, key, slice, &mut ours).await?;
        }
        let (a, b) = (
            ours.round_means_ns.last().copied().unwrap_or(f64::NAN),
            bare.round_means_ns.last().copied().unwrap_or(f64::NAN),
        );
        progress!(
            "round {:>2}: stratacache mean {:>6.1} us, bare redis-rs mean {:>6.1} us ({:.3}x)",
            r + 1,
            a / 1_000.0,
            b / 1_000.0,
            a / b
        );
    }

    let r = ratio(ours.hist.mean(), bare.hist.mean());
    let per_round: Vec<f64> = ours
        .round_means_ns
        .iter()
        .zip(&bare.round_means_ns)
        .map(|(a, b)| a / b)
        .collect();
    progress!(
        "l2-hit: stratacache p50 {:.1} us, bare p50 {:.1} us, mean ratio {r}",
        ours.hist.value_at_quantile(0.5) as f64 / 1_000.0,
        bare.hist.value_at_quantile(0.5) as f64 / 1_000.0
    );
    Ok(json!({
        "scenario": "l2-hit",
        "duration_secs": args.duration_secs,
        "rounds": args.rounds,
        "tasks": 1,
        "value_json_bytes": plain.len(),
        "stratacache_stored_bytes": envelope.len(),
        "stratacache": ours.json(),
        "bare_redis_rs": bare.json(),
        "ratio": r,
        "ratio_p50": ratio(
            ours.hist.value_at_quantile(0.5) as f64,
            bare.hist.value_at_quantile(0.5) as f64
        ),
        "ratio_ops_per_sec": ratio(ours.ops_per_sec(), bare.ops_per_sec()),
        "ratio_median_of_rounds": round(median(&per_round), 3),
        "target": {"max_ratio_mean_latency": TARGET_MAX_RATIO},
        "met": r <= TARGET_MAX_RATIO,
    }))
}

async fn run_stratacache(
    cache: &Cache,
    key: &str,
    budget: Duration,
    side: &mut Side,
) -> Result<()> {
    let started = Instant::now();
    let (mut ops, mut sum_ns) = (0u64, 0u64);
    while started.elapsed() < budget {
        let t = Instant::now();
        let found = cache.get::<Product>(key).await?;
        let ns = t.elapsed().as_nanos() as u64;
        if found.is_none() {
            bail!("stratacache missed the L2 key during the run");
        }
        side.hist.saturating_record(ns.max(1));
        sum_ns += ns;
        ops += 1;
    }
    side.busy += started.elapsed();
    side.ops += ops;
    side.round_means_ns.push(sum_ns as f64 / ops.max(1) as f64);
    Ok(())
}

async fn run_bare(
    conn: &mut MultiplexedConnection,
    key: &str,
    budget: Duration,
    side: &mut Side,
) -> Result<()> {
    let started = Instant::now();
    let (mut ops, mut sum_ns) = (0u64, 0u64);
    while started.elapsed() < budget {
        let t = Instant::now();
        let value = bare_get(conn, key).await?;
        let ns = t.elapsed().as_nanos() as u64;
        std::hint::black_box(value);
        side.hist.saturating_record(ns.max(1));
        sum_ns += ns;
        ops += 1;
    }
    side.busy += started.elapsed();
    side.ops += ops;
    side.round_means_ns.push(sum_ns as f64 / ops.max(1) as f64);
    Ok(())
}

/// The baseline operation: GET, then decode the JSON.
pub async fn bare_get(conn: &mut MultiplexedConnection, key: &str) -> Result<Product> {
    let bytes: Option<Vec<u8>> = redis::cmd("GET").arg(key).query_async(conn).await?;
    let bytes = bytes.with_context(|| format!("baseline key {key} is missing"))?;
    Ok(serde_json::from_slice(&bytes)?)
}
