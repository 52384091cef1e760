//! `stratacache doctor` against throwaway redis-server processes with bad
//! configurations: each finding and the exit status.

mod common;

use common::{absent, doctor, expect, findings, run_text};
use stratacache_testkit::RedisServer;

/// A write-behind queue as the library names it, with one unapplied write.
fn add_queue(server: &RedisServer, namespace: &str) {
    let stream = format!("{namespace}:write-behind:views");
    server.cli(&[
        "XADD",
        &stream,
        "*",
        "w",
        "id-1",
        "k",
        "instrument:AAPL",
        "c",
        "1",
    ]);
    server.cli(&["XGROUP", "CREATE", &stream, "write-behind", "0"]);
}

#[test]
fn maxmemory_0_is_a_warning_about_unbounded_growth() {
    let server = RedisServer::start();
    let (code, report) = doctor(&["--redis-url", &server.url(), "--redis-timeout", "10s"]);
    let f = expect(&report, "memory.unbounded", "warning");
    assert!(f["fix"].as_str().unwrap().contains("maxmemory"));
    assert!(!f["why"].as_str().unwrap().is_empty());
    assert_eq!(code, 1);
    expect(&report, "version", "ok");
    expect(&report, "commands", "ok");
    expect(&report, "pubsub", "ok");
    expect(&report, "persistence", "ok");
}

#[test]
fn a_bounded_lru_cache_is_healthy() {
    let server =
        RedisServer::start_with(&["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]);
    let (code, report) = doctor(&["--redis-url", &server.url(), "--redis-timeout", "10s"]);
    assert_eq!(code, 0, "{report:#}");
    expect(&report, "memory", "ok");
    expect(&report, "latency", "ok");
    // The text form says the same, with an exit status of 0.
    let (code, text, _) = run_text(&[
        "doctor",
        "--redis-url",
        &server.url(),
        "--redis-timeout",
        "10s",
    ]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("healthy"), "{text}");
}

#[test]
fn noeviction_with_a_small_maxmemory_refuses_writes() {
    let server =
        RedisServer::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]);
    let (code, report) = doctor(&["--redis-url", &server.url(), "--redis-timeout", "10s"]);
    let f = expect(&report, "memory.noeviction", "warning");
    assert!(f["why"].as_str().unwrap().contains("refuses writes"));
    assert!(f["fix"].as_str().unwrap().contains("allkeys-lru"));
    assert_eq!(code, 1);

    // Full: an error.
    server.cli(&["DEBUG", "POPULATE", "40000", "fill", "100"]);
    let (code, report) = doctor(&["--redis-url", &server.url(), "--redis-timeout", "10s"]);
    expect(&report, "memory.noeviction", "error");
    assert_eq!(code, 2);
}

#[test]
fn a_write_behind_queue_without_aof_is_an_error() {
    let server =
        RedisServer::start_with(&["--maxmemory", "64mb", "--maxmemory-policy", "volatile-lru"]);
    add_queue(&server, "shop");
    let (code, report) = doctor(&[
        "--redis-url",
        &server.url(),
        "--namespace",
        "shop",
        "--redis-timeout",
        "10s",
    ]);
    let f = expect(&report, "persistence.aof-off", "error");
    assert!(f["fix"].as_str().unwrap().contains("appendonly yes"));
    // The queue was found by the scan, and nobody works on it.
    let q = expect(&report, "queue.no-workers", "warning");
    assert!(q["what"].as_str().unwrap().contains("views"));
    absent(&report, "memory.evicts-queue");
    assert_eq!(code, 2);

    // Without the stream, the same server is fine for a cache.
    let (_, report) = doctor(&[
        "--redis-url",
        &server.url(),
        "--namespace",
        "other",
        "--redis-timeout",
        "10s",
    ]);
    absent(&report, "persistence.aof-off");
    // --write-behind says queues will live here.
    let (_, report) = doctor(&[
        "--redis-url",
        &server.url(),
        "--write-behind",
        "--redis-timeout",
        "10s",
    ]);
    expect(&report, "persistence.aof-off", "error");
}

#[test]
fn allkeys_lru_with_a_stream_can_evict_the_queue() {
    let server = RedisServer::start_with(&[
        "--maxmemory",
        "64mb",
        "--maxmemory-policy",
        "allkeys-lru",
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
    ]);
    add_queue(&server, "shop");
    let (code, report) = doctor(&[
        "--redis-url",
        &server.url(),
        "--namespace",
        "shop",
        "--redis-timeout",
        "10s",
    ]);
    let f = expect(&report, "memory.evicts-queue", "error");
    assert!(f["fix"].as_str().unwrap().contains("volatile-lru"));
    assert!(f["fix"].as_str().unwrap().contains("of their own"));
    // AOF everysec passes, and says what it may lose.
    expect(&report, "persistence", "ok");
    absent(&report, "persistence.aof-off");
    assert_eq!(code, 2);
}

#[test]
fn appendfsync_no_with_a_queue_is_a_warning() {
    let server = RedisServer::start_with(&[
        "--maxmemory",
        "64mb",
        "--maxmemory-policy",
        "volatile-lfu",
        "--appendonly",
        "yes",
        "--appendfsync",
        "no",
    ]);
    add_queue(&server, "shop");
    // A worker read it recently: no "no workers" warning.
    server.cli(&[
        "XREADGROUP",
        "GROUP",
        "write-behind",
        "w1",
        "COUNT",
        "1",
        "STREAMS",
        "shop:write-behind:views",
        ">",
    ]);
    let (code, report) = doctor(&[
        "--redis-url",
        &server.url(),
        "--namespace",
        "shop",
        "--redis-timeout",
        "10s",
    ]);
    expect(&report, "persistence.fsync", "warning");
    absent(&report, "queue.no-workers");
    let q = expect(&report, "queue", "info");
    assert!(
        q["what"]
            .as_str()
            .unwrap()
            .contains("1 read and unacknowledged"),
        "{q}"
    );
    assert_eq!(code, 1, "{report:#}");
}

#[test]
fn the_keyspace_shows_keys_without_ttl_stuck_leases_and_dead_letters() {
    let server =
        RedisServer::start_with(&["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lfu"]);
    let ns = "app";
    server.cli(&["SET", "app:{user:1}", "no ttl here"]);
    server.cli(&["SET", "app:{user:2}", "x", "PX", "60000"]);
    server.cli(&["SET", "app:{user:1}:lease", "token-without-ttl"]);
    server.cli(&["SET", "app:{user:3}:lease", "token", "PX", "3600000"]);
    server.cli(&[
        "SET",
        "app:{user:2}:ver",
        "00000000000000000007",
        "PX",
        "600000",
    ]);
    server.cli(&[
        "SET",
        "app:__tag:user:1",
        "1700000000000000",
        "PX",
        "600000",
    ]);
    server.cli(&["SET", "app:__clear", "1700000000000000"]);
    server.cli(&["SET", "app:stray", "1"]);
    server.cli(&[
        "XADD",
        "app:write-behind:views:dead",
        "*",
        "w",
        "id-9",
        "k",
        "x",
        "c",
        "1",
        "error",
        "boom",
    ]);
    let (code, report) = doctor(&[
        "--redis-url",
        &server.url(),
        "--namespace",
        ns,
        "--redis-timeout",
        "10s",
    ]);
    let space = expect(&report, "keyspace", "info");
    let data = &space["data"];
    assert_eq!(data["entries"], 2, "{space:#}");
    assert_eq!(data["entries_without_ttl"], 1);
    assert_eq!(data["leases"], 2);
    assert_eq!(data["version_floors"], 1);
    assert_eq!(data["tag_stamps"], 1);
    assert_eq!(data["unknown"], 1);
    assert!(data["sampled"].as_u64().unwrap() >= 1);
    let no_ttl = expect(&report, "keyspace.no-ttl", "warning");
    assert!(no_ttl["what"].as_str().unwrap().contains("app:{user:1}"));
    let stuck = expect(&report, "keyspace.stuck-leases", "warning");
    assert!(
        stuck["what"]
            .as_str()
            .unwrap()
            .contains("1 leases without a TTL and 1 with more than"),
        "{stuck}"
    );
    let dead = expect(&report, "queue.dead-letters", "warning");
    assert!(dead["fix"]
        .as_str()
        .unwrap()
        .contains("replay-dead-letters"));
    expect(&report, "keyspace.unknown", "info");
    expect(&report, "keyspace.cleared", "info");
    // A dead-letter stream alone means queues: AOF is now required.
    expect(&report, "persistence.aof-off", "error");
    assert_eq!(code, 2);
}

#[test]
fn latency_over_the_cache_timeout_is_an_error() {
    let server =
        RedisServer::start_with(&["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]);
    let (code, report) = doctor(&["--redis-url", &server.url(), "--redis-timeout", "0.001ms"]);
    let f = expect(&report, "latency", "error");
    assert!(f["data"]["p99_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(code, 2);
}

#[test]
fn a_replica_url_is_an_error_and_the_master_sees_its_replica() {
    let master =
        RedisServer::start_with(&["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]);
    let port = master.port().to_string();
    let replica = RedisServer::start_with(&[
        "--maxmemory",
        "64mb",
        "--maxmemory-policy",
        "allkeys-lru",
        "--replicaof",
        "127.0.0.1",
        &port,
    ]);
    let (code, report) = doctor(&["--redis-url", &replica.url(), "--redis-timeout", "10s"]);
    expect(&report, "replication.replica", "error");
    assert_eq!(code, 2);
    // The master lists it once the link is up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, report) = doctor(&["--redis-url", &master.url(), "--redis-timeout", "10s"]);
        if !findings(&report, "replication").is_empty() {
            let f = expect(&report, "replication", "ok");
            assert!(f["what"].as_str().unwrap().contains("1 replica"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no replica seen: {report:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn an_unreachable_redis_is_an_error() {
    let port = stratacache_testkit::free_port();
    let (code, report) = doctor(&[
        "--redis-url",
        &format!("redis://127.0.0.1:{port}"),
        "--timeout",
        "500ms",
    ]);
    expect(&report, "connect", "error");
    assert_eq!(code, 2);
}

#[test]
fn a_cluster_is_checked_on_every_master() {
    let cluster = stratacache_testkit::shared_cluster();
    let url = format!(
        "redis+cluster://{}",
        cluster
            .master_ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let (_, report) = doctor(&[
        "--redis-url",
        &url,
        "--namespace",
        "clu",
        "--redis-timeout",
        "10s",
    ]);
    assert_eq!(report["topology"], "cluster");
    expect(&report, "cluster.state", "ok");
    absent(&report, "cluster.replicas");
    let version = expect(&report, "version", "ok");
    assert_eq!(
        version["node"].as_str().unwrap().split(", ").count(),
        3,
        "{version}"
    );
    expect(&report, "pubsub", "ok");
    // The same node named alone is a Cluster member behind a single-node URL.
    let one = format!("redis://127.0.0.1:{}", cluster.master_ports()[0]);
    let (code, report) = doctor(&["--redis-url", &one, "--redis-timeout", "10s"]);
    expect(&report, "cluster.single-url", "error");
    assert_eq!(code, 2);
}

#[test]
fn a_sentinel_group_is_followed_to_its_master() {
    let group = stratacache_testkit::RedisSentinelGroup::start();
    let hosts: Vec<String> = group
        .sentinel_addrs()
        .iter()
        .map(|(host, port)| format!("{host}:{port}"))
        .collect();
    let url = format!(
        "redis+sentinel://{}/{}",
        hosts.join(","),
        group.master_name()
    );
    let (_, report) = doctor(&["--redis-url", &url, "--redis-timeout", "10s"]);
    assert_eq!(report["topology"], "sentinel");
    let s = expect(&report, "sentinel", "ok");
    assert!(
        s["what"].as_str().unwrap().contains("3 of 3 Sentinels"),
        "{s}"
    );
    let master = format!("127.0.0.1:{}", group.current_master_port());
    assert!(s["what"].as_str().unwrap().contains(&master), "{s}");
    expect(&report, "version", "ok");
    absent(&report, "replication.replica");
}

#[test]
fn a_disabled_command_is_an_error() {
    let server = RedisServer::start_with(&[
        "--maxmemory",
        "64mb",
        "--maxmemory-policy",
        "allkeys-lru",
        "--rename-command",
        "UNLINK",
        "",
    ]);
    let (code, report) = doctor(&["--redis-url", &server.url(), "--redis-timeout", "10s"]);
    let f = expect(&report, "commands.cache", "error");
    assert!(f["what"].as_str().unwrap().contains("UNLINK"), "{f}");
    expect(&report, "commands.scripts", "error");
    assert_eq!(code, 2);
}
