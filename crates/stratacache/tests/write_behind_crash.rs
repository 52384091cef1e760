//! The crash loop: a producer process writes counters and values through
//! write-behind while a worker process applies them to PostgreSQL; each round
//! both are killed with SIGKILL at random moments. At the end (after a last
//! worker drained the queue) the database must equal the acknowledged
//! writes: every counter total, every last value.
//!
//! A write whose process died before the answer came back is in doubt: it may
//! or may not have reached Redis. Such a write is allowed to be applied at most
//! once; everything else must match exactly. Counter deltas are random
//! (1..10⁶), so which doubtful increments were applied is recovered from the
//! totals, and a double application would show.
//!
//! The loop runs twice: on a single node, and on the throwaway 3+3 Cluster
//! (the queue split into shards, each with its worker task).

mod common;
#[path = "common/wb_pg.rs"]
mod wb_pg;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use stratacache::write_behind::{PostgresSink, WriteBehind};
use stratacache::{Cache, RedisTopology};
use wb_pg::Scratch;

const PLAN_ENV: &str = "STRATACACHE_WB_CRASH_PLAN";
const ROUNDS: u32 = 20;
const TASKS: u32 = 4;
const KEYS_PER_TASK: u32 = 3;

#[derive(Serialize, Deserialize)]
enum Role {
    Producer { log: PathBuf, round: u32 },
    Worker,
}

#[derive(Serialize, Deserialize)]
struct Plan {
    namespace: String,
    prefix: String,
    /// The Cluster's seeds, or none: the single node.
    cluster: Option<Vec<String>>,
    role: Role,
}

fn topology(cluster: &Option<Vec<String>>) -> RedisTopology {
    match cluster {
        Some(seeds) => RedisTopology::Cluster(seeds.clone()),
        None => RedisTopology::parse(&common::single_url()).unwrap(),
    }
}

/// Entry point of the re-executed processes (ignored in a normal run).
#[test]
#[ignore]
fn crash_process() {
    common::worker::serve(PLAN_ENV, |plan: Plan| async move {
        let cache = Cache::builder()
            .namespace(&plan.namespace)
            .redis(topology(&plan.cluster))
            .build()
            .await
            .unwrap();
        let sink = PostgresSink::new(wb_pg::pool().await, &plan.prefix).unwrap();
        let wb = WriteBehind::builder(cache, sink)
            .name("crash")
            .batch_size(100)
            .batch_interval(Duration::from_millis(10))
            .claim_idle(Duration::from_millis(300))
            .build()
            .await
            .unwrap();
        match plan.role {
            Role::Worker => {
                let _workers = (wb.spawn_worker(), wb.spawn_worker());
                std::future::pending::<()>().await;
            }
            Role::Producer { log, round } => produce(wb, log, round).await,
        }
    });
}

/// Write until killed. Each task owns its keys, so each key's writes are
/// sequential; every write is logged before it is sent (`I`) and after it
/// was acknowledged (`A`).
async fn produce(wb: WriteBehind<PostgresSink>, log: PathBuf, round: u32) {
    let log = Arc::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap(),
    );
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (wb, log) = (wb.clone(), Arc::clone(&log));
        tasks.push(tokio::spawn(async move {
            for seq in 0u64.. {
                let j = rand::rng().random_range(0..KEYS_PER_TASK);
                let counter = rand::rng().random_bool(0.6);
                let outcome = if counter {
                    let key = format!("c{t}_{j}");
                    let delta: i64 = rand::rng().random_range(1..1_000_000);
                    let line = format!("I {round} {t} {seq} c {key} {delta}\n");
                    (&*log).write_all(line.as_bytes()).unwrap();
                    wb.incr(&key, delta).await.map(|_| ())
                } else {
                    let key = format!("v{t}_{j}");
                    let value = format!("r{round}t{t}s{seq}");
                    let line = format!("I {round} {t} {seq} v {key} {value}\n");
                    (&*log).write_all(line.as_bytes()).unwrap();
                    wb.set(&key, &value).await.map(|_| ())
                };
                let mark = if outcome.is_ok() { "A" } else { "E" };
                (&*log)
                    .write_all(format!("{mark} {round} {t} {seq}\n").as_bytes())
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// One logged write.
#[derive(Debug, Clone)]
struct Logged {
    key: String,
    counter: bool,
    payload: String,
    acked: bool,
}

/// Every write of every round, in order per key.
fn read_logs(paths: &[PathBuf]) -> BTreeMap<String, Vec<Logged>> {
    let mut per_key: BTreeMap<String, Vec<Logged>> = BTreeMap::new();
    for path in paths {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut writes: BTreeMap<(u32, u64), Logged> = BTreeMap::new();
        let mut acked = HashSet::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            match f.as_slice() {
                ["I", _round, t, seq, kind, key, payload] => {
                    writes.insert(
                        (t.parse().unwrap(), seq.parse().unwrap()),
                        Logged {
                            key: key.to_string(),
                            counter: *kind == "c",
                            payload: payload.to_string(),
                            acked: false,
                        },
                    );
                }
                ["A", _round, t, seq] => {
                    acked.insert((t.parse::<u32>().unwrap(), seq.parse::<u64>().unwrap()));
                }
                _ => {}
            }
        }
        for (id, mut w) in writes {
            w.acked = acked.contains(&id);
            per_key.entry(w.key.clone()).or_default().push(w);
        }
    }
    per_key
}

/// Whether `target` is the sum of some subset of `amounts`.
fn subset_sum(amounts: &[i64], target: i64) -> bool {
    let mut sums: HashSet<i64> = [0].into();
    for a in amounts {
        let more: Vec<i64> = sums.iter().map(|s| s + a).collect();
        sums.extend(more);
    }
    sums.contains(&target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_equals_acknowledged_writes_after_repeated_kill_9() {
    crash_loop(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_database_equals_acknowledged_writes_after_repeated_kill_9() {
    crash_loop(Some(stratacache_testkit::shared_cluster().seed_urls())).await;
}

async fn crash_loop(cluster: Option<Vec<String>>) {
    let db = Scratch::new("crash").await;
    let namespace = common::namespace("wb-crash");
    let dir = std::env::temp_dir().join(&namespace);
    std::fs::create_dir_all(&dir).unwrap();
    // The queue as this process sees it (no worker here until the end).
    let cache = Cache::builder()
        .namespace(&namespace)
        .redis(topology(&cluster))
        .build()
        .await
        .unwrap();
    let wb = WriteBehind::builder(cache, db.sink())
        .name("crash")
        .claim_idle(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let mut logs = Vec::new();
    let mut rounds_with_pending = 0;
    for round in 0..ROUNDS {
        let log = dir.join(format!("{round}.log"));
        logs.push(log.clone());
        let plan = |role| Plan {
            namespace: namespace.clone(),
            prefix: db.prefix(),
            cluster: cluster.clone(),
            role,
        };
        let mut producer = common::worker::spawn(
            "crash_process",
            PLAN_ENV,
            &plan(Role::Producer { log, round }),
        );
        let mut worker = common::worker::spawn("crash_process", PLAN_ENV, &plan(Role::Worker));
        let (kill_producer, kill_worker) = {
            let mut rng = rand::rng();
            (
                rng.random_range(300..900u64),
                rng.random_range(300..1_100u64),
            )
        };
        let mut kills = [(kill_producer, &mut producer), (kill_worker, &mut worker)];
        kills.sort_by_key(|(at, _)| *at);
        let mut slept = 0;
        for (at, child) in kills {
            tokio::time::sleep(Duration::from_millis(at - slept)).await;
            slept = at;
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
        }
        // Entries a killed worker had read and not acknowledged.
        let pending = wb.queue_status().await.map_or(0, |s| s.pending);
        if pending > 0 {
            rounds_with_pending += 1;
        }
        eprintln!("round {round}: producer killed at {kill_producer} ms, worker at {kill_worker} ms, {pending} pending");
    }

    // A last worker drains the queue, claiming what the killed ones held.
    let worker = wb.spawn_worker();
    assert!(
        common::eventually(Duration::from_secs(60), || async {
            wb.queue_status()
                .await
                .map(|s| s.depth == 0 && s.pending == 0)
                .unwrap_or(false)
        })
        .await,
        "queue drained: {:?}",
        wb.queue_status().await
    );
    worker.shutdown().await;
    assert_eq!(wb.queue_status().await.unwrap().dead_letters, 0);

    let per_key = read_logs(&logs);
    let (counters, values) = (db.counters().await, db.values().await);
    let (mut acked_writes, mut doubtful, mut doubtful_applied) = (0, 0, 0);
    for (key, writes) in &per_key {
        acked_writes += writes.iter().filter(|w| w.acked).count();
        let in_doubt: Vec<&Logged> = writes.iter().filter(|w| !w.acked).collect();
        doubtful += in_doubt.len();
        if writes[0].counter {
            let acked: i64 = writes
                .iter()
                .filter(|w| w.acked)
                .map(|w| w.payload.parse::<i64>().unwrap())
                .sum();
            let amounts: Vec<i64> = in_doubt
                .iter()
                .map(|w| w.payload.parse().unwrap())
                .collect();
            let total = counters.get(key).copied().unwrap_or(0);
            assert!(
                amounts.len() <= 24 && subset_sum(&amounts, total - acked),
                "{key}: {total} in the database, {acked} acknowledged, in doubt {amounts:?}"
            );
            if total != acked {
                doubtful_applied += 1;
            }
        } else {
            let db_value = values.get(key).map(|v| v.trim_matches('"').to_string());
            let last_acked = writes.iter().rposition(|w| w.acked);
            let allowed: Vec<&str> = match last_acked {
                Some(i) => writes[i..].iter().map(|w| w.payload.as_str()).collect(),
                None => writes.iter().map(|w| w.payload.as_str()).collect(),
            };
            let ok = match &db_value {
                Some(v) => allowed.contains(&v.as_str()),
                None => last_acked.is_none(),
            };
            assert!(
                ok,
                "{key}: {db_value:?} in the database, allowed {allowed:?}"
            );
            if let (Some(v), Some(i)) = (&db_value, last_acked) {
                if *v != writes[i].payload {
                    doubtful_applied += 1;
                }
            }
        }
    }
    eprintln!(
        "{} — {ROUNDS} rounds: {acked_writes} acknowledged writes on {} keys, {doubtful} in doubt (\u{2265}{doubtful_applied} of them applied), {rounds_with_pending} rounds left entries pending",
        if cluster.is_some() { "Cluster" } else { "single node" },
        per_key.len()
    );
    assert!(
        acked_writes >= 1_000,
        "the rounds wrote too little to mean anything: {acked_writes}"
    );
    assert!(
        rounds_with_pending > 0,
        "no round killed a worker holding entries"
    );
    let _ = std::fs::remove_dir_all(&dir);
    db.drop_schema().await;
}
