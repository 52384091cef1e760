//! `Consistency::Version`: fills carry the version their loader read and
//! land only if Redis knows no newer one; writers announce versions.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Raw, Target};
use stratacache::{Cache, Consistency, EntryOptions, Loaded};
use stratacache_testkit::RedisServer;
use tokio::sync::Notify;

against_every_target!(
    a_fill_older_than_an_announced_version_is_refused,
    a_load_that_read_the_new_version_lands_despite_overlapping_the_write,
    out_of_order_write_throughs_keep_the_newest_version,
    absent_results_are_cached_only_while_no_version_is_known,
    a_prefix_invalidation_keeps_the_version_floors,
);

fn versioned() -> EntryOptions {
    EntryOptions::new()
        .ttl(Duration::from_secs(600))
        .consistency(Consistency::Version)
}

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Start a load of `key` on `cache` that reads `read` (value and version)
/// once `release` is notified; `started` is notified when it is underway.
fn slow_load(
    cache: &Cache,
    key: &'static str,
    opts: &EntryOptions,
    read: u64,
) -> (
    Arc<Notify>,
    Arc<Notify>,
    tokio::task::JoinHandle<stratacache::Result<u64>>,
) {
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let task = {
        let (cache, opts, started, release) = (
            cache.clone(),
            opts.clone(),
            started.clone(),
            release.clone(),
        );
        tokio::spawn(async move {
            cache
                .get_or_load_with_context(key, &opts, move |_| async move {
                    started.notify_one();
                    release.notified().await;
                    Ok::<_, std::io::Error>(Loaded::value(read).version(read))
                })
                .await
                .map(|f| f.into_value().unwrap())
        })
    };
    (started, release, task)
}

async fn a_fill_older_than_an_announced_version_is_refused(target: Target) {
    common::record_metrics();
    let caches = common::instances(target, "ver-refused", 2).await;
    let (reader, writer) = (&caches[0], &caches[1]);
    let opts = versioned();
    // The reader misses and reads version 1…
    let (started, release, task) = slow_load(reader, "row", &opts, 1);
    within("the load starts", started.notified()).await;
    // …the writer commits version 2 and announces it…
    writer.invalidate_version("row", 2).await.unwrap();
    // …the old load ends: its caller overlapped the write and gets v1,
    // but the fill is refused.
    release.notify_one();
    assert_eq!(within("the load ends", task).await.unwrap().unwrap(), 1);
    let mut raw = Raw::connect(target).await;
    let stored = common::stored_key(reader.namespace(), "row");
    assert!(
        !raw.exists(&stored).await,
        "the older version never reached Redis"
    );
    assert_eq!(
        raw.get(&format!("{stored}:ver")).await.as_deref(),
        Some(&b"00000000000000000002"[..])
    );
    assert!(common::counter("stratacache_fills_refused_total", &[("guard", "version")]) >= 1);
    // Neither instance serves v1 afterwards: the next read loads v2.
    for cache in [reader, writer] {
        let fresh = cache
            .get_or_load_with_context("row", &opts, |_| async {
                Ok::<_, std::io::Error>(Loaded::value(2u64).version(2))
            })
            .await
            .unwrap();
        assert_eq!(fresh.into_value(), Some(2));
    }
}

async fn a_load_that_read_the_new_version_lands_despite_overlapping_the_write(target: Target) {
    let caches = common::instances(target, "ver-lands", 2).await;
    let (reader, writer) = (&caches[0], &caches[1]);
    // Version guard: the load began before the write but read its version.
    let (started, release, task) = slow_load(reader, "row", &versioned(), 2);
    within("the load starts", started.notified()).await;
    writer.invalidate_version("row", 2).await.unwrap();
    release.notify_one();
    assert_eq!(within("the load ends", task).await.unwrap().unwrap(), 2);
    let value: u64 = writer
        .get_or_load("row", &versioned(), || async {
            Ok::<_, std::io::Error>(99)
        })
        .await
        .unwrap();
    assert_eq!(value, 2, "the fill landed; no second load");

    // The lease guard discards the same overlapping load, even though it
    // read the new value: the difference between the two modes.
    let lease = EntryOptions::new().ttl(Duration::from_secs(600));
    let (started, release, task) = slow_load(reader, "row2", &lease, 2);
    within("the load starts", started.notified()).await;
    writer.delete("row2").await.unwrap();
    release.notify_one();
    assert_eq!(within("the load ends", task).await.unwrap().unwrap(), 2);
    let mut raw = Raw::connect(target).await;
    assert!(
        !raw.exists(&common::stored_key(reader.namespace(), "row2"))
            .await
    );
}

async fn out_of_order_write_throughs_keep_the_newest_version(target: Target) {
    let caches = common::instances(target, "ver-writes", 2).await;
    let (a, b) = (&caches[0], &caches[1]);
    let opts = versioned();
    assert!(a
        .set_versioned("price", &"v3".to_string(), 3, &opts)
        .await
        .unwrap());
    // A slower writer's older version arrives late: refused.
    assert!(!b
        .set_versioned("price", &"v2".to_string(), 2, &opts)
        .await
        .unwrap());
    for cache in [a, b] {
        assert_eq!(
            cache.get::<String>("price").await.unwrap().as_deref(),
            Some("v3")
        );
    }
    // The same version again is accepted (a retried write).
    assert!(b
        .set_versioned("price", &"v3".to_string(), 3, &opts)
        .await
        .unwrap());
    // Many writers racing: the newest version wins whatever the order.
    let mut writes = Vec::new();
    for version in (10..60u64).rev() {
        let cache = caches[version as usize % 2].clone();
        let opts = opts.clone();
        writes.push(tokio::spawn(async move {
            cache
                .set_versioned("price", &format!("v{version}"), version, &opts)
                .await
                .unwrap()
        }));
    }
    for write in writes {
        write.await.unwrap();
    }
    assert!(
        common::eventually(Duration::from_secs(2), || async {
            a.get::<String>("price").await.unwrap().as_deref() == Some("v59")
                && b.get::<String>("price").await.unwrap().as_deref() == Some("v59")
        })
        .await,
        "every instance ends on the newest version"
    );
}

async fn absent_results_are_cached_only_while_no_version_is_known(target: Target) {
    let caches = common::instances(target, "ver-absent", 1).await;
    let cache = &caches[0];
    let opts = versioned();
    // Never existed: the negative entry is cached (version 0, no floor).
    assert_eq!(
        cache
            .get_or_load_with_context("ghost", &opts, |_| async {
                Ok::<_, std::io::Error>(Loaded::<u64>::absent())
            })
            .await
            .unwrap()
            .into_value(),
        None
    );
    let mut raw = Raw::connect(target).await;
    let stored = common::stored_key(cache.namespace(), "ghost");
    assert!(raw.exists(&stored).await);
    // Created at version 1: the negative entry goes, and an "absent" load
    // that raced the insert can no longer be stored.
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let racing = {
        let (cache, opts, started, release) = (
            cache.clone(),
            opts.clone(),
            started.clone(),
            release.clone(),
        );
        tokio::spawn(async move {
            cache
                .get_or_load_with_context("ghost2", &opts, move |_| async move {
                    started.notify_one();
                    release.notified().await;
                    Ok::<_, std::io::Error>(Loaded::<u64>::absent())
                })
                .await
        })
    };
    within("the load starts", started.notified()).await;
    cache.invalidate_version("ghost", 1).await.unwrap();
    cache.invalidate_version("ghost2", 1).await.unwrap();
    assert!(!raw.exists(&stored).await);
    release.notify_one();
    within("the racing load ends", racing)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !raw.exists(&common::stored_key(cache.namespace(), "ghost2"))
            .await,
        "the stale absent marker was refused"
    );
}

async fn a_prefix_invalidation_keeps_the_version_floors(target: Target) {
    let caches = common::instances(target, "ver-prefix", 1).await;
    let cache = &caches[0];
    let opts = versioned();
    assert!(cache
        .set_versioned("user:7:profile", &"v5".to_string(), 5, &opts)
        .await
        .unwrap());
    let deleted = cache.invalidate_prefix("user:7:").await.unwrap();
    assert_eq!(deleted, 1, "the entry went, its floor stayed");
    let (started, release, task) = slow_load(cache, "user:7:profile", &opts, 4);
    within("the load starts", started.notified()).await;
    release.notify_one();
    within("the load ends", task).await.unwrap().unwrap();
    let mut raw = Raw::connect(target).await;
    assert!(
        !raw.exists(&common::stored_key(cache.namespace(), "user:7:profile"))
            .await,
        "a fill older than the floor is still refused after the prefix invalidation"
    );
}

/// A version announced while Redis is down is not lost: it is raised when
/// Redis returns, so a fill of an older version cannot land then either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_announced_during_an_outage_are_replayed() {
    let mut server = RedisServer::start();
    let cache = Cache::builder()
        .namespace(common::namespace("ver-outage"))
        .redis_url(&server.url())
        .redis_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let opts = versioned();
    assert!(cache.set_versioned("row", &1u64, 1, &opts).await.unwrap());
    server.kill();
    assert!(cache.invalidate_version("row", 7).await.is_err());
    assert!(cache.invalidate_version("row", 5).await.is_err());
    assert!(cache.pending_recovery() >= 1, "the floor waits for Redis");
    server.restart();
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            cache.pending_recovery() == 0
        })
        .await,
        "replayed once Redis answers"
    );
    let stored = common::stored_key(cache.namespace(), "row");
    assert_eq!(
        server.cli(&["GET", &format!("{stored}:ver")]).trim(),
        "00000000000000000007",
        "the newest announced version"
    );
    assert_eq!(
        server.cli(&["EXISTS", &stored]).trim(),
        "0",
        "the old entry went"
    );
    assert!(!cache.set_versioned("row", &6u64, 6, &opts).await.unwrap());
}
