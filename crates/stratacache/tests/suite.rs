//! The core behaviour of the cache, run twice: against a single Redis node and
//! against a throwaway 3-master Redis Cluster.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{counter, stored_key, Raw, Target};
use stratacache::{Cache, EntryOptions, Error, Loaded, Loader, Policy, Resource};

against_every_target!(
    a_value_is_served_from_l1_then_from_l2_by_another_instance,
    entries_expire_after_their_ttl,
    l1_ttl_bounds_how_long_an_instance_trusts_its_copy,
    a_write_reaches_every_instances_l1_through_the_backplane,
    jitter_spreads_expiries_below_the_ttl,
    absent_values_are_cached_as_a_distinct_negative_marker,
    a_thousand_concurrent_callers_on_a_cold_key_cause_one_load,
    a_failing_load_gives_every_waiting_caller_the_error,
    damaged_entries_are_deleted_and_entries_of_another_type_left_alone,
    oversized_values_are_refused_and_nothing_is_written,
    multi_key_operations_span_hash_slots,
    load_many_sends_only_missing_keys_to_the_loader_in_one_call,
    the_loader_can_adapt_ttl_tags_or_skip_caching,
    write_through_updates_both_tiers_and_a_failed_write_changes_nothing,
    long_and_odd_keys_are_stored_safely,
    concurrent_reads_share_mgets_and_each_caller_gets_its_own_value,
    shared_reads_hand_out_the_l1_value_and_see_every_write,
);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Every call is counted under its policy: one the cache was built with,
/// options labelled by a policy it was not built with, and the default —
/// from many tasks at once, each series counting only its own calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_counted_under_their_policy() {
    common::record_metrics();
    let cache = common::builder(Target::Single, "policy-labels")
        .policy("prices", EntryOptions::new().ttl(secs(60)))
        .build()
        .await
        .unwrap();
    let ns = cache.namespace().to_string();
    let registered = cache.policy("prices").unwrap().clone();
    let unregistered = Policy::new("adhoc", EntryOptions::new().ttl(secs(60)))
        .options()
        .clone();
    let default = EntryOptions::new().ttl(secs(60));
    let calls = [(registered, "p"), (unregistered, "a"), (default, "d")];
    // The first call of each key loads it; 99 concurrent calls after it find it in L1.
    for (opts, key) in &calls {
        let load = || async { Ok::<_, std::io::Error>(7u32) };
        assert_eq!(cache.get_or_load(key, opts, load).await.unwrap(), 7);
        let tasks: Vec<_> = (0..99)
            .map(|_| {
                let (cache, opts, key) = (cache.clone(), opts.clone(), *key);
                tokio::spawn(async move { cache.get_or_load(key, &opts, load).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), 7);
        }
    }
    for policy in ["prices", "adhoc", "default"] {
        let labels = [("cache", ns.as_str()), ("policy", policy)];
        let l1 = [labels[0], labels[1], ("tier", "l1")];
        assert_eq!(
            counter("stratacache_loads_total", &labels),
            1,
            "{policy}: {:?}",
            common::counters_of(&ns)
        );
        assert_eq!(
            counter("stratacache_hits_total", &l1),
            99,
            "{policy}: {:?}",
            common::counters_of(&ns)
        );
    }
}

async fn a_value_is_served_from_l1_then_from_l2_by_another_instance(target: Target) {
    common::record_metrics();
    let ns = common::namespace("tiers");
    let build = || {
        Cache::builder()
            .namespace(ns.clone())
            .redis(target.topology())
            .build()
    };
    let first = build().await.unwrap();
    let second = build().await.unwrap();
    let opts = EntryOptions::new().ttl(secs(60));

    assert_eq!(first.get::<String>("greeting").await.unwrap(), None);
    first
        .set("greeting", &"hello".to_string(), &opts)
        .await
        .unwrap();
    assert_eq!(
        first.get::<String>("greeting").await.unwrap().as_deref(),
        Some("hello")
    );
    let tier = |t: &'static str, what: &'static str| {
        let ns = ns.clone();
        move || counter(what, &[("cache", &ns), ("tier", t)])
    };
    assert_eq!(
        tier("l1", "stratacache_hits_total")(),
        1,
        "{:?}",
        common::counters_of(&ns)
    );
    assert_eq!(tier("l2", "stratacache_misses_total")(), 1);

    // The second instance has an empty L1: the value comes from Redis, then from its L1.
    assert_eq!(
        second.get::<String>("greeting").await.unwrap().as_deref(),
        Some("hello")
    );
    assert_eq!(tier("l2", "stratacache_hits_total")(), 1);
    // The backplane message of `first`'s write may reach `second` after its
    // read filled L1 and drop that copy (the safe order for a message
    // racing a read); the copy made after it stays.
    assert!(
        common::eventually(secs(5), || async {
            let hits = tier("l1", "stratacache_hits_total")();
            let value = second.get::<String>("greeting").await.unwrap();
            value.as_deref() == Some("hello") && tier("l1", "stratacache_hits_total")() > hits
        })
        .await,
        "the second instance serves the value from its L1"
    );

    assert!(second.exists("greeting").await.unwrap());
    second.delete("greeting").await.unwrap();
    assert!(!second.exists("greeting").await.unwrap());
    // `first` still has its L1 copy: cross-instance L1 invalidation is the backplane's job.
    first.clear_l1();
    assert_eq!(first.get::<String>("greeting").await.unwrap(), None);
}

async fn entries_expire_after_their_ttl(target: Target) {
    let cache = common::builder(target, "ttl").build().await.unwrap();
    let opts = EntryOptions::new().ttl(Duration::from_millis(400));
    cache.set("short", &1u32, &opts).await.unwrap();
    let ttl = cache.ttl("short").await.unwrap().expect("has a ttl");
    assert!(
        ttl <= Duration::from_millis(400) && ttl > Duration::from_millis(200),
        "{ttl:?}"
    );
    assert_eq!(cache.get::<u32>("short").await.unwrap(), Some(1));
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert_eq!(cache.get::<u32>("short").await.unwrap(), None);
    assert_eq!(cache.ttl("short").await.unwrap(), None);
}

async fn l1_ttl_bounds_how_long_an_instance_trusts_its_copy(target: Target) {
    let ns = common::namespace("l1ttl");
    let reader = Cache::builder()
        .namespace(ns.clone())
        .redis(target.topology())
        .build()
        .await
        .unwrap();
    let writer = Cache::builder()
        .namespace(ns.clone())
        .redis(target.topology())
        .without_l1()
        .build()
        .await
        .unwrap();
    let opts = EntryOptions::new()
        .ttl(secs(60))
        .l1_ttl(Duration::from_millis(300));
    writer.set("k", &1u32, &opts).await.unwrap();
    writer.set("other", &2u32, &opts).await.unwrap();
    assert_eq!(
        reader.get_with_options::<u32>("k", &opts).await.unwrap(),
        Some(1)
    );
    // Change the entry behind the caches' backs: no invalidation message, as
    // if it were lost.
    let mut raw = Raw::connect(target).await;
    let newer = raw.get(&stored_key(&ns, "other")).await.unwrap();
    raw.set(&stored_key(&ns, "k"), &newer).await;
    // Within l1_ttl the reader may serve its copy; after it, it must re-read Redis.
    assert_eq!(
        reader.get_with_options::<u32>("k", &opts).await.unwrap(),
        Some(1)
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        reader.get_with_options::<u32>("k", &opts).await.unwrap(),
        Some(2)
    );
}

async fn a_write_reaches_every_instances_l1_through_the_backplane(target: Target) {
    let ns = common::namespace("backplane");
    let build = || {
        Cache::builder()
            .namespace(ns.clone())
            .redis(target.topology())
            .build()
    };
    let (a, b, c) = (
        build().await.unwrap(),
        build().await.unwrap(),
        build().await.unwrap(),
    );
    let opts = EntryOptions::new().ttl(secs(60));
    for cache in [&a, &b, &c] {
        assert!(
            common::eventually(secs(3), || async {
                cache.backplane_connected() == Some(true)
            })
            .await,
            "backplane subscribed"
        );
    }
    a.set("k", &1u32, &opts).await.unwrap();
    assert_eq!(b.get::<u32>("k").await.unwrap(), Some(1));
    assert_eq!(c.get::<u32>("k").await.unwrap(), Some(1));
    a.set("k", &2u32, &opts).await.unwrap();
    for cache in [&b, &c] {
        assert!(
            common::eventually(Duration::from_millis(50), || async {
                cache.get::<u32>("k").await.unwrap() == Some(2)
            })
            .await,
            "the old L1 copy is dropped within 50 ms"
        );
    }
    a.delete("k").await.unwrap();
    for cache in [&b, &c] {
        assert!(
            common::eventually(Duration::from_millis(50), || async {
                cache.get::<u32>("k").await.unwrap().is_none()
            })
            .await
        );
    }
}

async fn jitter_spreads_expiries_below_the_ttl(target: Target) {
    let cache = common::builder(target, "jitter").build().await.unwrap();
    let opts = EntryOptions::new().ttl(secs(100)).jitter(0.5);
    let mut ttls = Vec::new();
    for i in 0..200 {
        let key = format!("k{i}");
        cache.set(&key, &i, &opts).await.unwrap();
        ttls.push(cache.ttl(&key).await.unwrap().unwrap().as_secs_f64());
    }
    // Uniform over [50 s, 100 s]: all inside, both halves well populated.
    assert!(ttls.iter().all(|t| (49.0..=100.0).contains(t)), "{ttls:?}");
    let low = ttls.iter().filter(|t| **t < 75.0).count();
    assert!((60..=140).contains(&low), "{low} of 200 below the midpoint");
    // Redis's own TTL follows the jittered expiry too.
    let mut raw = Raw::connect(target).await;
    let ns_key = stored_key(cache.namespace(), "k0");
    let pttl = raw.pttl(&ns_key).await;
    assert!((49_000..=100_000).contains(&pttl), "{pttl}");
}

async fn absent_values_are_cached_as_a_distinct_negative_marker(target: Target) {
    let cache = common::builder(target, "negative").build().await.unwrap();
    let loads = Arc::new(AtomicUsize::new(0));
    let opts = EntryOptions::new()
        .ttl(secs(60))
        .negative_ttl(Duration::from_millis(500));
    for _ in 0..50 {
        let loads = loads.clone();
        let found: Option<String> = cache
            .get_or_load_optional("user:404", &opts, move || async move {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(None)
            })
            .await
            .unwrap();
        assert_eq!(found, None);
    }
    assert_eq!(
        loads.load(Ordering::SeqCst),
        1,
        "one query per id per negative TTL"
    );

    let mut raw = Raw::connect(target).await;
    let stored = raw
        .get(&stored_key(cache.namespace(), "user:404"))
        .await
        .expect("marker stored");
    assert!(
        stored.starts_with(b"SC"),
        "an envelope, not the string \"null\""
    );
    assert_ne!(stored.as_slice(), b"null");
    assert!(
        !cache.exists("user:404").await.unwrap(),
        "a marker is not a value"
    );

    // The marker is per-key: a real value elsewhere is unaffected, and after
    // the negative TTL the loader is asked again.
    tokio::time::sleep(Duration::from_millis(650)).await;
    let loads2 = loads.clone();
    let found: Option<String> = cache
        .get_or_load_optional("user:404", &opts, move || async move {
            loads2.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(Some("now exists".to_string()))
        })
        .await
        .unwrap();
    assert_eq!(found.as_deref(), Some("now exists"));
    assert_eq!(loads.load(Ordering::SeqCst), 2);
}

async fn a_thousand_concurrent_callers_on_a_cold_key_cause_one_load(target: Target) {
    common::record_metrics();
    let cache = common::builder(target, "stampede").build().await.unwrap();
    let loads = Arc::new(AtomicUsize::new(0));
    let opts = EntryOptions::new().ttl(secs(60));
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (cache, loads, opts) = (cache.clone(), loads.clone(), opts.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_load("hot", &opts, move || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok::<_, std::io::Error>(vec![1u8, 2, 3])
                })
                .await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), vec![1u8, 2, 3]);
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    let ns = cache.namespace();
    assert_eq!(counter("stratacache_loads_total", &[("cache", ns)]), 1);
    let joined = counter("stratacache_coalesced_total", &[("cache", ns)]);
    let l1_hits = counter("stratacache_hits_total", &[("cache", ns), ("tier", "l1")]);
    assert_eq!(
        joined + l1_hits,
        999,
        "every other caller joined the flight or found its result"
    );
}

async fn a_failing_load_gives_every_waiting_caller_the_error(target: Target) {
    let cache = common::builder(target, "stampede-err")
        .build()
        .await
        .unwrap();
    let loads = Arc::new(AtomicUsize::new(0));
    let opts = EntryOptions::new().ttl(secs(60));
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (cache, loads, opts) = (cache.clone(), loads.clone(), opts.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_load::<u64, _, _, _>("hot", &opts, move || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Err(std::io::Error::other("database is down"))
                })
                .await
        }));
    }
    for task in tasks {
        match task.await.unwrap() {
            Err(Error::Loader(e)) => assert_eq!(e.to_string(), "database is down"),
            other => panic!("expected the loader's error, got {other:?}"),
        }
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(
        cache.get::<u64>("hot").await.unwrap(),
        None,
        "errors are not cached"
    );
}

async fn damaged_entries_are_deleted_and_entries_of_another_type_left_alone(target: Target) {
    common::record_metrics();
    let cache = common::builder(target, "corrupt").build().await.unwrap();
    let ns = cache.namespace().to_string();
    let mut raw = Raw::connect(target).await;
    let garbage = stored_key(&ns, "garbage");
    raw.set(&garbage, b"\x00\xffnot an envelope").await;
    assert_eq!(cache.get::<String>("garbage").await.unwrap(), None);
    assert!(gone(target, &garbage).await, "corrupt entry deleted");

    // A deploy changed the type: written as a string, read as a number.
    // Another version's entry, intact: a miss here, and left alone — in a
    // rolling deploy the old instances still read it.
    let opts = EntryOptions::new().ttl(secs(60));
    cache
        .set("retyped", &"not a number".to_string(), &opts)
        .await
        .unwrap();
    cache.clear_l1();
    assert_eq!(cache.get::<u64>("retyped").await.unwrap(), None);
    let retyped = stored_key(&ns, "retyped");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        raw.exists(&retyped).await,
        "another type's entry is not deleted"
    );
    assert_eq!(
        cache.get::<String>("retyped").await.unwrap().as_deref(),
        Some("not a number")
    );
    assert_eq!(
        counter("stratacache_corrupt_entries_total", &[("cache", &ns)]),
        1,
        "only the damaged one"
    );
    assert!(counter("stratacache_foreign_entries_total", &[("cache", &ns)]) >= 1);

    // get_or_load treats it as a miss and repairs the entry.
    raw.set(&stored_key(&ns, "repair"), b"SC\x01garbage").await;
    let v: u64 = cache
        .get_or_load("repair", &opts, || async { Ok::<_, std::io::Error>(7) })
        .await
        .unwrap();
    assert_eq!(v, 7);
    cache.clear_l1();
    assert_eq!(cache.get::<u64>("repair").await.unwrap(), Some(7));
}

/// Whether `key` disappears from Redis within two seconds.
async fn gone(target: Target, key: &str) -> bool {
    common::eventually(secs(2), || async move {
        !Raw::connect(target).await.exists(key).await
    })
    .await
}

async fn oversized_values_are_refused_and_nothing_is_written(target: Target) {
    let cache = common::builder(target, "oversized")
        .max_value_bytes(2_000)
        .build()
        .await
        .unwrap();
    let opts = EntryOptions::new().ttl(secs(60));
    // Incompressible, so compression cannot bring it under the bound.
    let mut seed = 0x9E3779B97F4A7C15u64;
    let big: Vec<u64> = (0..1_000)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        })
        .collect();
    match cache.set("big", &big, &opts).await {
        Err(Error::ValueTooLarge { size, max, .. }) => assert!(size > max && max == 2_000),
        other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    assert_eq!(cache.get::<Vec<u64>>("big").await.unwrap(), None);
    let mut raw = Raw::connect(target).await;
    assert!(!raw.exists(&stored_key(cache.namespace(), "big")).await);
    // A loaded value that is too large is returned but not cached.
    let loaded: Vec<u64> = cache
        .get_or_load(
            "big",
            &opts,
            move || async move { Ok::<_, std::io::Error>(big) },
        )
        .await
        .unwrap();
    assert_eq!(loaded.len(), 1_000);
    assert!(!raw.exists(&stored_key(cache.namespace(), "big")).await);
    // The bound is on the encoded value; compression only saves space in Redis.
    let zeros = vec![0u64; 700];
    cache.set("zeros", &zeros, &opts).await.unwrap();
    let stored = raw
        .get(&stored_key(cache.namespace(), "zeros"))
        .await
        .unwrap();
    assert!(stored.len() < 200, "compressed: {} bytes", stored.len());
    cache.clear_l1();
    assert_eq!(cache.get::<Vec<u64>>("zeros").await.unwrap(), Some(zeros));
    assert!(matches!(
        cache.set("zeros", &vec![0u64; 1_000], &opts).await,
        Err(Error::ValueTooLarge { .. })
    ));
}

async fn multi_key_operations_span_hash_slots(target: Target) {
    let cache = common::builder(target, "multi").build().await.unwrap();
    let opts = EntryOptions::new().ttl(secs(60));
    let owned: Vec<(String, u32)> = (0..100).map(|i| (format!("item:{i}"), i)).collect();
    let entries: Vec<(&str, u32)> = owned.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    cache.set_many(&entries, &opts).await.unwrap();
    let keys: Vec<&str> = entries
        .iter()
        .map(|(k, _)| *k)
        .chain(["missing:1", "missing:2"])
        .collect();
    cache.clear_l1();
    let values = cache.get_many::<u32>(&keys).await.unwrap();
    assert_eq!(values.len(), 102);
    for (i, value) in values.iter().take(100).enumerate() {
        assert_eq!(*value, Some(i as u32));
    }
    assert_eq!(values[100], None);
    let some: Vec<&str> = keys[..50].to_vec();
    cache.delete_many(&some).await.unwrap();
    cache.clear_l1();
    let values = cache.get_many::<u32>(&keys).await.unwrap();
    assert_eq!(values.iter().filter(|v| v.is_some()).count(), 50);
}

/// Rows exist for ids not ending in 9; records every call's keys.
#[derive(Default, Clone)]
struct CountingLoader {
    batches: Arc<Mutex<Vec<Vec<u32>>>>,
}

impl Loader<u32, String> for CountingLoader {
    type Error = std::io::Error;

    async fn load(&self, key: &u32) -> Result<Option<String>, Self::Error> {
        self.batches.lock().unwrap().push(vec![*key]);
        Ok((key % 10 != 9).then(|| format!("row {key}")))
    }

    async fn load_many(&self, keys: &[u32]) -> Result<HashMap<u32, String>, Self::Error> {
        self.batches.lock().unwrap().push(keys.to_vec());
        Ok(keys
            .iter()
            .filter(|k| *k % 10 != 9)
            .map(|k| (*k, format!("row {k}")))
            .collect())
    }
}

async fn load_many_sends_only_missing_keys_to_the_loader_in_one_call(target: Target) {
    let cache = common::builder(target, "loadmany").build().await.unwrap();
    let loader = CountingLoader::default();
    let rows = Resource::new(
        cache.clone(),
        "row",
        EntryOptions::new().ttl(secs(60)),
        loader.clone(),
    );
    assert_eq!(rows.get(&3).await.unwrap().as_deref(), Some("row 3"));
    assert_eq!(rows.get(&19).await.unwrap(), None);
    loader.batches.lock().unwrap().clear();

    let keys: Vec<u32> = (0..40).chain([3, 3]).collect();
    let found = rows.get_many(&keys).await.unwrap();
    let batches = loader.batches.lock().unwrap().clone();
    assert_eq!(batches.len(), 1, "one loader call: {batches:?}");
    let mut asked = batches[0].clone();
    asked.sort();
    let expected: Vec<u32> = (0..40).filter(|k| *k != 3 && *k != 19).collect();
    assert_eq!(asked, expected, "only the keys no tier had");
    assert_eq!(found.len(), 36, "ids ending in 9 do not exist");
    assert_eq!(found[&3], "row 3");
    assert!(!found.contains_key(&9));

    // Another instance (cold L1) gets every key, present or absent, from Redis.
    let other_instance = Cache::builder()
        .namespace(cache.namespace().to_string())
        .redis(target.topology())
        .build()
        .await
        .unwrap();
    let other = Resource::new(
        other_instance,
        "row",
        EntryOptions::new().ttl(secs(60)),
        loader.clone(),
    );
    loader.batches.lock().unwrap().clear();
    assert_eq!(other.get_many(&keys).await.unwrap(), found);
    assert!(
        loader.batches.lock().unwrap().is_empty(),
        "absent ids are negatively cached too"
    );
}

async fn the_loader_can_adapt_ttl_tags_or_skip_caching(target: Target) {
    let cache = common::builder(target, "adapt").build().await.unwrap();
    let opts = EntryOptions::new().ttl(secs(600));
    let v: Option<u32> = cache
        .get_or_load_with_context("short", &opts, |_| async {
            Ok::<_, std::io::Error>(
                Loaded::value(1)
                    .ttl(Duration::from_secs(5))
                    .tags(["sector:tech"]),
            )
        })
        .await
        .unwrap()
        .into_value();
    assert_eq!(v, Some(1));
    let ttl = cache.ttl("short").await.unwrap().unwrap();
    assert!(ttl <= secs(5), "{ttl:?}");
    let mut raw = Raw::connect(target).await;
    let stored = raw
        .get(&stored_key(cache.namespace(), "short"))
        .await
        .unwrap();
    assert!(
        stored.windows(11).any(|w| w == b"sector:tech"),
        "tags kept in the envelope"
    );

    let calls = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let calls = calls.clone();
        let v: Option<u32> = cache
            .get_or_load_with_context("volatile", &opts, move |_| async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(Loaded::value(2).dont_cache())
            })
            .await
            .unwrap()
            .into_value();
        assert_eq!(v, Some(2));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert!(!raw.exists(&stored_key(cache.namespace(), "volatile")).await);
}

async fn write_through_updates_both_tiers_and_a_failed_write_changes_nothing(target: Target) {
    let cache = common::builder(target, "writethrough")
        .build()
        .await
        .unwrap();
    let opts = EntryOptions::new().ttl(secs(60));
    cache.set("price:ACME", &100u32, &opts).await.unwrap();
    let v = cache
        .write_through("price:ACME", &opts, || async {
            Ok::<_, std::io::Error>(101u32)
        })
        .await
        .unwrap();
    assert_eq!(v, 101);
    assert_eq!(cache.get::<u32>("price:ACME").await.unwrap(), Some(101));
    cache.clear_l1();
    assert_eq!(cache.get::<u32>("price:ACME").await.unwrap(), Some(101));

    let failed = cache
        .write_through::<u32, _, _, _>("price:ACME", &opts, || async {
            Err(std::io::Error::other("constraint violated"))
        })
        .await;
    assert!(matches!(failed, Err(Error::Loader(_))));
    assert_eq!(cache.get::<u32>("price:ACME").await.unwrap(), Some(101));
}

async fn long_and_odd_keys_are_stored_safely(target: Target) {
    let cache = common::builder(target, "keys").build().await.unwrap();
    let opts = EntryOptions::new().ttl(secs(60));
    let long = "k".repeat(100_000);
    let keys = [
        long.as_str(),
        "with space",
        "ünïcødé/✓",
        "{braces}",
        "a}b{c",
        "\u{0}\u{1}binary",
        ":",
    ];
    for (i, key) in keys.iter().enumerate() {
        cache.set(key, &i, &opts).await.unwrap();
    }
    cache.clear_l1();
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            cache.get::<usize>(key).await.unwrap(),
            Some(i),
            "{key:.20?}"
        );
    }
    assert!(matches!(
        cache.get::<u32>("").await,
        Err(Error::InvalidKey { .. })
    ));
    let mut raw = Raw::connect(target).await;
    assert!(
        !raw.exists(&stored_key(cache.namespace(), &long)).await,
        "a long key is hashed"
    );
}

async fn concurrent_reads_share_mgets_and_each_caller_gets_its_own_value(target: Target) {
    common::record_metrics();
    let writer = common::builder(target, "batched").build().await.unwrap();
    let namespace = writer.namespace().to_string();
    let reader = Cache::builder()
        .namespace(namespace.clone())
        .redis(target.topology())
        .redis_timeout(secs(2))
        .without_l1()
        .build()
        .await
        .unwrap();
    let opts = EntryOptions::new().ttl(secs(60));
    let keys = 500;
    for i in 0..keys {
        writer.set(&format!("item:{i}"), &i, &opts).await.unwrap();
    }
    // Present, absent and repeated keys, all at once: every caller must get
    // the value of its own key, whichever MGET carried it.
    let mut tasks = Vec::new();
    for round in 0..4 {
        for i in 0..keys + 50 {
            let reader = reader.clone();
            tasks.push(tokio::spawn(async move {
                let key = format!("item:{}", (i + round * 7) % (keys + 50));
                let value = reader.get::<usize>(&key).await.unwrap();
                (key, value)
            }));
        }
    }
    for task in tasks {
        let (key, value) = task.await.unwrap();
        let i: usize = key["item:".len()..].parse().unwrap();
        let expected = (i < keys).then_some(i);
        assert_eq!(value, expected, "{key}");
    }
    let batched = counter(
        "stratacache_redis_batched_reads_total",
        &[("cache", &namespace)],
    );
    assert!(batched > 0, "2,200 concurrent reads were all sent alone");
}

/// `get_or_load_shared`: hits of one instance share L1's value (no clone),
/// and a write on another instance is seen as with `get_or_load`.
async fn shared_reads_hand_out_the_l1_value_and_see_every_write(target: Target) {
    let ns = common::namespace("shared");
    let build = || {
        Cache::builder()
            .namespace(ns.clone())
            .redis(target.topology())
            .build()
    };
    let (a, b) = (build().await.unwrap(), build().await.unwrap());
    for cache in [&a, &b] {
        assert!(
            common::eventually(secs(3), || async {
                cache.backplane_connected() == Some(true)
            })
            .await,
            "backplane subscribed"
        );
    }
    let opts = EntryOptions::new().ttl(secs(60));
    let loads = Arc::new(AtomicUsize::new(0));
    let load = |value: &'static str| {
        let loads = loads.clone();
        move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(vec![value.to_owned()])
        }
    };
    let first = a
        .get_or_load_shared("row", &opts, load("v1"))
        .await
        .unwrap();
    let second = a
        .get_or_load_shared("row", &opts, load("v9"))
        .await
        .unwrap();
    let third = a
        .get_or_load_shared("row", &opts, load("v9"))
        .await
        .unwrap();
    assert_eq!(*first, vec!["v1".to_owned()]);
    assert!(Arc::ptr_eq(&second, &third), "two hits share one value");
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    let other: Arc<Vec<String>> = b
        .get_or_load_shared("row", &opts, load("v9"))
        .await
        .unwrap();
    assert_eq!(*other, vec!["v1".to_owned()], "b found it in L2");
    b.set("row", &vec!["v2".to_owned()], &opts).await.unwrap();
    assert!(
        common::eventually(Duration::from_millis(200), || async {
            *a.get_or_load_shared("row", &opts, load("v9"))
                .await
                .unwrap()
                == vec!["v2".to_owned()]
        })
        .await,
        "the write on b replaced a's L1 copy"
    );
    assert_eq!(loads.load(Ordering::SeqCst), 1, "no load after the write");
}
