//! Write-behind across a Cluster master failover: how many acknowledged
//! writes a failover loses (replication is asynchronous), and that
//! `acknowledge_replicas` loses none.
//!
//! On a throwaway 3+3 Cluster of its own, 4 tasks increment 32 counters by 1
//! (no worker runs meanwhile: the streams hold every queued write) while the
//! master of the queue's first shard fails over, one way per run:
//!
//! - `CLUSTER FAILOVER` on its replica (graceful: the master stops taking
//!   writes until the replica has caught up);
//! - `CLUSTER FAILOVER TAKEOVER` on its replica (a forced failover, as after
//!   a partition: the old master takes writes until it hears it was replaced,
//!   and those never reach the new one);
//! - SIGKILL of the master (its replica is promoted after the node timeout);
//! - SIGKILL of the master while its replica lags: the replica is stopped
//!   (SIGSTOP) for 2 s of writes first, so the master holds replication
//!   output the replica never receives; it is resumed after the kill.
//!
//! Writes continue through the failover and for a while after it; then a
//! worker drains the queue and every counter in the database is compared
//! with its acknowledged increments. Lost = acknowledged and not applied.
//! Run with `--nocapture` for the figures.

mod common;
#[path = "common/wb_pg.rs"]
mod wb_pg;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use stratacache::write_behind::WriteBehind;
use stratacache::{Cache, RedisTopology};
use stratacache_testkit::RedisCluster;
use wb_pg::Scratch;

const TASKS: u32 = 4;
const KEYS_PER_TASK: u32 = 8;

#[derive(Debug, Clone, Copy)]
enum Event {
    Graceful,
    Takeover,
    Kill,
    LaggingKill,
}

#[derive(Debug)]
struct Measured {
    acknowledged: u64,
    direct: u64,
    not_applied: u64,
    lost: u64,
    failover_ms: u128,
}

async fn run(cluster: &mut RedisCluster, event: Event, wait: Option<(u32, Duration)>) -> Measured {
    let db = Scratch::new("failover").await;
    let cache = Cache::builder()
        .namespace(common::namespace("wb-failover"))
        .redis(RedisTopology::Cluster(cluster.seed_urls()))
        .redis_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let mut builder = WriteBehind::builder(cache, db.sink())
        .name("failover")
        .claim_idle(Duration::from_millis(500));
    if let Some((replicas, timeout)) = wait {
        builder = builder.acknowledge_replicas(replicas, timeout);
    }
    let wb = builder.build().await.unwrap();
    let stream = wb.stream_keys()[0].to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<BTreeMap<String, i64>>> = Arc::default();
    let not_applied = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for t in 0..TASKS {
        let (wb, stop, acked, not_applied) = (
            wb.clone(),
            Arc::clone(&stop),
            Arc::clone(&acked),
            Arc::clone(&not_applied),
        );
        writers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let key = format!("k{t}_{}", rand::rng().random_range(0..KEYS_PER_TASK));
                match wb.incr(&key, 1).await {
                    Ok(_) => *acked.lock().unwrap().entry(key).or_default() += 1,
                    Err(_) => {
                        not_applied.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    let started = Instant::now();
    let failover_ms = tokio::task::block_in_place(|| {
        let master = cluster.master_port_for_key(stream.as_bytes()).unwrap();
        let nodes = cluster.cluster_nodes();
        let id = &nodes.iter().find(|n| n.port == master).unwrap().id;
        let replica = nodes
            .iter()
            .find(|n| n.master_id.as_ref() == Some(id))
            .unwrap()
            .port;
        match event {
            Event::Graceful => {
                stratacache_testkit::cli(replica, &["CLUSTER", "FAILOVER"]);
            }
            Event::Takeover => {
                stratacache_testkit::cli(replica, &["CLUSTER", "FAILOVER", "TAKEOVER"]);
            }
            Event::Kill => cluster.node_by_port_mut(master).unwrap().kill(),
            Event::LaggingKill => {
                cluster.node_by_port(replica).unwrap().pause();
                std::thread::sleep(Duration::from_secs(2));
                cluster.node_by_port_mut(master).unwrap().kill();
                cluster.node_by_port(replica).unwrap().resume();
            }
        }
        let moved = (0..600).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            cluster.master_port_for_key(stream.as_bytes()) == Some(replica)
        });
        assert!(moved, "no failover:\n{}", cluster.diagnostics());
        assert!(cluster.wait_ok(Duration::from_secs(30)));
        started.elapsed().as_millis()
    });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }

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

    let counters = db.counters().await;
    let acked = acked.lock().unwrap().clone();
    let mut lost = 0;
    let mut extra = 0;
    for (key, n) in &acked {
        let applied = counters.get(key).copied().unwrap_or(0);
        lost += (n - applied).max(0) as u64;
        extra += (applied - n).max(0) as u64;
    }
    let not_applied = not_applied.load(Ordering::Relaxed);
    assert!(
        extra <= not_applied,
        "{extra} increments applied beyond the acknowledged ones, only {not_applied} in doubt"
    );
    db.drop_schema().await;
    if let Event::Kill | Event::LaggingKill = event {
        tokio::task::block_in_place(|| {
            for node in cluster.nodes_mut() {
                if !node.is_alive() {
                    node.restart();
                }
            }
            assert!(
                cluster.wait_ready(Duration::from_secs(60)),
                "{}",
                cluster.diagnostics()
            );
        });
    } else {
        tokio::task::block_in_place(|| {
            assert!(
                cluster.wait_ready(Duration::from_secs(60)),
                "{}",
                cluster.diagnostics()
            )
        });
    }
    Measured {
        acknowledged: acked.values().sum::<i64>() as u64,
        direct: wb.stats().direct,
        not_applied,
        lost,
        failover_ms,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_lost_at_a_failover_and_none_with_replica_acknowledgement() {
    let mut cluster = tokio::task::block_in_place(RedisCluster::start);
    let wait = Some((1, Duration::from_millis(500)));
    let runs = [
        (Event::Graceful, None),
        (Event::Takeover, None),
        (Event::Takeover, wait),
        (Event::Kill, None),
        (Event::Kill, wait),
        (Event::LaggingKill, None),
        (Event::LaggingKill, wait),
    ];
    let mut with_wait_lost = 0;
    for (event, ack) in runs {
        let m = run(&mut cluster, event, ack).await;
        eprintln!(
            "{event:?}, acknowledge_replicas {}: {} acknowledged ({} of them direct), {} lost, {} not applied (errors), failover took {} ms",
            if ack.is_some() { "(1, 500 ms)" } else { "off" },
            m.acknowledged,
            m.direct,
            m.lost,
            m.not_applied,
            m.failover_ms
        );
        assert!(
            m.acknowledged > 100,
            "too few writes to mean anything: {m:?}"
        );
        if ack.is_some() {
            with_wait_lost += m.lost;
        }
    }
    assert_eq!(
        with_wait_lost, 0,
        "a write the replicas acknowledged was lost"
    );
}
