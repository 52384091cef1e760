//! `write-behind`: counter increments through write-behind (Redis stream,
//! batched and coalesced into PostgreSQL) against one `UPDATE` per increment,
//! in the same run, on the same database.
//!
//! Reported: increments accepted per second on each side, the statements each
//! side sent to PostgreSQL per increment, and the lag of write-behind (from
//! the stream entry's time to the commit that applied it) per write.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool};
use stratacache::write_behind::{Batch, PostgresSink, Sink, WriteBehind};
use stratacache::BoxError;

use crate::report::{ratio, round, unique_namespace, Rng};
use crate::WriteBehindArgs;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The PostgreSQL sink, counting the statements it sends and each write's lag.
struct Measured {
    inner: PostgresSink,
    statements: AtomicU64,
    lag_ms: Mutex<Histogram<u64>>,
}

impl Sink for Measured {
    async fn apply(&self, batch: &Batch) -> Result<(), BoxError> {
        self.inner.apply(batch).await?;
        // BEGIN, the applied ids, the counters, the values (if any), COMMIT.
        let statements = 4 + u64::from(!batch.values.is_empty());
        self.statements.fetch_add(statements, Ordering::Relaxed);
        let now = now_ms();
        let mut lag = self.lag_ms.lock().unwrap();
        for (_, id) in batch.write_ids() {
            lag.saturating_record(now.saturating_sub(id.ms).max(1));
        }
        Ok(())
    }
    async fn read_value(&self, key: &str) -> Result<Option<Vec<u8>>, BoxError> {
        self.inner.read_value(key).await
    }
    async fn read_counter(&self, key: &str) -> Result<i64, BoxError> {
        self.inner.read_counter(key).await
    }
}

async fn sum_of(pool: &PgPool, table: &str) -> Result<i64> {
    Ok(sqlx::query_scalar::<_, Option<i64>>(AssertSqlSafe(format!(
        "SELECT sum(total)::bigint FROM {table}"
    )))
    .fetch_one(pool)
    .await?
    .unwrap_or(0))
}

pub async fn run(redis_url: &str, args: &WriteBehindArgs) -> Result<Value> {
    let pool = PgPoolOptions::new()
        .max_connections(args.pg_connections)
        .connect(&args.pg_url)
        .await
        .with_context(|| format!("connect to {}", args.pg_url))?;
    let schema = format!("bench_wb_{}_{}", std::process::id(), now_ms());
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&pool)
        .await?;
    let outcome = measure(redis_url, args, &pool, &schema).await;
    sqlx::query(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&pool)
        .await?;
    outcome
}

async fn measure(
    redis_url: &str,
    args: &WriteBehindArgs,
    pool: &PgPool,
    schema: &str,
) -> Result<Value> {
    let duration = Duration::from_secs(args.duration_secs);
    let keys: Vec<String> = (0..args.keys).map(|i| format!("counter:{i}")).collect();

    // Baseline: one UPDATE per increment, the same tasks and keys.
    let baseline_table = format!("{schema}.baseline");
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE {baseline_table} (key text PRIMARY KEY, total bigint NOT NULL)"
    )))
    .execute(pool)
    .await?;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {baseline_table} SELECT k, 0 FROM UNNEST($1::text[]) AS k"
    )))
    .bind(&keys)
    .execute(pool)
    .await?;
    eprintln!(
        "baseline: {} tasks, one UPDATE per increment, {duration:?}",
        args.tasks
    );
    let update = format!("UPDATE {baseline_table} SET total = total + $1 WHERE key = $2");
    let (baseline_ops, baseline_secs) = drive(args, &keys, duration, {
        let (pool, update) = (pool.clone(), update.clone());
        move |key: String| {
            let (pool, update) = (pool.clone(), update.clone());
            async move {
                sqlx::query(AssertSqlSafe(update))
                    .bind(1i64)
                    .bind(key)
                    .execute(&pool)
                    .await
                    .map(|_| ())
                    .map_err(anyhow::Error::from)
            }
        }
    })
    .await?;
    let baseline_sum = sum_of(pool, &baseline_table).await?;
    anyhow::ensure!(
        baseline_sum == baseline_ops as i64,
        "baseline lost increments"
    );

    // Write-behind.
    let sink = PostgresSink::new(pool.clone(), &format!("{schema}.wb"))?;
    sink.create_tables().await?;
    let measured = Measured {
        inner: sink,
        statements: AtomicU64::new(0),
        lag_ms: Mutex::new(Histogram::new_with_bounds(1, 3_600_000, 3)?),
    };
    let cache = crate::report::cache_builder()
        .namespace(unique_namespace("write-behind"))
        .redis_url(redis_url)
        .without_l1()
        .build()
        .await?;
    let wb = WriteBehind::builder(cache, measured)
        .name("bench")
        .batch_size(args.batch_size)
        .batch_interval(Duration::from_millis(args.batch_interval_ms))
        .build()
        .await?;
    let workers: Vec<_> = (0..args.workers).map(|_| wb.spawn_worker()).collect();
    eprintln!(
        "write-behind: {} tasks, {} workers, batches of up to {} / {} ms, {duration:?}",
        args.tasks, args.workers, args.batch_size, args.batch_interval_ms
    );
    let (wb_ops, wb_secs) = drive(args, &keys, duration, {
        let wb = wb.clone();
        move |key: String| {
            let wb = wb.clone();
            async move {
                wb.incr(&key, 1)
                    .await
                    .map(|_| ())
                    .map_err(anyhow::Error::from)
            }
        }
    })
    .await?;
    let drain_started = Instant::now();
    loop {
        let status = wb.queue_status().await?;
        if status.depth == 0 && status.pending == 0 {
            break;
        }
        anyhow::ensure!(
            drain_started.elapsed() < Duration::from_secs(120),
            "queue did not drain: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_secs = drain_started.elapsed().as_secs_f64();
    for w in workers {
        w.shutdown().await;
    }
    let wb_sum = sum_of(pool, &format!("{schema}.wb_counters")).await?;
    anyhow::ensure!(
        wb_sum == wb_ops as i64,
        "write-behind: {wb_sum} in the database, {wb_ops} accepted"
    );
    let stats = wb.stats();
    let sink = wb.sink();
    let statements = sink.statements.load(Ordering::Relaxed);
    let lag = sink.lag_ms.lock().unwrap().clone();
    let _ = wb.replay_dead_letters(0).await; // nothing to replay; keeps the stream keys tidy below
    let mut conn = redis::Client::open(redis_url)?
        .get_multiplexed_async_connection()
        .await?;
    let _: () = redis::cmd("DEL")
        .arg(wb.stream_key())
        .arg(wb.dead_letter_key())
        .query_async(&mut conn)
        .await?;
    let total_keys: Vec<String> = keys
        .iter()
        .map(|k| format!("{}:total", crate::report::stored_key(wb_namespace(&wb), k)))
        .collect();
    for chunk in total_keys.chunks(500) {
        let _: () = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await?;
    }

    let wb_rate = wb_ops as f64 / wb_secs;
    let baseline_rate = baseline_ops as f64 / baseline_secs;
    let per_increment = statements as f64 / wb_ops as f64;
    Ok(json!({
        "scenario": "write-behind",
        "tasks": args.tasks,
        "keys": args.keys,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "batch_interval_ms": args.batch_interval_ms,
        "duration_secs": args.duration_secs,
        "write_behind": {
            "increments": wb_ops,
            "increments_per_sec": round(wb_rate, 0),
            "statements": statements,
            "statements_per_increment": round(per_increment, 5),
            "batches": stats.batches,
            "mean_batch": round(stats.applied as f64 / stats.batches.max(1) as f64, 1),
            "lag_ms": {
                "p50": lag.value_at_quantile(0.50),
                "p99": lag.value_at_quantile(0.99),
                "max": lag.max(),
            },
            "drain_after_stop_secs": round(drain_secs, 3),
            "database_total": wb_sum,
        },
        "update_per_increment": {
            "increments": baseline_ops,
            "increments_per_sec": round(baseline_rate, 0),
            "statements_per_increment": 1.0,
            "database_total": baseline_sum,
        },
        "ingest_ratio": ratio(wb_rate, baseline_rate),
        "statements_divided_by": round(1.0 / per_increment, 1),
        "target": { "ingest_per_sec": 50_000, "statements_divided_by": 100 },
        "target_met": wb_rate >= 50_000.0 && per_increment <= 0.01,
    }))
}

fn wb_namespace<S: Sink>(wb: &WriteBehind<S>) -> &str {
    // `{namespace}:write-behind:{name}`
    wb.stream_key()
        .split(":write-behind:")
        .next()
        .unwrap_or_default()
}

/// Run `op` from `args.tasks` tasks over uniformly random keys for `duration`;
/// returns the operations completed and the seconds they took.
async fn drive<F, Fut>(
    args: &WriteBehindArgs,
    keys: &[String],
    duration: Duration,
    op: F,
) -> Result<(u64, f64)>
where
    F: Fn(String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let keys = Arc::new(keys.to_vec());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..args.tasks {
        let (op, stop, done, keys) = (op.clone(), stop.clone(), done.clone(), keys.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(t as u64 + 1);
            while !stop.load(Ordering::Relaxed) {
                let key = keys[rng.below(keys.len() as u64) as usize].clone();
                op(key).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    Ok((
        done.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
    ))
}
