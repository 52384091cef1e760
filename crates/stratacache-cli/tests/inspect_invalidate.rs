//! `inspect`, `invalidate` and `queue` against the Redis on 127.0.0.1:6379,
//! each test in a namespace of its own. `invalidate` is checked from the
//! side that matters: another instance's L1 drops what it held.

mod common;

use std::time::{Duration, Instant};

use common::{run_text, unique_namespace};
use serde_json::Value;
use stratacache::{Cache, Codec, EntryOptions};

const REDIS: &str = "redis://127.0.0.1:6379";

async fn instance(namespace: &str, codec: Codec) -> Cache {
    Cache::builder()
        .namespace(namespace)
        .redis_url(REDIS)
        .codec(codec)
        .build()
        .await
        .expect("a cache on 127.0.0.1:6379")
}

/// Runs the binary off the runtime's threads.
async fn stratacache(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_text(&args)
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Deletes every key of the namespace (SCAN, then DEL).
async fn cleanup(namespace: &str) {
    let pattern = format!("{namespace}:*");
    tokio::task::spawn_blocking(move || {
        let keys = stratacache_testkit::cli(6379, &["--scan", "--pattern", &pattern]);
        for key in keys.lines().filter(|k| !k.is_empty()) {
            stratacache_testkit::cli(6379, &["DEL", key]);
        }
    })
    .await
    .unwrap();
}

/// Waits until `cache` no longer returns `key` from any tier.
async fn gone(cache: &Cache, key: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if cache.get::<String>(key).await.unwrap().is_none() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_decodes_an_entry_its_lease_and_its_floor() {
    let ns = unique_namespace("cli-inspect");
    let cache = instance(&ns, Codec::Json).await;
    let opts = EntryOptions::new()
        .ttl(Duration::from_secs(60))
        .stale_for(Duration::from_secs(30))
        .tags(["user:7", "team:3"]);
    let big = "a long enough value to be compressed ".repeat(100);
    cache.set("user:7:profile", &big, &opts).await.unwrap();
    cache
        .invalidate_version("user:7:profile:v", 18)
        .await
        .unwrap();

    let (code, out, err) = stratacache(args(&[
        "inspect",
        "user:7:profile",
        "--namespace",
        &ns,
        "--json",
    ]))
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let e: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["redis_key"], format!("{ns}:{{user:7:profile}}"));
    assert_eq!(e["state"], "fresh");
    assert_eq!(e["codec"], "json");
    assert_eq!(e["compressed"], true);
    assert_eq!(e["tags"], serde_json::json!(["user:7", "team:3"]));
    assert_eq!(e["value_bytes"].as_u64().unwrap() as usize, big.len() + 2);
    assert!(e["stored_bytes"].as_u64().unwrap() < e["value_bytes"].as_u64().unwrap());
    assert!(e["value"].as_str().unwrap().starts_with("\"a long enough"));
    let ttl = e["ttl_ms"].as_i64().unwrap();
    assert!(
        ttl > 80_000 && ttl <= 90_000,
        "ttl {ttl}: 60 s fresh + 30 s stale"
    );
    let fresh = e["fresh_until_ms"].as_u64().unwrap();
    let stale = e["stale_until_ms"].as_u64().unwrap();
    assert_eq!(stale - fresh, 30_000);
    assert_eq!(e["lease_holder"], Value::Null);

    // A load in flight elsewhere: its lease and its TTL.
    let lease = format!("{ns}:{{user:7:profile}}:lease");
    tokio::task::spawn_blocking(move || {
        stratacache_testkit::cli(6379, &["SET", &lease, "f00dfeed", "PX", "5000"])
    })
    .await
    .unwrap();
    let (_, out, _) = stratacache(args(&[
        "inspect",
        "user:7:profile",
        "--namespace",
        &ns,
        "--json",
    ]))
    .await;
    let e: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["lease_holder"], "f00dfeed");
    assert!(e["lease_ttl_ms"].as_i64().unwrap() > 0);

    // A version floor and a lease are shown beside the entry.
    let (_, out, _) = stratacache(args(&[
        "inspect",
        "user:7:profile:v",
        "--namespace",
        &ns,
        "--json",
    ]))
    .await;
    let e: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["found"], false);
    assert_eq!(e["version_floor"], 18);

    // The text form, for people.
    let (code, out, _) =
        stratacache(args(&["inspect", "user:7:profile", "--namespace", &ns])).await;
    assert_eq!(code, 0);
    for row in [
        "fresh until",
        "stale until",
        "user:7, team:3",
        "json, lz4",
        "held by f00dfeed",
    ] {
        assert!(out.contains(row), "{row:?} missing from:\n{out}");
    }

    // A key that is not there exits 1; bytes that are not an entry say why.
    let (code, out, _) = stratacache(args(&["inspect", "nothing", "--namespace", &ns])).await;
    assert_eq!(code, 1);
    assert!(out.contains("not in Redis"), "{out}");
    cleanup(&ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_reads_postcard_negative_and_foreign_bytes() {
    let ns = unique_namespace("cli-inspect-pc");
    let cache = instance(&ns, Codec::Postcard).await;
    let opts = EntryOptions::new().ttl(Duration::from_secs(60));
    cache.set("n", &42u64, &opts).await.unwrap();
    let (code, out, _) = stratacache(args(&["inspect", "n", "--namespace", &ns, "--json"])).await;
    assert_eq!(code, 0, "{out}");
    let e: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["codec"], "postcard");
    assert_eq!(e["value"], Value::Null);

    let absent = EntryOptions::new()
        .ttl(Duration::from_secs(60))
        .negative_ttl(Duration::from_secs(60));
    let _: Option<String> = cache
        .get_or_load_optional("missing", &absent, || async {
            Ok::<_, std::io::Error>(None)
        })
        .await
        .unwrap();
    let (_, out, _) =
        stratacache(args(&["inspect", "missing", "--namespace", &ns, "--json"])).await;
    let e: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["negative"], true, "{e:#}");

    let foreign = format!("{ns}:{{foreign}}");
    let (code, _, _) = stratacache(args(&["inspect", "foreign", "--namespace", &ns])).await;
    assert_eq!(code, 1);
    tokio::task::spawn_blocking(move || {
        stratacache_testkit::cli(6379, &["SET", &foreign, "hello", "EX", "60"])
    })
    .await
    .unwrap();
    let (code, out, _) =
        stratacache(args(&["inspect", "foreign", "--namespace", &ns, "--json"])).await;
    assert_eq!(code, 1);
    let e: Value = serde_json::from_str(&out).unwrap();
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("not a stratacache entry"),
        "{e:#}"
    );
    cleanup(&ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_reaches_another_instances_l1() {
    let ns = unique_namespace("cli-invalidate");
    let other = instance(&ns, Codec::Json).await;
    let opts = EntryOptions::new().ttl(Duration::from_secs(300));
    let tagged = EntryOptions::new()
        .ttl(Duration::from_secs(300))
        .tags(["team:1"]);
    for (key, o) in [
        ("a", &opts),
        ("b", &opts),
        ("t1", &tagged),
        ("t2", &tagged),
        ("report:1", &opts),
        ("report:2", &opts),
        ("keep", &opts),
    ] {
        other.set(key, &key.to_string(), o).await.unwrap();
    }
    // Everything is in this instance's L1 now.
    assert_eq!(
        other.get::<String>("a").await.unwrap().as_deref(),
        Some("a")
    );

    let (code, out, err) = stratacache(args(&[
        "invalidate",
        "--namespace",
        &ns,
        "--key",
        "a",
        "--key",
        "b",
    ]))
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("deleted 2 key(s)"), "{out}");
    assert!(gone(&other, "a").await && gone(&other, "b").await);
    assert_eq!(
        other.get::<String>("keep").await.unwrap().as_deref(),
        Some("keep")
    );

    let (code, _, err) =
        stratacache(args(&["invalidate", "--namespace", &ns, "--tag", "team:1"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(gone(&other, "t1").await && gone(&other, "t2").await);

    let (code, out, err) = stratacache(args(&[
        "invalidate",
        "--namespace",
        &ns,
        "--prefix",
        "report:",
    ]))
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 Redis key(s) deleted"), "{out}");
    assert!(gone(&other, "report:1").await && gone(&other, "report:2").await);
    assert_eq!(
        other.get::<String>("keep").await.unwrap().as_deref(),
        Some("keep")
    );

    let (code, _, err) = stratacache(args(&["invalidate", "--namespace", &ns, "--all"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(gone(&other, "keep").await);

    // One of the four is required; Redis down is an error, not a silent deferral.
    let (code, _, _) = stratacache(args(&["invalidate", "--namespace", &ns])).await;
    assert_eq!(code, 2);
    let port = stratacache_testkit::free_port().to_string();
    let (code, _, err) = stratacache(args(&[
        "invalidate",
        "--namespace",
        &ns,
        "--all",
        "--redis-url",
        &format!("redis://127.0.0.1:{port}"),
        "--timeout",
        "300ms",
    ]))
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("Redis does not answer"), "{err}");
    cleanup(&ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_status_and_dead_letter_replay() {
    let ns = unique_namespace("cli-queue");
    let stream = format!("{ns}:write-behind:views");
    let dead = format!("{stream}:dead");
    let setup = {
        let (stream, dead) = (stream.clone(), dead.clone());
        move || {
            stratacache_testkit::cli(
                6379,
                &["XADD", &stream, "*", "w", "id-1", "k", "a", "c", "1"],
            );
            stratacache_testkit::cli(6379, &["XGROUP", "CREATE", &stream, "write-behind", "0"]);
            stratacache_testkit::cli(
                6379,
                &[
                    "XADD",
                    &dead,
                    "*",
                    "w",
                    "id-2",
                    "k",
                    "b",
                    "c",
                    "2",
                    "error",
                    "sink refused",
                    "origin",
                    "1-0",
                ],
            );
            stratacache_testkit::cli(
                6379,
                &[
                    "XADD",
                    &dead,
                    "*",
                    "w",
                    "id-3",
                    "k",
                    "c",
                    "c",
                    "3",
                    "error",
                    "sink refused",
                    "origin",
                    "1-1",
                ],
            );
        }
    };
    tokio::task::spawn_blocking(setup).await.unwrap();

    let (code, out, err) =
        stratacache(args(&["queue", "status", "--namespace", &ns, "--json"])).await;
    assert_eq!(
        code, 1,
        "dead letters are worth a non-zero status: {out}{err}"
    );
    let s: Value = serde_json::from_str(&out).unwrap();
    let q = &s["queues"][0];
    assert_eq!(q["queue"], "views");
    assert_eq!(q["depth"], 1);
    assert_eq!(q["dead_letters"], 2);

    let (code, out, err) = stratacache(args(&[
        "queue",
        "replay-dead-letters",
        "--namespace",
        &ns,
        "--max",
        "10",
    ]))
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 dead letter(s) put back"), "{out}");

    let (_, out, _) = stratacache(args(&[
        "queue",
        "status",
        "--namespace",
        &ns,
        "--queue",
        "views",
        "--json",
    ]))
    .await;
    let s: Value = serde_json::from_str(&out).unwrap();
    let q = &s["queues"][0];
    assert_eq!(q["depth"], 3);
    assert_eq!(q["dead_letters"], 0);
    let (code, out, _) = stratacache(args(&["queue", "status", "--namespace", &ns])).await;
    assert!(out.contains("dead letters    0"), "{out}");
    assert_eq!(code, 1, "entries and no consumer: {out}");

    cleanup(&ns).await;
}
