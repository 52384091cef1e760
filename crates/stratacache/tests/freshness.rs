//! Freshness across instances: leases, stale-while-revalidate, fail-safe,
//! soft and hard timeouts, conditional and early refresh — on a single node
//! and on a Cluster.

#[macro_use]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{counter, stored_key, Raw, Target};
use stratacache::{Cache, EagerRefresh, EntryOptions, Error, LoadContext, Loaded};

against_every_target!(
    instances_share_one_load_through_the_lease,
    a_stale_entry_is_returned_at_once_and_refreshed_once_across_instances,
    fail_safe_serves_stale_while_the_source_fails_then_its_error,
    past_the_soft_timeout_the_stale_value_is_served_and_the_load_finishes,
    past_the_hard_timeout_without_stale_data_the_caller_gets_a_timeout,
    a_not_modified_answer_renews_the_entry_without_rewriting_the_value,
    refresh_ahead_replaces_hot_entries_before_they_expire,
    xfetch_refreshes_once_before_expiry,
    a_read_without_a_loader_may_take_a_stale_value_and_says_so,
    with_fail_safe_off_a_failing_load_returns_its_error,
);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Two caches on the same namespace: two instances of one service.
async fn two_instances(target: Target, test: &str) -> (Cache, Cache) {
    common::record_metrics();
    let ns = common::namespace(test);
    let build = || {
        Cache::builder()
            .namespace(ns.clone())
            .redis(target.topology())
            .redis_timeout(Duration::from_secs(2))
            .build()
    };
    (build().await.unwrap(), build().await.unwrap())
}

type BoxedLoad<V> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Loaded<V>, std::io::Error>> + Send>>;

/// A loader that counts its calls, waits `delay` and returns `value`.
fn counting<V: Clone + Send + 'static>(
    calls: &Arc<AtomicUsize>,
    delay: Duration,
    value: V,
) -> impl FnOnce(LoadContext<V>) -> BoxedLoad<V> + Send + 'static {
    let calls = calls.clone();
    move |_| {
        Box::pin(async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            Ok(Loaded::value(value))
        })
    }
}

async fn instances_share_one_load_through_the_lease(target: Target) {
    let (a, b) = two_instances(target, "lease").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let opts = EntryOptions::new().ttl(Duration::from_secs(60));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let cache = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (opts, loader) = (opts.clone(), counting(&calls, ms(300), 42u32));
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let got = cache
                .get_or_load_with_context("cold", &opts, loader)
                .await
                .unwrap();
            (got, started.elapsed())
        }));
    }
    for task in tasks {
        let (got, took) = task.await.unwrap();
        assert_eq!(got.into_value(), Some(42));
        // Waiters are woken by the fill notification, not a polling interval.
        assert!(took < ms(300 + 250), "{took:?}");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one load across both instances"
    );
    let waits = counter("stratacache_lease_waits_total", &[("cache", a.namespace())]);
    assert_eq!(waits, 1, "the other instance waited on the lease once");
}

async fn a_stale_entry_is_returned_at_once_and_refreshed_once_across_instances(target: Target) {
    let (a, b) = two_instances(target, "swr").await;
    let opts = EntryOptions::new()
        .ttl(ms(300))
        .stale_for(Duration::from_secs(30));
    let calls = Arc::new(AtomicUsize::new(0));
    a.get_or_load_with_context("overview", &opts, counting(&calls, ms(0), 1u32))
        .await
        .unwrap();
    b.get_or_load_with_context("overview", &opts, counting(&calls, ms(0), 1u32))
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tokio::time::sleep(ms(350)).await;

    let mut tasks = Vec::new();
    for i in 0..100 {
        let cache = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (opts, loader) = (opts.clone(), counting(&calls, ms(300), 2u32));
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let got = cache
                .get_or_load_with_context("overview", &opts, loader)
                .await
                .unwrap();
            (got, started.elapsed())
        }));
    }
    for task in tasks {
        let (got, took) = task.await.unwrap();
        assert!(got.is_stale());
        assert_eq!(got.value(), Some(&1));
        assert!(
            took < ms(150),
            "a stale read does not wait for the loader: {took:?}"
        );
    }
    // The refresh lands in the background, once for both instances.
    assert!(
        common::eventually(Duration::from_secs(3), || async {
            let got = b
                .get_or_load_with_context("overview", &opts, counting(&calls, ms(0), 3u32))
                .await
                .unwrap();
            !got.is_stale() && got.value() == Some(&2)
        })
        .await
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "exactly one background refresh"
    );
    assert!(
        counter(
            "stratacache_stale_served_total",
            &[("cache", a.namespace())]
        ) >= 100
    );
}

async fn fail_safe_serves_stale_while_the_source_fails_then_its_error(target: Target) {
    let (cache, _) = two_instances(target, "failsafe").await;
    let opts = EntryOptions::new()
        .ttl(ms(200))
        .stale_for(ms(1500))
        .soft_timeout(Duration::from_secs(1)) // wait for loads: stale only on failure
        .fail_safe_throttle(ms(300));
    let value: u32 = cache
        .get_or_load("quote", &opts, || async { Ok::<_, std::io::Error>(7) })
        .await
        .unwrap();
    assert_eq!(value, 7);
    tokio::time::sleep(ms(250)).await;

    let attempts = Arc::new(AtomicUsize::new(0));
    let failing = |attempts: &Arc<AtomicUsize>| {
        let attempts = attempts.clone();
        move |_: LoadContext<u32>| async move {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err::<Loaded<u32>, _>(std::io::Error::other("database down"))
        }
    };
    for _ in 0..20 {
        let got = cache
            .get_or_load_with_context("quote", &opts, failing(&attempts))
            .await
            .unwrap();
        assert!(got.is_stale());
        assert_eq!(got.value(), Some(&7));
    }
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        1,
        "no retry storm within the throttle"
    );
    assert!(
        counter(
            "stratacache_fail_safe_total",
            &[("cache", cache.namespace())]
        ) >= 1
    );

    // After the throttle the source is tried again (and still fails).
    tokio::time::sleep(ms(350)).await;
    let got = cache
        .get_or_load_with_context("quote", &opts, failing(&attempts))
        .await
        .unwrap();
    assert!(got.is_stale());
    assert_eq!(attempts.load(Ordering::SeqCst), 2);

    // Past the stale window the caller gets the loader's error.
    tokio::time::sleep(ms(1500)).await;
    match cache
        .get_or_load_with_context("quote", &opts, failing(&attempts))
        .await
    {
        Err(Error::Loader(e)) => assert_eq!(e.to_string(), "database down"),
        other => panic!("expected the loader's error, got {other:?}"),
    }
    // The source recovers: fresh again.
    let got = cache
        .get_or_load_with_context("quote", &opts, |_| async {
            Ok::<_, std::io::Error>(Loaded::value(8))
        })
        .await
        .unwrap();
    assert!(!got.is_stale());
    assert_eq!(got.value(), Some(&8));
}

async fn past_the_soft_timeout_the_stale_value_is_served_and_the_load_finishes(target: Target) {
    let (cache, other) = two_instances(target, "soft").await;
    let opts = EntryOptions::new()
        .ttl(ms(200))
        .stale_for(Duration::from_secs(30))
        .soft_timeout(ms(100));
    let calls = Arc::new(AtomicUsize::new(0));
    cache
        .get_or_load_with_context("slow", &opts, counting(&calls, ms(0), 1u32))
        .await
        .unwrap();
    tokio::time::sleep(ms(250)).await;

    let started = Instant::now();
    let got = cache
        .get_or_load_with_context("slow", &opts, counting(&calls, ms(400), 2u32))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(got.is_stale() && got.value() == Some(&1));
    assert!(
        took >= ms(90) && took < ms(350),
        "served at the soft timeout: {took:?}"
    );

    tokio::time::sleep(ms(450)).await;
    assert_eq!(
        other.get::<u32>("slow").await.unwrap(),
        Some(2),
        "the load finished and filled Redis"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

async fn past_the_hard_timeout_without_stale_data_the_caller_gets_a_timeout(target: Target) {
    let (cache, other) = two_instances(target, "hard").await;
    let opts = EntryOptions::new()
        .ttl(Duration::from_secs(60))
        .hard_timeout(ms(150));
    let calls = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let result = cache
        .get_or_load_with_context("stuck", &opts, counting(&calls, ms(800), 1u32))
        .await;
    assert!(
        matches!(result, Err(Error::LoaderTimeout(t)) if t == ms(150)),
        "{result:?}"
    );
    assert!(started.elapsed() < ms(600));
    // The load goes on holding its lease: the next caller does not load the
    // slow source again, it waits (up to its own hard timeout) for the fill.
    let next = other
        .get_or_load_with_context("stuck", &opts, counting(&calls, ms(0), 2u32))
        .await;
    assert!(matches!(next, Err(Error::WaitTimeout(_))), "{next:?}");
    // And the load that timed out fills the cache once it finishes.
    assert!(
        common::eventually(Duration::from_secs(3), || async {
            other.get::<u32>("stuck").await.unwrap() == Some(1)
        })
        .await
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the slow source was loaded once"
    );
}

async fn a_not_modified_answer_renews_the_entry_without_rewriting_the_value(target: Target) {
    let (cache, _) = two_instances(target, "etag").await;
    let opts = EntryOptions::new()
        .ttl(ms(300))
        .stale_for(Duration::from_secs(30))
        .soft_timeout(Duration::from_secs(1));
    let big = "x".repeat(5_000);
    let first = big.clone();
    cache
        .get_or_load_with_context("doc", &opts, |_| async move {
            Ok::<_, std::io::Error>(Loaded::value(first).etag("v1"))
        })
        .await
        .unwrap();
    let mut raw = Raw::connect(target).await;
    let key = stored_key(cache.namespace(), "doc");
    let before = raw.get(&key).await.unwrap();
    tokio::time::sleep(ms(350)).await;

    let seen = Arc::new(std::sync::Mutex::new(None));
    let seen_in_loader = seen.clone();
    let got = cache
        .get_or_load_with_context("doc", &opts, move |ctx: LoadContext<String>| async move {
            *seen_in_loader.lock().unwrap() =
                Some((ctx.stale().map(String::len), ctx.etag().map(String::from)));
            Ok::<_, std::io::Error>(Loaded::not_modified())
        })
        .await
        .unwrap();
    assert!(!got.is_stale());
    assert_eq!(got.value(), Some(&big));
    assert_eq!(
        *seen.lock().unwrap(),
        Some((Some(5_000), Some("v1".to_string())))
    );
    let after = raw.get(&key).await.unwrap();
    assert_eq!(
        before[..5],
        after[..5],
        "magic, format, codec and flags untouched"
    );
    assert_eq!(
        before[33..],
        after[33..],
        "tags, ETag and payload untouched"
    );
    assert_ne!(before[5..33], after[5..33], "timestamps renewed");
    let ttl = cache.ttl("doc").await.unwrap().expect("fresh again");
    assert!(ttl > ms(150), "{ttl:?}");
    assert_eq!(
        counter(
            "stratacache_not_modified_total",
            &[("cache", cache.namespace())]
        ),
        1
    );
}

async fn refresh_ahead_replaces_hot_entries_before_they_expire(target: Target) {
    let (cache, _) = two_instances(target, "ahead").await;
    let opts = EntryOptions::new()
        .ttl(ms(600))
        .eager_refresh(EagerRefresh::AfterFraction(0.5));
    let calls = Arc::new(AtomicUsize::new(0));
    cache
        .get_or_load_with_context("trending", &opts, counting(&calls, ms(0), 1u32))
        .await
        .unwrap();
    tokio::time::sleep(ms(350)).await;
    // Past half the TTL: answered from the cache at once, refresh started.
    let started = Instant::now();
    let got = cache
        .get_or_load_with_context("trending", &opts, counting(&calls, ms(100), 2u32))
        .await
        .unwrap();
    assert_eq!(got.value(), Some(&1));
    assert!(!got.is_stale());
    assert!(started.elapsed() < ms(50));
    tokio::time::sleep(ms(200)).await;
    let got = cache
        .get_or_load_with_context("trending", &opts, counting(&calls, ms(0), 3u32))
        .await
        .unwrap();
    assert_eq!(got.value(), Some(&2), "replaced before it expired");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        counter(
            "stratacache_refreshes_total",
            &[("cache", cache.namespace())]
        ),
        1
    );
}

async fn xfetch_refreshes_once_before_expiry(target: Target) {
    let (cache, _) = two_instances(target, "xfetch").await;
    let opts = EntryOptions::new()
        .ttl(ms(400))
        .eager_refresh(EagerRefresh::XFetch { beta: 1.0 });
    let calls = Arc::new(AtomicUsize::new(0));
    // A 150 ms load: δ = 150 ms, so reads in the last few hundred ms refresh early.
    cache
        .get_or_load_with_context("hot", &opts, counting(&calls, ms(150), 1u32))
        .await
        .unwrap();
    tokio::time::sleep(ms(200)).await;
    // Read until a refresh starts. Every read is answered from the cache at
    // once: the refresh is early, never a miss.
    for _ in 0..100 {
        let started = Instant::now();
        let got = cache
            .get_or_load_with_context("hot", &opts, counting(&calls, ms(150), 2u32))
            .await
            .unwrap();
        assert!(!got.is_stale());
        assert!(
            started.elapsed() < ms(100),
            "a read waited: {:?}",
            started.elapsed()
        );
        if calls.load(Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(ms(5)).await;
    }
    tokio::time::sleep(ms(250)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2, "exactly one early refresh");
}

async fn a_read_without_a_loader_may_take_a_stale_value_and_says_so(target: Target) {
    let (writer, reader) = two_instances(target, "allow-stale").await;
    // An instance without L1: every answer of its comes from Redis.
    let redis_only = Cache::builder()
        .namespace(writer.namespace())
        .redis(target.topology())
        .redis_timeout(Duration::from_secs(2))
        .without_l1()
        .build()
        .await
        .unwrap();
    let opts = EntryOptions::new().ttl(ms(400)).stale_for(ms(800));
    let read = |cache: &Cache| {
        let cache = cache.clone();
        async move { cache.get_allow_stale::<u32>("quote").await.unwrap() }
    };

    // Missing: nothing to say.
    for cache in [&writer, &reader, &redis_only] {
        assert_eq!(read(cache).await, None);
    }
    writer.set("quote", &7u32, &opts).await.unwrap();
    let written = Instant::now();
    // Fresh: from the writer's L1, from Redis into the reader's L1, from Redis only.
    for cache in [&writer, &reader, &redis_only] {
        let found = read(cache).await.expect("fresh entry");
        assert!(!found.is_stale());
        assert_eq!(found.value(), Some(&7));
    }
    // Past its fresh time, within its stale window: `get` sees nothing,
    // `get_allow_stale` the old value, marked stale — from L1 and from Redis.
    tokio::time::sleep(ms(550).saturating_sub(written.elapsed())).await;
    for cache in [&writer, &reader, &redis_only] {
        assert_eq!(cache.get::<u32>("quote").await.unwrap(), None);
        let found = read(cache).await.expect("stale entry");
        assert!(found.is_stale());
        assert_eq!(found.value(), Some(&7));
    }
    // Past the stale window: gone everywhere.
    tokio::time::sleep(ms(1350).saturating_sub(written.elapsed())).await;
    for cache in [&writer, &reader, &redis_only] {
        assert_eq!(read(cache).await, None);
    }

    // A value cached as absent is an answer: no value, and not stale.
    let absent: Option<u32> = writer
        .get_or_load_optional("ghost", &opts, || async { Ok::<_, std::io::Error>(None) })
        .await
        .unwrap();
    assert_eq!(absent, None);
    for cache in [&writer, &redis_only] {
        let found = cache
            .get_allow_stale::<u32>("ghost")
            .await
            .unwrap()
            .expect("an absent marker");
        assert_eq!((found.value(), found.is_stale()), (None, false));
    }
}

async fn with_fail_safe_off_a_failing_load_returns_its_error(target: Target) {
    let (cache, other) = two_instances(target, "fail-safe-off").await;
    let opts = EntryOptions::new()
        .ttl(ms(200))
        .stale_for(Duration::from_secs(30))
        .fail_safe_throttle(Duration::from_secs(30));
    let strict = opts.clone().fail_safe(false);
    let value: u32 = cache
        .get_or_load("quote", &opts, || async { Ok::<_, std::io::Error>(7) })
        .await
        .unwrap();
    assert_eq!(value, 7);
    tokio::time::sleep(ms(250)).await;

    let attempts = Arc::new(AtomicUsize::new(0));
    let failing = |attempts: &Arc<AtomicUsize>| {
        let attempts = attempts.clone();
        move || async move {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err::<u32, _>(std::io::Error::other("database down"))
        }
    };
    let is_database_down = |result: Result<u32, Error>| matches!(&result, Err(Error::Loader(e)) if e.to_string() == "database down");

    // A stale value is at hand, but this call wants the source or its error:
    // no stale-while-revalidate either, it waits for the load.
    let result = cache
        .get_or_load("quote", &strict, failing(&attempts))
        .await;
    assert!(is_database_down(result.clone()), "{result:?}");
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    // The stale value is still cached for the calls that accept it.
    let stale = cache
        .get_allow_stale::<u32>("quote")
        .await
        .unwrap()
        .expect("kept");
    assert!(stale.is_stale() && stale.value() == Some(&7));

    // With fail-safe on, the same failure is answered with the stale value,
    // which is then kept by fail-safe for `fail_safe_throttle`…
    let lenient = cache
        .get_or_load_with_context(
            "quote",
            &opts.clone().soft_timeout(Duration::from_secs(1)),
            {
                let load = failing(&attempts);
                move |_| async move { load().await.map(Loaded::value) }
            },
        )
        .await
        .unwrap();
    assert!(lenient.is_stale() && lenient.value() == Some(&7));
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    // …but not served to a call with fail-safe off, here or on another
    // instance: each tries the source again and gets its error.
    for instance in [&cache, &other] {
        let result = instance
            .get_or_load("quote", &strict, failing(&attempts))
            .await;
        assert!(is_database_down(result.clone()), "{result:?}");
    }
    assert_eq!(attempts.load(Ordering::SeqCst), 4);

    // Past the hard timeout: a timeout, not the stale value.
    let slow = strict.clone().hard_timeout(ms(100));
    let result = cache
        .get_or_load("quote", &slow, || async {
            tokio::time::sleep(ms(400)).await;
            Ok::<u32, std::io::Error>(8)
        })
        .await;
    assert!(matches!(result, Err(Error::LoaderTimeout(_))), "{result:?}");
}
