//! Redis going away makes the service slower, never broken. Each test starts
//! its own redis-server, so it can kill or freeze it.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::counter;
use stratacache::{BreakerConfig, BreakerState, Cache, CacheBuilder, EntryOptions};
use stratacache_testkit::{DelayProxy, RedisServer};

const REDIS_TIMEOUT: Duration = Duration::from_millis(150);

async fn cache_on(server: &RedisServer, test: &str) -> Cache {
    cache_at(&server.url(), test).await
}

async fn cache_at(url: &str, test: &str) -> Cache {
    builder_at(url, test).build().await.unwrap()
}

/// The tests' cache settings: short Redis timeouts, a breaker that opens
/// after 3 failures and probes every 100 ms.
fn builder_at(url: &str, test: &str) -> CacheBuilder {
    common::record_metrics();
    Cache::builder()
        .namespace(common::namespace(test))
        .redis_url(url)
        .redis_timeout(REDIS_TIMEOUT)
        .redis_connect_timeout(Duration::from_millis(100))
        .breaker(BreakerConfig {
            failure_threshold: 3,
            probe_interval: Duration::from_millis(100),
        })
}

/// `calls` concurrent get_or_load calls on distinct keys; returns the slowest.
async fn load_concurrently(
    cache: &Cache,
    prefix: &str,
    calls: usize,
    loads: &Arc<AtomicUsize>,
) -> Duration {
    let opts = EntryOptions::new().ttl(Duration::from_secs(60));
    let mut tasks = Vec::new();
    for i in 0..calls {
        let (cache, opts, loads, key) = (
            cache.clone(),
            opts.clone(),
            loads.clone(),
            format!("{prefix}:{i}"),
        );
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let value: usize = cache
                .get_or_load(&key, &opts, move || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    Ok::<_, std::io::Error>(i)
                })
                .await
                .expect("a Redis outage never fails a read");
            assert_eq!(value, i);
            started.elapsed()
        }));
    }
    let mut slowest = Duration::ZERO;
    for task in tasks {
        slowest = slowest.max(task.await.unwrap());
    }
    slowest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_test_opens_the_breaker_and_reads_still_succeed() {
    let mut server = RedisServer::start();
    let cache = cache_on(&server, "killed").await;
    let opts = EntryOptions::new().ttl(Duration::from_secs(60));
    cache
        .set("cached", &"from before".to_string(), &opts)
        .await
        .unwrap();
    let loads = Arc::new(AtomicUsize::new(0));

    server.kill();
    // Cached keys come from L1; new keys from the loader; nothing fails.
    assert_eq!(
        cache.get::<String>("cached").await.unwrap().as_deref(),
        Some("from before")
    );
    let slowest = load_concurrently(&cache, "during", 100, &loads).await;
    assert_eq!(loads.load(Ordering::SeqCst), 100);
    assert!(
        slowest < REDIS_TIMEOUT * 2 + Duration::from_millis(400),
        "slowest {slowest:?}"
    );
    assert!(
        common::eventually(Duration::from_secs(2), || async {
            cache.breaker_state() == Some(BreakerState::Open)
        })
        .await,
        "breaker opens"
    );
    assert!(
        counter(
            "stratacache_breaker_opened_total",
            &[("cache", cache.namespace())]
        ) >= 1
    );
    // With the breaker open, Redis is not even tried: reads cost no timeout.
    let started = Instant::now();
    for i in 0..50 {
        let _ = cache.get::<usize>(&format!("never-set:{i}")).await.unwrap();
    }
    assert!(
        started.elapsed() < REDIS_TIMEOUT,
        "{:?} for 50 reads",
        started.elapsed()
    );
    assert!(
        counter(
            "stratacache_redis_skipped_total",
            &[("cache", cache.namespace())]
        ) >= 50
    );
    // Writes keep working for this instance.
    cache.set("written-during", &1u8, &opts).await.unwrap();

    server.restart();
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            cache.breaker_state() == Some(BreakerState::Closed)
        })
        .await,
        "breaker closes once Redis answers"
    );
    let recovered = Arc::new(AtomicUsize::new(0));
    assert!(
        common::eventually(Duration::from_secs(3), || async {
            cache.set("after", &2u8, &opts).await.unwrap();
            server.cli(&["EXISTS", &format!("{}:{{after}}", cache.namespace())]) == "1"
        })
        .await,
        "writes reach Redis again"
    );
    let slowest = load_concurrently(&cache, "after", 20, &recovered).await;
    assert!(slowest < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_never_holds_a_request_past_the_timeout() {
    let server = RedisServer::start();
    let cache = cache_on(&server, "frozen").await;
    let opts = EntryOptions::new().ttl(Duration::from_secs(60));
    cache.set("warm", &1u32, &opts).await.unwrap();
    let loads = Arc::new(AtomicUsize::new(0));

    server.pause(); // the process is there, the socket open, nothing answers
    let slowest = load_concurrently(&cache, "frozen", 64, &loads).await;
    // Bounded by one Redis timeout (the L2 read; the load then leaves Redis
    // alone) plus the 10 ms loader, with slack for a loaded 2-core machine.
    assert!(
        slowest < REDIS_TIMEOUT + Duration::from_millis(400),
        "slowest {slowest:?}"
    );
    assert_eq!(loads.load(Ordering::SeqCst), 64);
    let started = Instant::now();
    assert_eq!(
        cache.get::<u32>("warm").await.unwrap(),
        Some(1),
        "L1 still serves"
    );
    assert!(started.elapsed() < Duration::from_millis(50));
    assert_eq!(cache.breaker_state(), Some(BreakerState::Open));

    server.resume();
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            cache.breaker_state() == Some(BreakerState::Closed)
        })
        .await,
        "breaker closes after the freeze"
    );
}

/// A breaker that never opens: every request meets the frozen Redis itself.
async fn cache_whose_breaker_never_opens(server: &RedisServer, namespace: &str) -> Cache {
    Cache::builder()
        .namespace(namespace)
        .redis_url(&server.url())
        .redis_timeout(REDIS_TIMEOUT)
        .breaker(BreakerConfig {
            failure_threshold: u32::MAX,
            probe_interval: Duration::from_millis(100),
        })
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_pays_one_redis_timeout_at_most_before_the_breaker_opens() {
    let server = RedisServer::start();
    common::record_metrics();
    let namespace = common::namespace("one-timeout");
    let cache = cache_whose_breaker_never_opens(&server, &namespace).await;
    let loads = Arc::new(AtomicUsize::new(0));

    server.pause();
    let calls = 16;
    load_concurrently(&cache, "frozen", calls, &loads).await;
    assert_eq!(loads.load(Ordering::SeqCst), calls);
    // The L2 read times out (alone, or as part of one MGET with others);
    // the lease and the fill are then skipped rather than each waiting for
    // a timeout of its own — which would make it three per request.
    let timeouts = common::counter(
        "stratacache_redis_errors_total",
        &[("cache", &namespace), ("kind", "timeout")],
    );
    assert!(
        (1..=calls as u64).contains(&timeouts),
        "{timeouts} Redis timeouts for {calls} requests"
    );
    server.resume();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loader_composed_from_cached_parts_pays_no_further_redis_timeout() {
    let server = RedisServer::start();
    common::record_metrics();
    let namespace = common::namespace("nested-timeout");
    let cache = cache_whose_breaker_never_opens(&server, &namespace).await;
    let opts = EntryOptions::new().ttl(Duration::from_secs(60));
    server.pause();
    // One request whose loader reads two parts through the cache, one of
    // them with `get`: the outer read times out, the parts skip Redis.
    let (inner, o) = (cache.clone(), opts.clone());
    let total: u32 = cache
        .get_or_load("whole", &opts, move || async move {
            let a: u32 = inner
                .get_or_load("part:a", &o, || async { Ok::<_, std::io::Error>(1) })
                .await?;
            let b = inner.get::<u32>("part:b").await?.unwrap_or(2);
            Ok::<_, stratacache::Error>(a + b)
        })
        .await
        .unwrap();
    assert_eq!(total, 3);
    let timeouts = common::counter(
        "stratacache_redis_errors_total",
        &[("cache", &namespace), ("kind", "timeout")],
    );
    assert_eq!(timeouts, 1, "the parts did not wait for Redis again");
    server.resume();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_builds_and_serves_while_redis_is_down_then_starts_using_it() {
    let mut server = RedisServer::start();
    server.kill();
    let cache = cache_on(&server, "down-at-start").await;
    let loads = Arc::new(AtomicUsize::new(0));
    load_concurrently(&cache, "k", 10, &loads).await;
    assert_eq!(loads.load(Ordering::SeqCst), 10);

    server.restart();
    let opts = EntryOptions::new().ttl(Duration::from_secs(60));
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            cache.set("late", &1u8, &opts).await.unwrap();
            server.cli(&["EXISTS", &format!("{}:{{late}}", cache.namespace())]) == "1"
        })
        .await,
        "Redis is used once it is up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_many_costs_one_read_round_trip() {
    use std::collections::HashMap;
    use stratacache::{Loader, Resource};

    struct Rows;
    impl Loader<u32, String> for Rows {
        type Error = std::io::Error;
        async fn load(&self, key: &u32) -> Result<Option<String>, Self::Error> {
            Ok(Some(format!("row {key}")))
        }
        async fn load_many(&self, keys: &[u32]) -> Result<HashMap<u32, String>, Self::Error> {
            Ok(keys.iter().map(|k| (*k, format!("row {k}"))).collect())
        }
    }

    let server = RedisServer::start();
    let cache = cache_on(&server, "roundtrip").await;
    let rows = Resource::new(
        cache.clone(),
        "row",
        EntryOptions::new().ttl(Duration::from_secs(60)),
        Rows,
    );
    for k in 0..10 {
        rows.get(&k).await.unwrap();
    }
    cache.clear_l1();
    server.cli(&["CONFIG", "RESETSTAT"]);
    let keys: Vec<u32> = (0..50).collect();
    assert_eq!(rows.get_many(&keys).await.unwrap().len(), 50);
    let stats = server.cli(&["INFO", "commandstats"]);
    let calls = |cmd: &str| -> u64 {
        stats
            .lines()
            .find(|l| l.starts_with(&format!("cmdstat_{cmd}:")))
            .and_then(|l| l.split("calls=").nth(1))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    };
    assert_eq!(calls("mget"), 1, "{stats}");
    assert_eq!(calls("get"), 0, "{stats}");
    assert_eq!(
        calls("set"),
        40,
        "the 40 misses are written, in one pipeline: {stats}"
    );

    // All hits now: one MGET, no writes.
    cache.clear_l1();
    server.cli(&["CONFIG", "RESETSTAT"]);
    assert_eq!(rows.get_many(&keys).await.unwrap().len(), 50);
    let stats = server.cli(&["INFO", "commandstats"]);
    assert!(stats.contains("cmdstat_mget:calls=1,"), "{stats}");
    assert!(!stats.contains("cmdstat_set:"), "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_holds_its_byte_and_entry_bounds() {
    let cache = Cache::builder()
        .namespace(common::namespace("bounds"))
        .l1_max_bytes(200_000)
        .l1_max_entries(500)
        .build()
        .await
        .unwrap();
    let opts = EntryOptions::new().ttl(Duration::from_secs(60));
    let value = "x".repeat(1_000);
    for i in 0..2_000 {
        cache.set(&format!("big:{i}"), &value, &opts).await.unwrap();
    }
    let stats = cache.l1_stats().unwrap();
    assert!(stats.bytes <= 200_000, "{stats:?}");
    assert!(
        stats.bytes >= 150_000,
        "the bound is used, not wasted: {stats:?}"
    );
    for i in 0..5_000 {
        cache.set(&format!("small:{i}"), &i, &opts).await.unwrap();
    }
    let stats = cache.l1_stats().unwrap();
    assert!(stats.entries <= 500, "{stats:?}");
    assert!(stats.bytes <= 200_000, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_meets_a_dropped_connection_is_retried_on_the_new_one() {
    // With AOF the data survives the restart, so the read has something to find.
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    common::record_metrics();
    let cache = Cache::builder()
        .namespace(common::namespace("retry"))
        .redis_url(&server.url())
        .without_l1()
        .redis_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let opts = EntryOptions::new().ttl(Duration::from_secs(60));
    cache.set("k", &7u32, &opts).await.unwrap();
    assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(7));

    server.kill();
    server.restart();
    // The multiplexed connection is dead but does not know yet: the first
    // command on it fails, the retry goes out on a fresh connection.
    assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(7));
    assert_eq!(
        counter(
            "stratacache_hits_total",
            &[("cache", cache.namespace()), ("tier", "l2")]
        ),
        2
    );
    assert_eq!(cache.breaker_state(), Some(BreakerState::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_failed_while_redis_was_down_are_invalidated_when_it_returns() {
    // AOF: what Redis held before the outage comes back with it.
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let cache = cache_on(&server, "recovery").await;
    let opts = EntryOptions::new().ttl(Duration::from_secs(600));
    cache.set("price", &100u32, &opts).await.unwrap();
    cache.set("gone", &1u32, &opts).await.unwrap();
    let stored = |key: &str| format!("{}:{{{key}}}", cache.namespace());

    server.kill();
    // The database moved on; the cache could not be told.
    cache.set("price", &101u32, &opts).await.unwrap();
    assert!(
        cache.delete("gone").await.is_err(),
        "a delete that cannot reach redis says so"
    );
    cache.set("price", &102u32, &opts).await.unwrap();
    assert_eq!(cache.pending_recovery(), 2, "deduplicated per key");

    server.restart();
    assert_eq!(
        server.cli(&["EXISTS", &stored("price")]),
        "1",
        "the old value survived the outage"
    );
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            server.cli(&["EXISTS", &stored("price")]) == "0"
                && server.cli(&["EXISTS", &stored("gone")]) == "0"
        })
        .await,
        "the outdated entries are removed once redis answers"
    );
    assert_eq!(cache.pending_recovery(), 0);
    let fresh = Cache::builder()
        .namespace(cache.namespace().to_string())
        .redis_url(&server.url())
        .build()
        .await
        .unwrap();
    assert_eq!(
        fresh.get::<u32>("price").await.unwrap(),
        None,
        "no instance reads the pre-outage value"
    );
}

/// Redis slow, not gone: every round trip through the proxy takes 800 ms,
/// far past the 150 ms timeout. Requests are cut off at the timeout, the
/// breaker opens and later requests do not wait on Redis at all; when the
/// link is fast again the breaker closes and Redis is used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_is_cut_off_by_the_timeout_and_the_breaker() {
    let server = RedisServer::start();
    let proxy = DelayProxy::start(server.port()).unwrap();
    let cache = cache_at(&proxy.url(), "slow").await;
    // Steady state first: an entry written before the first subscription
    // is dropped from L1 when it comes (writes may have been missed).
    assert!(
        common::eventually(Duration::from_secs(3), || async {
            cache.backplane_connected() == Some(true)
        })
        .await
    );
    let opts = EntryOptions::new().ttl(Duration::from_secs(60));
    cache.set("warm", &1u32, &opts).await.unwrap();
    let loads = Arc::new(AtomicUsize::new(0));

    proxy.set_delay(Duration::from_millis(400));
    let slowest = load_concurrently(&cache, "slow", 64, &loads).await;
    assert!(
        slowest < REDIS_TIMEOUT * 2 + Duration::from_millis(400),
        "slowest {slowest:?}: nobody waited for the slow Redis"
    );
    assert_eq!(loads.load(Ordering::SeqCst), 64);
    assert_eq!(cache.breaker_state(), Some(BreakerState::Open));
    // With the breaker open, Redis is not called: a miss costs the loader only.
    let started = Instant::now();
    load_concurrently(&cache, "open", 20, &loads).await;
    assert!(started.elapsed() < REDIS_TIMEOUT, "{:?}", started.elapsed());
    assert_eq!(
        cache.get::<u32>("warm").await.unwrap(),
        Some(1),
        "L1 serves"
    );

    proxy.set_delay(Duration::ZERO);
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            cache.breaker_state() == Some(BreakerState::Closed)
        })
        .await,
        "the breaker closes once Redis is fast again"
    );
    // Redis is used again: a value written now reaches it.
    cache.set("after", &2u32, &opts).await.unwrap();
    let mut raw = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let stored = common::stored_key(cache.namespace(), "after");
    let exists: bool = redis::cmd("EXISTS")
        .arg(&stored)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(exists, "the write after recovery reached Redis");
}

/// `get_allow_stale` with Redis frozen, then killed (without answering in
/// between): an instance with the
/// stale value in L1 still answers with it, one without L1 answers "nothing
/// usable" — never an error, never later than one Redis timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_read_without_a_loader_survives_a_frozen_then_dead_redis() {
    let mut server = RedisServer::start();
    let with_l1 = cache_on(&server, "stale-read").await;
    let without_l1 = Cache::builder()
        .namespace(with_l1.namespace())
        .redis_url(&server.url())
        .redis_timeout(REDIS_TIMEOUT)
        .redis_connect_timeout(Duration::from_millis(100))
        .without_l1()
        .build()
        .await
        .unwrap();
    let opts = EntryOptions::new()
        .ttl(Duration::from_millis(100))
        .stale_for(Duration::from_secs(60));
    // An entry written before the first subscription is dropped from L1
    // when it comes (writes may have been missed meanwhile): subscribe first.
    assert!(with_l1.wait_for_backplane(Duration::from_secs(5)).await);
    with_l1.set("quote", &7u32, &opts).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let found = without_l1.get_allow_stale::<u32>("quote").await.unwrap();
    assert!(
        found
            .as_ref()
            .is_some_and(|f| f.is_stale() && f.value() == Some(&7)),
        "stale in Redis: {found:?}"
    );

    let bound = REDIS_TIMEOUT + Duration::from_millis(400);
    for fault in ["frozen", "killed"] {
        if fault == "frozen" {
            server.pause();
        } else {
            // Killed while still frozen: resumed first, it could answer the
            // backplane's heartbeat for a moment, and a backplane that comes
            // back after a gap drops what L1 held (invalidations may have
            // been missed) — a different case from the one tested here.
            server.kill();
        }
        let started = Instant::now();
        let found = with_l1.get_allow_stale::<u32>("quote").await;
        assert!(
            started.elapsed() < bound,
            "{fault}: {:?}",
            started.elapsed()
        );
        let found = found.unwrap_or_else(|err| panic!("{fault}: with L1: {err}"));
        assert!(
            found
                .as_ref()
                .is_some_and(|f| f.is_stale() && f.value() == Some(&7)),
            "{fault}: L1's stale copy: {found:?}"
        );
        let started = Instant::now();
        let found = without_l1.get_allow_stale::<u32>("quote").await;
        assert!(
            started.elapsed() < bound,
            "{fault}: {:?}",
            started.elapsed()
        );
        let found = found.unwrap_or_else(|err| panic!("{fault}: without L1: {err}"));
        assert!(found.is_none(), "{fault}: nothing reachable: {found:?}");
    }
}

/// A process too busy to read Redis's replies in time is not a Redis
/// outage. Redis answers slowly here (a second a round trip, far past the
/// 150 ms timeout), and the runtime is blocked while the calls' deadlines
/// pass: their timeouts are noticed long after the deadline, fail the calls
/// as usual, and are not counted toward the breaker — which would otherwise
/// send every later load around Redis, multiplying the database's work just
/// when the process is overloaded. The same slow calls on an idle runtime
/// time out on time and open the breaker.
#[test]
fn timeouts_noticed_late_by_a_busy_process_do_not_open_the_breaker() {
    let server = RedisServer::start();
    let proxy = DelayProxy::start(server.port()).unwrap();
    // One thread runs everything: blocking it stops every task at once.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let cache = cache_at(&proxy.url(), "busy").await;
        let namespace = cache.namespace().to_string();
        let late = || {
            counter(
                "stratacache_redis_late_timeouts_total",
                &[("cache", &namespace)],
            )
        };
        let reads = |prefix: &'static str| {
            (0..20)
                .map(|i| {
                    let cache = cache.clone();
                    tokio::spawn(async move { cache.get::<u32>(&format!("{prefix}:{i}")).await })
                })
                .collect::<Vec<_>>()
        };
        proxy.set_delay(Duration::from_millis(500));

        let pending = reads("busy");
        // Let the reads go out, then keep the process busy past their deadline.
        tokio::time::sleep(Duration::from_millis(20)).await;
        std::thread::sleep(REDIS_TIMEOUT * 3);
        for read in pending {
            assert_eq!(
                read.await.unwrap().unwrap(),
                None,
                "a timed-out read is a miss"
            );
        }
        assert_eq!(
            cache.breaker_state(),
            Some(BreakerState::Closed),
            "late timeouts do not open the breaker"
        );
        assert!(late() >= 3, "late timeouts are counted: {}", late());

        let before = late();
        for read in reads("idle") {
            assert_eq!(read.await.unwrap().unwrap(), None);
        }
        assert_eq!(
            cache.breaker_state(),
            Some(BreakerState::Open),
            "timeouts on time open the breaker"
        );
        assert_eq!(late(), before, "and are not counted as late");
        proxy.set_delay(Duration::ZERO);
    });
}

/// Once the backplane is known to be down (its heartbeat found Redis
/// frozen), L1 copies older than the trust bound may have missed an
/// invalidation and are not served as they are; with Redis unable to
/// answer, `get_allow_stale` still serves such a copy — marked stale, as a
/// load's fail-safe would — instead of nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_l1_copy_is_the_stale_fallback_while_redis_cannot_answer() {
    let mut server = RedisServer::start();
    let cache = builder_at(&server.url(), "stale-untrusted")
        // Copies older than 100 ms are untrusted while the backplane is down.
        .backplane_outage_l1_max_age(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    assert!(cache.wait_for_backplane(Duration::from_secs(5)).await);
    let opts = EntryOptions::new()
        .ttl(Duration::from_millis(100))
        .stale_for(Duration::from_secs(60));
    cache.set("quote", &7u32, &opts).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;

    server.pause();
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            cache.backplane_connected() == Some(false)
        })
        .await,
        "the heartbeat notices the frozen Redis"
    );
    for fault in ["frozen", "killed"] {
        if fault == "killed" {
            server.kill();
        }
        let started = Instant::now();
        let found = cache.get_allow_stale::<u32>("quote").await.unwrap();
        assert!(
            found
                .as_ref()
                .is_some_and(|f| f.is_stale() && f.value() == Some(&7)),
            "{fault}: {found:?}"
        );
        assert!(
            started.elapsed() < REDIS_TIMEOUT + Duration::from_millis(400),
            "{fault}: {:?}",
            started.elapsed()
        );
    }
}
