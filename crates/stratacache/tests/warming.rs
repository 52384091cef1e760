//! Cache warming, against a single Redis node and against the throwaway
//! 3-master Cluster: pipelined batches, progress, rate limit, skipped
//! entries, warming through a loader, and a Redis outage.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{stored_key, Raw, Target};
use futures::stream;
use stratacache::{BreakerConfig, Cache, EntryOptions, Loader, Resource, WarmSettings};
use stratacache_testkit::RedisServer;

against_every_target!(
    twenty_thousand_warmed_entries_reach_a_fresh_instance_through_redis,
    progress_is_reported_once_per_batch_with_growing_counts,
    the_rate_limit_is_a_lower_bound_on_the_duration,
    refused_entries_are_skipped_and_counted_and_the_rest_written,
    warming_through_a_loader_loads_only_missing_keys_once_per_batch,
);

fn opts() -> EntryOptions {
    EntryOptions::new().ttl(Duration::from_secs(600))
}

/// A cache on `namespace`, so that several instances can share it.
async fn instance(target: Target, namespace: &str) -> Cache {
    Cache::builder()
        .namespace(namespace)
        .redis(target.topology())
        .redis_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap()
}

fn entries(n: u32) -> impl futures::Stream<Item = (String, String)> + Send {
    stream::iter((0..n).map(|i| (format!("item:{i}"), format!("value {i}"))))
}

async fn twenty_thousand_warmed_entries_reach_a_fresh_instance_through_redis(target: Target) {
    let ns = common::namespace("warm-20k");
    let warmer = instance(target, &ns).await;
    // Spawned: the warm-up future can run on another task.
    let report = tokio::spawn({
        let warmer = warmer.clone();
        async move {
            warmer
                .warm(entries(20_000), &opts(), WarmSettings::new())
                .await
        }
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.written, 20_000, "{report:?}");
    assert_eq!(report.skipped, 0);
    assert_eq!(report.batches, 40);
    assert_eq!(report.l2_failed_batches, 0);

    // A new instance has an empty L1: every value must come from Redis.
    let fresh = instance(target, &ns).await;
    assert_eq!(fresh.l1_stats().unwrap().entries, 0);
    for chunk in (0..20_000u32).collect::<Vec<_>>().chunks(1_000) {
        let keys: Vec<String> = chunk.iter().map(|i| format!("item:{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let values = fresh.get_many::<String>(&refs).await.unwrap();
        for (i, value) in chunk.iter().zip(values) {
            assert_eq!(value, Some(format!("value {i}")), "item:{i}");
        }
    }
    let mut raw = Raw::connect(target).await;
    let pttl = raw.pttl(&stored_key(&ns, "item:12345")).await;
    assert!(pttl > 500_000 && pttl <= 600_000, "{pttl}");
}

async fn progress_is_reported_once_per_batch_with_growing_counts(target: Target) {
    let cache = common::builder(target, "warm-progress")
        .build()
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let settings = WarmSettings::new().batch_size(100).progress({
        let seen = seen.clone();
        move |p| seen.lock().unwrap().push(p)
    });
    // Every 100th entry has an empty (invalid) key: skipped, not fatal.
    let input = stream::iter((0..1_050u32).map(|i| {
        let key = if i % 100 == 42 {
            String::new()
        } else {
            format!("p:{i}")
        };
        (key, i)
    }));
    let report = cache.warm(input, &opts(), settings).await.unwrap();

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 11, "{seen:?}");
    assert_eq!(report.batches, 11);
    let done: Vec<u64> = seen.iter().map(|p| p.done).collect();
    let expected: Vec<u64> = (1..=10).map(|b| b * 100).chain([1_050]).collect();
    assert_eq!(done, expected);
    for (n, pair) in seen.windows(2).enumerate() {
        let (a, b) = (&pair[0], &pair[1]);
        assert_eq!(b.batches, a.batches + 1, "batch {n}");
        assert!(b.written > a.written, "batch {n}: {a:?} -> {b:?}");
        assert!(b.skipped >= a.skipped && b.elapsed >= a.elapsed);
    }
    for p in seen.iter() {
        assert_eq!(p.done, p.written + p.skipped);
        assert_eq!(p.l2_failed_batches, 0);
    }
    let last = seen.last().unwrap();
    assert_eq!((last.written, last.skipped), (1_039, 11));
    assert_eq!((report.written, report.skipped), (1_039, 11));
    assert!(last.elapsed <= report.elapsed);
    assert_eq!(cache.get::<u32>("p:1049").await.unwrap(), Some(1_049));
}

async fn the_rate_limit_is_a_lower_bound_on_the_duration(target: Target) {
    let cache = common::builder(target, "warm-rate").build().await.unwrap();
    let started = Instant::now();
    let report = cache
        .warm(
            entries(2_000),
            &opts(),
            WarmSettings::new().max_entries_per_sec(4_000),
        )
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(report.written, 2_000);
    // 2,000 entries at 4,000/s: half a second at the least. No upper bound:
    // a loaded machine may be slower.
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(report.elapsed >= Duration::from_millis(400), "{report:?}");

    // Under a slow rate, a batch holds at most one second's worth of entries.
    let batches = Arc::new(AtomicUsize::new(0));
    let report = cache
        .warm(
            entries(30),
            &opts(),
            WarmSettings::new().max_entries_per_sec(20).progress({
                let batches = batches.clone();
                move |_| {
                    batches.fetch_add(1, Ordering::SeqCst);
                }
            }),
        )
        .await
        .unwrap();
    assert_eq!(report.batches, 2);
    assert_eq!(batches.load(Ordering::SeqCst), 2);
    assert!(report.elapsed >= Duration::from_millis(1_200), "{report:?}");
}

async fn refused_entries_are_skipped_and_counted_and_the_rest_written(target: Target) {
    let cache = common::builder(target, "warm-oversized")
        .max_value_bytes(1_024)
        .build()
        .await
        .unwrap();
    let big = |i: u32| i == 10 || i == 77;
    let input = stream::iter((0..100u32).map(move |i| {
        let value = if big(i) {
            "x".repeat(4_000)
        } else {
            format!("small {i}")
        };
        let key = if i == 50 {
            String::new()
        } else {
            format!("o:{i}")
        };
        (key, value)
    }));
    let report = cache
        .warm(input, &opts(), WarmSettings::new().batch_size(25))
        .await
        .unwrap();
    assert_eq!(report.skipped, 3, "{report:?}");
    assert_eq!(report.written, 97);
    assert_eq!(report.batches, 4);

    let fresh = instance(target, cache.namespace()).await;
    let mut raw = Raw::connect(target).await;
    for i in (0..100u32).filter(|i| *i != 50) {
        let key = format!("o:{i}");
        let got = fresh.get::<String>(&key).await.unwrap();
        if big(i) {
            assert_eq!(got, None, "{key}");
            assert!(!raw.exists(&stored_key(cache.namespace(), &key)).await);
        } else {
            assert_eq!(got, Some(format!("small {i}")), "{key}");
        }
    }
}

/// Squares, except keys ≡ 3 (mod 7), which do not exist. Records every call.
#[derive(Clone, Default)]
struct Squares {
    batches: Arc<Mutex<Vec<Vec<u32>>>>,
    single_loads: Arc<AtomicUsize>,
}

impl Loader<u32, u64> for Squares {
    type Error = std::io::Error;

    async fn load(&self, key: &u32) -> Result<Option<u64>, Self::Error> {
        self.single_loads.fetch_add(1, Ordering::SeqCst);
        Ok((key % 7 != 3).then(|| u64::from(*key) * u64::from(*key)))
    }

    async fn load_many(&self, keys: &[u32]) -> Result<HashMap<u32, u64>, Self::Error> {
        self.batches.lock().unwrap().push(keys.to_vec());
        Ok(keys
            .iter()
            .filter(|k| *k % 7 != 3)
            .map(|k| (*k, u64::from(*k) * u64::from(*k)))
            .collect())
    }
}

async fn warming_through_a_loader_loads_only_missing_keys_once_per_batch(target: Target) {
    let ns = common::namespace("warm-loader");
    let cache = instance(target, &ns).await;
    // Another instance cached keys 0..100 and every even key: this instance
    // finds them in Redis (its L1 is empty), so they must not be loaded.
    let other = instance(target, &ns).await;
    let precached: Vec<(String, u64)> = (0..1_000u32)
        .filter(|k| *k < 100 || k % 2 == 0)
        .map(|k| (format!("sq:{k}"), u64::from(k) * u64::from(k)))
        .collect();
    let refs: Vec<(&str, u64)> = precached.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    other.set_many(&refs, &opts()).await.unwrap();

    let loader = Squares::default();
    let squares = Resource::new(cache.clone(), "sq", opts(), loader.clone());
    let settings = WarmSettings::new().batch_size(100);
    let report = cache
        .warm_with_loader(&squares, stream::iter(0..1_000u32), settings.clone())
        .await
        .unwrap();

    let batches = loader.batches.lock().unwrap().clone();
    // The first batch was all cached: no call. Each other batch: one call,
    // with the odd keys of that batch only.
    let expected: Vec<Vec<u32>> = (1..10)
        .map(|b| (b * 100..(b + 1) * 100).filter(|k| k % 2 == 1).collect())
        .collect();
    assert_eq!(batches, expected);
    assert_eq!(loader.single_loads.load(Ordering::SeqCst), 0);
    let unknown = (100..1_000u32).filter(|k| k % 2 == 1 && k % 7 == 3).count() as u64;
    assert_eq!(report.batches, 10);
    assert_eq!(report.skipped, unknown, "{report:?}");
    assert_eq!(report.written, 1_000 - unknown);

    // Everything is cached now, the unknown keys as absent: a second pass
    // loads nothing.
    let again = cache
        .warm_with_loader(&squares, stream::iter(0..1_000u32), settings)
        .await
        .unwrap();
    assert_eq!(loader.batches.lock().unwrap().len(), 9);
    assert_eq!(
        (again.written, again.skipped),
        (report.written, report.skipped)
    );

    // And a fresh instance reads the loaded values from Redis.
    let fresh = instance(target, &ns).await;
    assert_eq!(fresh.get::<u64>("sq:999").await.unwrap(), Some(999 * 999));
    assert_eq!(fresh.get::<u64>("sq:101").await.unwrap(), None);
    assert!(fresh.exists("sq:995").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_entries_go_to_l1_and_failed_batches_are_counted() {
    let mut server = RedisServer::start();
    server.kill();
    let cache = Cache::builder()
        .namespace(common::namespace("warm-down"))
        .redis_url(&server.url())
        .redis_timeout(Duration::from_millis(150))
        .redis_connect_timeout(Duration::from_millis(100))
        .breaker(BreakerConfig {
            failure_threshold: 3,
            probe_interval: Duration::from_millis(100),
        })
        .build()
        .await
        .unwrap();
    let report = cache
        .warm(entries(1_000), &opts(), WarmSettings::new().batch_size(100))
        .await
        .unwrap();
    assert_eq!(report.written, 1_000, "{report:?}");
    assert_eq!(report.batches, 10);
    assert_eq!(report.l2_failed_batches, 10);
    assert_eq!(
        cache.get::<String>("item:999").await.unwrap().as_deref(),
        Some("value 999")
    );
    assert_eq!(cache.l1_stats().unwrap().entries, 1_000);
}

#[tokio::test]
async fn invalid_settings_and_options_are_refused_before_anything_is_written() {
    let cache = Cache::builder()
        .namespace(common::namespace("warm-invalid"))
        .without_l2()
        .build()
        .await
        .unwrap();
    for settings in [
        WarmSettings::new().batch_size(0),
        WarmSettings::new().max_entries_per_sec(0),
    ] {
        assert!(matches!(
            cache.warm(entries(10), &opts(), settings).await,
            Err(stratacache::Error::Config(_))
        ));
    }
    let zero_ttl = EntryOptions::new().ttl(Duration::ZERO);
    assert!(cache
        .warm(entries(10), &zero_ttl, WarmSettings::new())
        .await
        .is_err());
    assert_eq!(cache.l1_stats().unwrap().entries, 0);

    // Without Redis, warming fills L1 and nothing counts as failed.
    let report = cache
        .warm(entries(10), &opts(), WarmSettings::new())
        .await
        .unwrap();
    assert_eq!((report.written, report.l2_failed_batches), (10, 0));
}
