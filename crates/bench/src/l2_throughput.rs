//! L2 hits from many tasks: stratacache (L1 disabled) against bare redis-rs
//! multiplexed GETs + decode with the same number of tasks, and against
//! `redis-benchmark` unpipelined and pipelined as external ceilings.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use hdrhistogram::Histogram;
use redis::aio::MultiplexedConnection;
use serde_json::{json, Value};
use stratacache::{Cache, EntryOptions};

use crate::external::Ceilings;
use crate::l2_hit::bare_get;
use crate::report::{
    bare_connection, delete_keys, item_key, latency_histogram, latency_json, median, ratio, round,
    stored_key, unique_namespace, Product, Rng, SAFETY_TTL_SECS,
};
use crate::{progress, L2ThroughputArgs};

const TARGET_MIN_RATIO_UNPIPELINED: f64 = 1.0;
const AIM_MIN_RATIO_PIPELINED: f64 = 0.5;

/// One side's results over all rounds.
struct Side {
    hist: Histogram<u64>,
    rounds_ops_per_sec: Vec<f64>,
    misses: u64,
}

impl Side {
    fn new() -> Self {
        Self {
            hist: latency_histogram(),
            rounds_ops_per_sec: Vec::new(),
            misses: 0,
        }
    }

    fn json(&self) -> Value {
        let mut v = latency_json(&self.hist);
        v["ops_per_sec"] = json!(round(median(&self.rounds_ops_per_sec), 0));
        v["rounds_ops_per_sec"] = json!(self
            .rounds_ops_per_sec
            .iter()
            .map(|x| round(*x, 0))
            .collect::<Vec<_>>());
        v["misses"] = json!(self.misses);
        v
    }
}

pub async fn run(url: &str, args: &L2ThroughputArgs) -> Result<Value> {
    ensure!(
        args.keys > 0 && args.concurrency > 0 && args.rounds > 0,
        "arguments must be positive"
    );
    let ns = unique_namespace("l2tp");
    let mut conn = bare_connection(url).await?;
    let keys: Vec<String> = (0..args.keys).map(item_key).collect();
    let bare_keys: Vec<String> = keys.iter().map(|k| format!("{ns}:bare:{k}")).collect();
    let mut written: Vec<String> = keys.iter().map(|k| stored_key(&ns, k)).collect();
    written.extend(bare_keys.iter().cloned());
    progress!("l2-throughput: namespace {ns} on {url}");

    let result = measure(url, args, &ns, keys, bare_keys, &mut conn).await;
    match delete_keys(&mut conn, &written).await {
        Ok(n) => progress!("l2-throughput: deleted {n} keys"),
        Err(e) => progress!("l2-throughput: clean-up failed: {e:#}"),
    }
    result
}

async fn measure(
    url: &str,
    args: &L2ThroughputArgs,
    ns: &str,
    keys: Vec<String>,
    bare_keys: Vec<String>,
    conn: &mut MultiplexedConnection,
) -> Result<Value> {
    let cache = crate::report::cache_builder()
        .namespace(ns)
        .redis_url(url)
        .without_l1()
        .build()
        .await?;
    fill(&cache, conn, &keys, &bare_keys).await?;
    let (keys, bare_keys) = (Arc::new(keys), Arc::new(bare_keys));

    let mut ceilings = Ceilings::new(
        url,
        args.concurrency,
        args.requests,
        args.keys,
        stored_key(ns, "k:__rand_int__"),
    )?;
    let external_runs = if args.no_external {
        0
    } else {
        args.external_runs
    };

    let bench = Bench {
        cache: &cache,
        conn,
        keys: &keys,
        bare_keys: &bare_keys,
        tasks: args.concurrency,
    };
    // Warm-up, not recorded: connections up, caches and branch predictors warm.
    let warm = Duration::from_millis(500);
    let (mut ours, mut bare) = (Side::new(), Side::new());
    bench
        .round(warm, u64::MAX, true, &mut Side::new(), &mut Side::new())
        .await?;

    let slice =
        Duration::from_secs(args.duration_secs).max(Duration::from_millis(200)) / (2 * args.rounds);
    progress!(
        "l2-throughput: {} tasks per side, {} keys, {} interleaved rounds of {:?} per side",
        args.concurrency,
        args.keys,
        args.rounds,
        slice
    );
    for r in 0..args.rounds.max(external_runs) {
        if r < args.rounds {
            let first = r.is_multiple_of(2);
            bench
                .round(slice, u64::from(r), first, &mut ours, &mut bare)
                .await?;
            let (a, b) = (
                last(&ours.rounds_ops_per_sec),
                last(&bare.rounds_ops_per_sec),
            );
            progress!(
                "round {:>2}: stratacache {:>8.0} ops/s, bare redis-rs {:>8.0} ops/s ({:.3}x)",
                r + 1,
                a,
                b,
                a / b
            );
        }
        if r < external_runs {
            for (name, rps) in tokio::task::block_in_place(|| ceilings.run_once())? {
                progress!("         {name}: {rps:.0} requests/s");
            }
        }
    }

    let (a, b) = (
        median(&ours.rounds_ops_per_sec),
        median(&bare.rounds_ops_per_sec),
    );
    let per_round: Vec<f64> = (ours.rounds_ops_per_sec.iter())
        .zip(&bare.rounds_ops_per_sec)
        .map(|(a, b)| a / b)
        .collect();
    let mut report = json!({
        "scenario": "l2-throughput",
        "concurrency": args.concurrency,
        "keys": args.keys,
        "duration_secs": args.duration_secs,
        "rounds": args.rounds,
        "value_json_bytes": Product::sample(0).json_len(),
        "stratacache": ours.json(),
        "bare_redis_rs": bare.json(),
        "stratacache_ops_per_sec": round(a, 0),
        "bare_redis_rs_ops_per_sec": round(b, 0),
        "ratio_stratacache_bare": ratio(a, b),
        "ratio_stratacache_bare_median_of_rounds": round(median(&per_round), 3),
    });
    if external_runs > 0 {
        ceilings.report(&mut report, a);
        report["target"] = json!({
            "min_ratio_redis_benchmark": TARGET_MIN_RATIO_UNPIPELINED,
            "aim_min_ratio_redis_benchmark_p16": AIM_MIN_RATIO_PIPELINED,
        });
        report["met"] =
            json!(a / ceilings.median("redis_benchmark") >= TARGET_MIN_RATIO_UNPIPELINED);
        report["aim_met"] =
            json!(a / ceilings.median("redis_benchmark_p16") >= AIM_MIN_RATIO_PIPELINED);
    }
    progress!("l2-throughput: stratacache {a:.0} ops/s, bare redis-rs {b:.0} ops/s");
    Ok(report)
}

fn last(v: &[f64]) -> f64 {
    v.last().copied().unwrap_or(f64::NAN)
}

/// Write every key on both sides (pipelined), then check that both read back.
async fn fill(
    cache: &Cache,
    conn: &mut MultiplexedConnection,
    keys: &[String],
    bare_keys: &[String],
) -> Result<()> {
    progress!("l2-throughput: writing {} keys per side", keys.len());
    let opts = EntryOptions::new().ttl(Duration::from_secs(SAFETY_TTL_SECS));
    for (start, batch) in (0u64..).step_by(500).zip(keys.chunks(500)) {
        let entries: Vec<(&str, Product)> = batch
            .iter()
            .zip(start..)
            .map(|(k, i)| (k.as_str(), Product::sample(i)))
            .collect();
        cache.set_many(&entries, &opts).await?;
    }
    for (start, batch) in (0u64..).step_by(500).zip(bare_keys.chunks(500)) {
        let mut pipe = redis::pipe();
        for (key, i) in batch.iter().zip(start..) {
            let json = serde_json::to_vec(&Product::sample(i))?;
            pipe.cmd("SET")
                .arg(key)
                .arg(json)
                .arg("EX")
                .arg(SAFETY_TTL_SECS)
                .ignore();
        }
        pipe.query_async::<()>(conn)
            .await
            .context("writing the baseline keys")?;
    }
    for (batch, bare_batch) in keys.chunks(500).zip(bare_keys.chunks(500)) {
        let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
        let found = cache.get_many::<Product>(&refs).await?;
        ensure!(
            found.iter().all(Option::is_some),
            "stratacache did not read its keys back from Redis (is Redis reachable?)"
        );
        let raw: Vec<Option<Vec<u8>>> =
            redis::cmd("MGET").arg(bare_batch).query_async(conn).await?;
        ensure!(
            raw.iter().all(Option::is_some),
            "baseline keys missing after writing"
        );
    }
    Ok(())
}

/// One task's way of reading item `i`; `true` for a hit.
trait Worker: Send + 'static {
    fn read(&mut self, i: usize) -> impl Future<Output = bool> + Send;
}

struct Stratacache {
    cache: Cache,
    keys: Arc<Vec<String>>,
}

impl Worker for Stratacache {
    async fn read(&mut self, i: usize) -> bool {
        matches!(self.cache.get::<Product>(&self.keys[i]).await, Ok(Some(_)))
    }
}

struct Bare {
    conn: MultiplexedConnection,
    keys: Arc<Vec<String>>,
}

impl Worker for Bare {
    async fn read(&mut self, i: usize) -> bool {
        bare_get(&mut self.conn, &self.keys[i]).await.is_ok()
    }
}

/// Run one worker per task on uniformly random keys until `budget` is spent;
/// record latencies and the round's ops/s into `side`.
async fn hammer<W: Worker>(
    workers: Vec<W>,
    keys: usize,
    budget: Duration,
    seed: u64,
    side: &mut Side,
) -> Result<()> {
    let started = Instant::now();
    let deadline = started + budget;
    let mut handles = Vec::with_capacity(workers.len());
    for (t, mut worker) in workers.into_iter().enumerate() {
        handles.push(tokio::spawn(async move {
            let mut rng = Rng::new(seed.wrapping_mul(1_000_003) ^ t as u64);
            let mut hist = latency_histogram();
            let (mut ops, mut misses) = (0u64, 0u64);
            loop {
                let i = rng.below(keys as u64) as usize;
                let t0 = Instant::now();
                let hit = worker.read(i).await;
                let now = Instant::now();
                hist.saturating_record((now - t0).as_nanos().max(1) as u64);
                ops += 1;
                misses += u64::from(!hit);
                if now >= deadline {
                    break;
                }
            }
            (ops, misses, hist)
        }));
    }
    let mut ops = 0u64;
    for handle in handles {
        let (n, m, hist) = handle.await?;
        ops += n;
        side.misses += m;
        side.hist.add(&hist).context("merging histograms")?;
    }
    side.rounds_ops_per_sec
        .push(ops as f64 / started.elapsed().as_secs_f64());
    Ok(())
}

/// Both sides over the same keys and the same number of tasks.
struct Bench<'a> {
    cache: &'a Cache,
    conn: &'a MultiplexedConnection,
    keys: &'a Arc<Vec<String>>,
    bare_keys: &'a Arc<Vec<String>>,
    tasks: usize,
}

impl Bench<'_> {
    /// One run of each side, stratacache first or second.
    async fn round(
        &self,
        budget: Duration,
        seed: u64,
        stratacache_first: bool,
        ours: &mut Side,
        bare: &mut Side,
    ) -> Result<()> {
        if stratacache_first {
            self.run_stratacache(budget, seed, ours).await?;
            self.run_bare(budget, seed, bare).await
        } else {
            self.run_bare(budget, seed, bare).await?;
            self.run_stratacache(budget, seed, ours).await
        }
    }

    async fn run_stratacache(&self, budget: Duration, seed: u64, side: &mut Side) -> Result<()> {
        let workers = (0..self.tasks)
            .map(|_| Stratacache {
                cache: self.cache.clone(),
                keys: Arc::clone(self.keys),
            })
            .collect();
        hammer(workers, self.keys.len(), budget, seed, side).await
    }

    async fn run_bare(&self, budget: Duration, seed: u64, side: &mut Side) -> Result<()> {
        let workers = (0..self.tasks)
            .map(|_| Bare {
                conn: self.conn.clone(),
                keys: Arc::clone(self.bare_keys),
            })
            .collect();
        hammer(workers, self.bare_keys.len(), budget, seed, side).await
    }
}
