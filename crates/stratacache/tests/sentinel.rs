//! L2 behind Sentinel: the cache finds the master and follows it across a failover.

mod common;

use std::time::Duration;

use stratacache::{Cache, EntryOptions, RedisTopology};
use stratacache_testkit::{cli, RedisSentinelGroup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_follows_the_master_across_a_sentinel_failover() {
    let group = RedisSentinelGroup::start();
    let topology = RedisTopology::parse(&format!(
        "redis+sentinel://{}/{}",
        group
            .sentinel_addrs()
            .iter()
            .map(|(host, port)| format!("{host}:{port}"))
            .collect::<Vec<_>>()
            .join(","),
        group.master_name()
    ))
    .unwrap();
    let cache = Cache::builder()
        .namespace(common::namespace("sentinel"))
        .redis(topology)
        .redis_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let stored = |key: &str| format!("{}:{{{key}}}", cache.namespace());
    let opts = EntryOptions::new().ttl(Duration::from_secs(60));

    cache.set("before", &1u32, &opts).await.unwrap();
    let old_master = group.current_master_port();
    assert_eq!(cli(old_master, &["EXISTS", &stored("before")]), "1");

    group.failover();
    let new_master = group.current_master_port();
    assert_ne!(new_master, old_master);

    // Writes land on the new master once the cache has re-resolved it.
    let followed = common::eventually(Duration::from_secs(10), || async {
        cache.set("after", &2u32, &opts).await.unwrap();
        cli(new_master, &["EXISTS", &stored("after")]) == "1"
    })
    .await;
    assert!(followed, "writes never reached the new master {new_master}");
    cache.clear_l1();
    assert_eq!(
        cache.get::<u32>("before").await.unwrap(),
        Some(1),
        "replicated data is read from the new master"
    );
    assert_eq!(cache.get::<u32>("after").await.unwrap(), Some(2));
}
