//! Hostile input against a throwaway Redis: odd keys round-trip between two
//! instances without colliding, corrupt entries of every shape planted in
//! Redis are misses answered by the loader, an oversized value is refused
//! and leaves the earlier one in place, malformed policy files are refused.
//! (`bench faults --only odd-keys,corrupt-entries,oversized-values,policy-files`
//! measures the same, and more, for RELIABILITY.md.)

mod common;

use std::time::{Duration, Instant};

use stratacache::{Cache, EntryOptions, Error, Policies};
use stratacache_testkit::RedisServer;

fn opts() -> EntryOptions {
    EntryOptions::new().ttl(Duration::from_secs(300))
}

async fn two(server: &RedisServer, test: &str) -> (Cache, Cache) {
    let namespace = common::namespace(test);
    let build = || {
        Cache::builder()
            .namespace(namespace.clone())
            .redis_url(&server.url())
            .redis_timeout(Duration::from_secs(2))
            .build()
    };
    (build().await.unwrap(), build().await.unwrap())
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A lease on `key` with no expiry, as no instance of the cache writes one
/// (planted by hand or by a foreign client).
async fn plant_lease_without_ttl(
    conn: &mut redis::aio::MultiplexedConnection,
    namespace: &str,
    key: &str,
) {
    let _: () = redis::cmd("SET")
        .arg(format!("{}:lease", common::stored_key(namespace, key)))
        .arg("someone")
        .query_async(conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_keys_round_trip_between_instances_and_never_collide() {
    let server = RedisServer::start();
    let (a, b) = two(&server, "odd-keys").await;
    let mut keys: Vec<String> = [
        " ",
        "\t",
        "\r\n",
        "\0",
        "a\0b",
        "{",
        "}",
        "{}",
        "}{",
        "{a}b",
        "::",
        "*",
        "[a-z]*",
        "\\",
        "%00",
        ":lease",
        "k:ver",
        "#sha256:00",
        "e\u{301}",
        "é",
        "日本語",
        "🦀",
        "\u{202e}x",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    keys.push((0u8..=255).map(char::from).collect());
    let prefix = "p".repeat(10_000);
    keys.extend((0..3).map(|n| format!("{prefix}{n}")));
    keys.push("x".repeat(1 << 20));
    for (i, key) in keys.iter().enumerate() {
        a.set(key, &(i as u64), &opts()).await.unwrap();
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            b.get::<u64>(key).await.unwrap(),
            Some(i as u64),
            "key {:?}",
            key.chars().take(20).collect::<String>()
        );
    }
    assert!(matches!(
        a.set("", &1u64, &opts()).await,
        Err(Error::InvalidKey { .. })
    ));
}

/// Values planted under the cache's own keys: none may fail a read, make
/// it slow, or be served as a value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_entries_of_every_shape_are_misses_answered_by_the_loader() {
    let server = RedisServer::start();
    let (a, b) = two(&server, "corrupt-shapes").await;
    let ns = a.namespace().to_string();
    let mut conn = raw(&server).await;
    a.set("valid", &"text".to_string(), &opts()).await.unwrap();
    let valid: Vec<u8> = redis::cmd("GET")
        .arg(common::stored_key(&ns, "valid"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut flipped = valid.clone();
    flipped[valid.len() / 2] ^= 0x10;
    let strings: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("text", b"hello".to_vec()),
        ("magic then garbage", b"SC\x01garbage".to_vec()),
        ("a string entry read as a number", valid.clone()),
        ("truncated", valid[..valid.len() / 2].to_vec()),
        ("a flipped bit", flipped),
        (
            "5 MB of noise",
            (0..5u32 << 20)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        ),
    ];
    let mut cases = Vec::new();
    for (i, (what, bytes)) in strings.into_iter().enumerate() {
        let key = format!("s{i}");
        let _: () = redis::cmd("SET")
            .arg(common::stored_key(&ns, &key))
            .arg(bytes)
            .query_async(&mut conn)
            .await
            .unwrap();
        cases.push((what, key));
    }
    for (what, cmd, key) in [
        ("a list (WRONGTYPE)", "RPUSH", "l"),
        ("a hash (WRONGTYPE)", "HSET", "h"),
    ] {
        let mut c = redis::cmd(cmd);
        c.arg(common::stored_key(&ns, key)).arg("f");
        if cmd == "HSET" {
            c.arg("v");
        }
        let _: i64 = c.query_async(&mut conn).await.unwrap();
        cases.push((what, key.to_string()));
    }
    let _: () = redis::cmd("SET")
        .arg(format!("{}:ver", common::stored_key(&ns, "v")))
        .arg("not-a-number")
        .query_async(&mut conn)
        .await
        .unwrap();
    cases.push(("a garbage version floor", "v".to_string()));
    for (n, (what, key)) in cases.iter().enumerate() {
        let started = Instant::now();
        let got: u64 = a
            .get_or_load(key, &opts(), move || async move {
                Ok::<_, std::io::Error>(n as u64)
            })
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(got, n as u64, "{what}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{what} was slow"
        );
        // What the other instance reads is never the planted bytes.
        b.clear_l1();
        let seen = b.get::<u64>(key).await.unwrap();
        assert!(seen.is_none_or(|v| v == n as u64), "{what}: {seen:?}");
    }
    // Keys of another type are replaced by the fill: the next read is a hit.
    for key in ["l", "h"] {
        b.clear_l1();
        let again: u64 = b
            .get_or_load(key, &opts(), || async {
                Err::<u64, _>(std::io::Error::other("the fill replaced the foreign key"))
            })
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        assert!(cases.iter().any(|(_, k)| k == key) && again < cases.len() as u64);
    }
}

/// A lease key planted without a TTL would block its key for good; no
/// lease of the cache's own lacks an expiry, so the first reader takes it
/// over and loads at once, without waiting out a lease lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_planted_without_ttl_does_not_block_reads() {
    let server = RedisServer::start();
    let (a, _) = two(&server, "stuck-lease").await;
    let mut conn = raw(&server).await;
    plant_lease_without_ttl(&mut conn, a.namespace(), "k").await;
    let started = Instant::now();
    let got: u64 = a
        .get_or_load("k", &opts(), || async { Ok::<_, std::io::Error>(1) })
        .await
        .unwrap();
    assert_eq!(got, 1);
    assert!(
        // The default lease lifetime (lock_timeout) is 5 s.
        started.elapsed() < Duration::from_secs(2),
        "waited {:?} for a lease nobody holds",
        started.elapsed()
    );
}

/// Once reads mostly hit, a miss takes its lease with plain commands rather
/// than a script; a planted lease without a TTL and a key of another type
/// must still not make a reader wait out a lease lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_cache_is_not_blocked_by_planted_leases_or_foreign_keys() {
    let server = RedisServer::start();
    let (a, b) = two(&server, "warm-planted").await;
    for i in 0..100u64 {
        b.set(&format!("warm{i}"), &i, &opts()).await.unwrap();
    }
    // L2 hits on `a` (its L1 is empty): its reads now expect to hit.
    for i in 0..100u64 {
        let got: u64 = a
            .get_or_load(&format!("warm{i}"), &opts(), || async {
                Err::<u64, _>(std::io::Error::other("should hit"))
            })
            .await
            .unwrap();
        assert_eq!(got, i);
    }
    let mut conn = raw(&server).await;
    plant_lease_without_ttl(&mut conn, a.namespace(), "k").await;
    let _: i64 = redis::cmd("RPUSH")
        .arg(common::stored_key(a.namespace(), "l"))
        .arg("f")
        .query_async(&mut conn)
        .await
        .unwrap();
    for (n, key) in ["k", "l"].into_iter().enumerate() {
        let started = Instant::now();
        let got: u64 = a
            .get_or_load(key, &opts(), move || async move {
                Ok::<_, std::io::Error>(n as u64)
            })
            .await
            .unwrap();
        assert_eq!(got, n as u64);
        assert!(
            // The default lease lifetime (lock_timeout) is 5 s.
            started.elapsed() < Duration::from_secs(2),
            "{key}: waited {:?} for a lease nobody else holds",
            started.elapsed()
        );
        b.clear_l1();
        assert_eq!(b.get::<u64>(key).await.unwrap(), Some(n as u64), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_set_is_refused_and_the_earlier_value_stays() {
    let server = RedisServer::start();
    let (a, b) = two(&server, "oversized-keeps").await;
    a.set("k", &vec![7u64; 4], &opts()).await.unwrap();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let noise: Vec<u64> = (0..(2 << 20) / 8)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })
        .collect();
    assert!(matches!(
        a.set("k", &noise, &opts()).await,
        Err(Error::ValueTooLarge { .. })
    ));
    assert_eq!(b.get::<Vec<u64>>("k").await.unwrap(), Some(vec![7u64; 4]));
    a.clear_l1();
    assert_eq!(a.get::<Vec<u64>>("k").await.unwrap(), Some(vec![7u64; 4]));
}

#[test]
fn malformed_policy_files_are_refused_with_a_config_error() {
    for text in [
        "[policies.p\nttl = \"1m\"",
        "[policies.p]\nstrategy = \"write-through\"",
        "[policies.p]\nttl = \"banana\"",
        "[policies.p]\nttl = -5",
        "[policies.p]\nttl = \"99999999999999999999y\"",
        "[policies.p]\nttl = \"1m\"\njitter = 5.0",
        "[policies.p]\nttl = \"1m\"\neager_refresh = \"1.5\"",
        "[policies.p]\ntll = \"1m\"",
        "[policies.p]\nttl = [1, 2]",
        "[policies.p]\nttl = \"1m\"\nttl = \"2m\"",
        "policies = 7",
        "\u{0}\u{1}SC",
    ] {
        match Policies::from_toml_str(text) {
            Err(Error::Config(msg)) => assert!(!msg.is_empty()),
            other => panic!("{text:?}: {:?}", other.map(|_| ())),
        }
    }
}
