//! The one write pipeline, tried the way it was broken: several instances on
//! one real Redis, from the public API only, with the fault injected —
//! Redis refusing writes, frozen, killed; a new instance joining; a loader
//! asking for its own key; a deploy changing a type. One test per case of
//! the issue that introduced the pipeline (numbers in the comments).

mod common;
#[path = "common/wb_pg.rs"]
mod wb_pg;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::eventually;
use stratacache::write_behind::WriteBehind;
use stratacache::{BreakerConfig, Cache, EagerRefresh, EntryOptions, Error, Loaded, MAX_DURATION};
use stratacache_testkit::RedisServer;

const TTL: Duration = Duration::from_secs(600);

fn opts() -> EntryOptions {
    EntryOptions::new().ttl(TTL)
}

/// `n` caches on `url`, one namespace, each subscribed to the backplane.
async fn instances_on(url: &str, test: &str, n: usize) -> Vec<Cache> {
    let ns = common::namespace(test);
    let mut caches = Vec::new();
    for _ in 0..n {
        caches.push(instance(url, &ns).await);
    }
    caches
}

async fn instance(url: &str, namespace: &str) -> Cache {
    let cache = Cache::builder()
        .namespace(namespace)
        .redis_url(url)
        .redis_timeout(Duration::from_millis(300))
        .breaker(BreakerConfig {
            failure_threshold: 3,
            probe_interval: Duration::from_millis(50),
        })
        .build()
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(3), || async {
            cache.backplane_connected() == Some(true)
        })
        .await,
        "backplane subscribed"
    );
    cache
}

/// What `cache` serves for `key` once loads are told the source holds `now`.
async fn served(cache: &Cache, key: &str, now: u64) -> u64 {
    cache
        .get_or_load(
            key,
            &opts(),
            move || async move { Ok::<_, std::io::Error>(now) },
        )
        .await
        .unwrap()
}

fn refuse_writes(server: &RedisServer, refuse: bool) {
    server.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    server.cli(&["CONFIG", "SET", "maxmemory", if refuse { "1" } else { "0" }]);
}

// 1. A write Redis refuses must not leave the old value in another
// instance's L1: the old L2 copy is gone before the write is announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_redis_refuses_leaves_no_old_copy_in_another_l1() {
    let server = RedisServer::start();
    let nodes = instances_on(&server.url(), "refused-write", 3).await;
    let mut stale_rounds = Vec::new();
    for round in 0..60u64 {
        let key = format!("k{round}");
        let old = round * 10;
        nodes[0].set(&key, &old, &opts()).await.unwrap();
        for node in &nodes {
            assert_eq!(served(node, &key, old).await, old);
        }
        refuse_writes(&server, true);
        let reading = Arc::new(AtomicBool::new(true));
        let reader = {
            let (node, key, reading) = (nodes[1].clone(), key.clone(), reading.clone());
            tokio::spawn(async move {
                while reading.load(Ordering::Relaxed) {
                    let _ = node.get::<u64>(&key).await;
                    tokio::task::yield_now().await;
                }
            })
        };
        nodes[0].set(&key, &(old + 1), &opts()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        reading.store(false, Ordering::Relaxed);
        reader.await.unwrap();
        refuse_writes(&server, false);
        tokio::time::sleep(Duration::from_millis(50)).await;
        if nodes[1].get::<u64>(&key).await.unwrap() == Some(old) {
            stale_rounds.push(round);
        }
    }
    assert!(
        stale_rounds.is_empty(),
        "old value kept in rounds {stale_rounds:?}"
    );
}

// 2. A write right after an invalidation is not hidden by it (stamps
// cannot tie).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_right_after_a_tag_invalidation_or_a_clear_is_seen_everywhere() {
    let nodes = common::instances(common::Target::Single, "invalidate-then-write", 2).await;
    let tagged = opts().tags(["t"]);
    let mut hidden = Vec::new();
    for round in 0..40u64 {
        let key = format!("tag:{round}");
        nodes[0].invalidate_tag("t").await.unwrap();
        nodes[0].set(&key, &round, &tagged).await.unwrap();
        if nodes[1].get::<u64>(&key).await.unwrap() != Some(round) {
            hidden.push(format!("tag round {round}"));
        }
    }
    for round in 0..20u64 {
        let key = format!("clear:{round}");
        nodes[0].invalidate_all().await.unwrap();
        nodes[0].set(&key, &round, &opts()).await.unwrap();
        if nodes[1].get::<u64>(&key).await.unwrap() != Some(round) {
            hidden.push(format!("clear round {round}"));
        }
    }
    assert!(hidden.is_empty(), "writes hidden: {hidden:?}");
}

// 3. Invalidations that could not reach Redis are replayed, whatever their
// kind — tags, prefixes, namespace clears — also for instances started later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_prefix_and_clear_invalidations_during_a_freeze_are_replayed() {
    let server = RedisServer::start();
    let nodes = instances_on(&server.url(), "frozen-invalidation", 2).await;
    let ns = nodes[0].namespace().to_string();
    let tagged = opts().tags(["user:1"]);
    for node in &nodes {
        let profile = node
            .get_or_load("user:1:profile", &tagged, || async {
                Ok::<_, std::io::Error>(1u64)
            })
            .await
            .unwrap();
        assert_eq!(profile, 1);
        assert_eq!(served(node, "feed:1", 1).await, 1);
        assert_eq!(served(node, "other:1", 1).await, 1);
    }
    server.pause();
    assert!(nodes[0].invalidate_tag("user:1").await.is_err());
    assert!(nodes[0].invalidate_prefix("feed:").await.is_err());
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.resume();
    assert!(
        eventually(Duration::from_secs(5), || async {
            nodes[0].pending_recovery() == 0
        })
        .await,
        "replayed"
    );
    let later = instance(&server.url(), &ns).await;
    for node in nodes.iter().chain([&later]) {
        let profile = node
            .get_or_load("user:1:profile", &tagged, || async {
                Ok::<_, std::io::Error>(2u64)
            })
            .await
            .unwrap();
        assert_eq!(profile, 2, "the tag invalidation reached every instance");
        assert_eq!(served(node, "feed:1", 2).await, 2, "the prefix too");
        assert_eq!(served(node, "other:1", 2).await, 1, "and nothing else");
    }
    server.pause();
    assert!(nodes[0].invalidate_all().await.is_err());
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.resume();
    assert!(
        eventually(Duration::from_secs(5), || async {
            nodes[0].pending_recovery() == 0
        })
        .await
    );
    for node in &nodes {
        assert_eq!(
            served(node, "other:1", 3).await,
            3,
            "the clear reached every instance"
        );
    }
}

// 4. A new instance does not keep what it read before its first
// subscription: writes announced meanwhile were not heard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_instance_drops_what_it_read_before_it_subscribed() {
    let url = common::single_url();
    let ns = common::namespace("new-instance");
    let writer = instance(&url, &ns).await;
    let mut stale = Vec::new();
    for round in 0..40u64 {
        let key = format!("k{round}");
        writer.set(&key, &round, &opts()).await.unwrap();
        // Built without waiting for its subscription (as when Redis answers
        // only after the start): its first reads race the overwrite before
        // it hears the other instances.
        let joining = Cache::builder()
            .namespace(ns.clone())
            .redis_url(&url)
            .wait_for_backplane(Duration::ZERO)
            .build()
            .await
            .unwrap();
        let read = {
            let (joining, key) = (joining.clone(), key.clone());
            tokio::spawn(async move { joining.get::<u64>(&key).await })
        };
        writer.set(&key, &(round + 1000), &opts()).await.unwrap();
        read.await.unwrap().unwrap();
        assert!(
            eventually(Duration::from_secs(3), || async {
                joining.backplane_connected() == Some(true)
            })
            .await
        );
        // Within the backplane's bound (SPEC §3: 50 ms), not until the TTL.
        tokio::time::sleep(Duration::from_millis(50)).await;
        if joining.get::<u64>(&key).await.unwrap() == Some(round) {
            stale.push(round);
        }
    }
    assert!(stale.is_empty(), "old value kept in rounds {stale:?}");
}

// 5. Distrust while the backplane is down means "not served as fresh", not
// "thrown away": fail-safe still has its fallback after a long outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_safe_keeps_its_fallback_through_a_long_outage() {
    let mut server = RedisServer::start();
    let cache = Cache::builder()
        .namespace(common::namespace("fail-safe-outage"))
        .redis_url(&server.url())
        .redis_timeout(Duration::from_millis(100))
        .backplane_outage_l1_max_age(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let opts = EntryOptions::new()
        .ttl(Duration::from_millis(200))
        .stale_for(Duration::from_secs(3600));
    let value: u64 = cache
        .get_or_load("k", &opts, || async { Ok::<_, std::io::Error>(7) })
        .await
        .unwrap();
    assert_eq!(value, 7);
    server.kill();
    assert!(
        eventually(Duration::from_secs(3), || async {
            cache.backplane_connected() == Some(false)
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let fetched = cache
        .get_or_load_with_context("k", &opts, |_| async {
            Err::<Loaded<u64>, _>(std::io::Error::other("database down"))
        })
        .await
        .expect("the stale value, not the loader's error");
    assert_eq!(fetched.value(), Some(&7));
    assert!(fetched.is_stale());
    server.restart();
}

// 6. A frozen Redis keeps its connections open: the backplane's heartbeat
// notices within about one Redis timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_is_noticed_by_the_backplane() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .namespace(common::namespace("frozen-backplane"))
        .redis_url(&server.url())
        .redis_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(3), || async {
            cache.backplane_connected() == Some(true)
        })
        .await
    );
    server.pause();
    let started = Instant::now();
    let noticed = eventually(Duration::from_secs(3), || async {
        cache.backplane_connected() == Some(false)
    })
    .await;
    let took = started.elapsed();
    server.resume();
    assert!(noticed, "still trusted after 3 s of freeze");
    assert!(
        took < Duration::from_millis(1_000),
        "noticed after {took:?}"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            cache.backplane_connected() == Some(true)
        })
        .await,
        "back once Redis answers"
    );
}

// 7. A loader that asks for its own key would wait for itself forever (and
// hold its lease, so every instance would wait): it fails at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loader_that_asks_for_its_own_key_fails_at_once() {
    let nodes = common::instances(common::Target::Single, "reentrant", 2).await;
    let inner = nodes[0].clone();
    let direct = tokio::time::timeout(
        Duration::from_secs(5),
        nodes[0].get_or_load("a", &opts(), move || async move {
            inner
                .get_or_load("a", &opts(), || async { Ok::<_, std::io::Error>(1u64) })
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
        }),
    )
    .await
    .expect("no deadlock");
    assert!(
        matches!(&direct, Err(Error::Loader(e)) if e.to_string().contains("itself")),
        "{direct:?}"
    );
    // Through another key: a → b → a.
    let (outer, inner) = (nodes[0].clone(), nodes[0].clone());
    let chained = tokio::time::timeout(
        Duration::from_secs(5),
        nodes[0].get_or_load("x", &opts(), move || async move {
            outer
                .get_or_load("y", &opts(), move || async move {
                    inner
                        .get_or_load("x", &opts(), || async { Ok::<_, std::io::Error>(1u64) })
                        .await
                        .map_err(|e| std::io::Error::other(e.to_string()))
                })
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
        }),
    )
    .await
    .expect("no deadlock");
    assert!(chained.is_err());
    // The other instance is not left waiting on a lease: it loads at once.
    let started = Instant::now();
    assert_eq!(served(&nodes[1], "a", 5).await, 5);
    assert!(started.elapsed() < Duration::from_secs(1));
}

// 8. A background refresh that changed the value reaches the other
// instances' L1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eager_refresh_reaches_the_other_instances() {
    let nodes = common::instances(common::Target::Single, "eager-refresh", 2).await;
    let opts = EntryOptions::new()
        .ttl(Duration::from_secs(4))
        .eager_refresh(EagerRefresh::AfterFraction(0.25));
    let source = Arc::new(AtomicU64::new(1));
    let load = |cache: Cache, source: Arc<AtomicU64>, opts: EntryOptions| async move {
        cache
            .get_or_load("k", &opts, move || async move {
                Ok::<_, std::io::Error>(source.load(Ordering::SeqCst))
            })
            .await
            .unwrap()
    };
    assert_eq!(
        load(nodes[0].clone(), source.clone(), opts.clone()).await,
        1
    );
    assert_eq!(nodes[1].get::<u64>("k").await.unwrap(), Some(1));
    source.store(2, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    // This read is due for an early refresh: it answers 1 and refreshes.
    load(nodes[0].clone(), source.clone(), opts.clone()).await;
    assert!(
        eventually(Duration::from_secs(1), || async {
            nodes[1].get::<u64>("k").await.unwrap() == Some(2)
        })
        .await,
        "the other instance still serves its copy of the old value"
    );
}

// 9. Huge TTLs are refused with a typed error, never a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_ttls_are_refused_with_a_config_error() {
    let cache = common::builder(common::Target::Single, "huge-ttl")
        .build()
        .await
        .unwrap();
    let forever = EntryOptions::new().ttl(Duration::MAX).jitter(0.1);
    assert!(matches!(
        cache.set("k", &1u64, &forever).await,
        Err(Error::Config(_))
    ));
    let loaded = cache
        .get_or_load("k", &EntryOptions::new().ttl(Duration::MAX), || async {
            Ok::<_, std::io::Error>(1u64)
        })
        .await;
    assert!(matches!(loaded, Err(Error::Config(_))), "{loaded:?}");
    let longest = EntryOptions::new().ttl(MAX_DURATION).jitter(0.1);
    cache.set("k", &1u64, &longest).await.unwrap();
    assert_eq!(cache.get::<u64>("k").await.unwrap(), Some(1));
    let from_loader = cache
        .get_or_load_with_context("l", &opts(), |_| async {
            Ok::<_, std::io::Error>(Loaded::value(2u64).ttl(Duration::MAX))
        })
        .await
        .unwrap();
    assert_eq!(from_loader.value(), Some(&2), "a loader's TTL is bounded");
}

// 10. A key too long to be stored as itself (a head and a digest) is removed
// by a prefix invalidation of its first characters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_invalidation_removes_hashed_long_keys() {
    let nodes = common::instances(common::Target::Single, "hashed-prefix", 2).await;
    let key = format!("report:2026:{}", "x".repeat(300));
    for node in &nodes {
        assert_eq!(served(node, &key, 1).await, 1);
    }
    nodes[0].invalidate_prefix(&key[..52]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for node in &nodes {
        assert_eq!(node.get::<u64>(&key).await.unwrap(), None);
    }
    assert_eq!(served(&nodes[1], &key, 2).await, 2);
}

// 11. Write-behind goes through the pipeline: a read racing a write on the
// same instance cannot leave an older value in its L1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_behind_never_leaves_an_older_value_in_its_own_l1() {
    let db = wb_pg::Scratch::new("wb_pipeline").await;
    let cache = instance(&common::single_url(), &common::namespace("wb-pipeline")).await;
    let wb = WriteBehind::builder(cache.clone(), db.sink())
        .name("pipeline")
        .build()
        .await
        .unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (cache, running) = (cache.clone(), running.clone());
        readers.push(tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                let _ = cache.get::<u64>("k").await;
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut older = Vec::new();
    for i in 1..=300u64 {
        wb.set("k", &i).await.unwrap();
        written.store(i, Ordering::SeqCst);
        match cache.get::<u64>("k").await.unwrap() {
            Some(seen) if seen < i => older.push((i, seen)),
            _ => {}
        }
    }
    running.store(false, Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    assert!(
        older.is_empty(),
        "older values served after a write: {older:?}"
    );
}

// 12. Options passed to a call are validated at the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_call_options_are_validated() {
    let cache = common::builder(common::Target::Single, "call-options")
        .build()
        .await
        .unwrap();
    let bad = [
        EntryOptions::new().ttl(Duration::ZERO),
        EntryOptions::new()
            .ttl(Duration::from_secs(1))
            .l1_ttl(Duration::from_secs(5)),
        EntryOptions::new()
            .soft_timeout(Duration::from_secs(2))
            .hard_timeout(Duration::from_secs(1)),
    ];
    let loads = Arc::new(AtomicUsize::new(0));
    for opts in &bad {
        let counted = loads.clone();
        let loaded = cache
            .get_or_load("k", opts, move || async move {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(1u64)
            })
            .await;
        assert!(
            matches!(loaded, Err(Error::Config(_))),
            "{opts:?}: {loaded:?}"
        );
        assert!(matches!(
            cache.set("k", &1u64, opts).await,
            Err(Error::Config(_))
        ));
        assert!(matches!(
            cache.get_with_options::<u64>("k", opts).await,
            Err(Error::Config(_))
        ));
    }
    assert_eq!(loads.load(Ordering::SeqCst), 0, "no loader ran");
}

// 13. A load past its hard timeout goes on in the background and fills the
// cache: a source that became slow can still be cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_past_its_hard_timeout_still_fills_the_cache() {
    let nodes = common::instances(common::Target::Single, "hard-timeout", 2).await;
    let opts = opts().hard_timeout(Duration::from_millis(100));
    let loads = Arc::new(AtomicUsize::new(0));
    let counted = loads.clone();
    let started = Instant::now();
    let first = nodes[0]
        .get_or_load("k", &opts, move || async move {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(400)).await;
            Ok::<_, std::io::Error>(9u64)
        })
        .await;
    assert!(matches!(first, Err(Error::LoaderTimeout(_))), "{first:?}");
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "the caller got its timeout"
    );
    assert!(
        eventually(Duration::from_secs(2), || async {
            nodes[1].get::<u64>("k").await.unwrap() == Some(9)
        })
        .await,
        "the timed-out load filled the cache"
    );
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}

// 14. During a rolling deploy, an entry another version wrote is a miss for
// this one and is left alone — not deleted as corrupt for every instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_of_another_version_is_a_miss_and_left_alone() {
    common::record_metrics();
    let nodes = common::instances(common::Target::Single, "rolling-deploy", 2).await;
    let ns = nodes[0].namespace().to_string();
    let mut raw = common::Raw::connect(common::Target::Single).await;
    let stored = common::stored_key(&ns, "profile:1");

    // The same schema version, another type: a miss here, the entry stays.
    nodes[0].set("profile:1", &7u64, &opts()).await.unwrap();
    let bytes = raw.get(&stored).await.expect("written");
    let name: Option<String> = nodes[1].get("profile:1").await.unwrap();
    assert_eq!(name, None);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        raw.get(&stored).await.as_deref(),
        Some(&bytes[..]),
        "not deleted"
    );

    // A newer schema version: the older instance loads for itself and does
    // not replace it; the newer keeps its hits.
    let v2 = opts().schema_version(2);
    let v1 = opts().schema_version(1);
    nodes[0]
        .set("profile:2", &"new".to_string(), &v2)
        .await
        .unwrap();
    let stored2 = common::stored_key(&ns, "profile:2");
    let newer = raw.get(&stored2).await.expect("written");
    let old: u64 = nodes[1]
        .get_or_load("profile:2", &v1, || async { Ok::<_, std::io::Error>(1u64) })
        .await
        .unwrap();
    assert_eq!(old, 1);
    assert_eq!(
        raw.get(&stored2).await.as_deref(),
        Some(&newer[..]),
        "kept for the newer version"
    );
    nodes[0].clear_l1();
    assert_eq!(
        nodes[0]
            .get_with_options::<String>("profile:2", &v2)
            .await
            .unwrap()
            .as_deref(),
        Some("new")
    );
    // An older schema version is replaced by the newer one's load.
    nodes[1].set("profile:3", &1u64, &v1).await.unwrap();
    let loaded: String = nodes[0]
        .get_or_load("profile:3", &v2, || async {
            Ok::<_, std::io::Error>("new".to_string())
        })
        .await
        .unwrap();
    assert_eq!(loaded, "new");
    nodes[1].clear_l1();
    assert_eq!(
        nodes[1]
            .get_with_options::<String>("profile:3", &v2)
            .await
            .unwrap()
            .as_deref(),
        Some("new")
    );
    assert_eq!(
        common::counter(
            "stratacache_corrupt_entries_total",
            &[("cache", ns.as_str())]
        ),
        0,
        "nothing was taken for damage"
    );
}

// 15. Writes of one key racing on one instance: its L1 ends with what Redis
// ordered last (or nothing, and a read goes to Redis), never with the write
// that merely finished last in the process; the other instances agree once
// the backplane has delivered. Each variant: many rounds, a fresh key each,
// `RACE_TASKS` tasks released together on the first instance.
const RACE_ROUNDS: u64 = 150;
const RACE_TASKS: u64 = 8;

/// One racing write: (key, task number, value).
type RacingWrite =
    Arc<dyn Fn(String, u64, u64) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

async fn racing_writes_follow_redis(test: &str, nodes: &[Cache], write: RacingWrite) {
    let (writer, others) = (&nodes[0], &nodes[1..]);
    let redis_only = opts().skip_l1(true);
    let mut diverged = Vec::new();
    for round in 0..RACE_ROUNDS {
        let key = format!("race:{round}");
        // Every instance holds an older value in L1 first.
        writer.set(&key, &0u64, &opts()).await.unwrap();
        for other in others {
            assert!(
                eventually(Duration::from_secs(2), || async {
                    other.get::<u64>(&key).await.unwrap() == Some(0)
                })
                .await
            );
        }
        let start = Arc::new(tokio::sync::Barrier::new(RACE_TASKS as usize));
        let tasks: Vec<_> = (1..=RACE_TASKS)
            .map(|task| {
                let (write, start, key) = (write.clone(), start.clone(), key.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    write(key, task, round * 100 + task).await;
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let in_redis: Option<u64> = others[0].get_with_options(&key, &redis_only).await.unwrap();
        let local: Option<u64> = writer.get(&key).await.unwrap();
        if local != in_redis {
            diverged.push((round, local, in_redis));
        }
    }
    // The other instances: every key as Redis holds it, once messages landed.
    let mut others_diverged = Vec::new();
    for round in 0..RACE_ROUNDS {
        let key = format!("race:{round}");
        let in_redis: Option<u64> = others[0].get_with_options(&key, &redis_only).await.unwrap();
        for (i, other) in others.iter().enumerate() {
            let agreed = eventually(Duration::from_secs(2), || async {
                other.get::<u64>(&key).await.unwrap() == in_redis
            })
            .await;
            if !agreed {
                others_diverged.push((i + 1, round, in_redis));
            }
        }
    }
    assert!(
        diverged.is_empty() && others_diverged.is_empty(),
        "{test}: the writer's L1 disagreed with Redis in {}/{RACE_ROUNDS} rounds \
         (round, L1, Redis): {diverged:?}; other instances: {others_diverged:?}",
        diverged.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_sets_of_one_key_leave_l1_as_redis_ordered_them() {
    let nodes = instances_on(&common::single_url(), "race-set", 3).await;
    let cache = nodes[0].clone();
    let write: RacingWrite = Arc::new(move |key, _, value| {
        let cache = cache.clone();
        Box::pin(async move { cache.set(&key, &value, &opts()).await.unwrap() })
    });
    racing_writes_follow_redis("set", &nodes, write).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_sets_and_deletes_of_one_key_leave_l1_as_redis_ordered_them() {
    let nodes = instances_on(&common::single_url(), "race-delete", 3).await;
    let cache = nodes[0].clone();
    let write: RacingWrite = Arc::new(move |key, task, value| {
        let cache = cache.clone();
        Box::pin(async move {
            if task % 3 == 0 {
                cache.delete(&key).await.unwrap();
            } else {
                cache.set(&key, &value, &opts()).await.unwrap();
            }
        })
    });
    racing_writes_follow_redis("set and delete", &nodes, write).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_write_throughs_of_one_key_leave_l1_as_redis_ordered_them() {
    let nodes = instances_on(&common::single_url(), "race-write-through", 3).await;
    let cache = nodes[0].clone();
    let write: RacingWrite = Arc::new(move |key, _, value| {
        let cache = cache.clone();
        Box::pin(async move {
            cache
                .write_through(
                    &key,
                    &opts(),
                    || async move { Ok::<_, std::io::Error>(value) },
                )
                .await
                .unwrap();
        })
    });
    racing_writes_follow_redis("write-through", &nodes, write).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_write_behind_sets_of_one_key_leave_l1_as_redis_ordered_them() {
    let db = wb_pg::Scratch::new("wb_race").await;
    let nodes = instances_on(&common::single_url(), "race-write-behind", 3).await;
    let wb = WriteBehind::builder(nodes[0].clone(), db.sink())
        .name("race")
        .build()
        .await
        .unwrap();
    let write: RacingWrite = {
        let wb = wb.clone();
        Arc::new(move |key, _, value| {
            let wb = wb.clone();
            Box::pin(async move {
                wb.set(&key, &value).await.unwrap();
            })
        })
    };
    racing_writes_follow_redis("write-behind", &nodes, write).await;
    drop(wb);
    db.drop_schema().await;
}

/// A batch is one writer: two of its keys that share a slot of the
/// invalidation log do not count as writes of each other, so every key of a
/// large `set_many` stays in L1 (5,000 keys share some of the log's 65,536
/// slots in nearly every run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_of_a_large_batch_stays_in_l1() {
    let cache = instance(&common::single_url(), &common::namespace("batch-l1")).await;
    let keys: Vec<String> = (0..5_000).map(|i| format!("row:{i}")).collect();
    let entries: Vec<(&str, u64)> = keys
        .iter()
        .zip(0u64..)
        .map(|(k, i)| (k.as_str(), i))
        .collect();
    cache.set_many(&entries, &opts()).await.unwrap();
    assert_eq!(cache.l1_stats().unwrap().entries, 5_000);
    for (key, value) in entries.iter().step_by(97) {
        let only_l1 = EntryOptions::new().ttl(TTL).skip_l2(true);
        assert_eq!(
            cache.get_with_options::<u64>(key, &only_l1).await.unwrap(),
            Some(*value)
        );
    }
}
