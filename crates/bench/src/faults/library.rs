//! The library under load while Redis or PostgreSQL fails.
//!
//! Load: 32 readers over two cache instances (two `Cache`s with their own L1
//! and backplane, as two service instances would have), reading 200 rows of
//! a PostgreSQL table (skewed towards low ids) through `get_or_load_with_context`
//! with a 30 s TTL, a 10-minute stale window and a 1 s hard timeout, and one
//! writer bumping a random row's version every 25 ms and `delete`-ing its key.
//! The loader reads PostgreSQL through a proxy the suite can cut. Redis is a
//! throwaway server (Cluster, Sentinel group) of the suite's own. Both
//! instances trust L1 for at most 50 ms while their backplane is down.
//!
//! Data lost, for a cache, is a stale read: a version older than one
//! acknowledged more than 50 ms before the read began, not marked stale.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use stratacache::{BreakerState, Cache, RedisTopology};
use stratacache_testkit::{DelayProxy, RedisCluster, RedisSentinelGroup, RedisServer};

use super::harness::{self, drive, entry_options, stale_reads, time_until, window, Source};
use super::{latency_target, ms, slowest_allowed, Group, Row};
use crate::report::unique_namespace;

const READERS: usize = 32;
const REDIS_TIMEOUT: Duration = Duration::from_millis(200);
const LOAD: &str =
    "32 readers (get_or_load, 2 ms apart) over 2 cache instances + 1 writer (a row every 25 ms)";

/// A fresh instance (empty L1) on the same Redis and namespace, after the
/// run: what it reads from Redis must not be older than the database.
async fn left_stale(caches: &[Cache], topology: RedisTopology, source: &Source) -> Result<usize> {
    let fresh = crate::report::cache_builder()
        .namespace(caches[0].namespace())
        .redis(topology)
        .redis_timeout(REDIS_TIMEOUT)
        .build()
        .await?;
    harness::stale_in_redis(&fresh, source).await
}

async fn instances(topology: RedisTopology, namespace: &str) -> Result<Vec<Cache>> {
    let mut caches = Vec::new();
    for _ in 0..2 {
        caches.push(
            crate::report::cache_builder()
                .namespace(namespace)
                .redis(topology.clone())
                .redis_timeout(REDIS_TIMEOUT)
                .backplane_outage_l1_max_age(harness::L1_BOUND)
                .build()
                .await?,
        );
    }
    time_until(Duration::from_secs(10), || async {
        caches.iter().all(|c| c.backplane_connected() == Some(true))
    })
    .await
    .context("backplanes did not connect")?;
    Ok(caches)
}

/// What a run under load recorded.
struct Run<T> {
    requests: Vec<harness::Request>,
    acks: Vec<harness::Ack>,
    from: Duration,
    to: Duration,
    result: T,
}

/// Load for `lead`, then `fault` (which returns when the fault is over),
/// then load for `tail`.
async fn under_load<F, Fut>(
    caches: &[Cache],
    source: &Arc<Source>,
    lead: Duration,
    tail: Duration,
    fault: F,
) -> Run<Fut::Output>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future,
{
    let t0 = Instant::now();
    let (until_tx, until_rx) = tokio::sync::oneshot::channel::<Instant>();
    let load = {
        let (caches, source) = (caches.to_vec(), source.clone());
        tokio::spawn(async move {
            // Run in slices so the end can be decided once the fault is over.
            let mut requests = Vec::new();
            let mut acks = Vec::new();
            let mut until_rx = until_rx;
            let mut until = None;
            loop {
                let slice_end = Instant::now() + Duration::from_millis(500);
                let slice_end = until.map_or(slice_end, |u: Instant| u.min(slice_end));
                let (r, a) = drive(&caches, &source, t0, slice_end, READERS).await;
                requests.extend(r);
                acks.extend(a);
                if until.is_none() {
                    if let Ok(u) = until_rx.try_recv() {
                        until = Some(u);
                    }
                }
                if until.is_some_and(|u| Instant::now() >= u) {
                    return (requests, acks);
                }
            }
        })
    };
    tokio::time::sleep(lead).await;
    let from = t0.elapsed();
    let result = fault().await;
    let to = t0.elapsed();
    let _ = until_tx.send(Instant::now() + tail);
    let (requests, acks) = load.await.expect("load task");
    Run {
        requests,
        acks,
        from,
        to,
        result,
    }
}

/// The figures every library row shares.
struct Figures {
    left_stale: usize,
    failed: usize,
    max_ms: f64,
    stale: usize,
}

fn summarize(
    scenario: &str,
    done: String,
    run: &Run<Option<Duration>>,
    (recovered_what, left_stale): (&str, usize),
    target: String,
) -> (Row, Figures) {
    let h = window(&run.requests, run.from, run.to);
    let before = window(&run.requests, Duration::ZERO, run.from);
    let failed = run.requests.iter().filter(|r| r.version.is_none()).count();
    let stale = stale_reads(&run.requests, &run.acks, false);
    let unconfirmed = run.acks.iter().filter(|a| !a.3).count();
    let behind = stale_reads(&run.requests, &run.acks, true) - stale;
    let (missed, longest) = harness::stale_spread(&run.requests, &run.acks);
    let max_ms = h.max() as f64 / 1e6;
    let mut row = Row::new(scenario, Group::Load, "library");
    row.done = done;
    row.load = LOAD.into();
    row.requests = run.requests.len() as u64;
    row.errors = format!("{failed} failed requests");
    row.latency = format!(
        "{:.2} / {:.2} ms (before the fault: max {:.2} ms)",
        h.value_at_quantile(0.99) as f64 / 1e6,
        max_ms,
        before.max() as f64 / 1e6
    );
    row.recovered = match run.result {
        Some(d) => format!("{} ms ({recovered_what})", ms(d)),
        None => "not within the limit".into(),
    };
    let spread = if stale == 0 {
        String::new()
    } else {
        format!(
            " (behind {missed} acknowledged writes, up to {} ms after them)",
            ms(longest)
        )
    };
    row.lost = format!(
        "{stale} stale reads{spread}; {unconfirmed} writes' invalidations unconfirmed when written (replayed later), {behind} reads behind them; entries older than the database left in Redis after the run: {left_stale}"
    );
    row.target = target;
    (
        row,
        Figures {
            left_stale,
            failed,
            max_ms,
            stale,
        },
    )
}

async fn breakers_closed(caches: &[Cache], limit: Duration) -> Option<Duration> {
    time_until(limit, || async {
        caches
            .iter()
            .all(|c| c.breaker_state() == Some(BreakerState::Closed))
    })
    .await
}

fn bound_ms() -> f64 {
    slowest_allowed(REDIS_TIMEOUT).as_secs_f64() * 1e3
}

pub async fn redis_killed(scale: f64) -> Result<Row> {
    let mut server = tokio::task::spawn_blocking(RedisServer::start).await?;
    let source = Source::create(&unique_namespace("faults-kill")).await?;
    let caches = instances(
        RedisTopology::Single(server.url()),
        &unique_namespace("faults"),
    )
    .await?;
    let down_for = Duration::from_secs_f64(10.0 * scale);
    let run = under_load(
        &caches,
        &source,
        Duration::from_secs(2),
        Duration::from_secs(3),
        || async {
            server.kill();
            tokio::time::sleep(down_for).await;
            server.restart();
            breakers_closed(&caches, Duration::from_secs(10)).await
        },
    )
    .await;
    let left = left_stale(&caches, RedisTopology::Single(server.url()), &source).await?;
    source.drop_table().await;
    let (mut row, f) = summarize(
        "redis-killed",
        format!(
            "Redis killed (SIGKILL) for {} s under load, then restarted",
            down_for.as_secs_f64()
        ),
        &run,
        ("breakers closed, after the restart", left),
        format!(
            "0 failed; {}; recovered ≤ 2 s; 0 stale",
            latency_target(REDIS_TIMEOUT)
        ),
    );
    row.met = f.failed == 0
        && f.max_ms < bound_ms()
        && run.result.is_some_and(|r| r <= Duration::from_secs(2))
        && f.stale == 0
        && f.left_stale == 0;
    Ok(row)
}

pub async fn redis_slow(scale: f64) -> Result<Row> {
    let server = tokio::task::spawn_blocking(RedisServer::start).await?;
    let proxy = DelayProxy::start(server.port())?;
    let source = Source::create(&unique_namespace("faults-slow")).await?;
    let caches = instances(
        RedisTopology::Single(proxy.url()),
        &unique_namespace("faults"),
    )
    .await?;
    let slow_for = Duration::from_secs_f64(10.0 * scale);
    let run = under_load(
        &caches,
        &source,
        Duration::from_secs(2),
        Duration::from_secs(3),
        || async {
            proxy.set_delay(Duration::from_millis(500));
            tokio::time::sleep(slow_for).await;
            proxy.set_delay(Duration::ZERO);
            breakers_closed(&caches, Duration::from_secs(10)).await
        },
    )
    .await;
    let left = left_stale(&caches, RedisTopology::Single(proxy.url()), &source).await?;
    source.drop_table().await;
    drop(server);
    let (mut row, f) = summarize(
        "redis-slow",
        format!(
            "every Redis round trip delayed by 1 s (a TCP proxy holding each chunk 500 ms each way) for {} s",
            slow_for.as_secs_f64()
        ),
        &run,
        ("breakers closed, after the delay ended", left),
        format!(
            "0 failed; {}, whatever Redis does; 0 stale",
            latency_target(REDIS_TIMEOUT)
        ),
    );
    row.met = f.failed == 0 && f.max_ms < bound_ms() && f.stale == 0 && f.left_stale == 0;
    Ok(row)
}

pub async fn postgres_down(scale: f64) -> Result<Row> {
    let server = tokio::task::spawn_blocking(RedisServer::start).await?;
    let source = Source::create(&unique_namespace("faults-pg")).await?;
    let caches = instances(
        RedisTopology::Single(server.url()),
        &unique_namespace("faults"),
    )
    .await?;
    let down_for = Duration::from_secs_f64(10.0 * scale);
    let probe = caches[0].clone();
    let run = under_load(
        &caches,
        &source,
        Duration::from_secs(3),
        Duration::from_secs(3),
        || async {
            source.cut(true);
            tokio::time::sleep(down_for).await;
            source.cut(false);
            let mut n = 0u64;
            time_until(Duration::from_secs(10), || {
                n += 1;
                let (probe, source) = (probe.clone(), source.clone());
                async move {
                    probe
                        .get_or_load(
                            &format!("probe:{n}"),
                            &entry_options(),
                            move || async move { source.read(0).await },
                        )
                        .await
                        .is_ok()
                }
            })
            .await
        },
    )
    .await;
    let left = left_stale(&caches, RedisTopology::Single(server.url()), &source).await?;
    source.drop_table().await;
    drop(server);
    let during: Vec<_> = run
        .requests
        .iter()
        .filter(|r| r.started >= run.from && r.started < run.to)
        .collect();
    let served = during.iter().filter(|r| r.version.is_some()).count();
    let (mut row, f) = summarize(
        "postgres-down",
        format!(
            "PostgreSQL connections cut and refused for {} s (cached rows: {served} of {} requests during the outage served, stale where past their TTL)",
            down_for.as_secs_f64(),
            during.len()
        ),
        &run,
        ("first uncached load after PostgreSQL returned", left),
        "cached keys served (fail-safe); others fail with a clear error (the loader's); recovery when it returns; 0 stale".into(),
    );
    row.errors = format!(
        "{} failed requests (keys never cached: the loader's error, as expected)",
        f.failed
    );
    row.met = f.stale == 0 && f.left_stale == 0 && run.result.is_some() && served > 0;
    Ok(row)
}

pub async fn backplane_cut(scale: f64) -> Result<Row> {
    let server = tokio::task::spawn_blocking(RedisServer::start).await?;
    let source = Source::create(&unique_namespace("faults-bus")).await?;
    let caches = instances(
        RedisTopology::Single(server.url()),
        &unique_namespace("faults"),
    )
    .await?;
    let cuts = (10.0 * scale).ceil() as u32;
    let run = under_load(
        &caches,
        &source,
        Duration::from_secs(2),
        Duration::from_secs(2),
        || async {
            for _ in 0..cuts {
                let _ = server.query(
                    &["CLIENT", "KILL", "TYPE", "pubsub"],
                    Duration::from_secs(1),
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            time_until(Duration::from_secs(10), || async {
                caches.iter().all(|c| c.backplane_connected() == Some(true))
            })
            .await
        },
    )
    .await;
    let left = left_stale(&caches, RedisTopology::Single(server.url()), &source).await?;
    source.drop_table().await;
    let (mut row, f) = summarize(
        "backplane-cut",
        format!("every instance's backplane connection killed (CLIENT KILL TYPE pubsub) {cuts} times, once a second, while a writer invalidates"),
        &run,
        ("both backplanes subscribed again", left),
        format!("0 failed; 0 stale reads past the L1 bound ({} ms)", harness::L1_BOUND.as_millis()),
    );
    row.met = f.failed == 0 && f.stale == 0 && f.left_stale == 0;
    Ok(row)
}

pub async fn cluster_failover() -> Result<Row> {
    let mut cluster = tokio::task::spawn_blocking(RedisCluster::start).await?;
    let source = Source::create(&unique_namespace("faults-cluster")).await?;
    let namespace = unique_namespace("faults");
    let caches = instances(RedisTopology::Cluster(cluster.seed_urls()), &namespace).await?;
    let key = format!("{namespace}:{{row:0}}");
    let victim = cluster
        .master_port_for_key(key.as_bytes())
        .context("a master for row:0")?;
    let run = under_load(
        &caches,
        &source,
        Duration::from_secs(2),
        Duration::from_secs(3),
        || async {
            if let Some(node) = cluster.node_by_port_mut(victim) {
                node.kill();
            }
            let promoted = time_until(Duration::from_secs(30), || async {
                cluster
                    .master_port_for_key(key.as_bytes())
                    .is_some_and(|p| p != victim)
            })
            .await;
            let writes = writes_back(&caches[0]).await;
            promoted.zip(writes).map(|(p, w)| p + w)
        },
    )
    .await;
    let left = left_stale(
        &caches,
        RedisTopology::Cluster(cluster.seed_urls()),
        &source,
    )
    .await?;
    source.drop_table().await;
    let (mut row, f) = summarize(
        "cluster-failover",
        "the master of a hot key's slot killed (SIGKILL) on a 3+3 Cluster; its replica promoted"
            .into(),
        &run,
        ("from the kill: replica promoted and writes accepted", left),
        "reads never fail (L1 and the loader through the failover); writes back after the promotion; 0 stale".into(),
    );
    row.met = f.failed == 0 && f.stale == 0 && f.left_stale == 0 && run.result.is_some();
    Ok(row)
}

/// How long until a write and a delete through `cache` succeed again.
async fn writes_back(cache: &Cache) -> Option<Duration> {
    time_until(Duration::from_secs(10), || async {
        cache
            .set("row:0:probe", &1u32, &entry_options())
            .await
            .is_ok()
            && cache.delete("row:0:probe").await.is_ok()
    })
    .await
}

/// A Sentinel-managed master and replica: `SENTINEL FAILOVER` under load
/// (the sentinels promote the replica and turn the old master into its
/// replica); the caches must find the new master by themselves.
pub async fn sentinel_failover() -> Result<Row> {
    let group = Arc::new(tokio::task::spawn_blocking(RedisSentinelGroup::start).await?);
    let url = format!(
        "redis+sentinel://{}/{}",
        group
            .sentinel_addrs()
            .iter()
            .map(|(host, port)| format!("{host}:{port}"))
            .collect::<Vec<_>>()
            .join(","),
        group.master_name()
    );
    let source = Source::create(&unique_namespace("faults-sentinel")).await?;
    let caches = instances(RedisTopology::parse(&url)?, &unique_namespace("faults")).await?;
    let old_master = group.current_master_port();
    let run = under_load(
        &caches,
        &source,
        Duration::from_secs(2),
        Duration::from_secs(3),
        || async {
            let g = group.clone();
            let started = Instant::now();
            let failed_over = tokio::task::spawn_blocking(move || g.failover()).await;
            if failed_over.is_err() {
                return None;
            }
            // Writes through the cache must land on the new master.
            let new_master = group.current_master_port();
            let followed = time_until(Duration::from_secs(15), || async {
                caches[0]
                    .set("row:0:probe", &1u32, &entry_options())
                    .await
                    .is_ok()
                    && stratacache_testkit::net::call_text(
                        new_master,
                        &[
                            "EXISTS",
                            &format!("{}:{{row:0:probe}}", caches[0].namespace()),
                        ],
                        Duration::from_millis(500),
                    )
                    .is_ok_and(|r| r.trim() == "1")
            })
            .await?;
            let _ = caches[0].delete("row:0:probe").await;
            Some(started.elapsed().max(followed))
        },
    )
    .await;
    let left = left_stale(&caches, RedisTopology::parse(&url)?, &source).await?;
    source.drop_table().await;
    let new_master = group.current_master_port();
    let (mut row, f) = summarize(
        "sentinel-failover",
        format!(
            "SENTINEL FAILOVER of a 1+1 group watched by 3 sentinels under load (master port {old_master} → {new_master})"
        ),
        &run,
        ("from the failover command: new master elected and the caches' writes landing on it", left),
        "reads never fail; clients follow the new master; 0 stale".into(),
    );
    row.met = f.failed == 0
        && f.stale == 0
        && f.left_stale == 0
        && run.result.is_some()
        && new_master != old_master;
    Ok(row)
}
