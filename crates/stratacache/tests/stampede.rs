//! Stampede protection across OS processes: several processes, each with
//! hundreds of tasks, miss one cold key at the same instant.
//!
//! The test binary re-executes itself as the worker processes (the ignored
//! test `stampede_worker` is their entry point), so every process is a real,
//! separate instance with its own L1, flights and Redis connections.

mod common;

use std::process::Child;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use stratacache::{Cache, EntryOptions};

const WORKER_ENV: &str = "STRATACACHE_STAMPEDE_WORKER";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct WorkerPlan {
    redis_url: String,
    namespace: String,
    key: String,
    tasks: usize,
    loader_ms: u64,
    lock_timeout_ms: u64,
    /// Wall-clock instant (ms since the epoch) at which every worker starts.
    start_at_ms: u64,
}

#[derive(Debug, Deserialize, Serialize)]
struct WorkerReport {
    /// Per caller: wall-clock start and end, µs since the epoch.
    calls_us: Vec<(u64, u64)>,
    errors: Vec<String>,
}

fn now_ms() -> u64 {
    now_us() / 1000
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Where the first loader records when it started (µs since the epoch).
fn load_started_key(namespace: &str) -> String {
    format!("{namespace}-load-started")
}

fn loads_key(namespace: &str) -> String {
    format!("{namespace}-loads")
}

/// Entry point of a worker process; does nothing when run as a test.
#[test]
#[ignore = "entry point of the worker processes started by the other tests"]
fn stampede_worker() {
    common::worker::serve(WORKER_ENV, run_worker);
}

async fn run_worker(plan: WorkerPlan) -> WorkerReport {
    let cache = Cache::builder()
        .namespace(plan.namespace.clone())
        .redis_url(&plan.redis_url)
        .redis_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    cache.ping_redis().await.expect("redis answers");
    let counter = redis::Client::open(plan.redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let opts = EntryOptions::new()
        .ttl(Duration::from_secs(60))
        .lock_timeout(Duration::from_millis(plan.lock_timeout_ms));
    tokio::time::sleep(Duration::from_millis(
        plan.start_at_ms.saturating_sub(now_ms()),
    ))
    .await;

    let mut tasks = Vec::with_capacity(plan.tasks);
    for _ in 0..plan.tasks {
        let (cache, opts, mut counter, plan) =
            (cache.clone(), opts.clone(), counter.clone(), plan.clone());
        tasks.push(tokio::spawn(async move {
            let started = now_us();
            let result = cache
                .get_or_load(&plan.key, &opts, move || async move {
                    let _: () = redis::cmd("SET")
                        .arg(load_started_key(&plan.namespace))
                        .arg(now_us())
                        .arg("NX")
                        .query_async(&mut counter)
                        .await?;
                    let _: i64 = redis::cmd("INCR")
                        .arg(loads_key(&plan.namespace))
                        .query_async(&mut counter)
                        .await?;
                    tokio::time::sleep(Duration::from_millis(plan.loader_ms)).await;
                    Ok::<_, redis::RedisError>(42u64)
                })
                .await;
            ((started, now_us()), result)
        }));
    }
    let mut report = WorkerReport {
        calls_us: Vec::new(),
        errors: Vec::new(),
    };
    for task in tasks {
        let (span, result) = task.await.unwrap();
        match result {
            Ok(42) => report.calls_us.push(span),
            Ok(other) => report.errors.push(format!("wrong value {other}")),
            Err(err) => report.errors.push(err.to_string()),
        }
    }
    report
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn read_number(redis_url: &str, key: &str) -> u64 {
    let mut conn = redis::Client::open(redis_url)
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("GET")
        .arg(key)
        .query::<Option<u64>>(&mut conn)
        .unwrap()
        .unwrap_or(0)
}

fn loads(redis_url: &str, namespace: &str) -> u64 {
    read_number(redis_url, &loads_key(namespace))
}

/// The multi-process tests of this file run one at a time: the waiters'
/// p99 is measured, and on 2 cores the other test's processes would be in it.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn four_processes_of_250_tasks_on_a_cold_key_cause_exactly_one_load() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let plan = WorkerPlan {
        redis_url: common::single_url(),
        namespace: common::namespace("stampede"),
        key: "cold".into(),
        tasks: 250,
        loader_ms: 200,
        lock_timeout_ms: 5_000,
        start_at_ms: now_ms() + 2_500,
    };
    let workers: Vec<Child> = (0..4)
        .map(|_| common::worker::spawn("stampede_worker", WORKER_ENV, &plan))
        .collect();
    let reports: Vec<WorkerReport> = workers.into_iter().map(common::worker::collect).collect();

    let errors: Vec<&String> = reports.iter().flat_map(|r| &r.errors).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let calls: Vec<(u64, u64)> = reports
        .iter()
        .flat_map(|r| r.calls_us.iter().copied())
        .collect();
    assert_eq!(calls.len(), 1_000);
    assert_eq!(
        loads(&plan.redis_url, &plan.namespace),
        1,
        "exactly one load across 4 processes"
    );
    // A caller's wait counts from its own start or the load's start, whichever
    // is later: the processes wake at the agreed instant only to within a few
    // ms on a busy 2-core machine, and a caller cannot be served before the
    // load it waits for has run.
    let load_started = read_number(&plan.redis_url, &load_started_key(&plan.namespace));
    let ms = |us: u64| us as f64 / 1000.0;
    let mut waits: Vec<f64> = calls
        .iter()
        .map(|&(start, end)| ms(end - start.max(load_started)))
        .collect();
    let mut raw: Vec<f64> = calls.iter().map(|&(start, end)| ms(end - start)).collect();
    waits.sort_by(f64::total_cmp);
    raw.sort_by(f64::total_cmp);
    let p99 = percentile(&waits, 0.99);
    eprintln!(
        "stampede: 1 load; waits p50 {:.1} ms, p99 {p99:.1} ms, max {:.1} ms; raw latency p50 {:.1} ms, p99 {:.1} ms (loader {} ms)",
        percentile(&waits, 0.5),
        waits[waits.len() - 1],
        percentile(&raw, 0.5),
        percentile(&raw, 0.99),
        plan.loader_ms
    );
    // Waiters are woken by the fill notification, not by their backoff: a
    // waiter that only polled (2, 4, 8 … 128 ms) would next look ≈ 54 ms after
    // a 200 ms load. The 10 ms target itself is held by the release-build
    // benchmark (`bench stampede`, BENCHMARKS.md); this debug build shares 2
    // cores with 4 worker processes and Redis, so the test allows 30 ms.
    assert!(p99 <= (plan.loader_ms + 30) as f64, "p99 {p99:.1} ms");
}

#[test]
fn a_killed_lease_holder_is_replaced_once_its_lease_expires() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let url = common::single_url();
    let namespace = common::namespace("holder-killed");
    let plan = |tasks: usize, loader_ms: u64, start_in: u64| WorkerPlan {
        redis_url: url.clone(),
        namespace: namespace.clone(),
        key: "cold".into(),
        tasks,
        loader_ms,
        lock_timeout_ms: 1_000,
        start_at_ms: now_ms() + start_in,
    };
    // The holder takes the lease and then hangs in its loader.
    let mut holder = common::worker::spawn("stampede_worker", WORKER_ENV, &plan(1, 60_000, 1_000));
    let lease_key = format!("{namespace}:{{cold}}:lease");
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !redis::cmd("EXISTS")
        .arg(&lease_key)
        .query::<bool>(&mut conn)
        .unwrap()
    {
        assert!(Instant::now() < deadline, "the holder never took the lease");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Two more processes miss the key and wait on the holder's lease.
    let waiters: Vec<Child> = (0..2)
        .map(|_| common::worker::spawn("stampede_worker", WORKER_ENV, &plan(100, 100, 1_000)))
        .collect();
    std::thread::sleep(Duration::from_millis(2_500));
    assert!(
        redis::cmd("EXISTS")
            .arg(&lease_key)
            .query::<bool>(&mut conn)
            .unwrap(),
        "a live holder keeps its lease past lock_timeout"
    );
    assert_eq!(loads(&url, &namespace), 1);
    holder.kill().unwrap(); // SIGKILL: no release, no keepalive
    holder.wait().unwrap();

    let reports: Vec<WorkerReport> = waiters.into_iter().map(common::worker::collect).collect();
    let errors: Vec<&String> = reports.iter().flat_map(|r| &r.errors).collect();
    assert!(errors.is_empty(), "every caller gets the value: {errors:?}");
    assert_eq!(reports.iter().map(|r| r.calls_us.len()).sum::<usize>(), 200);
    assert_eq!(
        loads(&url, &namespace),
        2,
        "the dead holder's load and one replacement"
    );
}
