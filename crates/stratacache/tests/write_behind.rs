//! Write-behind against real Redis and PostgreSQL: reads before the
//! database has the writes, coalescing, idempotent redelivery, retries and
//! dead letters, Redis down (writes go to the database directly), and a Redis
//! with AOF restarted mid-stream.

mod common;
#[path = "common/wb_pg.rs"]
mod wb_pg;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stratacache::write_behind::{
    Batch, CounterWrite, Durability, EntryId, PostgresSink, Sink, ValueWrite, WriteBehind, Written,
};
use stratacache::{BoxError, BreakerConfig, Cache};
use stratacache_testkit::{DelayProxy, RedisServer};
use wb_pg::Scratch;

use common::eventually;

async fn cache(url: &str, test: &str) -> Cache {
    Cache::builder()
        .namespace(common::namespace(test))
        .redis_url(url)
        .redis_timeout(Duration::from_millis(500))
        .breaker(BreakerConfig {
            failure_threshold: 2,
            probe_interval: Duration::from_millis(100),
        })
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_see_writes_before_the_database_and_batches_coalesce() {
    let db = Scratch::new("reads").await;
    let cache = cache(&common::single_url(), "wb-reads").await;
    let wb = WriteBehind::builder(cache.clone(), db.sink())
        .name("reads")
        .build()
        .await
        .unwrap();
    // The machine's Redis keeps nothing on disk: the queue says so.
    assert_eq!(wb.durability(), &Durability::NoAof);

    // Many tasks write before any worker runs.
    let mut tasks = Vec::new();
    for t in 0..16 {
        let wb = wb.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50i64 {
                assert!(wb.incr("views", 1).await.unwrap().is_some());
                wb.incr(&format!("views:{}", t % 4), i).await.unwrap();
                let written = wb
                    .set(&format!("name:{t}"), &format!("v{i}"))
                    .await
                    .unwrap();
                assert!(matches!(written, Written::Queued(_)));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Reads see the newest values; the database has nothing yet.
    assert_eq!(wb.counter("views").await.unwrap(), 800);
    assert_eq!(
        wb.get::<String>("name:3").await.unwrap().as_deref(),
        Some("v49")
    );
    assert!(db.counters().await.is_empty());
    // Another instance sees the written value through Redis.
    let other = Cache::builder()
        .namespace(cache.namespace())
        .redis_url(&common::single_url())
        .build()
        .await
        .unwrap();
    assert_eq!(
        other.get::<String>("name:7").await.unwrap().as_deref(),
        Some("v49")
    );
    // 2,400 writes from 16 concurrent tasks: group commit put many in one
    // stream entry.
    let status = wb.queue_status().await.unwrap();
    assert!(status.depth > 0 && status.depth < 2_400, "{status:?}");
    assert_eq!(wb.stats().queued, 2_400);

    let worker = wb.spawn_worker();
    assert!(
        eventually(Duration::from_secs(20), || async {
            wb.queue_status().await.unwrap().depth == 0
        })
        .await
    );
    worker.shutdown().await;
    let counters = db.counters().await;
    assert_eq!(counters["views"], 800);
    for k in 0..4 {
        assert_eq!(counters[&format!("views:{k}")], 4 * (0..50).sum::<i64>());
    }
    let values = db.values().await;
    assert_eq!(values.len(), 16);
    assert!(values.values().all(|v| v == "\"v49\""));
    let stats = wb.stats();
    assert_eq!(stats.applied, 2_400);
    assert!(
        stats.batches <= 10,
        "2,400 writes in batches of up to 1,000: {stats:?}"
    );
    assert_eq!(stats.dead_letters, 0);
    db.drop_schema().await;
}

fn value(key: &str, json: &str, id: (u64, u64), write_id: &str) -> ValueWrite {
    ValueWrite {
        key: key.into(),
        json: json.as_bytes().to_vec(),
        version: EntryId {
            ms: id.0,
            seq: id.1,
        },
        write_id: write_id.into(),
        superseded: Vec::new(),
    }
}

fn parts(key: &str, parts: &[(&str, u64, i64)]) -> CounterWrite {
    CounterWrite {
        key: key.into(),
        parts: parts
            .iter()
            .map(|(w, ms, d)| (w.to_string(), EntryId { ms: *ms, seq: 0 }, *d))
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_batch_changes_nothing_and_an_overlapping_one_applies_only_the_rest() {
    let db = Scratch::new("redeliver").await;
    let sink = db.sink();
    let first = Batch {
        values: vec![value("v", "\"new\"", (20, 0), "w-v2")],
        counters: vec![parts("c", &[("w1", 1, 5), ("w2", 2, 7)])],
    };
    sink.apply(&first).await.unwrap();
    sink.apply(&first).await.unwrap();
    assert_eq!(db.counters().await["c"], 12);
    // Regrouped after a reclaim: one old write, one new; and an older value
    // of `v` arriving late must not replace the newer one.
    let overlapping = Batch {
        values: vec![value("v", "\"old\"", (10, 0), "w-v1")],
        counters: vec![parts("c", &[("w2", 2, 7), ("w3", 3, 100)])],
    };
    sink.apply(&overlapping).await.unwrap();
    assert_eq!(db.counters().await["c"], 112);
    assert_eq!(db.values().await["v"], "\"new\"");
    assert_eq!(sink.read_counter("c").await.unwrap(), 112);
    assert_eq!(sink.read_counter("absent").await.unwrap(), 0);
    db.drop_schema().await;
}

/// PostgreSQL behind a switch: fails every batch holding the key `poison`
/// while poisoned, and the first `fail_first` calls whatever they hold.
#[derive(Clone)]
struct Flaky {
    inner: PostgresSink,
    poisoned: Arc<AtomicBool>,
    fail_first: Arc<AtomicU32>,
}

impl Sink for Flaky {
    async fn apply(&self, batch: &Batch) -> Result<(), BoxError> {
        let poison = batch.counters.iter().any(|c| c.key == "poison")
            || batch.values.iter().any(|v| v.key == "poison");
        if poison && self.poisoned.load(Ordering::SeqCst) {
            return Err("poison refused".into());
        }
        if self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err("transient failure".into());
        }
        self.inner.apply(batch).await
    }
    async fn read_value(&self, key: &str) -> Result<Option<Vec<u8>>, BoxError> {
        self.inner.read_value(key).await
    }
    async fn read_counter(&self, key: &str) -> Result<i64, BoxError> {
        self.inner.read_counter(key).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_is_retried_then_dead_lettered_and_replay_applies_once() {
    let db = Scratch::new("dead").await;
    let sink = Flaky {
        inner: db.sink(),
        poisoned: Arc::new(AtomicBool::new(true)),
        fail_first: Arc::new(AtomicU32::new(2)),
    };
    common::record_metrics();
    let cache = cache(&common::single_url(), "wb-dead").await;
    let namespace = cache.namespace().to_string();
    let wb = WriteBehind::builder(cache, sink.clone())
        .name("dead")
        .max_attempts(4)
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(40))
        .build()
        .await
        .unwrap();
    // Transient failures only: retried, applied, nothing dead-lettered.
    wb.incr("fine", 1).await.unwrap();
    let worker = wb.spawn_worker();
    assert!(
        eventually(Duration::from_secs(10), || async {
            db.counters().await.get("fine") == Some(&1)
        })
        .await
    );
    assert_eq!(wb.stats().retries, 2);
    assert_eq!(wb.stats().dead_letters, 0);

    // A key the sink keeps refusing, in one batch with good writes.
    worker.shutdown().await;
    wb.incr("poison", 5).await.unwrap();
    wb.incr("poison", 6).await.unwrap();
    wb.incr("fine", 1).await.unwrap();
    wb.set("ok", &42u32).await.unwrap();
    let worker = wb.spawn_worker();
    assert!(
        eventually(Duration::from_secs(10), || async {
            wb.queue_status().await.unwrap().dead_letters == 2
        })
        .await
    );
    let status = wb.queue_status().await.unwrap();
    assert_eq!((status.depth, status.pending), (0, 0));
    assert_eq!(wb.stats().dead_letters, 2);
    assert!(wb.stats().retries >= 2 + 3, "{:?}", wb.stats());
    assert_eq!(
        db.counters().await.get("fine"),
        Some(&2),
        "good writes of the batch applied"
    );
    assert_eq!(db.values().await.get("ok").map(String::as_str), Some("42"));
    assert_eq!(db.counters().await.get("poison"), None);
    // The cached total already counts them (the writes were acknowledged).
    assert_eq!(wb.counter("poison").await.unwrap(), 11);

    // Healed: the replay applies them, once.
    sink.poisoned.store(false, Ordering::SeqCst);
    assert_eq!(wb.replay_dead_letters(100).await.unwrap(), 2);
    assert!(
        eventually(Duration::from_secs(10), || async {
            db.counters().await.get("poison") == Some(&11)
        })
        .await
    );
    assert_eq!(wb.replay_dead_letters(100).await.unwrap(), 0);
    worker.shutdown().await;
    assert_eq!(db.counters().await.get("poison"), Some(&11));
    assert_eq!(wb.queue_status().await.unwrap().dead_letters, 0);
    let labels = [("cache", namespace.as_str()), ("queue", "dead")];
    assert_eq!(
        common::counter("stratacache_write_behind_dead_letters_total", &labels),
        2
    );
    assert_eq!(
        common::counter("stratacache_write_behind_replayed_total", &labels),
        2
    );
    assert_eq!(
        common::counter("stratacache_write_behind_retries_total", &labels),
        wb.stats().retries
    );
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_holds_the_writes_in_the_stream_and_dead_letters_none() {
    let db = Scratch::new("outage").await;
    // The sink reaches PostgreSQL through a proxy that can cut it off.
    let proxy = DelayProxy::start(5432).unwrap();
    let url = wb_pg::pg_url().replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port()), 1);
    let through_proxy = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_millis(300))
        .connect(&url)
        .await
        .unwrap();
    let sink = PostgresSink::new(through_proxy, &db.prefix()).unwrap();
    let cache = cache(&common::single_url(), "wb-pg-outage").await;
    let wb = WriteBehind::builder(cache, sink)
        .name("outage")
        .max_attempts(2)
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    proxy.set_cut(true);
    let worker = wb.spawn_worker();
    for i in 1..=20 {
        wb.incr(&format!("k{}", i % 4), i).await.unwrap();
    }
    // Many times `max_attempts` over: still nothing dead-lettered.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(wb.stats().retries > 4, "{:?}", wb.stats());
    assert_eq!(wb.queue_status().await.unwrap().dead_letters, 0);
    assert!(db.counters().await.is_empty(), "PostgreSQL was cut off");

    proxy.set_cut(false);
    assert!(
        eventually(Duration::from_secs(20), || async {
            db.counters().await.values().sum::<i64>() == (1..=20).sum::<i64>()
        })
        .await,
        "every write reached PostgreSQL once it was back: {:?}",
        db.counters().await
    );
    let status = wb.queue_status().await.unwrap();
    assert_eq!((status.depth, status.dead_letters), (0, 0));
    worker.shutdown().await;
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_applies_what_the_worker_had_read() {
    let db = Scratch::new("drain").await;
    let cache = cache(&common::single_url(), "wb-drain").await;
    // A batch that would wait 30 s to fill: only the shutdown ends it.
    let wb = WriteBehind::builder(cache, db.sink())
        .name("drain")
        .batch_interval(Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    let worker = wb.spawn_worker();
    for _ in 0..10 {
        wb.incr("c", 3).await.unwrap();
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            wb.queue_status().await.unwrap().pending > 0
        })
        .await
    );
    assert!(db.counters().await.is_empty(), "the batch is still filling");
    tokio::time::timeout(Duration::from_secs(5), worker.shutdown())
        .await
        .expect("shutdown does not wait for the interval");
    assert_eq!(db.counters().await.get("c"), Some(&30));
    let status = wb.queue_status().await.unwrap();
    assert_eq!((status.depth, status.pending), (0, 0));
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_writes_reach_the_database_directly_and_the_stream_resumes() {
    let db = Scratch::new("down").await;
    let mut redis = RedisServer::start();
    let cache = cache(&redis.url(), "wb-down").await;
    let wb = WriteBehind::builder(cache, db.sink())
        .name("down")
        .build()
        .await
        .unwrap();
    let worker = wb.spawn_worker();
    assert_eq!(wb.incr("c", 1).await.unwrap(), Some(1));
    assert!(matches!(
        wb.set("v", &"before".to_string()).await.unwrap(),
        Written::Queued(_)
    ));

    redis.kill();
    for _ in 0..10 {
        assert_eq!(wb.incr("c", 10).await.unwrap(), None);
        assert_eq!(
            wb.set("v", &"during".to_string()).await.unwrap(),
            Written::Direct
        );
    }
    // Already in the database, synchronously; counted.
    assert_eq!(db.counters().await.get("c"), Some(&100));
    assert_eq!(
        db.values().await.get("v").map(String::as_str),
        Some("\"during\"")
    );
    assert_eq!(wb.stats().direct, 20);
    // Reads still see the newest value (L1), with Redis down.
    assert_eq!(
        wb.get::<String>("v").await.unwrap().as_deref(),
        Some("during")
    );

    redis.restart();
    assert!(
        eventually(Duration::from_secs(10), || async {
            matches!(
                wb.set("v", &"after".to_string()).await,
                Ok(Written::Queued(_))
            )
        })
        .await,
        "writes go through the stream again"
    );
    // The restarted Redis (no AOF) lost the queued `+1`: that is the
    // documented cost of running without AOF; the direct writes are safe.
    wb.incr("c", 1000).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            db.values().await.get("v").map(String::as_str) == Some("\"after\"")
                && db.counters().await.get("c").copied().unwrap_or(0) >= 1100
        })
        .await
    );
    worker.shutdown().await;
    let total = db.counters().await["c"];
    assert!(total == 1100 || total == 1101, "total {total}");
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_aof_always_a_redis_restart_mid_stream_loses_nothing() {
    let db = Scratch::new("aof").await;
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let cache = cache(&redis.url(), "wb-aof").await;
    let wb = WriteBehind::builder(cache, db.sink())
        .name("aof")
        .batch_size(50)
        .claim_idle(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    assert_eq!(
        wb.durability(),
        &Durability::Aof {
            fsync: Some("always".into())
        }
    );
    let worker = wb.spawn_worker();
    // Writers increment and record what was acknowledged; Redis is killed
    // (SIGKILL) and restarted from its AOF while they write.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for t in 0..4 {
        let (wb, stop) = (wb.clone(), Arc::clone(&stop));
        writers.push(tokio::spawn(async move {
            let (mut acked, mut unsure, mut last) = (0i64, 0i64, None);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                match wb.incr(&format!("c{t}"), 1).await {
                    Ok(_) => acked += 1,
                    Err(_) => unsure += 1,
                }
                if wb.set(&format!("v{t}"), &i).await.is_ok() {
                    last = Some(i);
                }
            }
            (acked, unsure, last)
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    redis.restart();
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.store(true, Ordering::Relaxed);
    let mut expected = Vec::new();
    for w in writers {
        expected.push(w.await.unwrap());
    }
    assert!(
        eventually(Duration::from_secs(20), || async {
            wb.queue_status()
                .await
                .map(|s| s.depth == 0 && s.pending == 0)
                .unwrap_or(false)
        })
        .await
    );
    worker.shutdown().await;
    let (counters, values) = (db.counters().await, db.values().await);
    for (t, (acked, unsure, last)) in expected.into_iter().enumerate() {
        let total = counters[&format!("c{t}")];
        assert!(
            total >= acked && total <= acked + unsure,
            "c{t}: {total} in the database, {acked} acknowledged, {unsure} unanswered"
        );
        assert_eq!(values[&format!("v{t}")], last.unwrap().to_string());
    }
    db.drop_schema().await;
}

/// Commits, then reports a failure every other call: what a worker sees when
/// the connection drops after `COMMIT` reached the database.
#[derive(Clone)]
struct CommitThenFail {
    inner: PostgresSink,
    calls: Arc<AtomicU32>,
}

impl Sink for CommitThenFail {
    async fn apply(&self, batch: &Batch) -> Result<(), BoxError> {
        self.inner.apply(batch).await?;
        if self.calls.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
            return Err("connection lost after COMMIT".into());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_committed_but_reported_failed_is_applied_once() {
    let db = Scratch::new("commitfail").await;
    let sink = CommitThenFail {
        inner: db.sink(),
        calls: Arc::new(AtomicU32::new(0)),
    };
    let cache = cache(&common::single_url(), "wb-commitfail").await;
    let wb = WriteBehind::builder(cache, sink.clone())
        .name("commitfail")
        .batch_size(7)
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(20))
        .build()
        .await
        .unwrap();
    let worker = wb.spawn_worker();
    let mut expected = 0i64;
    for i in 1..=60i64 {
        wb.incr(&format!("c{}", i % 3), i).await.unwrap();
        wb.set(&format!("v{}", i % 4), &i).await.unwrap();
        expected += i;
    }
    assert!(
        eventually(Duration::from_secs(20), || async {
            wb.queue_status()
                .await
                .map(|s| s.depth == 0 && s.pending == 0)
                .unwrap_or(false)
        })
        .await
    );
    worker.shutdown().await;
    let calls = sink.calls.load(Ordering::SeqCst);
    assert!(
        calls >= 4,
        "every batch was committed twice: {calls} sink calls"
    );
    // Every other call failed after its commit, and was retried.
    assert_eq!(wb.stats().retries, u64::from(calls.div_ceil(2)));
    assert_eq!(wb.stats().dead_letters, 0);
    let counters = db.counters().await;
    assert_eq!(counters.values().sum::<i64>(), expected);
    assert_eq!(counters["c0"], (1..=60).filter(|i| i % 3 == 0).sum::<i64>());
    let values = db.values().await;
    for k in 0..4i64 {
        let last = (1..=60i64).filter(|i| i % 4 == k).max().unwrap();
        assert_eq!(values[&format!("v{k}")], last.to_string());
    }
    db.drop_schema().await;
}

/// `acknowledge_replicas` on a node with a replica: writes are queued once
/// the replica has them; with the replica stopped, `WAIT` times out and each
/// write goes to the database directly — acknowledged, and applied once
/// although its stream entry is delivered too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_the_replicas_did_not_acknowledge_go_to_the_database_and_apply_once() {
    let master = RedisServer::start();
    let port = master.port().to_string();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    assert!(
        eventually(Duration::from_secs(10), || async {
            replica
                .info_field("replication", "master_link_status")
                .as_deref()
                == Some("up")
        })
        .await
    );
    let db = Scratch::new("replicas").await;
    let wb = WriteBehind::builder(cache(&master.url(), "wb-replicas").await, db.sink())
        .name("replicas")
        // Long enough that a loaded machine's replica answers `WAIT` in
        // time while it runs (100 ms was missed once on a busy CI host);
        // each write while it is paused costs the whole timeout.
        .acknowledge_replicas(1, Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    for _ in 0..10 {
        assert_eq!(wb.incr("n", 1).await.unwrap().map(|_| ()), Some(()));
    }
    assert!(matches!(
        wb.set("v", &1u32).await.unwrap(),
        Written::Queued(_)
    ));

    replica.pause();
    for _ in 0..3 {
        assert_eq!(wb.incr("n", 1).await.unwrap(), None, "went direct");
    }
    assert_eq!(wb.set("v", &2u32).await.unwrap(), Written::Direct);
    assert_eq!(
        wb.stats().direct,
        4,
        "unconfirmed writes went to the database"
    );
    replica.resume();

    let worker = wb.spawn_worker();
    assert!(
        eventually(Duration::from_secs(20), || async {
            wb.queue_status()
                .await
                .is_ok_and(|s| s.depth == 0 && s.pending == 0)
        })
        .await
    );
    worker.shutdown().await;
    assert_eq!(
        db.counters().await.get("n"),
        Some(&13),
        "each increment once"
    );
    assert_eq!(
        db.values().await.get("v").map(String::as_str),
        Some("2"),
        "the newest value"
    );
    db.drop_schema().await;
}

/// On a Cluster: the queue's shards are in different slots, and with two
/// writers per key racing, Redis's entry and (after the worker) the
/// database end with the same last write of each key, and every increment
/// once; the writing instance's own L1 agrees with Redis (racing writes of
/// one key leave it empty when their order cannot be told in the process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_redis_and_the_database_agree_on_the_last_writes() {
    last_writes(stratacache::RedisTopology::Cluster(
        stratacache_testkit::shared_cluster().seed_urls(),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_single_node_redis_and_the_database_agree_on_the_last_writes() {
    last_writes(stratacache::RedisTopology::parse(&common::single_url()).unwrap()).await;
}

async fn last_writes(topology: stratacache::RedisTopology) {
    let cluster = matches!(topology, stratacache::RedisTopology::Cluster(_));
    let db = Scratch::new("cluster").await;
    let namespace = common::namespace("wb-cluster");
    let cache = Cache::builder()
        .namespace(&namespace)
        .redis(topology.clone())
        .build()
        .await
        .unwrap();
    let reader = Cache::builder()
        .namespace(&namespace)
        .redis(topology)
        .build()
        .await
        .unwrap();
    let wb = WriteBehind::builder(cache, db.sink())
        .name("cluster")
        .build()
        .await
        .unwrap();
    let slots: std::collections::HashSet<u16> = wb
        .stream_keys()
        .iter()
        .map(|k| stratacache_testkit::key_slot(k.as_bytes()))
        .collect();
    assert_eq!(slots.len(), if cluster { 8 } else { 1 }, "a slot per shard");

    let mut tasks = Vec::new();
    for t in 0..16 {
        let wb = wb.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..40u32 {
                assert!(matches!(
                    wb.set(&format!("v{}", t % 8), &(t * 1_000 + i))
                        .await
                        .unwrap(),
                    Written::Queued(_)
                ));
                wb.incr(&format!("c{}", t % 4), 1).await.unwrap();
            }
            t
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Each value key had two writers; whichever wrote last, Redis and
    // (after the worker) the database agree on it.
    let mut cached = std::collections::BTreeMap::new();
    for k in 0..8 {
        let v: u32 = reader.get(&format!("v{k}")).await.unwrap().unwrap();
        assert!(v % 1_000 == 39, "v{k}: {v} is a last write");
        let own: Option<u32> = wb.get(&format!("v{k}")).await.unwrap();
        assert_eq!(own, Some(v), "v{k}: the writer's L1 follows Redis");
        cached.insert(format!("v{k}"), v.to_string());
    }
    for k in 0..4 {
        assert_eq!(wb.counter(&format!("c{k}")).await.unwrap(), 160);
    }
    let worker = wb.spawn_worker();
    assert!(
        eventually(Duration::from_secs(20), || async {
            wb.queue_status()
                .await
                .is_ok_and(|s| s.depth == 0 && s.pending == 0)
        })
        .await
    );
    worker.shutdown().await;
    assert_eq!(db.values().await, cached);
    let counters = db.counters().await;
    assert!((0..4).all(|k| counters.get(&format!("c{k}")) == Some(&160)));
    db.drop_schema().await;
}
