//! One process of the `stampede` scenario (`bench stampede-worker <plan>`):
//! connects, starts `tasks` tasks at the plan's wall-clock instant, each
//! asking for the same cold key with one strategy, and prints one JSON line
//! with every caller's start time and latency.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use stratacache::{Cache, EntryOptions};

use crate::report::{bare_connection, Product, SAFETY_TTL_SECS};

/// How long the cached value lives, for every strategy.
pub const VALUE_TTL_SECS: u64 = 60;
/// The polling mutex's lock lifetime (`SET lock NX PX 10000`).
const LOCK_PX_MS: u64 = 10_000;
/// The polling mutex's pause between two looks at the key.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// A caller that has no value after this long gives up (counted as an error).
const CALLER_DEADLINE: Duration = Duration::from_secs(30);
/// The id of the product every loader returns.
pub const PRODUCT_ID: u64 = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// `Cache::get_or_load`: single-flight in the process, a lease across them.
    Stratacache,
    /// Cache-aside: GET; on a miss load, SET EX, return.
    Naive,
    /// GET; on a miss SET lock NX; the winner loads, the others sleep and retry.
    PollingMutex,
}

impl Strategy {
    pub const ALL: [Strategy; 3] = [Self::Stratacache, Self::Naive, Self::PollingMutex];

    pub fn name(self) -> &'static str {
        match self {
            Self::Stratacache => "stratacache",
            Self::Naive => "naive",
            Self::PollingMutex => "polling-mutex",
        }
    }
}

/// What the coordinator tells every worker process of one trial.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub strategy: Strategy,
    pub redis_url: String,
    /// stratacache's namespace (shared by every process of the trial).
    pub namespace: String,
    /// The key asked for: the caller's key for stratacache, the Redis key otherwise.
    pub key: String,
    /// The polling mutex's lock key (`lock:<key>`).
    pub lock_key: String,
    /// `SET <started_key> <now_us> NX` by every loader: the first load's start.
    pub started_key: String,
    /// `INCR <loads_key>` by every loader.
    pub loads_key: String,
    pub tasks: usize,
    pub loader_ms: u64,
    /// The wall-clock instant (Unix ms) at which every task starts.
    pub start_at_ms: u64,
}

/// Wall clock in microseconds since the Unix epoch (comparable across processes).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

pub async fn run(plan_json: &str) -> Result<Value> {
    let plan: Plan = serde_json::from_str(plan_json).context("parsing the worker plan")?;
    let plan = Arc::new(plan);
    let db = bare_connection(&plan.redis_url).await?;
    let cache = match plan.strategy {
        Strategy::Stratacache => Some(
            crate::report::cache_builder()
                .namespace(plan.namespace.as_str())
                .redis_url(&plan.redis_url)
                .build()
                .await?,
        ),
        _ => None,
    };
    // Every side makes one round trip before the start, so no task pays for
    // connecting; the key read here is not the measured one.
    let warm_key = format!("{}:warm-up", plan.namespace);
    if let Some(cache) = &cache {
        cache.get::<Product>("warm-up").await?;
    }
    redis::cmd("GET")
        .arg(&warm_key)
        .query_async::<Option<Vec<u8>>>(&mut db.clone())
        .await?;

    let start_in_us = (plan.start_at_ms * 1_000).saturating_sub(now_us());
    let late_ms = if start_in_us == 0 {
        (now_us() as f64 / 1_000.0 - plan.start_at_ms as f64).max(0.0)
    } else {
        0.0
    };
    let deadline = tokio::time::Instant::now() + Duration::from_micros(start_in_us);

    let mut handles = Vec::with_capacity(plan.tasks);
    for _ in 0..plan.tasks {
        let (plan, db, cache) = (Arc::clone(&plan), db.clone(), cache.clone());
        handles.push(tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            let start_us = now_us();
            let t = Instant::now();
            let got = tokio::time::timeout(CALLER_DEADLINE, call(&plan, db, cache.as_ref())).await;
            let elapsed_us = t.elapsed().as_micros() as u64;
            let outcome = match got {
                Ok(Ok(v)) if v == Product::sample(PRODUCT_ID) => Ok(()),
                Ok(Ok(_)) => Err("the value read differs from the loaded one".to_string()),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err(format!("no value after {CALLER_DEADLINE:?}")),
            };
            (start_us, elapsed_us, outcome)
        }));
    }

    let mut samples = Vec::with_capacity(plan.tasks);
    let (mut errors, mut first_error) = (0usize, None);
    for handle in handles {
        let (start_us, elapsed_us, outcome) = handle.await.context("a caller task panicked")?;
        match outcome {
            Ok(()) => samples.push([start_us, elapsed_us]),
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    Ok(json!({
        "pid": std::process::id(),
        "strategy": plan.strategy,
        "late_ms": late_ms,
        "errors": errors,
        "first_error": first_error,
        "samples_us": samples,
    }))
}

/// One caller asking for the key with the plan's strategy.
async fn call(plan: &Plan, db: MultiplexedConnection, cache: Option<&Cache>) -> Result<Product> {
    match plan.strategy {
        Strategy::Stratacache => {
            let cache = cache.context("no cache built")?;
            let opts = EntryOptions::new().ttl(Duration::from_secs(VALUE_TTL_SECS));
            let (started, loads, ms) = (
                plan.started_key.clone(),
                plan.loads_key.clone(),
                plan.loader_ms,
            );
            let value = cache
                .get_or_load(&plan.key, &opts, move || load(db, started, loads, ms))
                .await?;
            Ok(value)
        }
        Strategy::Naive => naive(plan, db).await,
        Strategy::PollingMutex => polling_mutex(plan, db).await,
    }
}

/// The "database": note the first load's start and count the load, then take
/// `loader_ms` to answer.
async fn load(
    mut db: MultiplexedConnection,
    started_key: String,
    loads_key: String,
    loader_ms: u64,
) -> Result<Product, redis::RedisError> {
    let started = now_us();
    redis::cmd("SET")
        .arg(&started_key)
        .arg(started)
        .arg("NX")
        .arg("EX")
        .arg(SAFETY_TTL_SECS)
        .query_async::<redis::Value>(&mut db)
        .await?;
    redis::cmd("INCR")
        .arg(&loads_key)
        .query_async::<i64>(&mut db)
        .await?;
    tokio::time::sleep(Duration::from_millis(loader_ms)).await;
    Ok(Product::sample(PRODUCT_ID))
}

async fn get(db: &mut MultiplexedConnection, key: &str) -> Result<Option<Product>> {
    let bytes: Option<Vec<u8>> = redis::cmd("GET").arg(key).query_async(db).await?;
    Ok(match bytes {
        Some(b) => Some(serde_json::from_slice(&b)?),
        None => None,
    })
}

async fn load_and_set(plan: &Plan, db: &mut MultiplexedConnection) -> Result<Product> {
    let value = load(
        db.clone(),
        plan.started_key.clone(),
        plan.loads_key.clone(),
        plan.loader_ms,
    )
    .await?;
    redis::cmd("SET")
        .arg(&plan.key)
        .arg(serde_json::to_vec(&value)?)
        .arg("EX")
        .arg(VALUE_TTL_SECS)
        .query_async::<()>(db)
        .await?;
    Ok(value)
}

/// Cache-aside as the seed articles write it: GET; on a miss load, SET, return.
async fn naive(plan: &Plan, mut db: MultiplexedConnection) -> Result<Product> {
    if let Some(value) = get(&mut db, &plan.key).await? {
        return Ok(value);
    }
    load_and_set(plan, &mut db).await
}

/// The seed articles' lock variant: on a miss `SET lock NX PX`; the winner
/// loads, sets the value and deletes the lock; the others sleep 100 ms and
/// look again until the value is there.
async fn polling_mutex(plan: &Plan, mut db: MultiplexedConnection) -> Result<Product> {
    loop {
        if let Some(value) = get(&mut db, &plan.key).await? {
            return Ok(value);
        }
        let won: Option<String> = redis::cmd("SET")
            .arg(&plan.lock_key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(LOCK_PX_MS)
            .query_async(&mut db)
            .await?;
        if won.is_some() {
            let value = load_and_set(plan, &mut db).await?;
            redis::cmd("DEL")
                .arg(&plan.lock_key)
                .query_async::<()>(&mut db)
                .await?;
            return Ok(value);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
