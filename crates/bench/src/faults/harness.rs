//! What every fault scenario shares: a PostgreSQL table as the source of
//! truth (reached through a proxy the scenario can cut), readers and a writer
//! under load, and the record of every request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use stratacache::{Cache, EntryOptions, Loaded};
use stratacache_testkit::DelayProxy;
use tokio::sync::Mutex;

use crate::report::{latency_histogram, Rng};

/// Rows of the source table; reads favour low ids (a skewed, Zipf-like mix).
pub const ROWS: i32 = 200;
/// How long after an acknowledged write an instance may serve the old value.
pub const L1_BOUND: Duration = Duration::from_millis(50);

/// The "database": a table of versioned rows, read through a proxy.
pub struct Source {
    pub table: String,
    proxy: DelayProxy,
    reader: Mutex<Option<tokio_postgres::Client>>,
    writer: tokio_postgres::Client,
    /// Set while the scenario has taken the database away: the writer pauses.
    pub down: AtomicBool,
}

async fn connect(port: u16) -> Result<tokio_postgres::Client> {
    let url = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=2");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

impl Source {
    pub async fn create(name: &str) -> Result<Arc<Source>> {
        let writer = connect(5432)
            .await
            .context("PostgreSQL on 127.0.0.1:5432")?;
        let table = format!("faults_{}", name.replace(['-', '.'], "_"));
        writer
            .batch_execute(&format!(
                "CREATE TABLE {table} (id int PRIMARY KEY, version bigint NOT NULL);
                 INSERT INTO {table} SELECT g, 1 FROM generate_series(0, {}) g;",
                ROWS - 1
            ))
            .await?;
        Ok(Arc::new(Source {
            table,
            proxy: DelayProxy::start(5432)?,
            reader: Mutex::new(None),
            writer,
            down: AtomicBool::new(false),
        }))
    }

    /// Take the database away from the readers (connections cut and refused).
    pub fn cut(&self, cut: bool) {
        self.down.store(cut, Ordering::Release);
        self.proxy.set_cut(cut);
    }

    /// The loader: `SELECT version`, reconnecting after a failure.
    pub async fn read(&self, id: i32) -> Result<i64> {
        let mut reader = self.reader.lock().await;
        if reader.as_ref().is_none_or(|c| c.is_closed()) {
            *reader = Some(connect(self.proxy.port()).await?);
        }
        let client = reader.as_ref().expect("connected above");
        let row = tokio::time::timeout(
            Duration::from_secs(2),
            client.query_one(
                &format!("SELECT version FROM {} WHERE id = $1", self.table),
                &[&id],
            ),
        )
        .await
        .context("database timeout")??;
        Ok(row.get(0))
    }

    async fn bump(&self, id: i32) -> Result<i64> {
        let row = self
            .writer
            .query_one(
                &format!(
                    "UPDATE {} SET version = version + 1 WHERE id = $1 RETURNING version",
                    self.table
                ),
                &[&id],
            )
            .await?;
        Ok(row.get(0))
    }

    pub async fn drop_table(&self) {
        let _ = self
            .writer
            .batch_execute(&format!("DROP TABLE IF EXISTS {}", self.table))
            .await;
    }
}

/// One request of the load.
#[derive(Clone, Copy)]
pub struct Request {
    pub started: Duration,
    pub took: Duration,
    pub row: i32,
    /// The version served, or `None` for an error.
    pub version: Option<i64>,
    /// Served stale on purpose (fail-safe, stale-while-revalidate).
    pub stale: bool,
}

/// A committed write: row, version, when (since the run's start), and
/// whether the cache confirmed its invalidation (an acknowledged write).
pub type Ack = (i32, i64, Duration, bool);

pub fn entry_options() -> EntryOptions {
    EntryOptions::new()
        .ttl(Duration::from_secs(30))
        .stale_for(Duration::from_secs(600))
        .hard_timeout(Duration::from_secs(1))
}

/// `concurrency` readers spread over `caches`, one writer, until `until`.
pub async fn drive(
    caches: &[Cache],
    source: &Arc<Source>,
    t0: Instant,
    until: Instant,
    concurrency: usize,
) -> (Vec<Request>, Vec<Ack>) {
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let (cache, source) = (caches[task % caches.len()].clone(), source.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(task as u64 + 1);
            let opts = entry_options();
            let mut done = Vec::new();
            while Instant::now() < until {
                let skew = (rng.below(1_000_000) as f64 / 1_000_000.0).powi(3);
                let row = (skew * ROWS as f64) as i32;
                let started = Instant::now();
                let source = source.clone();
                let fetched = cache
                    .get_or_load_with_context(&format!("row:{row}"), &opts, move |_| async move {
                        let version = source.read(row).await?;
                        Ok::<_, anyhow::Error>(Loaded::value(version))
                    })
                    .await;
                done.push(Request {
                    started: started - t0,
                    took: started.elapsed(),
                    row,
                    version: fetched.as_ref().ok().and_then(|f| f.value().copied()),
                    stale: fetched.as_ref().is_ok_and(|f| f.is_stale()),
                });
                // Handlers await I/O between requests; so do these.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            done
        }));
    }
    let writer = {
        let (cache, source) = (caches[0].clone(), source.clone());
        tokio::spawn(async move {
            let mut rng = Rng::new(99);
            let mut acks = Vec::new();
            while Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(25)).await;
                if source.down.load(Ordering::Acquire) {
                    continue; // nobody writes to a database that is down
                }
                let row = rng.below(ROWS as u64) as i32;
                let Ok(version) = source.bump(row).await else {
                    continue;
                };
                // A write is acknowledged once the cache confirmed its
                // invalidation. When it could not (Redis unreachable from this
                // instance), the caller is told, and the cache replays the
                // invalidation when Redis answers: counted apart.
                let invalidated = cache.delete(&format!("row:{row}")).await.is_ok();
                acks.push((row, version, t0.elapsed(), invalidated));
            }
            acks
        })
    };
    let mut requests = Vec::new();
    for task in tasks {
        requests.extend(task.await.unwrap_or_default());
    }
    (requests, writer.await.unwrap_or_default())
}

/// Reads that returned (as fresh) a version older than one acknowledged more
/// than the L1 bound before they began; with `all_commits`, older than any
/// committed write, whether or not its invalidation was confirmed.
pub fn stale_reads(requests: &[Request], acks: &[Ack], all_commits: bool) -> usize {
    requests
        .iter()
        .filter(|r| !r.stale)
        .filter(|r| {
            let Some(version) = r.version else {
                return false;
            };
            let stale = acks
                .iter()
                .filter(|(row, _, at, confirmed)| {
                    *row == r.row && *at + L1_BOUND <= r.started && (*confirmed || all_commits)
                })
                .find(|(_, acked, _, _)| *acked > version);
            if let (Some((_, acked, at, _)), true) =
                (stale, std::env::var_os("FAULTS_DEBUG").is_some())
            {
                eprintln!(
                    "stale: row {} read v{version} at {:?} (took {:?}), v{acked} acked at {at:?}",
                    r.row, r.started, r.took
                );
            }
            stale.is_some()
        })
        .count()
}

/// Latency of the requests that started within `[from, to)`.
pub fn window(requests: &[Request], from: Duration, to: Duration) -> Histogram<u64> {
    let mut h = latency_histogram();
    for r in requests
        .iter()
        .filter(|r| r.started >= from && r.started < to)
    {
        let _ = h.record(r.took.as_nanos().max(1) as u64);
    }
    h
}

/// Poll `check` every 10 ms from now; how long until it holds (None: not within `limit`).
pub async fn time_until<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Of the stale reads (as [`stale_reads`] counts them): how many distinct
/// writes they missed, and the longest time from such a write's
/// acknowledgement to a read that still did not see it.
pub fn stale_spread(requests: &[Request], acks: &[Ack]) -> (usize, Duration) {
    let mut missed = std::collections::HashSet::new();
    let mut longest = Duration::ZERO;
    for r in requests.iter().filter(|r| !r.stale) {
        let Some(version) = r.version else { continue };
        for (row, acked, at, confirmed) in acks {
            if *row == r.row && *confirmed && *at + L1_BOUND <= r.started && *acked > version {
                missed.insert((*row, *acked));
                longest = longest.max(r.started - *at);
            }
        }
    }
    (missed.len(), longest)
}

/// Rows whose entry in Redis, read by a fresh instance (empty L1) after the
/// run, is older than the database's row: stale data left behind.
pub async fn stale_in_redis(cache: &Cache, source: &Source) -> Result<usize> {
    let mut stale = 0;
    for row in 0..ROWS {
        if let Ok(Some(cached)) = cache.get::<i64>(&format!("row:{row}")).await {
            if cached < source.read(row).await? {
                stale += 1;
            }
        }
    }
    Ok(stale)
}
