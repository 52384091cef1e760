//! One reader process of the `consistency` scenario
//! (`bench consistency-worker <plan>`): reads random rows through the cache
//! (or the naive cache-aside) until the plan's end, and prints one JSON line
//! with every read's row, start, end and version.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stratacache::{Cache, Consistency, EntryOptions, Loaded, RedisTopology};

/// How long after an acknowledged write an instance may still serve the old
/// value from L1 (SPEC §3: every L1 within 50 ms).
pub const L1_BOUND_US: u64 = 50_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// The seeds' cache-aside: GET; on a miss load and SET; DEL on write.
    Naive,
    /// stratacache, fills guarded by leases; writers `delete`.
    Lease,
    /// stratacache, fills guarded by versions; writers `invalidate_version`.
    Version,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Naive => "naive",
            Mode::Lease => "stratacache_lease",
            Mode::Version => "stratacache_version",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub mode: Mode,
    pub topology: Vec<String>,
    pub cluster: bool,
    pub namespace: String,
    pub table: String,
    pub rows: i32,
    pub tasks: usize,
    pub start_at_us: u64,
    pub run_for_ms: u64,
}

/// One read: row, start, end (µs since the epoch), version returned.
pub type Read = (i32, u64, u64, i64);

#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub reads: Vec<Read>,
    pub errors: usize,
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

pub async fn postgres() -> Result<tokio_postgres::Client> {
    let url = std::env::var("STRATACACHE_BENCH_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=postgres".into());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to PostgreSQL ({url})"))?;
    tokio::spawn(connection);
    Ok(client)
}

/// The "database read", slowed at random before and after the SELECT so
/// that fills race with writes.
pub async fn load_version(
    db: &tokio_postgres::Client,
    table: &str,
    id: i32,
) -> Result<i64, tokio_postgres::Error> {
    let (before, after) = (rand::random_range(0..10u64), rand::random_range(0..15u64));
    tokio::time::sleep(Duration::from_millis(before)).await;
    let row = db
        .query_one(
            &format!("SELECT version FROM {table} WHERE id = $1"),
            &[&id],
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(after)).await;
    Ok(row.get(0))
}

pub async fn run(plan: &str) -> Result<Value> {
    let plan: Plan = serde_json::from_str(plan).context("reading the plan")?;
    let db = Arc::new(postgres().await?);
    let topology = if plan.cluster {
        RedisTopology::Cluster(plan.topology.clone())
    } else {
        RedisTopology::parse(&plan.topology[0])?
    };
    let cache = Cache::builder()
        .namespace(plan.namespace.clone())
        .redis(topology)
        .redis_timeout(Duration::from_secs(1))
        .build()
        .await?;
    let naive = match plan.mode {
        Mode::Naive => Some(Naive::connect(&plan).await?),
        _ => None,
    };
    tokio::time::sleep(Duration::from_micros(
        plan.start_at_us.saturating_sub(now_us()),
    ))
    .await;
    let deadline = Instant::now() + Duration::from_millis(plan.run_for_ms);
    let consistency = match plan.mode {
        Mode::Version => Consistency::Version,
        _ => Consistency::Lease,
    };
    let opts = EntryOptions::new()
        .ttl(Duration::from_secs(60))
        .consistency(consistency);
    let mut tasks = Vec::new();
    for _ in 0..plan.tasks {
        let (db, cache, naive, plan, opts) = (
            db.clone(),
            cache.clone(),
            naive.clone(),
            plan.clone(),
            opts.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut reads = Vec::new();
            let mut errors = 0;
            while Instant::now() < deadline {
                let id = rand::random_range(0..plan.rows);
                let key = format!("row:{id}");
                let start = now_us();
                let result = match &naive {
                    Some(naive) => naive.read(&key, &db, &plan.table, id).await,
                    None => {
                        let (db, table) = (db.clone(), plan.table.clone());
                        cache
                            .get_or_load_entry(&key, &opts, move |_| async move {
                                let version = load_version(&db, &table, id).await?;
                                Ok::<_, tokio_postgres::Error>(
                                    Loaded::value(version).version(version as u64),
                                )
                            })
                            .await
                            .map_err(anyhow::Error::from)
                            .and_then(|f| f.into_value().context("rows exist"))
                    }
                };
                match result {
                    Ok(version) => reads.push((id, start, now_us(), version)),
                    Err(_) => errors += 1,
                }
                // Request handlers await I/O between reads; a loop of pure L1
                // hits would starve this process's backplane subscriber.
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            (reads, errors)
        }));
    }
    let mut report = Report {
        reads: Vec::new(),
        errors: 0,
    };
    for task in tasks {
        let (reads, errors) = task.await?;
        report.reads.extend(reads);
        report.errors += errors;
    }
    Ok(serde_json::to_value(report)?)
}

/// The seed articles' cache-aside, ported literally.
#[derive(Clone)]
pub enum Naive {
    Single(redis::aio::MultiplexedConnection, String),
    Cluster(redis::cluster_async::ClusterConnection, String),
}

impl Naive {
    pub async fn connect(plan: &Plan) -> Result<Naive> {
        Ok(if plan.cluster {
            let client = redis::cluster::ClusterClient::new(plan.topology.clone())?;
            Naive::Cluster(client.get_async_connection().await?, plan.namespace.clone())
        } else {
            let client = redis::Client::open(plan.topology[0].as_str())?;
            Naive::Single(
                client.get_multiplexed_async_connection().await?,
                plan.namespace.clone(),
            )
        })
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            Naive::Single(c, _) => cmd.query_async(&mut c.clone()).await,
            Naive::Cluster(c, _) => cmd.query_async(&mut c.clone()).await,
        }
    }

    fn key(&self, key: &str) -> String {
        match self {
            Naive::Single(_, ns) | Naive::Cluster(_, ns) => format!("{ns}:naive:{key}"),
        }
    }

    async fn read(
        &self,
        key: &str,
        db: &tokio_postgres::Client,
        table: &str,
        id: i32,
    ) -> Result<i64> {
        let key = self.key(key);
        if let Some(v) = self
            .query::<Option<i64>>(redis::cmd("GET").arg(&key))
            .await?
        {
            return Ok(v);
        }
        let version = load_version(db, table, id).await?;
        self.query::<()>(redis::cmd("SET").arg(&key).arg(version).arg("EX").arg(60))
            .await?;
        Ok(version)
    }

    pub async fn invalidate(&self, key: &str) -> Result<()> {
        self.query::<i64>(redis::cmd("DEL").arg(self.key(key)))
            .await?;
        Ok(())
    }
}
