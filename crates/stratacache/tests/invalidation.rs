//! Invalidation by key, tag, prefix and namespace reaches every instance,
//! and no load that began before an invalidation puts the old value back.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{stored_key, Raw, Target};
use stratacache::{Cache, EntryOptions};
use stratacache_testkit::RedisServer;
use tokio::sync::Notify;

against_every_target!(
    a_tag_invalidation_hides_every_tagged_entry_from_every_instance,
    a_prefix_invalidation_deletes_the_keys_everywhere,
    invalidate_all_invalidates_the_namespace_in_constant_time,
    a_load_that_began_before_a_delete_never_lands_after_it,
    once_it_has_waited_for_the_backplane_an_instance_hears_the_others_writes,
);

async fn a_tag_invalidation_hides_every_tagged_entry_from_every_instance(target: Target) {
    let caches = common::instances(target, "tag", 2).await;
    let (a, b) = (&caches[0], &caches[1]);
    let entries = if target == Target::Cluster {
        100_000
    } else {
        20_000
    };
    let tagged = EntryOptions::new()
        .ttl(Duration::from_secs(600))
        .tags(["sector:tech"]);
    let untagged = EntryOptions::new()
        .ttl(Duration::from_secs(600))
        .tags(["sector:energy"]);
    let started = Instant::now();
    for chunk in (0..entries).collect::<Vec<_>>().chunks(2_000) {
        let owned: Vec<(String, u32)> = chunk
            .iter()
            .map(|i| (format!("stock:{i}"), *i as u32))
            .collect();
        let batch: Vec<(&str, u32)> = owned.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        a.set_many(&batch, &tagged).await.unwrap();
    }
    a.set("oil", &1u32, &untagged).await.unwrap();
    eprintln!(
        "{entries} tagged entries written in {:?}",
        started.elapsed()
    );
    // B holds some of them in L1.
    let sample: Vec<String> = (0..entries)
        .step_by(entries / 50)
        .map(|i| format!("stock:{i}"))
        .collect();
    for key in &sample {
        assert!(b.get::<u32>(key).await.unwrap().is_some());
    }

    let started = Instant::now();
    a.invalidate_tag("sector:tech").await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(200), "O(1): {took:?}");

    let c = Cache::builder()
        .namespace(a.namespace().to_string())
        .redis(target.topology())
        .redis_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    for cache in [a, b, &c] {
        assert!(
            common::eventually(Duration::from_millis(100), || async {
                let mut none = true;
                for key in &sample {
                    none &= cache.get::<u32>(key).await.unwrap().is_none();
                }
                none
            })
            .await,
            "tagged entries are gone for every instance"
        );
        assert_eq!(
            cache.get::<u32>("oil").await.unwrap(),
            Some(1),
            "other tags are untouched"
        );
    }
    // Reloading after the invalidation works and is not hidden.
    let v: u32 = b
        .get_or_load("stock:0", &tagged, || async { Ok::<_, std::io::Error>(7) })
        .await
        .unwrap();
    assert_eq!(v, 7);
    assert_eq!(c.get::<u32>("stock:0").await.unwrap(), Some(7));
}

async fn a_prefix_invalidation_deletes_the_keys_everywhere(target: Target) {
    let caches = common::instances(target, "prefix", 2).await;
    let (a, b) = (&caches[0], &caches[1]);
    let opts = EntryOptions::new().ttl(Duration::from_secs(600));
    for user in 1..=2 {
        for item in 0..300 {
            a.set(&format!("user:{user}:item:{item}"), &item, &opts)
                .await
                .unwrap();
        }
    }
    assert_eq!(b.get::<u32>("user:1:item:7").await.unwrap(), Some(7));
    let deleted = a.invalidate_prefix("user:1:").await.unwrap();
    assert_eq!(deleted, 300);
    let mut raw = Raw::connect(target).await;
    assert!(
        !raw.exists(&stored_key(a.namespace(), "user:1:item:7"))
            .await
    );
    assert!(
        raw.exists(&stored_key(a.namespace(), "user:2:item:7"))
            .await
    );
    assert!(
        common::eventually(Duration::from_millis(100), || async {
            b.get::<u32>("user:1:item:7").await.unwrap().is_none()
        })
        .await
    );
    assert_eq!(b.get::<u32>("user:2:item:7").await.unwrap(), Some(7));
    // Glob characters in a prefix are literal.
    a.set("odd*key", &1u32, &opts).await.unwrap();
    assert_eq!(a.invalidate_prefix("odd?").await.unwrap(), 0);
    assert_eq!(a.invalidate_prefix("odd*").await.unwrap(), 1);
}

async fn invalidate_all_invalidates_the_namespace_in_constant_time(target: Target) {
    let caches = common::instances(target, "invalidate-all", 2).await;
    let (a, b) = (&caches[0], &caches[1]);
    let opts = EntryOptions::new().ttl(Duration::from_secs(600));
    for i in 0..500 {
        a.set(&format!("k{i}"), &i, &opts).await.unwrap();
    }
    assert_eq!(b.get::<u32>("k1").await.unwrap(), Some(1));
    a.invalidate_all().await.unwrap();
    assert!(
        common::eventually(Duration::from_millis(100), || async {
            b.get::<u32>("k1").await.unwrap().is_none()
        })
        .await
    );
    assert_eq!(a.get::<u32>("k2").await.unwrap(), None);
    let late = Cache::builder()
        .namespace(a.namespace().to_string())
        .redis(target.topology())
        .build()
        .await
        .unwrap();
    assert_eq!(
        late.get::<u32>("k3").await.unwrap(),
        None,
        "an instance started later knows too"
    );
    // Entries written after the invalidation are served.
    tokio::time::sleep(Duration::from_millis(5)).await;
    a.set("k1", &10u32, &opts).await.unwrap();
    assert_eq!(late.get::<u32>("k1").await.unwrap(), Some(10));
}

async fn once_it_has_waited_for_the_backplane_an_instance_hears_the_others_writes(target: Target) {
    let ns = common::namespace("wait-for-backplane");
    let builder = || {
        Cache::builder()
            .namespace(ns.clone())
            .redis(target.topology())
            .redis_timeout(Duration::from_secs(2))
    };
    let writer = builder().build().await.unwrap();
    let opts = EntryOptions::new().ttl(Duration::from_secs(600));
    writer.set("k", &1u32, &opts).await.unwrap();

    // Built without waiting (as when Redis answers only after the start),
    // then waiting: from then on it hears every invalidation.
    let late = builder()
        .wait_for_backplane(Duration::ZERO)
        .build()
        .await
        .unwrap();
    assert!(late.wait_for_backplane(Duration::from_secs(5)).await);
    assert_eq!(late.backplane_connected(), Some(true));
    // Told by the builder to wait: subscribed once `build` returns.
    let waited = builder()
        .wait_for_backplane(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    assert_eq!(waited.backplane_connected(), Some(true));

    // Both hold the value in L1 for ten minutes; a write on the other
    // instance replaces it within the backplane's bound, not the TTL.
    for reader in [&late, &waited] {
        assert_eq!(reader.get::<u32>("k").await.unwrap(), Some(1));
    }
    writer.set("k", &2u32, &opts).await.unwrap();
    for reader in [&late, &waited] {
        assert!(
            common::eventually(Duration::from_millis(500), || async {
                reader.get::<u32>("k").await.unwrap() == Some(2)
            })
            .await,
            "the write was not heard"
        );
    }
    writer.delete("k").await.unwrap();
    for reader in [&late, &waited] {
        assert!(
            common::eventually(Duration::from_millis(500), || async {
                reader.get::<u32>("k").await.unwrap().is_none()
            })
            .await,
            "the delete was not heard"
        );
    }
}

/// Await `step`, failing (rather than hanging) after 10 s.
async fn within<T>(step: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| panic!("stuck: {step}"))
}

async fn a_load_that_began_before_a_delete_never_lands_after_it(target: Target) {
    let caches = common::instances(target, "staleset", 2).await;
    let (reader, writer) = (&caches[0], &caches[1]);
    let opts = EntryOptions::new().ttl(Duration::from_secs(600));
    let read_db = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    // The reader misses and reads version 1 from the "database"…
    let slow_read = {
        let (reader, opts, read_db, release) = (
            reader.clone(),
            opts.clone(),
            read_db.clone(),
            release.clone(),
        );
        tokio::spawn(async move {
            reader
                .get_or_load("row", &opts, move || async move {
                    read_db.notify_one();
                    release.notified().await;
                    Ok::<_, std::io::Error>(1u32)
                })
                .await
        })
    };
    // A canary in the reader's L1 shows when the writer's invalidation message
    // (which carries both keys) has reached the reader.
    // The reader writes it itself, so it is in its L1 for sure (a value it
    // merely read could be kept out of L1 by a late message about its write).
    reader.set("canary", &0u32, &opts).await.unwrap();
    assert_eq!(reader.get::<u32>("canary").await.unwrap(), Some(0));
    within("the first load starts", read_db.notified()).await;
    // …the writer commits version 2 and invalidates…
    writer.delete_many(&["row", "canary"]).await.unwrap();
    assert!(
        common::eventually(Duration::from_secs(1), || async {
            reader.get::<u32>("canary").await.unwrap().is_none()
        })
        .await
    );
    // …a reader arriving after the invalidation does not join the old load…
    let fresh: u32 = within(
        "a reader after the invalidation",
        reader.get_or_load("row", &opts, || async { Ok::<_, std::io::Error>(2) }),
    )
    .await
    .unwrap();
    assert_eq!(fresh, 2);
    // …and the old load's late fill is refused.
    release.notify_one();
    assert_eq!(
        within("the old load ends", slow_read)
            .await
            .unwrap()
            .unwrap(),
        1,
        "its own caller overlapped the write"
    );
    let mut raw = Raw::connect(target).await;
    let stored = raw.get(&stored_key(reader.namespace(), "row")).await;
    let other = Cache::builder()
        .namespace(reader.namespace().to_string())
        .redis(target.topology())
        .build()
        .await
        .unwrap();
    assert_eq!(
        other.get::<u32>("row").await.unwrap(),
        Some(2),
        "{stored:?}"
    );
    assert_eq!(reader.get::<u32>("row").await.unwrap(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_lost_the_backplane_stops_trusting_its_l1() {
    let mut server = RedisServer::start();
    let namespace = common::namespace("backplane-loss");
    let build = || {
        Cache::builder()
            .namespace(namespace.clone())
            .redis_url(&server.url())
            .redis_timeout(Duration::from_millis(200))
            .backplane_outage_l1_max_age(Duration::from_millis(300))
            .build()
    };
    let a = build().await.unwrap();
    let b = build().await.unwrap();
    for cache in [&a, &b] {
        assert!(
            common::eventually(Duration::from_secs(3), || async {
                cache.backplane_connected() == Some(true)
            })
            .await
        );
    }
    let opts = EntryOptions::new().ttl(Duration::from_secs(600));

    // 1. The subscriber's connection is killed; a write happens meanwhile.
    a.set("k", &1u32, &opts).await.unwrap();
    assert_eq!(b.get::<u32>("k").await.unwrap(), Some(1));
    server.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    a.set("k", &2u32, &opts).await.unwrap();
    assert!(
        common::eventually(Duration::from_millis(500), || async {
            b.get::<u32>("k").await.unwrap() == Some(2)
        })
        .await,
        "b re-reads Redis after the outage"
    );
    assert!(
        common::eventually(Duration::from_secs(3), || async {
            b.backplane_connected() == Some(true)
        })
        .await
    );

    // 2. Redis restarts (all connections drop, nothing persisted).
    server.kill();
    server.restart();
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            b.backplane_connected() == Some(true)
        })
        .await
    );
    a.set("k", &3u32, &opts).await.unwrap();
    assert!(
        common::eventually(Duration::from_millis(500), || async {
            b.get::<u32>("k").await.unwrap() == Some(3)
        })
        .await,
        "no invalidated L1 entry is served after the restart"
    );
}

/// On a Cluster the bus is a sharded channel, which lives on the master of
/// its slot. When that master hands its slots to its replica, Redis ends the
/// subscription; the instance resubscribes on the new master and
/// invalidations flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sharded_backplane_follows_its_slot_across_a_failover() {
    let cluster = tokio::task::spawn_blocking(stratacache_testkit::RedisCluster::start)
        .await
        .unwrap();
    let namespace = common::namespace("bus-failover");
    let build = || {
        Cache::builder()
            .namespace(namespace.clone())
            .redis(stratacache::RedisTopology::Cluster(cluster.seed_urls()))
            .redis_timeout(Duration::from_secs(2))
            .backplane_outage_l1_max_age(Duration::from_millis(300))
            .build()
    };
    let (a, b) = (build().await.unwrap(), build().await.unwrap());
    for cache in [&a, &b] {
        assert!(
            common::eventually(Duration::from_secs(5), || async {
                cache.backplane_connected() == Some(true)
            })
            .await
        );
    }
    let opts = EntryOptions::new().ttl(Duration::from_secs(600));
    a.set("k", &1u32, &opts).await.unwrap();
    assert_eq!(b.get::<u32>("k").await.unwrap(), Some(1));

    // The replica of the bus channel's master takes over (CLUSTER FAILOVER:
    // the old master becomes a replica, and Redis sends `sunsubscribe`).
    let bus = format!("{namespace}:__stratacache:bus");
    let owner = cluster.master_port_for_key(bus.as_bytes()).unwrap();
    let nodes = cluster.cluster_nodes();
    let owner_id = &nodes.iter().find(|n| n.port == owner).unwrap().id;
    let replica = nodes
        .iter()
        .find(|n| n.master_id.as_ref() == Some(owner_id))
        .unwrap()
        .port;
    let reply = cluster
        .node_by_port(replica)
        .unwrap()
        .cli(&["CLUSTER", "FAILOVER"]);
    assert!(reply.contains("OK"), "{reply}");
    assert!(
        common::eventually(Duration::from_secs(20), || async {
            cluster.master_port_for_key(bus.as_bytes()) == Some(replica)
        })
        .await,
        "the replica took over"
    );
    assert!(cluster.wait_ok(Duration::from_secs(20)));

    // Invalidations reach b again once it has resubscribed on the new master.
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            a.set("k", &2u32, &opts).await.is_ok()
                && b.get::<u32>("k").await.unwrap_or(None) == Some(2)
        })
        .await
    );
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            b.backplane_connected() == Some(true)
        })
        .await
    );
    // b holds 2 in L1; a's next write must evict it through the new owner.
    assert_eq!(b.get::<u32>("k").await.unwrap(), Some(2));
    a.set("k", &3u32, &opts).await.unwrap();
    assert!(
        common::eventually(Duration::from_millis(500), || async {
            b.get::<u32>("k").await.unwrap() == Some(3)
        })
        .await,
        "the invalidation went through the resubscribed shard channel"
    );
}

/// `get_or_load` applies the same trust rule as `get`: with the backplane
/// down, an L1 entry whose load began longer ago than the outage bound is a
/// miss, so a write this instance did not hear of cannot be served from L1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_or_load_stops_trusting_l1_while_the_backplane_is_down() {
    let mut server = RedisServer::start();
    let cache = Cache::builder()
        .namespace(common::namespace("trust"))
        .redis_url(&server.url())
        .redis_timeout(Duration::from_millis(200))
        .backplane_outage_l1_max_age(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    assert!(
        common::eventually(Duration::from_secs(3), || async {
            cache.backplane_connected() == Some(true)
        })
        .await
    );
    let opts = EntryOptions::new().ttl(Duration::from_secs(600));
    let load = |v: u32| move || async move { Ok::<_, std::io::Error>(v) };
    assert_eq!(cache.get_or_load("k", &opts, load(1)).await.unwrap(), 1);
    assert_eq!(
        cache.get_or_load("k", &opts, load(9)).await.unwrap(),
        1,
        "an L1 hit"
    );
    server.kill();
    assert!(
        common::eventually(Duration::from_secs(3), || async {
            cache.backplane_connected() == Some(false)
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        cache.get_or_load("k", &opts, load(2)).await.unwrap(),
        2,
        "the old L1 entry is not trusted; the loader answers"
    );
}

/// One read of the hammering test: key, when it began, what it returned.
struct HammerRead {
    instance: usize,
    key: usize,
    began: Instant,
    version: Option<u64>,
    stale: bool,
}

/// A writer on one instance commits a new version of a hot key to the
/// "database" and deletes the key, while readers on both instances load it
/// through the cache; a read that begins well after a delete returned must
/// never serve an older version. Reads that raced the delete itself (on the
/// writer's instance: the L2 read sent while the UNLINK was on its way) must
/// not leave the old value in L1 once the delete is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_read_well_after_an_acknowledged_delete_serves_the_old_value() {
    const KEYS: usize = 12;
    const READERS: usize = 24;
    const BOUND: Duration = Duration::from_millis(50);
    let caches = common::instances(Target::Single, "ack-delete", 2).await;
    let db: Arc<Vec<std::sync::atomic::AtomicU64>> = Arc::new(
        (0..KEYS)
            .map(|_| std::sync::atomic::AtomicU64::new(1))
            .collect(),
    );
    let opts = EntryOptions::new().ttl(Duration::from_secs(30));
    let until = Instant::now() + Duration::from_secs(4);

    let mut readers = Vec::new();
    for task in 0..READERS {
        let (cache, db, opts) = (caches[task % 2].clone(), db.clone(), opts.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = Vec::new();
            let mut n = task;
            while Instant::now() < until {
                n = n.wrapping_mul(2_654_435_761).wrapping_add(97);
                let key = (n >> 7) % KEYS;
                let began = Instant::now();
                let db = db.clone();
                let fetched = cache
                    .get_or_load_with_context(&format!("row:{key}"), &opts, move |_| async move {
                        // The "SELECT": the version as of now, answered a
                        // little later (a write may commit meanwhile).
                        let version = db[key].load(std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        Ok::<_, std::io::Error>(stratacache::Loaded::value(version))
                    })
                    .await;
                reads.push(HammerRead {
                    instance: task % 2,
                    key,
                    began,
                    version: fetched.as_ref().ok().and_then(|f| f.value().copied()),
                    stale: fetched.as_ref().is_ok_and(|f| f.is_stale()),
                });
                tokio::task::yield_now().await;
            }
            reads
        }));
    }
    // Every key is written every KEYS × 5 ms = 60 ms: longer than the bound,
    // so an old value left behind by one delete is caught before the next.
    let writer = {
        let (cache, db) = (caches[0].clone(), db.clone());
        tokio::spawn(async move {
            let mut acks = Vec::new();
            let mut key = 0;
            while Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(5)).await;
                key = (key + 1) % KEYS;
                let version = db[key].fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                cache.delete(&format!("row:{key}")).await.unwrap();
                acks.push((key, version, Instant::now()));
            }
            acks
        })
    };
    let mut reads = Vec::new();
    for reader in readers {
        reads.extend(reader.await.unwrap());
    }
    let acks = writer.await.unwrap();
    assert!(acks.len() > 100, "{} writes", acks.len());

    let mut stale = 0;
    for read in reads.iter().filter(|r| !r.stale) {
        let version = read.version.expect("every read answers");
        let missed = acks
            .iter()
            .filter(|(key, _, at)| *key == read.key && *at + BOUND <= read.began)
            .find(|(_, acked, _)| *acked > version);
        if let Some((_, acked, at)) = missed {
            if stale < 5 {
                eprintln!(
                    "row:{} read v{version} on instance {} {:?} after v{acked} was acknowledged",
                    read.key,
                    read.instance,
                    read.began - *at
                );
            }
            stale += 1;
        }
    }
    assert!(
        stale == 0,
        "{stale} stale reads of {} (writes: {})",
        reads.len(),
        acks.len()
    );
}
