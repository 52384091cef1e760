//! The fault suite: the library under load while Redis or PostgreSQL fails,
//! one scenario after another, each measured and written to RELIABILITY.md.
//!
//! Load: 32 readers over two cache instances (two `Cache`s with their own L1
//! and backplane, as two service instances would have), reading 200 rows of
//! a PostgreSQL table (skewed towards low ids) through `get_or_load_entry`
//! with a 30 s TTL, a 10-minute stale window and a 1 s hard timeout, and one
//! writer bumping a random row's version every 25 ms and `delete`-ing its key.
//! The loader reads PostgreSQL through a proxy the suite can cut. Redis is a
//! throwaway server (or Cluster) of the suite's own. Both instances trust L1
//! for at most 50 ms while their backplane is down.
//!
//! Each scenario reports requests, failed requests, latency while the fault
//! lasts (p99, max), time to recover after it ends, and stale reads (a
//! version older than one acknowledged more than 50 ms before the read
//! began, not marked stale) — the "data lost" of a cache.

mod harness;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use stratacache::{BreakerState, Cache, RedisTopology};
use stratacache_testkit::{DelayProxy, RedisCluster, RedisServer};

use crate::report::unique_namespace;
use crate::{progress, FaultsArgs};
use harness::{drive, entry_options, stale_reads, time_until, window, Source};

const READERS: usize = 32;
const REDIS_TIMEOUT: Duration = Duration::from_millis(200);
/// A request makes at most three Redis calls before the breaker opens (read,
/// lease, fill), each bounded by the timeout; plus the loader and slack.
const SLOWEST_MS: f64 = 3.0 * 200.0 + 150.0;

struct Outcome {
    scenario: &'static str,
    done: String,
    requests: usize,
    failed: usize,
    p99_ms: f64,
    max_ms: f64,
    recovered_ms: Option<f64>,
    stale: usize,
    /// Writes whose invalidation the cache could not confirm (replayed later).
    unconfirmed: usize,
    /// Reads older than such a write, until the replay reached them.
    behind_unconfirmed: usize,
    target: &'static str,
    met: bool,
}

impl Outcome {
    fn json(&self) -> Value {
        json!({
            "scenario": self.scenario, "done": self.done, "requests": self.requests,
            "failed": self.failed, "fault_p99_ms": self.p99_ms, "fault_max_ms": self.max_ms,
            "recovered_ms": self.recovered_ms, "stale_reads": self.stale,
            "writes_with_unconfirmed_invalidation": self.unconfirmed,
            "reads_behind_unconfirmed_writes": self.behind_unconfirmed,
            "target": self.target, "met": self.met,
        })
    }
}

async fn instances(topology: RedisTopology, namespace: &str) -> Result<Vec<Cache>> {
    let mut caches = Vec::new();
    for _ in 0..2 {
        caches.push(
            Cache::builder()
                .namespace(namespace)
                .redis(topology.clone())
                .redis_timeout(REDIS_TIMEOUT)
                .backplane_outage_l1_max_age(Duration::from_millis(50))
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

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

pub async fn run(args: &FaultsArgs) -> Result<Value> {
    let scale = if args.quick { 0.3 } else { 1.0 };
    let mut outcomes = Vec::new();
    for scenario in &args.only_or_all() {
        progress!("faults: {scenario}");
        let outcome = match scenario.as_str() {
            "redis-killed" => redis_killed(scale).await?,
            "redis-slow" => redis_slow(scale).await?,
            "postgres-down" => postgres_down(scale).await?,
            "backplane-cut" => backplane_cut(scale).await?,
            "cluster-failover" => cluster_failover().await?,
            other => anyhow::bail!("unknown scenario {other}"),
        };
        progress!(
            "faults: {} — {} requests, {} failed, fault p99 {} ms, recovered in {:?} ms, {} stale",
            outcome.scenario,
            outcome.requests,
            outcome.failed,
            outcome.p99_ms,
            outcome.recovered_ms,
            outcome.stale
        );
        outcomes.push(outcome);
    }
    if let Some(path) = &args.write {
        write_report(path, &outcomes, args.quick)?;
    }
    Ok(json!({
        "scenario": "faults",
        "quick": args.quick,
        "results": outcomes.iter().map(Outcome::json).collect::<Vec<_>>(),
        "all_met": outcomes.iter().all(|o| o.met),
    }))
}

/// Load for `lead`, then `fault` (which returns when the fault is over),
/// then load for `tail`.
async fn under_load<F, Fut>(
    caches: &[Cache],
    source: &std::sync::Arc<Source>,
    lead: Duration,
    tail: Duration,
    fault: F,
) -> (
    Vec<harness::Request>,
    Vec<harness::Ack>,
    Duration,
    Duration,
    Fut::Output,
)
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
    let fault_from = t0.elapsed();
    let result = fault().await;
    let fault_to = t0.elapsed();
    let _ = until_tx.send(Instant::now() + tail);
    let (requests, acks) = load.await.expect("load task");
    (requests, acks, fault_from, fault_to, result)
}

#[allow(clippy::too_many_arguments)] // one call per scenario, each naming every figure
fn summarize(
    scenario: &'static str,
    done: String,
    requests: &[harness::Request],
    acks: &[harness::Ack],
    (from, to): (Duration, Duration),
    recovered: Option<Duration>,
    target: &'static str,
    met: impl Fn(&Outcome) -> bool,
) -> Outcome {
    let h = window(requests, from, to);
    let mut outcome = Outcome {
        scenario,
        done,
        requests: requests.len(),
        failed: requests.iter().filter(|r| r.version.is_none()).count(),
        p99_ms: (h.value_at_quantile(0.99) as f64 / 1e4).round() / 100.0,
        max_ms: (h.max() as f64 / 1e4).round() / 100.0,
        recovered_ms: recovered.map(ms),
        stale: stale_reads(requests, acks, false),
        unconfirmed: acks.iter().filter(|a| !a.3).count(),
        behind_unconfirmed: stale_reads(requests, acks, true) - stale_reads(requests, acks, false),
        target,
        met: false,
    };
    outcome.met = met(&outcome);
    outcome
}

async fn breakers_closed(caches: &[Cache], limit: Duration) -> Option<Duration> {
    time_until(limit, || async {
        caches
            .iter()
            .all(|c| c.breaker_state() == Some(BreakerState::Closed))
    })
    .await
}

async fn redis_killed(scale: f64) -> Result<Outcome> {
    let mut server = tokio::task::spawn_blocking(RedisServer::start).await?;
    let source = Source::create(&unique_namespace("faults-kill")).await?;
    let caches = instances(
        RedisTopology::Single(server.url()),
        &unique_namespace("faults"),
    )
    .await?;
    let down_for = Duration::from_secs_f64(10.0 * scale);
    let (requests, acks, from, to, recovered) = under_load(
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
    source.drop_table().await;
    Ok(summarize(
        "redis-killed",
        format!("Redis killed (SIGKILL) for {} s under load, then restarted", down_for.as_secs_f64()),
        &requests,
        &acks,
        (from, to),
        recovered,
        "0 failed; no request slower than 3 Redis timeouts (read, lease, fill) + the loader; recovered ≤ 2 s; 0 stale",
        |o| o.failed == 0 && o.max_ms < SLOWEST_MS && o.recovered_ms.is_some_and(|r| r <= 2_000.0) && o.stale == 0,
    ))
}

async fn redis_slow(scale: f64) -> Result<Outcome> {
    let server = tokio::task::spawn_blocking(RedisServer::start).await?;
    let proxy = DelayProxy::start(server.port())?;
    let source = Source::create(&unique_namespace("faults-slow")).await?;
    let caches = instances(
        RedisTopology::Single(proxy.url()),
        &unique_namespace("faults"),
    )
    .await?;
    let slow_for = Duration::from_secs_f64(10.0 * scale);
    let (requests, acks, from, to, recovered) = under_load(
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
    source.drop_table().await;
    drop(server);
    Ok(summarize(
        "redis-slow",
        format!(
            "every Redis round trip delayed by 1 s (a TCP proxy holding each chunk 500 ms each way) for {} s",
            slow_for.as_secs_f64()
        ),
        &requests,
        &acks,
        (from, to),
        recovered,
        "0 failed; no request slower than 3 Redis timeouts + the loader, whatever Redis does; 0 stale",
        |o| o.failed == 0 && o.max_ms < SLOWEST_MS && o.stale == 0,
    ))
}

async fn postgres_down(scale: f64) -> Result<Outcome> {
    let server = tokio::task::spawn_blocking(RedisServer::start).await?;
    let source = Source::create(&unique_namespace("faults-pg")).await?;
    let caches = instances(
        RedisTopology::Single(server.url()),
        &unique_namespace("faults"),
    )
    .await?;
    let down_for = Duration::from_secs_f64(10.0 * scale);
    let probe = caches[0].clone();
    let (requests, acks, from, to, recovered) = under_load(
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
    source.drop_table().await;
    drop(server);
    let during: Vec<_> = requests
        .iter()
        .filter(|r| r.started >= from && r.started < to)
        .collect();
    let served = during.iter().filter(|r| r.version.is_some()).count();
    let outcome = summarize(
        "postgres-down",
        format!(
            "PostgreSQL connections cut and refused for {} s (cached rows: {} of {} requests during the outage served, stale where past their TTL)",
            down_for.as_secs_f64(),
            served,
            during.len()
        ),
        &requests,
        &acks,
        (from, to),
        recovered,
        "cached keys served (fail-safe); others fail with a clear error; recovery when it returns; 0 stale",
        |o| o.stale == 0 && o.recovered_ms.is_some(),
    );
    Ok(outcome)
}

async fn backplane_cut(scale: f64) -> Result<Outcome> {
    let server = tokio::task::spawn_blocking(RedisServer::start).await?;
    let source = Source::create(&unique_namespace("faults-bus")).await?;
    let caches = instances(
        RedisTopology::Single(server.url()),
        &unique_namespace("faults"),
    )
    .await?;
    let cuts = (10.0 * scale).ceil() as u32;
    let (requests, acks, from, to, recovered) = under_load(
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
    source.drop_table().await;
    Ok(summarize(
        "backplane-cut",
        format!("every instance's backplane connection killed (CLIENT KILL TYPE pubsub) {cuts} times, once a second, while a writer invalidates"),
        &requests,
        &acks,
        (from, to),
        recovered,
        "0 failed; 0 stale reads past the L1 bound",
        |o| o.failed == 0 && o.stale == 0,
    ))
}

async fn cluster_failover() -> Result<Outcome> {
    let mut cluster = tokio::task::spawn_blocking(RedisCluster::start).await?;
    let source = Source::create(&unique_namespace("faults-cluster")).await?;
    let namespace = unique_namespace("faults");
    let caches = instances(RedisTopology::Cluster(cluster.seed_urls()), &namespace).await?;
    let key = format!("{namespace}:{{row:0}}");
    let victim = cluster
        .master_port_for_key(key.as_bytes())
        .context("a master for row:0")?;
    let (requests, acks, from, to, recovered) = under_load(
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
            let writes = time_until(Duration::from_secs(10), || async {
                caches[0]
                    .set("row:0:probe", &1u32, &entry_options())
                    .await
                    .is_ok()
                    && caches[0].delete("row:0:probe").await.is_ok()
            })
            .await;
            promoted.zip(writes).map(|(p, w)| p + w)
        },
    )
    .await;
    source.drop_table().await;
    Ok(summarize(
        "cluster-failover",
        "the master of a hot key's slot killed on a 3+3 Cluster; its replica promoted".to_string(),
        &requests,
        &acks,
        (from, to),
        recovered,
        "reads never fail (L1 and the loader through the failover); writes back after the promotion; 0 stale",
        |o| o.failed == 0 && o.stale == 0 && o.recovered_ms.is_some(),
    ))
}

const BEGIN: &str =
    "<!-- fault suite: begin (written by `bench faults --write RELIABILITY.md`) -->";
const END: &str = "<!-- fault suite: end -->";

fn write_report(path: &str, outcomes: &[Outcome], quick: bool) -> Result<()> {
    let mut table = String::new();
    table.push_str(BEGIN);
    table.push_str(&format!(
        "\n\n## Faults under load\n\n`./target/release/bench faults{} --write RELIABILITY.md` \
         (build first: `cargo build --release -p stratacache-bench`). Load, per scenario: {READERS} \
         readers over two cache instances and one writer (see `crates/bench/src/faults/mod.rs`); \
         Redis timeout {} ms; L1 trusted ≤ 50 ms while a backplane is down.\n\n\
         | scenario | what was done | requests | failed | latency during the fault: p99 / max | recovered after | stale reads | unconfirmed invalidations (reads behind them) | target | met |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        if quick { " --quick" } else { "" },
        REDIS_TIMEOUT.as_millis()
    ));
    for o in outcomes {
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} / {} ms | {} | {} | {} ({}) | {} | {} |\n",
            o.scenario,
            o.done,
            o.requests,
            o.failed,
            o.p99_ms,
            o.max_ms,
            o.recovered_ms
                .map_or("not within the limit".into(), |r| format!("{r} ms")),
            o.stale,
            o.unconfirmed,
            o.behind_unconfirmed,
            o.target,
            if o.met { "**yes**" } else { "**no**" }
        ));
    }
    table.push('\n');
    table.push_str(END);
    let current = std::fs::read_to_string(path).unwrap_or_else(|_| "# Reliability\n".into());
    let updated = match (current.find(BEGIN), current.find(END)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{table}{}", &current[..b], &current[e + END.len()..])
        }
        _ => format!("{}\n{table}\n", current.trim_end()),
    };
    std::fs::write(path, updated).with_context(|| format!("writing {path}"))
}
