//! `rediss://` to a throwaway TLS Redis signed by a private CA: the cache
//! and its backplane work with the CA given, and without it the server is
//! not trusted (reads fall back to the loader, nothing panics).

mod common;

use std::time::Duration;

use stratacache::{Cache, EntryOptions, RedisTls};
use stratacache_testkit::TlsRedisServer;

async fn cache(url: &str, namespace: &str, tls: Option<RedisTls>) -> Cache {
    let mut builder = Cache::builder()
        .namespace(namespace)
        .redis_url(url)
        .redis_timeout(Duration::from_secs(1));
    if let Some(tls) = tls {
        builder = builder.redis_tls(tls);
    }
    builder.build().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_carries_the_cache_and_its_backplane() {
    let redis = TlsRedisServer::start();
    let url = redis.tls_url();
    let tls = RedisTls::new().root_cert_pem(redis.ca_pem());
    let namespace = common::namespace("tls");
    let a = cache(&url, &namespace, Some(tls.clone())).await;
    let b = cache(&url, &namespace, Some(tls)).await;
    a.ping_redis().await.unwrap();
    for cache in [&a, &b] {
        assert!(
            common::eventually(Duration::from_secs(5), || async {
                cache.backplane_connected() == Some(true)
            })
            .await,
            "the backplane subscribes over TLS"
        );
    }
    let opts = EntryOptions::new().ttl(Duration::from_secs(60));
    a.set("k", &1u32, &opts).await.unwrap();
    assert_eq!(b.get::<u32>("k").await.unwrap(), Some(1), "read over TLS");
    a.set("k", &2u32, &opts).await.unwrap();
    assert!(
        common::eventually(Duration::from_secs(1), || async {
            b.get::<u32>("k").await.unwrap() == Some(2)
        })
        .await,
        "invalidated over the TLS backplane"
    );

    // Without the CA the server's certificate is not trusted: Redis is
    // unusable, reads still succeed from the loader.
    let untrusting = cache(&url, &namespace, None).await;
    assert!(untrusting.ping_redis().await.is_err());
    let value: u32 = untrusting
        .get_or_load("other", &opts, || async { Ok::<_, std::io::Error>(7) })
        .await
        .unwrap();
    assert_eq!(value, 7);
}

/// Sentinel over TLS on a private CA: the Sentinels and the data nodes take
/// only `rediss://` with that CA. Two instances find the master through the
/// Sentinels, share values and the backplane, and follow a failover; a
/// client without the CA is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_over_tls_with_a_private_ca_follows_a_failover() {
    let group = stratacache_testkit::TlsSentinelGroup::start();
    let topology = stratacache::RedisTopology::Sentinel {
        sentinels: group.sentinel_tls_urls(),
        master_name: stratacache_testkit::MASTER_NAME.to_string(),
        master_url: "rediss://sentinel-master/0".to_string(),
    };
    let tls = RedisTls::new().root_cert_pem(group.ca_pem());
    let namespace = common::namespace("sentinel-tls");
    let build = |tls: Option<RedisTls>| {
        let mut builder = Cache::builder()
            .namespace(&namespace)
            .redis(topology.clone())
            .redis_timeout(Duration::from_secs(1));
        if let Some(tls) = tls {
            builder = builder.redis_tls(tls);
        }
        builder.build()
    };
    let a = build(Some(tls.clone())).await.unwrap();
    let b = build(Some(tls)).await.unwrap();
    a.ping_redis().await.unwrap();
    for cache in [&a, &b] {
        assert!(
            common::eventually(Duration::from_secs(5), || async {
                cache.backplane_connected() == Some(true)
            })
            .await,
            "the backplane subscribes over TLS"
        );
    }
    let opts = EntryOptions::new().ttl(Duration::from_secs(60));
    a.set("k", &1u32, &opts).await.unwrap();
    assert_eq!(b.get::<u32>("k").await.unwrap(), Some(1), "read over TLS");

    let old = group.master_tls_port().unwrap();
    let new = group.failover();
    assert_ne!(old, new);
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            a.set("k", &2u32, &opts).await.is_ok()
                && b.get::<u32>("k").await.ok().flatten() == Some(2)
        })
        .await,
        "both instances follow the new master over TLS"
    );
    let stored = common::stored_key(&namespace, "k");
    let on_new = group.data_node(new).unwrap().cli(&["EXISTS", &stored]);
    assert_eq!(on_new.trim(), "1", "the write landed on the new master");

    // Without the CA neither the Sentinels nor the master are trusted.
    let refused = match build(None).await {
        Err(_) => true,
        Ok(cache) => cache.ping_redis().await.is_err(),
    };
    assert!(refused, "a client without the CA is refused");
}

/// A TLS connection whose peer goes silent without closing (a proxy holds
/// the connection's next chunk for a minute; new connections pass) is given
/// up and made again within seconds, as a plain one is
/// (`connection.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connection_that_goes_silent_is_given_up_and_made_again() {
    let redis = TlsRedisServer::start();
    let proxy = stratacache_testkit::DelayProxy::start(redis.tls_port()).unwrap();
    let builder = Cache::builder()
        .namespace(common::namespace("tls-silent"))
        .redis_url(&format!("rediss://localhost:{}", proxy.port()))
        .redis_tls(RedisTls::new().root_cert_pem(redis.ca_pem()))
        .without_l1()
        .redis_timeout(Duration::from_millis(200));
    common::silent_connection_is_given_up(builder, &proxy).await;
}
