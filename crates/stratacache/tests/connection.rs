//! The single-node connection: many callers' commands share one socket and
//! their replies come back in order. These tests try to break that order
//! (callers giving up mid-flight, the connection killed under traffic) and
//! the connection's set-up (password, ACL user, database number), through
//! the public API only.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use stratacache::{Cache, EntryOptions};
use stratacache_testkit::{DelayProxy, RedisServer};

const KEYS: usize = 400;

fn value_of(i: usize) -> String {
    format!("value-{i}-{}", "x".repeat(i % 97))
}

/// A cache without L1, so every read is a Redis command.
fn l2_only(url: &str, test: &str, timeout: Duration) -> stratacache::CacheBuilder {
    Cache::builder()
        .namespace(common::namespace(test))
        .redis_url(url)
        .without_l1()
        .redis_timeout(timeout)
}

/// An L2-only cache holding `KEYS` entries.
async fn filled_cache(url: &str, test: &str, timeout: Duration) -> Cache {
    let cache = l2_only(url, test, timeout).build().await.unwrap();
    let opts = EntryOptions::new().ttl(Duration::from_secs(120));
    for i in 0..KEYS {
        cache
            .set(&format!("k{i}"), &value_of(i), &opts)
            .await
            .unwrap();
    }
    cache
}

/// `tasks` callers read random keys until `until`; every value read must
/// be the key's own. Returns (reads answered, reads that found nothing or failed).
async fn read_and_check(
    cache: &Cache,
    tasks: usize,
    until: Instant,
    give_up_early: bool,
) -> (usize, usize) {
    let answered = Arc::new(AtomicUsize::new(0));
    let missing = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (cache, answered, missing) = (cache.clone(), answered.clone(), missing.clone());
        handles.push(tokio::spawn(async move {
            while Instant::now() < until {
                let i = rand::rng().random_range(0..KEYS);
                let key = format!("k{i}");
                let read = cache.get::<String>(&key);
                let result = if give_up_early && rand::rng().random_bool(0.3) {
                    // Dropped while its command is on the wire (or queued).
                    let patience = Duration::from_micros(rand::rng().random_range(0..400));
                    match tokio::time::timeout(patience, read).await {
                        Ok(result) => result,
                        Err(_) => continue,
                    }
                } else {
                    read.await
                };
                match result {
                    Ok(Some(value)) => {
                        assert_eq!(
                            value,
                            value_of(i),
                            "{key} answered with another key's value"
                        );
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(None) | Err(_) => {
                        missing.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for handle in handles {
        handle.await.expect("a reader panicked");
    }
    (
        answered.load(Ordering::Relaxed),
        missing.load(Ordering::Relaxed),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_give_up_mid_flight_do_not_shift_the_others_replies() {
    // A little latency on the wire, so that many commands are in flight
    // when their callers drop them.
    let server = RedisServer::start();
    let proxy = DelayProxy::start(server.port()).unwrap();
    proxy.set_delay(Duration::from_micros(300));
    let cache = filled_cache(&proxy.url(), "give-up", Duration::from_secs(2)).await;
    let until = Instant::now() + Duration::from_secs(2);
    let (answered, missing) = read_and_check(&cache, 64, until, true).await;
    assert!(answered > 1_000, "answered {answered}");
    assert_eq!(missing, 0, "every entry is there and Redis is healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_under_traffic_is_made_again_and_replies_stay_in_order() {
    let server = RedisServer::start();
    let cache = filled_cache(&server.url(), "killed-conn", Duration::from_secs(1)).await;
    let until = Instant::now() + Duration::from_millis(1_500);
    let killer = {
        let port = server.port();
        tokio::task::spawn_blocking(move || {
            let mut kills = 0;
            while Instant::now() < until {
                std::thread::sleep(Duration::from_millis(100));
                // Normal clients only: the cache's command connection (the
                // backplane's subscription is a pub/sub client).
                let killed = stratacache_testkit::cli(port, &["CLIENT", "KILL", "TYPE", "normal"]);
                kills += killed.parse::<usize>().unwrap_or(0);
            }
            kills
        })
    };
    let (answered, missing) = read_and_check(&cache, 32, until, false).await;
    let kills = killer.await.unwrap();
    assert!(kills >= 5, "the connection was killed {kills} times");
    assert!(answered > 1_000, "answered {answered}, missing {missing}");
    // The tier above retries a read once on a dropped connection: a kill
    // costs a few reads at most, not the rest of the test.
    assert!(
        missing * 20 < answered,
        "answered {answered}, missing {missing} over {kills} kills"
    );
    // Afterwards every read is answered.
    let (answered, missing) = read_and_check(
        &cache,
        8,
        Instant::now() + Duration::from_millis(300),
        false,
    )
    .await;
    assert!(answered > 0);
    assert_eq!(missing, 0, "after the kills");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_user_and_database_from_the_url_are_used() {
    let server = RedisServer::start();
    server.cli(&[
        "ACL",
        "SETUSER",
        "app",
        "on",
        ">app-secret",
        "~*",
        "&*",
        "+@all",
    ]);
    server.cli(&["CONFIG", "SET", "requirepass", "s3cret"]);
    let authed = |args: &[&str]| {
        let mut all = vec!["--no-auth-warning", "-a", "s3cret"];
        all.extend_from_slice(args);
        server.cli(&all)
    };
    let opts = EntryOptions::new().ttl(Duration::from_secs(60));
    for (url, db) in [
        (
            format!("redis://:s3cret@127.0.0.1:{}/3", server.port()),
            "3",
        ),
        (
            format!("redis://app:app-secret@127.0.0.1:{}/5", server.port()),
            "5",
        ),
    ] {
        let cache = Cache::builder()
            .namespace(common::namespace("auth"))
            .redis_url(&url)
            .without_l1()
            .build()
            .await
            .unwrap();
        cache
            .set("greeting", &"hello".to_string(), &opts)
            .await
            .unwrap();
        assert_eq!(
            cache.get::<String>("greeting").await.unwrap().as_deref(),
            Some("hello")
        );
        let in_db: usize = authed(&["-n", db, "DBSIZE"]).parse().unwrap();
        assert!(in_db >= 1, "the entry is in database {db}");
    }
    let in_db0: usize = authed(&["-n", "0", "DBSIZE"]).parse().unwrap();
    assert_eq!(in_db0, 0, "nothing went to database 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_an_error_not_a_hang_and_loads_still_answer() {
    let server = RedisServer::start();
    server.cli(&["CONFIG", "SET", "requirepass", "s3cret"]);
    let cache = Cache::builder()
        .namespace(common::namespace("bad-auth"))
        .redis_url(&format!("redis://:wrong@127.0.0.1:{}", server.port()))
        .redis_timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    let started = Instant::now();
    let err = cache.ping_redis().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("auth")
            || err.to_string().to_lowercase().contains("pass"),
        "says why: {err}"
    );
    let opts = EntryOptions::new().ttl(Duration::from_secs(60));
    let value: u32 = cache
        .get_or_load("k", &opts, || async { Ok::<_, std::io::Error>(7) })
        .await
        .unwrap();
    assert_eq!(value, 7);
}

/// Redis refusing the password must not make every call a new connection
/// and a new refused AUTH: the breaker opens as it does for a Redis that is
/// down, loads answer without Redis, and the refusals stay a handful however
/// many calls are made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_does_not_make_every_call_a_new_connection() {
    let server = RedisServer::start();
    server.cli(&["CONFIG", "SET", "requirepass", "s3cret"]);
    let admin =
        redis::Client::open(format!("redis://:s3cret@127.0.0.1:{}", server.port())).unwrap();
    let mut admin = admin.get_multiplexed_async_connection().await.unwrap();
    let stats = |info: String, field: &str| -> u64 {
        info.lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim_start_matches(':').trim().parse().ok())
            .unwrap_or(0)
    };
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut admin)
        .await
        .unwrap();
    let connections_before = stats(info, "total_connections_received");
    let cache = Arc::new(
        l2_only(
            &format!("redis://:wrong@127.0.0.1:{}", server.port()),
            "bad-auth-storm",
            Duration::from_millis(500),
        )
        .build()
        .await
        .unwrap(),
    );
    let loads = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..32)
        .map(|t| {
            let (cache, loads) = (Arc::clone(&cache), Arc::clone(&loads));
            tokio::spawn(async move {
                let opts = EntryOptions::new().ttl(Duration::from_secs(60));
                for i in 0..100 {
                    let key = format!("k{t}-{i}");
                    let loads = Arc::clone(&loads);
                    let got: usize = cache
                        .get_or_load(&key, &opts, move || async move {
                            loads.fetch_add(1, Ordering::Relaxed);
                            Ok::<_, std::io::Error>(i)
                        })
                        .await
                        .unwrap();
                    assert_eq!(got, i);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    assert_eq!(loads.load(Ordering::Relaxed), 3_200, "every call answered");
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut admin)
        .await
        .unwrap();
    let connections = stats(info, "total_connections_received") - connections_before;
    // The breaker opens after a few refusals; then its probe (every 250 ms)
    // and the backplane's retries (backing off to 2 s) are all that connect.
    let allowed = 40 + 8 * elapsed.as_secs();
    assert!(
        connections <= allowed,
        "{connections} connections for 3,200 calls in {elapsed:?} (at most {allowed})"
    );
    // A health check still learns why, though the breaker is open.
    assert_eq!(cache.breaker_state(), Some(stratacache::BreakerState::Open));
    let err = cache
        .ping_redis()
        .await
        .unwrap_err()
        .to_string()
        .to_lowercase();
    assert!(err.contains("wrongpass") || err.contains("auth"), "{err}");
}

/// A cache built and first used on one runtime, then used on another after
/// the first shut down (a test harness's runtime per test, a CLI's
/// temporary runtime): the connection's tasks died with the first runtime,
/// and the next command must make a new connection rather than wait for them.
#[test]
fn a_cache_outlives_the_runtime_that_first_used_it() {
    let server = RedisServer::start();
    let opts = EntryOptions::new().ttl(Duration::from_secs(60));
    let first = tokio::runtime::Runtime::new().unwrap();
    let cache = first.block_on(async {
        let cache = l2_only(&server.url(), "runtimes", Duration::from_millis(500))
            .build()
            .await
            .unwrap();
        cache.set("k", &"v".to_string(), &opts).await.unwrap();
        assert_eq!(
            cache.get::<String>("k").await.unwrap().as_deref(),
            Some("v")
        );
        cache
    });
    drop(first);
    let second = tokio::runtime::Runtime::new().unwrap();
    second.block_on(async {
        let started = Instant::now();
        let read = cache.get::<String>("k").await;
        assert_eq!(
            read.unwrap().as_deref(),
            Some("v"),
            "read on the second runtime after {:?}",
            started.elapsed()
        );
        cache.set("k", &"w".to_string(), &opts).await.unwrap();
        assert_eq!(
            cache.get::<String>("k").await.unwrap().as_deref(),
            Some("w")
        );
    });
}

/// A connection that goes silent without closing — the peer vanished, a
/// NAT or firewall dropped the flow — here a proxy holding a chunk for a
/// minute on the connection in use, while new connections pass at once.
/// The breaker opens on the timeouts; its probes must not queue behind the
/// silent connection forever: the connection is given up and made again,
/// and Redis answers within seconds, not when the kernel gives up the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_goes_silent_is_given_up_and_made_again() {
    let server = RedisServer::start();
    let proxy = DelayProxy::start(server.port()).unwrap();
    let cache = l2_only(&proxy.url(), "silent", Duration::from_millis(200));
    common::silent_connection_is_given_up(cache, &proxy).await;
}

/// The same through redis-rs's connection manager, which carries TLS, Unix
/// sockets and RESP3 (here chosen on plain TCP): it reconnects only when
/// the socket fails, which a silent peer never makes it do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_connection_that_goes_silent_is_given_up_and_made_again() {
    let server = RedisServer::start();
    let proxy = DelayProxy::start(server.port()).unwrap();
    let cache = l2_only(&proxy.url(), "silent-managed", Duration::from_millis(200))
        .redis_auto_pipelining(false);
    common::silent_connection_is_given_up(cache, &proxy).await;
}

/// Normal clients' ids (the asking connection excluded).
fn normal_client_ids(server: &RedisServer) -> Vec<String> {
    let list = server.query(
        &["CLIENT", "LIST", "TYPE", "normal"],
        Duration::from_secs(2),
    );
    let list = list.unwrap();
    let lines: Vec<&str> = list.lines().collect();
    // The asking connection is the newest: the highest id.
    let mut ids: Vec<u64> = lines
        .iter()
        .filter_map(|l| {
            l.split_whitespace()
                .next()?
                .strip_prefix("id=")?
                .parse()
                .ok()
        })
        .collect();
    ids.sort_unstable();
    ids.pop();
    ids.into_iter().map(|id| id.to_string()).collect()
}

/// Silence is counted from when a command is waiting, not from the last
/// reply: after an idle second, one reply slower than the timeout (Redis
/// busy in `DEBUG SLEEP`) must not cost the healthy connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slow_reply_after_an_idle_spell_keeps_the_connection() {
    let server = RedisServer::start();
    let cache = l2_only(&server.url(), "idle", Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let opts = EntryOptions::new().ttl(Duration::from_secs(120));
    cache.set("k", &"v".to_string(), &opts).await.unwrap();
    let before = normal_client_ids(&server);
    assert!(!before.is_empty(), "the cache's connection is listed");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let port = server.port();
    let busy = tokio::task::spawn_blocking(move || {
        stratacache_testkit::cli(port, &["DEBUG", "SLEEP", "0.5"])
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let slow = cache.get::<String>("k").await;
    assert!(
        !matches!(slow, Ok(Some(_))),
        "the read during DEBUG SLEEP timed out"
    );
    busy.await.unwrap();
    assert_eq!(
        cache.get::<String>("k").await.unwrap().as_deref(),
        Some("v")
    );
    let after = normal_client_ids(&server);
    for id in &before {
        assert!(
            after.contains(id),
            "connection {id} was dropped: before {before:?}, after {after:?}"
        );
    }
}

/// Scripts go out by digest; a Redis that forgot them (restarted, `SCRIPT
/// FLUSH`) answers `NOSCRIPT`, and the script is loaded and run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_flushed_from_redis_are_loaded_again() {
    let server = RedisServer::start();
    let cache = l2_only(&server.url(), "noscript", Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let opts = EntryOptions::new().ttl(Duration::from_secs(60));
    let loads = Arc::new(AtomicUsize::new(0));
    for round in 0..3 {
        server.cli(&["SCRIPT", "FLUSH"]);
        let key = format!("k{round}");
        let counted = loads.clone();
        let value: u32 = cache
            .get_or_load(&key, &opts, move || async move {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(round)
            })
            .await
            .unwrap();
        assert_eq!(value, round);
        // The fill (a script) landed: the next read finds it without loading.
        let again: u32 = cache
            .get_or_load(&key, &opts, || async {
                Err::<u32, _>(std::io::Error::other("must not load"))
            })
            .await
            .unwrap();
        assert_eq!(again, round);
    }
    assert_eq!(loads.load(Ordering::SeqCst), 3);
}
