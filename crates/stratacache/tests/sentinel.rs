//! L2 behind Sentinel: the cache finds the master and follows it across a
//! failover, and what it invalidated survives the switch.

mod common;

use std::time::Duration;

use stratacache::{Cache, EntryOptions, RedisTopology};
use stratacache_testkit::{cli, RedisSentinelGroup};

fn topology(group: &RedisSentinelGroup) -> RedisTopology {
    RedisTopology::parse(&format!(
        "redis+sentinel://{}/{}",
        group
            .sentinel_addrs()
            .iter()
            .map(|(host, port)| format!("{host}:{port}"))
            .collect::<Vec<_>>()
            .join(","),
        group.master_name()
    ))
    .unwrap()
}

async fn caches(group: &RedisSentinelGroup, test: &str, n: usize) -> Vec<Cache> {
    let namespace = common::namespace(test);
    let mut caches = Vec::new();
    for _ in 0..n {
        let cache = Cache::builder()
            .namespace(namespace.clone())
            .redis(topology(group))
            .redis_timeout(Duration::from_millis(500))
            .build()
            .await
            .unwrap();
        assert!(
            common::eventually(Duration::from_secs(5), || async {
                cache.backplane_connected() == Some(true)
            })
            .await
        );
        caches.push(cache);
    }
    caches
}

fn stored(cache: &Cache, key: &str) -> String {
    format!("{}:{{{key}}}", cache.namespace())
}

async fn node(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Make the replica hold `bytes` under `key` on its own, as if it had
/// missed the master's last write: the tail a promotion loses.
async fn diverge_replica(group: &RedisSentinelGroup, key: &str, bytes: &[u8]) {
    let mut master = node(group.current_master_port()).await;
    // `WAIT` counts acknowledgements of its own connection's writes only: a
    // marker written here, replicated in order after the cache's writes,
    // makes it wait for those too.
    let ((), replicated): ((), i64) = redis::pipe()
        .cmd("SET")
        .arg("test:replicated-marker")
        .arg(1)
        .cmd("WAIT")
        .arg(1)
        .arg(5_000)
        .query_async(&mut master)
        .await
        .unwrap();
    assert_eq!(replicated, 1, "the replica caught up before diverging");
    let mut replica = node(group.replica().port()).await;
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "replica-read-only", "no"])
        .query_async(&mut replica)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(bytes)
        .query_async(&mut replica)
        .await
        .unwrap();
}

async fn raw_get(port: u16, key: &str) -> Option<Vec<u8>> {
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut node(port).await)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_follows_the_master_across_a_sentinel_failover() {
    let group = RedisSentinelGroup::start();
    let cache = caches(&group, "sentinel", 1).await.remove(0);
    let opts = EntryOptions::new().ttl(Duration::from_secs(60));

    cache.set("before", &1u32, &opts).await.unwrap();
    let old_master = group.current_master_port();
    assert_eq!(cli(old_master, &["EXISTS", &stored(&cache, "before")]), "1");

    group.failover();
    let new_master = group.current_master_port();
    assert_ne!(new_master, old_master);

    // Writes land on the new master once the cache has re-resolved it.
    let followed = common::eventually(Duration::from_secs(10), || async {
        cache.set("after", &2u32, &opts).await.unwrap();
        cli(new_master, &["EXISTS", &stored(&cache, "after")]) == "1"
    })
    .await;
    assert!(followed, "writes never reached the new master {new_master}");
    cache.clear_l1();
    assert_eq!(cache.get::<u32>("after").await.unwrap(), Some(2));
    // "before", written moments before the failover, was invalidated again
    // on the new master (which could hold an older copy): see below.
}

/// A `SENTINEL FAILOVER` breaks nothing a client could notice — the old
/// master stays up and answers reads — so an instance must learn of the
/// switch from the Sentinels, and stop trusting an L1 that may have missed
/// invalidations published on the new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_drops_its_l1_when_the_master_moves() {
    let group = RedisSentinelGroup::start();
    let [writer, reader]: [Cache; 2] = caches(&group, "sentinel-l1", 2).await.try_into().unwrap();
    let opts = EntryOptions::new().ttl(Duration::from_secs(60));

    // Loaded, not written: nothing of `reader`'s own to replay.
    let loaded = reader
        .get_or_load("k", &opts, || async { Ok::<_, std::io::Error>(1u32) })
        .await
        .unwrap();
    assert_eq!(loaded, 1);
    assert_eq!(reader.get::<u32>("k").await.unwrap(), Some(1));
    // The new master will hold 2 for `k`, a write `reader` never hears of.
    writer.set("source", &2u32, &opts).await.unwrap();
    let two = raw_get(group.current_master_port(), &stored(&writer, "source"))
        .await
        .unwrap();
    diverge_replica(&group, &stored(&reader, "k"), &two).await;

    group.failover();
    let served_new = common::eventually(Duration::from_secs(5), || async {
        reader.get::<u32>("k").await.unwrap() == Some(2)
    })
    .await;
    assert!(
        served_new,
        "the reader kept serving its L1 copy across the failover"
    );
}

/// A delete acknowledged by the old master but not yet replicated is lost
/// by the promotion; the instance that made it replays it on the new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_the_promoted_replica_missed_is_replayed() {
    let group = RedisSentinelGroup::start();
    let cache = caches(&group, "sentinel-replay", 1).await.remove(0);
    let opts = EntryOptions::new().ttl(Duration::from_secs(60));

    cache.set("k", &1u32, &opts).await.unwrap();
    let one = raw_get(group.current_master_port(), &stored(&cache, "k"))
        .await
        .unwrap();
    cache.delete("k").await.unwrap();
    diverge_replica(&group, &stored(&cache, "k"), &one).await;

    group.failover();
    let new_master = group.current_master_port();
    let replayed = common::eventually(Duration::from_secs(5), || async {
        raw_get(new_master, &stored(&cache, "k")).await.is_none()
    })
    .await;
    assert!(replayed, "the deleted entry came back with the new master");
    cache.clear_l1();
    assert_eq!(cache.get::<u32>("k").await.unwrap(), None);
}
