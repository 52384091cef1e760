//! Consistency: stale reads after acknowledged writes, and how fast an
//! invalidation reaches every instance's L1.
//!
//! **Stale reads** (`stratacache_check::consistency`, the checker of
//! `tests/consistency.rs`, run longer): a table of `--rows` rows with a
//! version column in PostgreSQL; two writers bump a random row's version and
//! invalidate; `--readers` processes × `--tasks` tasks read rows through the
//! cache, their loaders slowed at random (0–10 ms before the SELECT, 0–15 ms
//! after) to provoke the stale-set race. Every operation is recorded with
//! start and end; a read is stale when it returns a version older than one
//! acknowledged more than the L1 bound (50 ms) before the read began. Three
//! sides, one after the other, same scenario: the seeds' cache-aside (GET /
//! load / SET; DEL on write), stratacache with lease revocation (`delete` on
//! write), stratacache with version compare-and-set (`invalidate_version` on
//! write).
//!
//! **Propagation**: one writer and `--instances` reader instances (each a
//! `Cache` with its own L1 and backplane subscription). For each sample the
//! readers hold the key in L1, the writer `set`s a new value, and from the
//! moment `set` returns each reader re-reads until it sees the new value;
//! the time per instance and for the slowest instance ("every L1") is recorded.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use stratacache::{EntryOptions, RedisTopology};
use stratacache_check::consistency::{
    create_table, drop_table, now_us, run_reader, run_writers, stale_reads, Mode, Plan, Postgres,
    Report, L1_BOUND_US,
};
use stratacache_testkit::RedisCluster;

use crate::report::{latency_histogram, latency_json, unique_namespace};
use crate::{progress, ConsistencyArgs};

/// Writers bumping rows during each stale-read side.
const WRITERS: usize = 2;

/// The PostgreSQL of the stale-read sides (the reader processes inherit the
/// variable).
fn postgres() -> Postgres {
    Postgres::from_env("STRATACACHE_BENCH_PG")
}

pub async fn run(redis_url: &str, args: &ConsistencyArgs) -> Result<Value> {
    let cluster = if args.cluster {
        progress!("consistency: starting a throwaway Redis Cluster (3 masters, 3 replicas)");
        Some(tokio::task::spawn_blocking(RedisCluster::start).await?)
    } else {
        None
    };
    let (topology, urls, is_cluster) = match &cluster {
        Some(c) => (RedisTopology::Cluster(c.seed_urls()), c.seed_urls(), true),
        None => (
            RedisTopology::parse(redis_url)?,
            vec![redis_url.to_string()],
            false,
        ),
    };
    let mut sides = serde_json::Map::new();
    let mut stale_by_mode = HashMap::new();
    for mode in [Mode::Naive, Mode::Lease, Mode::Version] {
        progress!(
            "consistency: {} — {} reader processes × {} tasks, {} s",
            mode.name(),
            args.readers,
            args.tasks,
            args.duration_secs
        );
        let side = stale_side(args, mode, &topology, &urls, is_cluster).await?;
        stale_by_mode.insert(mode, side["stale_reads"].as_u64().unwrap_or(0));
        sides.insert(mode.name().to_string(), side);
    }
    progress!(
        "consistency: propagation to {} instances, {} samples",
        args.instances,
        args.samples
    );
    let propagation = propagation(args, &topology).await?;
    Ok(json!({
        "scenario": "consistency",
        "topology": if is_cluster { "cluster" } else { "single" },
        "l1_bound_ms": L1_BOUND_US / 1_000,
        "stale_reads": sides,
        "propagation": propagation,
        "checker_sees_staleness": stale_by_mode[&Mode::Naive] > 0,
        "stratacache_stale_reads": stale_by_mode[&Mode::Lease] + stale_by_mode[&Mode::Version],
    }))
}

async fn stale_side(
    args: &ConsistencyArgs,
    mode: Mode,
    topology: &RedisTopology,
    urls: &[String],
    cluster: bool,
) -> Result<Value> {
    let namespace = unique_namespace(&format!("consistency-{}", mode.name()));
    let table = format!("bench_{}", namespace.replace(['-', '.'], "_"));
    let db = postgres().connect().await?;
    create_table(&db, &table, args.rows).await?;
    let plan = Plan {
        mode,
        topology: urls.to_vec(),
        cluster,
        namespace: namespace.clone(),
        table: table.clone(),
        rows: args.rows,
        tasks: args.tasks,
        start_at_us: now_us() + 2_000_000,
        run_for_ms: args.duration_secs * 1_000,
    };
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let plan_json = serde_json::to_string(&plan)?;
    let readers: Vec<_> = (0..args.readers)
        .map(|_| {
            tokio::process::Command::new(&exe)
                .arg("consistency-worker")
                .arg(&plan_json)
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    let cache = crate::report::cache_builder()
        .namespace(namespace)
        .redis(topology.clone())
        .redis_timeout(Duration::from_secs(1))
        .build()
        .await?;
    let acks = run_writers(&plan, &cache, &postgres(), WRITERS).await?;
    let mut reads = Vec::new();
    let mut errors = 0usize;
    for reader in readers {
        let out = reader.wait_with_output().await?;
        ensure!(out.status.success(), "a reader process failed");
        let line = String::from_utf8_lossy(&out.stdout);
        let report: Report = serde_json::from_str(line.trim().lines().last().unwrap_or(""))
            .context("reading a reader's report")?;
        errors += report.errors;
        reads.extend(report.reads);
    }
    drop_table(&db, &table).await?;
    let stale = stale_reads(&reads, &acks).len();
    Ok(json!({
        "reads": reads.len(),
        "writes": acks.len(),
        "read_errors": errors,
        "stale_reads": stale,
    }))
}

/// One reader process of the stale-read side (`bench consistency-worker
/// <plan>`): its report, every read's row, start, end and version.
pub async fn run_worker(plan: &str) -> Result<Value> {
    let plan: Plan = serde_json::from_str(plan).context("reading the plan")?;
    let report = run_reader(&plan, &postgres()).await?;
    Ok(serde_json::to_value(report)?)
}

/// How long after a write's acknowledgement each instance stops serving the
/// old value from its L1.
async fn propagation(args: &ConsistencyArgs, topology: &RedisTopology) -> Result<Value> {
    let namespace = unique_namespace("propagation");
    let build = || {
        crate::report::cache_builder()
            .namespace(namespace.clone())
            .redis(topology.clone())
            .redis_timeout(Duration::from_secs(1))
            .build()
    };
    let writer = build().await?;
    let mut readers = Vec::new();
    for _ in 0..args.instances {
        readers.push(build().await?);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !readers
        .iter()
        .chain([&writer])
        .all(|c| c.backplane_connected() == Some(true))
    {
        ensure!(Instant::now() < deadline, "backplanes did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let opts = EntryOptions::new().ttl(Duration::from_secs(600));
    let mut each = latency_histogram();
    let mut every = latency_histogram();
    for sample in 0..args.samples {
        let key = format!("p:{}", sample % 64);
        writer.set(&key, &(sample * 2), &opts).await?;
        for reader in &readers {
            // Fill L1 (the first read after the write goes to Redis).
            while reader.get::<u64>(&key).await? != Some(sample * 2) {
                tokio::task::yield_now().await;
            }
        }
        let new = sample * 2 + 1;
        writer.set(&key, &new, &opts).await?;
        let acked = Instant::now();
        let waits = readers.iter().map(|reader| {
            let key = key.clone();
            async move {
                while reader.get::<u64>(&key).await? != Some(new) {
                    tokio::task::yield_now().await;
                }
                Ok::<_, stratacache::Error>(acked.elapsed())
            }
        });
        let seen = futures::future::try_join_all(waits).await?;
        for took in &seen {
            each.record(took.as_nanos().max(1) as u64)?;
        }
        let slowest = seen.iter().max().copied().unwrap_or_default();
        every.record(slowest.as_nanos().max(1) as u64)?;
    }
    Ok(json!({
        "instances": args.instances,
        "samples": args.samples,
        "per_instance": latency_json(&each),
        "every_instance": latency_json(&every),
    }))
}
