//! The consistency checker: writers update rows in PostgreSQL and invalidate;
//! readers in three other processes read through the cache, with loaders
//! slowed at random to provoke the stale-set race; every operation is recorded
//! with its start and end. A read is stale when it returns a version older
//! than one acknowledged (committed and invalidated) before the read began,
//! past the L1 propagation bound.
//!
//! The same scenario runs three times: with stratacache guarding fills by
//! lease revocation and by version compare-and-set (expected: 0 stale reads
//! each), and with the naive cache-aside of the seed articles — GET, on a
//! miss load and SET; on write DELETE — which must show stale reads, proving
//! that the checker can see them.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::Target;
use rand::Rng;
use serde::{Deserialize, Serialize};
use stratacache::{Cache, Consistency, EntryOptions, Loaded, RedisTopology};

const WORKER_ENV: &str = "STRATACACHE_CONSISTENCY_WORKER";
const ROWS: i32 = 20;
const READER_PROCESSES: usize = 3;
const TASKS_PER_READER: usize = 8;
const RUN_FOR: Duration = Duration::from_secs(3);
/// How long after an acknowledged write an instance may still serve the old
/// value from L1 (the backplane's propagation bound, SPEC §3).
const L1_BOUND_US: u64 = 50_000;

against_every_target!(stratacache_serves_no_stale_reads_where_naive_cache_aside_does);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Mode {
    /// Writers `delete`; fills are guarded by leases.
    Stratacache,
    /// Loaders return the row's version; writers `invalidate_version`.
    Versioned,
    Naive,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Plan {
    mode: Mode,
    topology: Vec<String>,
    cluster: bool,
    namespace: String,
    table: String,
    start_at_us: u64,
    run_for_ms: u64,
}

/// One read: row, start, end (µs since the epoch), version returned.
type Read = (i32, u64, u64, i64);

#[derive(Debug, Serialize, Deserialize)]
struct Report {
    reads: Vec<Read>,
    errors: Vec<String>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

async fn postgres() -> tokio_postgres::Client {
    let url = std::env::var("STRATACACHE_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=postgres".into());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL on loopback");
    tokio::spawn(connection);
    client
}

fn topology(plan: &Plan) -> RedisTopology {
    if plan.cluster {
        RedisTopology::Cluster(plan.topology.clone())
    } else {
        RedisTopology::Single(plan.topology[0].clone())
    }
}

/// The data path both modes share: the "database read", slowed at random
/// before and after the SELECT so that fills race with writes.
async fn load_version(
    db: &tokio_postgres::Client,
    table: &str,
    id: i32,
) -> Result<i64, tokio_postgres::Error> {
    let (before, after) = {
        let mut rng = rand::rng();
        (rng.random_range(0..10u64), rng.random_range(0..15u64))
    };
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

#[test]
#[ignore = "entry point of the reader processes started by the consistency test"]
fn consistency_reader() {
    common::worker::serve(WORKER_ENV, run_reader);
}

async fn run_reader(plan: Plan) -> Report {
    let db = Arc::new(postgres().await);
    let cache = Cache::builder()
        .namespace(plan.namespace.clone())
        .redis(topology(&plan))
        .redis_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let naive = match plan.mode {
        Mode::Naive => Some(naive::Naive::connect(&plan).await),
        Mode::Stratacache | Mode::Versioned => None,
    };
    tokio::time::sleep(Duration::from_micros(
        plan.start_at_us.saturating_sub(now_us()),
    ))
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(plan.run_for_ms);
    let mut tasks = Vec::new();
    for _ in 0..TASKS_PER_READER {
        let (db, cache, naive, plan) = (db.clone(), cache.clone(), naive.clone(), plan.clone());
        tasks.push(tokio::spawn(async move {
            let consistency = match plan.mode {
                Mode::Versioned => Consistency::Version,
                _ => Consistency::Lease,
            };
            let opts = EntryOptions::new()
                .ttl(Duration::from_secs(60))
                .consistency(consistency);
            let mut reads = Vec::new();
            let mut errors = Vec::new();
            while tokio::time::Instant::now() < deadline {
                let id = rand::rng().random_range(0..ROWS);
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
                            .map(|fetched| fetched.into_value().expect("rows exist"))
                            .map_err(|e| e.to_string())
                    }
                };
                match result {
                    Ok(version) => reads.push((id, start, now_us(), version)),
                    Err(e) => errors.push(e),
                }
                // Pace the readers like request handlers, which await I/O
                // between reads: a loop of nothing but L1 hits never yields,
                // and would starve this process's backplane subscriber and, on
                // 2 cores, the Redis servers relaying the invalidations.
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            (reads, errors)
        }));
    }
    let mut report = Report {
        reads: Vec::new(),
        errors: Vec::new(),
    };
    for task in tasks {
        let (reads, errors) = task.await.unwrap();
        report.reads.extend(reads);
        report.errors.extend(errors);
    }
    report
}

/// The seed articles' cache-aside, ported literally.
mod naive {
    use super::*;

    #[derive(Clone)]
    pub(super) enum Naive {
        Single(redis::aio::MultiplexedConnection, String),
        Cluster(redis::cluster_async::ClusterConnection, String),
    }

    impl Naive {
        pub(super) async fn connect(plan: &Plan) -> Naive {
            if plan.cluster {
                let client = redis::cluster::ClusterClient::new(plan.topology.clone()).unwrap();
                Naive::Cluster(
                    client.get_async_connection().await.unwrap(),
                    plan.namespace.clone(),
                )
            } else {
                let client = redis::Client::open(plan.topology[0].as_str()).unwrap();
                Naive::Single(
                    client.get_multiplexed_async_connection().await.unwrap(),
                    plan.namespace.clone(),
                )
            }
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

        pub(super) async fn read(
            &self,
            key: &str,
            db: &tokio_postgres::Client,
            table: &str,
            id: i32,
        ) -> Result<i64, String> {
            let key = self.key(key);
            if let Some(v) = self
                .query::<Option<i64>>(redis::cmd("GET").arg(&key))
                .await
                .map_err(|e| e.to_string())?
            {
                return Ok(v);
            }
            let version = load_version(db, table, id)
                .await
                .map_err(|e| e.to_string())?;
            self.query::<()>(redis::cmd("SET").arg(&key).arg(version).arg("EX").arg(60))
                .await
                .map_err(|e| e.to_string())?;
            Ok(version)
        }

        pub(super) async fn invalidate(&self, key: &str) {
            let _: redis::RedisResult<i64> = self.query(redis::cmd("DEL").arg(self.key(key))).await;
        }
    }
}

/// Writers: bump a random row's version, then invalidate; record the acknowledgement.
async fn write_for(
    plan: &Plan,
    cache: &Cache,
    naive: Option<&naive::Naive>,
) -> Vec<(i32, u64, i64)> {
    let db = postgres().await;
    tokio::time::sleep(Duration::from_micros(
        plan.start_at_us.saturating_sub(now_us()),
    ))
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(plan.run_for_ms);
    let mut acks = Vec::new();
    while tokio::time::Instant::now() < deadline {
        let id = rand::rng().random_range(0..ROWS);
        let row = db
            .query_one(
                &format!(
                    "UPDATE {} SET version = version + 1 WHERE id = $1 RETURNING version",
                    plan.table
                ),
                &[&id],
            )
            .await
            .unwrap();
        let key = format!("row:{id}");
        let version: i64 = row.get(0);
        match (naive, plan.mode) {
            (Some(naive), _) => naive.invalidate(&key).await,
            (None, Mode::Versioned) => cache
                .invalidate_version(&key, version as u64)
                .await
                .unwrap(),
            (None, _) => cache.delete(&key).await.unwrap(),
        }
        acks.push((id, now_us(), version));
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(1..8))).await;
    }
    acks
}

/// Reads that returned a version older than one acknowledged (plus the L1
/// bound) before they began.
fn stale_reads(reads: &[Read], acks: &[(i32, u64, i64)]) -> usize {
    let mut by_row: HashMap<i32, Vec<(u64, i64)>> = HashMap::new();
    for &(id, at, version) in acks {
        by_row.entry(id).or_default().push((at, version));
    }
    reads
        .iter()
        .filter(|&&(id, start, _, version)| {
            let newest_acked = by_row
                .get(&id)
                .into_iter()
                .flatten()
                .filter(|(at, _)| at + L1_BOUND_US <= start)
                .map(|(_, v)| *v)
                .max()
                .unwrap_or(0);
            if version < newest_acked {
                let acked_at = by_row[&id]
                    .iter()
                    .filter(|(_, v)| *v > version)
                    .map(|(at, _)| *at)
                    .min()
                    .unwrap();
                eprintln!(
                    "stale read of row {id}: v{version} < v{newest_acked}, {} ms after the ack",
                    (start - acked_at) / 1000
                );
            }
            version < newest_acked
        })
        .count()
}

async fn run(target: Target, mode: Mode) -> (usize, usize, usize) {
    let namespace = common::namespace(&format!("consistency-{mode:?}").to_lowercase());
    let table = format!("consistency_{}", namespace.replace(['-', '.'], "_")).to_lowercase();
    let db = postgres().await;
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id int PRIMARY KEY, version bigint NOT NULL);
         INSERT INTO {table} SELECT g, 0 FROM generate_series(0, {}) g;",
        ROWS - 1
    ))
    .await
    .unwrap();
    let (topology, cluster) = match target.topology() {
        RedisTopology::Single(url) => (vec![url], false),
        RedisTopology::Cluster(nodes) => (nodes, true),
        other => panic!("{other:?}"),
    };
    let plan = Plan {
        mode,
        topology,
        cluster,
        namespace: namespace.clone(),
        table: table.clone(),
        start_at_us: now_us() + 2_500_000,
        run_for_ms: RUN_FOR.as_millis() as u64,
    };
    let readers: Vec<Child> = (0..READER_PROCESSES)
        .map(|_| common::worker::spawn("consistency_reader", WORKER_ENV, &plan))
        .collect();
    let cache = Cache::builder()
        .namespace(namespace)
        .redis(target.topology())
        .build()
        .await
        .unwrap();
    let naive = match mode {
        Mode::Naive => Some(naive::Naive::connect(&plan).await),
        Mode::Stratacache | Mode::Versioned => None,
    };
    let (a, b) = tokio::join!(
        write_for(&plan, &cache, naive.as_ref()),
        write_for(&plan, &cache, naive.as_ref())
    );
    let acks: Vec<_> = a.into_iter().chain(b).collect();
    let reports: Vec<Report> = tokio::task::spawn_blocking(move || {
        readers.into_iter().map(common::worker::collect).collect()
    })
    .await
    .unwrap();
    db.batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
    let errors: Vec<&String> = reports.iter().flat_map(|r| &r.errors).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let reads: Vec<Read> = reports.into_iter().flat_map(|r| r.reads).collect();
    (stale_reads(&reads, &acks), reads.len(), acks.len())
}

async fn stratacache_serves_no_stale_reads_where_naive_cache_aside_does(target: Target) {
    let (naive_stale, naive_reads, naive_writes) = run(target, Mode::Naive).await;
    let (stale, reads, writes) = run(target, Mode::Stratacache).await;
    let (v_stale, v_reads, v_writes) = run(target, Mode::Versioned).await;
    eprintln!(
        "{target:?}: naive {naive_stale} stale of {naive_reads} reads ({naive_writes} writes); \
         stratacache (leases) {stale} stale of {reads} reads ({writes} writes); \
         stratacache (versions) {v_stale} stale of {v_reads} reads ({v_writes} writes)"
    );
    for (reads, writes) in [(reads, writes), (v_reads, v_writes)] {
        assert!(
            reads > 1_000 && writes > 100,
            "enough traffic to mean something"
        );
    }
    assert!(
        naive_stale > 0,
        "the checker sees the naive pattern's stale sets"
    );
    assert_eq!(stale, 0, "no stale read past the L1 bound (leases)");
    assert_eq!(v_stale, 0, "no stale read past the L1 bound (versions)");
}
