//! `EntryOptions::fill_in_background`: a miss is answered when its loader
//! returns, and the fill that follows keeps every promise of a fill in the
//! foreground — one load per key here and on other instances, and an
//! invalidation that follows the answer wins over it.
//!
//! Instance A reaches its own redis-server through a proxy whose delay the
//! loader turns up, so A's read is quick and its fill slow (a Redis that
//! stalls after the read); instance B talks to the server directly.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stratacache::{Cache, EntryOptions};
use stratacache_testkit::{DelayProxy, RedisServer};

/// Each chunk through the proxy waits this long once the loader has run: a
/// fill round trip then takes at least twice as long.
const STALL: Duration = Duration::from_millis(300);

async fn instance(url: &str, namespace: &str) -> Cache {
    let cache = Cache::builder()
        .namespace(namespace)
        .redis_url(url)
        // Long enough that the stalled fill lands rather than times out.
        .redis_timeout(Duration::from_secs(3))
        .build()
        .await
        .unwrap();
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            cache.backplane_connected() == Some(true)
        })
        .await
    );
    cache
}

struct Setup {
    _server: RedisServer,
    proxy: Arc<DelayProxy>,
    /// Through the proxy.
    a: Cache,
    /// Direct.
    b: Cache,
}

async fn setup(test: &str) -> Setup {
    let server = RedisServer::start();
    let proxy = Arc::new(DelayProxy::start(server.port()).unwrap());
    let namespace = common::namespace(test);
    let a = instance(&proxy.url(), &namespace).await;
    let b = instance(&server.url(), &namespace).await;
    Setup {
        _server: server,
        proxy,
        a,
        b,
    }
}

fn opts(background: bool) -> EntryOptions {
    EntryOptions::new()
        .ttl(Duration::from_secs(60))
        .fill_in_background(background)
}

/// A's load of `key`: the loader stalls A's link to Redis and returns `value`.
async fn load_then_stall(s: &Setup, key: &str, value: &str, background: bool) -> Duration {
    s.proxy.set_delay(Duration::ZERO);
    let (proxy, value) = (s.proxy.clone(), value.to_string());
    let started = Instant::now();
    let got: String =
        s.a.get_or_load(key, &opts(background), move || async move {
            proxy.set_delay(STALL);
            Ok::<_, std::io::Error>(value)
        })
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(!got.is_empty());
    took
}

fn counting(
    loads: &Arc<AtomicUsize>,
) -> impl FnOnce() -> std::future::Ready<Result<String, std::io::Error>> + Send + 'static {
    let loads = loads.clone();
    move || {
        loads.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok("loaded again".to_string()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_is_answered_before_its_stalled_fill_which_still_serves_everyone() {
    let s = setup("bg-fill-answer").await;

    // In the foreground, the caller waits for the stalled fill.
    let foreground = load_then_stall(&s, "fg", "v", false).await;
    assert!(foreground >= STALL * 2, "foreground fill: {foreground:?}");

    let background = load_then_stall(&s, "bg", "v", true).await;
    assert!(
        background < STALL,
        "the caller was answered before the fill: {background:?}"
    );

    // While the fill is on its way: callers here join it, an instance
    // elsewhere waits for it (the lease is held); nobody loads again.
    let loads = Arc::new(AtomicUsize::new(0));
    let mut here = Vec::new();
    for _ in 0..16 {
        let (a, loader) = (s.a.clone(), counting(&loads));
        here.push(tokio::spawn(async move {
            a.get_or_load::<String, _, _, _>("bg", &opts(true), loader)
                .await
                .unwrap()
        }));
    }
    let elsewhere: String =
        s.b.get_or_load("bg", &opts(true), counting(&loads))
            .await
            .unwrap();
    assert_eq!(elsewhere, "v");
    for call in here {
        assert_eq!(call.await.unwrap(), "v");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 0, "nobody loaded again");

    // The fill landed in Redis and in A's L1.
    s.proxy.set_delay(Duration::ZERO);
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            s.b.get::<String>("bg").await.unwrap().as_deref() == Some("v")
        })
        .await
    );
    s.proxy.set_delay(STALL * 10);
    let started = Instant::now();
    let from_l1: String =
        s.a.get_or_load("bg", &opts(true), counting(&loads))
            .await
            .unwrap();
    assert_eq!(from_l1, "v");
    assert!(
        started.elapsed() < STALL,
        "an L1 hit: {:?}",
        started.elapsed()
    );
    assert_eq!(loads.load(Ordering::SeqCst), 0);
    s.proxy.set_delay(Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_or_invalidation_after_the_answer_wins_over_the_background_fill() {
    let s = setup("bg-fill-invalidate").await;
    let settle = || async {
        s.proxy.set_delay(Duration::ZERO);
        // The stalled fill ends within two stalls each way.
        tokio::time::sleep(STALL * 5).await;
    };

    // Another instance writes while A's fill of the old value is on its way.
    load_then_stall(&s, "written", "old", true).await;
    s.b.set("written", &"new".to_string(), &opts(true))
        .await
        .unwrap();
    settle().await;
    assert_eq!(
        s.b.get::<String>("written").await.unwrap().as_deref(),
        Some("new"),
        "Redis keeps the write"
    );
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            s.a.get::<String>("written").await.unwrap().as_deref() == Some("new")
        })
        .await,
        "A does not keep the value its fill could not land"
    );

    // Another instance deletes the key.
    load_then_stall(&s, "dropped", "old", true).await;
    s.b.delete("dropped").await.unwrap();
    settle().await;
    assert_eq!(s.b.get::<String>("dropped").await.unwrap(), None);
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            s.a.get::<String>("dropped").await.unwrap().is_none()
        })
        .await
    );

    // The answered instance itself deletes the key: its DEL follows the fill on
    // the same connection, and its L1 refuses the fill's late copy.
    load_then_stall(&s, "mine", "old", true).await;
    s.a.delete("mine").await.unwrap();
    settle().await;
    assert_eq!(s.a.get::<String>("mine").await.unwrap(), None);
    assert_eq!(s.b.get::<String>("mine").await.unwrap(), None);
}

/// A stampede of two instances, 64 callers each, on keys filled in the
/// background: one load per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_on_background_fills_loads_each_key_once() {
    let namespace = common::namespace("bg-fill-stampede");
    let url = common::single_url();
    let instances = [
        instance(&url, &namespace).await,
        instance(&url, &namespace).await,
    ];
    let loads = Arc::new(AtomicUsize::new(0));
    let mut calls = Vec::new();
    for round in 0..3 {
        for cache in &instances {
            for caller in 0..64 {
                let (cache, loads) = (cache.clone(), loads.clone());
                let key = format!("k{}", (caller + round) % 8);
                calls.push(tokio::spawn(async move {
                    let value: String = cache
                        .get_or_load(&key, &opts(true), {
                            let key = key.clone();
                            move || async move {
                                loads.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                Ok::<_, std::io::Error>(key)
                            }
                        })
                        .await
                        .unwrap();
                    assert_eq!(value, key);
                }));
            }
        }
    }
    for call in calls {
        call.await.unwrap();
    }
    assert_eq!(loads.load(Ordering::SeqCst), 8, "one load per key");
}

/// Redis killed between the loader and its background fill: the caller has
/// its answer at once, this instance keeps serving the value from L1, the
/// lost fill is neither an error nor a hang, and once Redis is back (empty)
/// the other instance loads the key once — the lease of the lost fill died
/// with the old process — and what it filled is what stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_before_a_background_fill_loses_only_the_fill() {
    let server = Arc::new(std::sync::Mutex::new(RedisServer::start()));
    let url = server.lock().unwrap().url();
    let namespace = common::namespace("bg-fill-killed");
    let a = instance(&url, &namespace).await;
    let b = instance(&url, &namespace).await;

    let killer = Arc::clone(&server);
    let started = Instant::now();
    let got: String = a
        .get_or_load("k", &opts(true), move || async move {
            tokio::task::spawn_blocking(move || killer.lock().unwrap().kill())
                .await
                .unwrap();
            Ok::<_, std::io::Error>("v".to_string())
        })
        .await
        .unwrap();
    assert_eq!(got, "v");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered when the loader returned: {:?}",
        started.elapsed()
    );

    // Redis is gone: A answers from L1, nobody loads again.
    let loads = Arc::new(AtomicUsize::new(0));
    for _ in 0..20 {
        let got: String = a
            .get_or_load("k", &opts(true), counting(&loads))
            .await
            .unwrap();
        assert_eq!(got, "v");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 0);

    let restarter = Arc::clone(&server);
    tokio::task::spawn_blocking(move || restarter.lock().unwrap().restart())
        .await
        .unwrap();
    for cache in [&a, &b] {
        assert!(
            common::eventually(Duration::from_secs(10), || async {
                cache.backplane_connected() == Some(true) && cache.ping_redis().await.is_ok()
            })
            .await,
            "reconnected after the restart"
        );
    }

    // The fill never landed: B loads the key once, without waiting out a lease.
    let started = Instant::now();
    let got: String = b
        .get_or_load("k", &opts(true), counting(&loads))
        .await
        .unwrap();
    assert_eq!(got, "loaded again");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    // And B's fill is what Redis keeps: A's lost fill never comes back over it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.clear_l1();
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            b.get::<String>("k").await.unwrap().as_deref() == Some("loaded again")
        })
        .await
    );
    a.clear_l1();
    let got: String = a
        .get_or_load("k", &opts(true), counting(&loads))
        .await
        .unwrap();
    assert_eq!(got, "loaded again");
    assert_eq!(loads.load(Ordering::SeqCst), 1, "A read B's fill");
}
