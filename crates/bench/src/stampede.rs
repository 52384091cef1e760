//! Stampede: `--processes` OS processes × `--tasks` tasks ask for the same
//! cold key at one agreed wall-clock instant, with a loader that takes
//! `--loader-ms`. Three strategies, each on a fresh key per round:
//! stratacache's `get_or_load`, naive cache-aside and a polling mutex
//! (see [`crate::stampede_worker`], which runs in every process).
//!
//! Per strategy: how many loads ran, and every caller's latency, both raw
//! (end − own start) and as a wait (end − max(own start, first load start)):
//! the processes wake at the agreed instant only to within a few ms, so the
//! wait is the fair measure of how long a caller waits past the load.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use redis::aio::MultiplexedConnection;
use serde_json::{json, Value};

use crate::report::{
    bare_connection, delete_keys, ratio, round, stored_key, unique_namespace, SAFETY_TTL_SECS,
};
use crate::stampede_worker::{now_us, Plan, Strategy};
use crate::{progress, StampedeArgs};

/// The target of a stampede: one load, and waiters served within this much of it.
const TARGET_WAIT_SLACK_MS: u64 = 10;
/// How long the coordinator waits for a worker process at most.
const WORKER_TIMEOUT: Duration = Duration::from_secs(90);

/// One strategy in one round.
struct Trial {
    loads: u64,
    /// Sorted.
    raw_us: Vec<u64>,
    /// Sorted.
    wait_us: Vec<u64>,
    errors: usize,
    first_error: Option<String>,
    /// Last caller start − first caller start, across all processes.
    start_skew_ms: f64,
    /// How late the latest process was for the agreed instant.
    late_ms: f64,
}

/// One strategy over all rounds.
#[derive(Default)]
struct Pooled {
    loads: Vec<u64>,
    raw_us: Vec<u64>,
    wait_us: Vec<u64>,
    errors: usize,
    first_error: Option<String>,
    rounds: Vec<Value>,
}

impl Pooled {
    fn add(&mut self, round_no: u32, t: Trial) {
        self.rounds.push(json!({
            "round": round_no,
            "loads": t.loads,
            "callers": t.raw_us.len(),
            "errors": t.errors,
            "wait_p50_ms": ms(pct(&t.wait_us, 0.50)),
            "wait_p99_ms": ms(pct(&t.wait_us, 0.99)),
            "raw_p50_ms": ms(pct(&t.raw_us, 0.50)),
            "raw_p99_ms": ms(pct(&t.raw_us, 0.99)),
            "start_skew_ms": round(t.start_skew_ms, 2),
            "late_ms": round(t.late_ms, 2),
        }));
        self.loads.push(t.loads);
        self.raw_us.extend(t.raw_us);
        self.wait_us.extend(t.wait_us);
        self.errors += t.errors;
        if self.first_error.is_none() {
            self.first_error = t.first_error;
        }
    }

    fn sort(&mut self) {
        self.raw_us.sort_unstable();
        self.wait_us.sort_unstable();
    }

    fn loads_total(&self) -> u64 {
        self.loads.iter().sum()
    }

    fn wait_p99_ms(&self) -> f64 {
        ms(pct(&self.wait_us, 0.99))
    }

    fn raw_p99_ms(&self) -> f64 {
        ms(pct(&self.raw_us, 0.99))
    }

    fn json(&self) -> Value {
        let dist = |v: &[u64]| {
            json!({
                "p50_ms": ms(pct(v, 0.50)),
                "p99_ms": ms(pct(v, 0.99)),
                "max_ms": ms(v.last().copied().unwrap_or(0)),
            })
        };
        json!({
            "loads_per_round": self.loads,
            "loads_total": self.loads_total(),
            "callers": self.raw_us.len(),
            "errors": self.errors,
            "first_error": self.first_error,
            "wait": dist(&self.wait_us),
            "raw_latency": dist(&self.raw_us),
            "rounds": self.rounds,
        })
    }
}

/// Nearest-rank percentile of a sorted slice.
fn pct(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(us: u64) -> f64 {
    round(us as f64 / 1_000.0, 2)
}

pub async fn run(url: &str, worker_threads: Option<usize>, args: &StampedeArgs) -> Result<Value> {
    ensure!(
        args.processes > 0 && args.tasks > 0 && args.rounds > 0,
        "--processes, --tasks and --rounds must be at least 1"
    );
    let ns = unique_namespace("stampede");
    let mut conn = bare_connection(url).await?;
    progress!(
        "stampede: namespace {ns} on {url}; {} processes x {} tasks, loader {} ms, {} rounds",
        args.processes,
        args.tasks,
        args.loader_ms,
        args.rounds
    );

    let mut pooled: Vec<Pooled> = Strategy::ALL.iter().map(|_| Pooled::default()).collect();
    for r in 1..=args.rounds {
        // Rotate the order, so no strategy always runs first on a quiet machine.
        for i in 0..Strategy::ALL.len() {
            let idx = (i + r as usize - 1) % Strategy::ALL.len();
            let strategy = Strategy::ALL[idx];
            let t = trial(url, worker_threads, args, &ns, r, strategy, &mut conn).await?;
            progress!(
                "round {r} {:<13}: loads {:>4}, wait p50/p99 {:>6.1}/{:>6.1} ms, \
                 raw p50/p99 {:>6.1}/{:>6.1} ms, start skew {:.1} ms{}",
                strategy.name(),
                t.loads,
                ms(pct(&t.wait_us, 0.50)),
                ms(pct(&t.wait_us, 0.99)),
                ms(pct(&t.raw_us, 0.50)),
                ms(pct(&t.raw_us, 0.99)),
                t.start_skew_ms,
                match t.errors {
                    0 => String::new(),
                    n => format!(", {n} errors"),
                }
            );
            pooled[idx].add(r, t);
        }
    }
    pooled.iter_mut().for_each(Pooled::sort);
    let [ours, naive, polling] = &pooled[..] else {
        bail!("three strategies expected");
    };

    let target_wait = (args.loader_ms + TARGET_WAIT_SLACK_MS) as f64;
    let one_load = ours.loads.iter().all(|&n| n == 1);
    let met = one_load && ours.errors == 0 && ours.wait_p99_ms() <= target_wait;
    progress!(
        "stampede: stratacache loads {:?}, wait p99 {:.1} ms (target {target_wait} ms): {}",
        ours.loads,
        ours.wait_p99_ms(),
        if met { "met" } else { "not met" }
    );
    let loads_ratio = |other: &Pooled| ratio(other.loads_total() as f64, ours.loads_total() as f64);
    Ok(json!({
        "scenario": "stampede",
        "processes": args.processes,
        "tasks_per_process": args.tasks,
        "callers_per_round": args.processes * args.tasks,
        "loader_ms": args.loader_ms,
        "rounds": args.rounds,
        "lead_ms": args.lead_ms,
        "stratacache": ours.json(),
        "naive": naive.json(),
        "polling_mutex": polling.json(),
        "ratios": {
            "loads_naive_over_stratacache": loads_ratio(naive),
            "loads_polling_over_stratacache": loads_ratio(polling),
            "wait_p99_polling_over_stratacache": ratio(polling.wait_p99_ms(), ours.wait_p99_ms()),
            "raw_p99_polling_over_stratacache": ratio(polling.raw_p99_ms(), ours.raw_p99_ms()),
            "wait_p99_naive_over_stratacache": ratio(naive.wait_p99_ms(), ours.wait_p99_ms()),
            "raw_p99_naive_over_stratacache": ratio(naive.raw_p99_ms(), ours.raw_p99_ms()),
        },
        "target": {"loads": 1, "wait_p99_max_ms": target_wait},
        "met": met,
    }))
}

/// Run one strategy on a fresh key in `--processes` worker processes, then
/// read the load counter and delete every key the trial may have written.
async fn trial(
    url: &str,
    worker_threads: Option<usize>,
    args: &StampedeArgs,
    ns: &str,
    round_no: u32,
    strategy: Strategy,
    conn: &mut MultiplexedConnection,
) -> Result<Trial> {
    let name = format!("{}-r{round_no}", strategy.name());
    let (key, value_key) = match strategy {
        Strategy::Stratacache => (name.clone(), stored_key(ns, &name)),
        _ => (format!("{ns}:{name}"), format!("{ns}:{name}")),
    };
    let plan = Plan {
        strategy,
        redis_url: url.to_string(),
        namespace: ns.to_string(),
        lock_key: format!("lock:{value_key}"),
        started_key: format!("{ns}:{name}-load-started"),
        loads_key: format!("{ns}:{name}-loads"),
        key,
        tasks: args.tasks,
        loader_ms: args.loader_ms,
        start_at_ms: now_us() / 1_000 + args.lead_ms,
    };
    let written = vec![
        value_key.clone(),
        format!("{value_key}:lease"),
        format!("{value_key}:waiting"),
        plan.lock_key.clone(),
        plan.started_key.clone(),
        plan.loads_key.clone(),
    ];
    // The counter exists before any load, so it carries the safety TTL.
    redis::cmd("SET")
        .arg(&plan.loads_key)
        .arg(0)
        .arg("EX")
        .arg(SAFETY_TTL_SECS)
        .query_async::<()>(conn)
        .await
        .context("creating the load counter")?;

    let result = run_workers(&plan, worker_threads, args.processes, conn).await;
    if let Err(e) = delete_keys(conn, &written).await {
        progress!("stampede: clean-up of {name} failed: {e:#}");
    }
    result
}

async fn run_workers(
    plan: &Plan,
    worker_threads: Option<usize>,
    processes: usize,
    conn: &mut MultiplexedConnection,
) -> Result<Trial> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let plan_json = serde_json::to_string(plan)?;
    let mut waits = Vec::with_capacity(processes);
    for _ in 0..processes {
        let mut cmd = tokio::process::Command::new(&exe);
        if let Some(n) = worker_threads {
            cmd.arg("--worker-threads").arg(n.to_string());
        }
        cmd.arg("stampede-worker")
            .arg(&plan_json)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let child = cmd.spawn().context("starting a stampede worker")?;
        waits.push(tokio::spawn(tokio::time::timeout(
            WORKER_TIMEOUT,
            child.wait_with_output(),
        )));
    }

    let mut reports = Vec::with_capacity(processes);
    for wait in waits {
        let output = wait
            .await?
            .map_err(|_| anyhow::anyhow!("a stampede worker ran longer than {WORKER_TIMEOUT:?}"))?
            .context("waiting for a stampede worker")?;
        ensure!(
            output.status.success(),
            "a stampede worker failed: {}",
            output.status
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .context("a stampede worker printed nothing")?;
        reports.push(serde_json::from_str::<Value>(line).context("a worker's report")?);
    }

    let loads: Option<u64> = redis::cmd("GET")
        .arg(&plan.loads_key)
        .query_async(conn)
        .await?;
    let first_load_us: Option<u64> = redis::cmd("GET")
        .arg(&plan.started_key)
        .query_async(conn)
        .await?;

    let mut t = Trial {
        loads: loads.unwrap_or(0),
        raw_us: Vec::new(),
        wait_us: Vec::new(),
        errors: 0,
        first_error: None,
        start_skew_ms: 0.0,
        late_ms: 0.0,
    };
    let (mut first_start, mut last_start) = (u64::MAX, 0u64);
    for report in &reports {
        t.errors += report["errors"].as_u64().unwrap_or(0) as usize;
        if t.first_error.is_none() {
            t.first_error = report["first_error"].as_str().map(str::to_owned);
        }
        t.late_ms = t.late_ms.max(report["late_ms"].as_f64().unwrap_or(0.0));
        let samples: Vec<[u64; 2]> = serde_json::from_value(report["samples_us"].clone())?;
        for [start, raw] in samples {
            let end = start + raw;
            let from = first_load_us.map_or(start, |f| f.max(start));
            t.raw_us.push(raw);
            t.wait_us.push(end.saturating_sub(from));
            first_start = first_start.min(start);
            last_start = last_start.max(start);
        }
    }
    if last_start >= first_start {
        t.start_skew_ms = (last_start - first_start) as f64 / 1_000.0;
    }
    t.raw_us.sort_unstable();
    t.wait_us.sort_unstable();
    Ok(t)
}
