//! The same workload through stratacache and its peers, on the same Redis
//! in the same run: 100,000 keys drawn Zipf(0.99), a ~300-byte JSON row
//! behind a 1 ms loader, 64 concurrent callers, a fixed time per round.
//!
//! Sides: (a) stratacache without L1, (b) stratacache with L1, (c) the seed
//! articles' cache-aside ported to redis-rs, (d) the `cached` crate's
//! `AsyncRedisCache`, (e) the seed articles' Node.js code on ioredis in a
//! child process. Rounds interleave the sides (the order rotates each
//! round), so a noisy moment on the machine hits them alike; each side keeps
//! its own namespace, warmed once before the first round.

mod node;
mod open_loop;
mod sides;
mod sweep;
mod zipf;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::Args;
use serde_json::{json, Map, Value};

use crate::progress;
use crate::report::{
    bare_connection, delete_keys, latency_histogram, median, ratio, round, unique_namespace,
    Product, Rng, SAFETY_TTL_SECS,
};
use node::NodeSide;
use sides::{plain_keys, CachedCrate, Database, Naive, NaiveTwoTier, Peer, Stratacache, L1};
use zipf::Zipf;

/// SPEC §9: stratacache at least this many times each peer's ops/s.
const TARGET_MIN_RATIO: f64 = 3.0;

#[derive(Args, Debug, Clone)]
pub struct PeersArgs {
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Zipf exponent of the key popularity.
    #[arg(long, default_value_t = 0.99)]
    theta: f64,
    /// Concurrent callers on each side.
    #[arg(long, default_value_t = 64)]
    callers: usize,
    /// How long the "database" takes per load, in milliseconds.
    #[arg(long, default_value_t = 1)]
    loader_ms: u64,
    /// Measured time per side, split evenly over the rounds.
    #[arg(long, default_value_t = 6)]
    duration_secs: u64,
    /// Interleaved rounds; medians of the rounds are reported.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Unrecorded warm-up calls per side before the first round (the same
    /// number on every side, so every side has cached the same keys; 0 to
    /// measure from a cold start).
    #[arg(long, default_value_t = 1_000_000)]
    warmup_calls: u64,
    /// Node.js binary for side (e).
    #[arg(long, default_value = "node")]
    node: String,
    /// Directory of the Node.js driver (default: `peers-node` next to this crate).
    #[arg(long)]
    node_dir: Option<PathBuf>,
    /// Leave out side (e).
    #[arg(long)]
    no_node: bool,
    /// L1's byte bound of side (b), in MiB (default: the library's).
    #[arg(long)]
    l1_mib: Option<u64>,
    /// Run only these sides (comma-separated names from the report), e.g.
    /// to profile one of them.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Start every round of every side from an empty cache: its keys
    /// deleted from Redis and, for the in-process sides, a new instance (an
    /// empty L1) — the first seconds after a deploy or a flush. Implies no
    /// warm-up.
    #[arg(long)]
    cold: bool,
    /// The stratacache sides read with `get_or_load` (a clone of the value
    /// per hit) instead of `get_or_load_shared`.
    #[arg(long)]
    clone_reads: bool,
    /// The stratacache sides answer a miss when the loader returns and fill
    /// the cache after (`EntryOptions::fill_in_background`).
    #[arg(long)]
    fill_in_background: bool,
    /// Offer this many requests per second to each side instead of running
    /// `--callers` callers in a loop (open loop: each request a task of its
    /// own, its latency counted from when it was due). Rust sides only.
    #[arg(long)]
    rate: Option<u64>,
    /// Run the workload at each of these caller counts, cold and warm, and
    /// plot ops/s and p99 against callers (replaces `--callers`, `--cold`).
    #[arg(long, value_delimiter = ',')]
    sweep_callers: Vec<usize>,
    /// Where to write the sweep's plot (default:
    /// bench-results/peers-callers.svg in the repository).
    #[arg(long)]
    sweep_svg: Option<PathBuf>,
}

/// The sides, in report order.
const SIDES: [&str; 6] = [
    "stratacache_l2",
    "stratacache_l1_l2",
    "naive_redis_rs",
    "cached_crate_redis",
    "naive_moka_redis",
    "node_ioredis",
];
/// The sides run in this process: every side but the last (Node.js).
const IN_PROCESS: usize = SIDES.len() - 1;
/// The peers the targets are judged against.
const PEERS: [&str; 3] = ["naive_redis_rs", "cached_crate_redis", "node_ioredis"];
/// Compared, not judged: the hand-rolled code with an in-process tier of its
/// own — the bar for stratacache's L1, hits and tail alike.
const TWO_TIER_PEER: &str = "naive_moka_redis";

/// One round of one side.
#[derive(Debug, Clone, Copy)]
struct RoundFigures {
    ops: u64,
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    loads: u64,
    errors: u64,
}

impl RoundFigures {
    /// A round's figures from its latencies (nanoseconds) over `elapsed`.
    fn from_latencies(
        hist: &hdrhistogram::Histogram<u64>,
        elapsed: Duration,
        loads: u64,
        errors: u64,
    ) -> Self {
        Self {
            ops: hist.len(),
            ops_per_sec: hist.len() as f64 / elapsed.as_secs_f64(),
            p50_us: hist.value_at_quantile(0.50) as f64 / 1_000.0,
            p99_us: hist.value_at_quantile(0.99) as f64 / 1_000.0,
            loads,
            errors,
        }
    }
}

#[derive(Default)]
struct SideFigures {
    rounds: Vec<RoundFigures>,
}

impl SideFigures {
    fn ops_per_sec(&self) -> f64 {
        median(
            &self
                .rounds
                .iter()
                .map(|r| r.ops_per_sec)
                .collect::<Vec<_>>(),
        )
    }

    fn p99_us(&self) -> f64 {
        median(&self.rounds.iter().map(|r| r.p99_us).collect::<Vec<_>>())
    }

    fn json(&self) -> Value {
        let ops: u64 = self.rounds.iter().map(|r| r.ops).sum();
        let loads: u64 = self.rounds.iter().map(|r| r.loads).sum();
        let col = |f: fn(&RoundFigures) -> f64| -> Vec<f64> {
            self.rounds.iter().map(|r| round(f(r), 1)).collect()
        };
        json!({
            "ops_per_sec": round(self.ops_per_sec(), 0),
            "p50_us": round(median(&col(|r| r.p50_us)), 1),
            "p99_us": round(self.p99_us(), 1),
            "ops": ops,
            "hits": ops.saturating_sub(loads),
            "loads": loads,
            "hit_rate": round(1.0 - loads as f64 / ops.max(1) as f64, 4),
            "errors": self.rounds.iter().map(|r| r.errors).sum::<u64>(),
            "rounds_ops_per_sec": col(|r| r.ops_per_sec),
            "rounds_p50_us": col(|r| r.p50_us),
            "rounds_p99_us": col(|r| r.p99_us),
        })
    }
}

pub async fn run(url: &str, args: &PeersArgs) -> Result<Value> {
    ensure!(
        args.keys > 0 && args.callers > 0 && args.rounds > 0 && args.duration_secs > 0,
        "arguments must be positive"
    );
    let ns = unique_namespace("peers");
    let side_ns = |side: &str| format!("{ns}-{side}");
    let mut conn = bare_connection(url).await?;
    progress!("peers: namespaces {ns}-<side> on {url}");

    let written: Vec<String> = (0..SIDES.len())
        .flat_map(|i| side_keys(i, &side_ns(SIDES[i]), args.keys))
        .collect();

    let result = if args.sweep_callers.is_empty() {
        measure(url, args, &side_ns).await
    } else {
        sweep::sweep(url, args, &side_ns).await
    };
    match delete_keys(&mut conn, &written).await {
        Ok(n) => progress!("peers: deleted {n} keys"),
        Err(e) => progress!("peers: clean-up failed: {e:#}"),
    }
    result
}

/// Every key side `i` may write for ids `0..keys`.
fn side_keys(i: usize, ns: &str, keys: u64) -> Vec<String> {
    match SIDES[i] {
        "stratacache_l2" | "stratacache_l1_l2" => Stratacache::written_keys(ns, keys),
        "cached_crate_redis" => CachedCrate::written_keys(ns, keys),
        _ => plain_keys(ns, keys),
    }
}

fn wanted(args: &PeersArgs, side: &str) -> bool {
    args.only.is_empty() || args.only.iter().any(|s| s == side)
}

/// The in-process sides, behind one enum so the rounds can loop over them.
enum Rust {
    Stratacache(Arc<Stratacache>),
    Naive(Arc<Naive>),
    Cached(Arc<CachedCrate>),
    TwoTier(Arc<NaiveTwoTier>),
}

impl Rust {
    async fn drive(
        &self,
        zipf: &Arc<Zipf>,
        callers: usize,
        budget: Budget,
        seed: u64,
    ) -> Result<RoundFigures> {
        match self {
            Rust::Stratacache(p) => drive(p, zipf, callers, budget, seed).await,
            Rust::Naive(p) => drive(p, zipf, callers, budget, seed).await,
            Rust::Cached(p) => drive(p, zipf, callers, budget, seed).await,
            Rust::TwoTier(p) => drive(p, zipf, callers, budget, seed).await,
        }
    }

    async fn drive_open(
        &self,
        zipf: &Arc<Zipf>,
        rate: u64,
        duration: Duration,
        seed: u64,
    ) -> Result<RoundFigures> {
        use open_loop::drive_open;
        match self {
            Rust::Stratacache(p) => drive_open(p, zipf, rate, duration, seed).await,
            Rust::Naive(p) => drive_open(p, zipf, rate, duration, seed).await,
            Rust::Cached(p) => drive_open(p, zipf, rate, duration, seed).await,
            Rust::TwoTier(p) => drive_open(p, zipf, rate, duration, seed).await,
        }
    }
}

async fn measure(url: &str, args: &PeersArgs, side_ns: &dyn Fn(&str) -> String) -> Result<Value> {
    let zipf = Arc::new(Zipf::new(args.keys, args.theta));
    let mut rust: Vec<(&str, Rust)> = Vec::new();
    for (i, name) in SIDES.iter().enumerate().take(IN_PROCESS) {
        rust.push((name, build_side(url, args, i, &side_ns(name)).await?));
    }
    let mut cleaner = bare_connection(url).await?;

    let node_ns = side_ns(SIDES[IN_PROCESS]);
    let plan = node::Plan {
        url,
        namespace: &node_ns,
        keys: args.keys,
        theta: args.theta,
        callers: args.callers,
        loader_ms: args.loader_ms,
        ttl_secs: SAFETY_TTL_SECS,
    };
    let node_dir = args.node_dir.clone().unwrap_or_else(node::default_dir);
    let (mut node_side, mut node_skipped) = (None, None);
    if args.no_node {
        node_skipped = Some("skipped: --no-node".to_string());
    } else if args.rate.is_some() {
        node_skipped = Some("skipped: --rate (the Node.js driver runs a closed loop)".to_string());
    } else if !wanted(args, SIDES[IN_PROCESS]) {
        node_skipped = Some("skipped: --only".to_string());
    } else {
        match NodeSide::start(&args.node, &node_dir, &plan).await? {
            Ok(side) => node_side = Some(side),
            Err(reason) => {
                progress!("peers: Node.js side {reason}");
                node_skipped = Some(reason);
            }
        }
    }

    let slice =
        Duration::from_secs(args.duration_secs).max(Duration::from_millis(100)) / args.rounds;
    progress!(
        "peers: {} keys, Zipf {}, {} callers, {} ms loader; warm-up {} calls per side, then {} rounds of {:?} per side",
        args.keys, args.theta, args.callers, args.loader_ms, args.warmup_calls, args.rounds, slice
    );
    let warmup_calls = if args.cold { 0 } else { args.warmup_calls };
    // At least 64 callers warm up, so that a sweep's single caller does
    // not spend minutes on 1 ms loads before it measures.
    let warmup_callers = args.callers.max(64);
    for (name, side) in &rust {
        if warmup_calls > 0 && wanted(args, name) {
            let w = side
                .drive(&zipf, warmup_callers, Budget::Calls(warmup_calls), 0)
                .await?;
            progress!(
                "peers: warmed {name}: {} calls at {:.0}/s, {} loads",
                w.ops,
                w.ops_per_sec,
                w.loads
            );
        }
    }
    // The Node.js side warms inside its first phase.
    let mut node_warmup = warmup_calls;

    if args.cold {
        progress!("peers: every round of every side starts from an empty cache");
    }
    let mut figures: Vec<SideFigures> = SIDES.iter().map(|_| SideFigures::default()).collect();
    let present: Vec<usize> = (0..SIDES.len())
        .filter(|&i| i < rust.len() || node_side.is_some())
        .filter(|&i| wanted(args, SIDES[i]))
        .collect();
    ensure!(!present.is_empty(), "no side left to run");
    for r in 0..args.rounds {
        let seed = u64::from(r) + 1;
        let mut order = present.clone();
        let shift = r as usize % order.len();
        order.rotate_left(shift);
        for i in order {
            if args.cold {
                delete_keys(&mut cleaner, &side_keys(i, &side_ns(SIDES[i]), args.keys)).await?;
                if i < rust.len() {
                    rust[i].1 = build_side(url, args, i, &side_ns(SIDES[i])).await?;
                }
            }
            let got = if let (true, Some(rate)) = (i < rust.len(), args.rate) {
                rust[i].1.drive_open(&zipf, rate, slice, seed).await?
            } else if i < rust.len() {
                rust[i]
                    .1
                    .drive(&zipf, args.callers, Budget::Time(slice), seed)
                    .await?
            } else {
                let node = node_side.as_mut().context("no Node.js side")?;
                let p = node
                    .phase(node_warmup, slice.as_millis() as u64, seed)
                    .await?;
                node_warmup = 0;
                if r == 0 {
                    progress!("peers: {}", p.node);
                }
                RoundFigures {
                    ops: p.ops,
                    ops_per_sec: p.ops_per_sec,
                    p50_us: p.p50_us,
                    p99_us: p.p99_us,
                    loads: p.loads,
                    errors: p.errors,
                }
            };
            progress!(
                "round {}: {:<20} {:>9.0} ops/s  p50 {:>8.1} µs  p99 {:>8.1} µs  loads {:>6}  errors {}",
                r + 1,
                SIDES[i],
                got.ops_per_sec,
                got.p50_us,
                got.p99_us,
                got.loads,
                got.errors
            );
            figures[i].rounds.push(got);
        }
    }
    if let Some(node) = node_side {
        node.stop().await?;
    }
    drop(rust.drain(..));
    let top_share = zipf.mass_of_top((args.keys / 100) as usize);
    report(args, &figures, node_skipped, top_share)
}

fn report(
    args: &PeersArgs,
    figures: &[SideFigures],
    node_skipped: Option<String>,
    top_share: f64,
) -> Result<Value> {
    let mut sides = Map::new();
    for (name, f) in SIDES.iter().zip(figures) {
        let value = match (&node_skipped, *name == "node_ioredis") {
            (Some(reason), true) => json!({ "skipped": reason }),
            _ if f.rounds.is_empty() => json!({ "skipped": "--only" }),
            _ => f.json(),
        };
        sides.insert(name.to_string(), value);
    }
    let by_name = |n: &str| &figures[SIDES.iter().position(|s| *s == n).unwrap_or(0)];
    let mut ratios = Map::new();
    let (mut met, mut all_present) = (true, true);
    for ours in ["stratacache_l1_l2", "stratacache_l2"] {
        for peer in PEERS.into_iter().chain([TWO_TIER_PEER]) {
            let judged = peer != TWO_TIER_PEER && ours == "stratacache_l1_l2";
            let (a, b) = (by_name(ours), by_name(peer));
            if a.rounds.is_empty() || b.rounds.is_empty() {
                // A side left out: the target cannot be judged.
                all_present &= !judged;
                continue;
            }
            let ops = ratio(a.ops_per_sec(), b.ops_per_sec());
            let per_round: Vec<f64> = a
                .rounds
                .iter()
                .zip(&b.rounds)
                .map(|(x, y)| x.ops_per_sec / y.ops_per_sec)
                .collect();
            if judged {
                met &= ops >= TARGET_MIN_RATIO;
            }
            ratios.insert(
                format!("{ours}/{peer}"),
                json!({
                    "ops_per_sec": ops,
                    "ops_per_sec_median_of_rounds": round(median(&per_round), 3),
                    "p99_peer_over_ours": ratio(b.p99_us(), a.p99_us()),
                }),
            );
        }
    }
    Ok(json!({
        "scenario": "peers",
        "keys": args.keys,
        "theta": args.theta,
        "callers": args.callers,
        "offered_rate_per_sec": args.rate,
        "l1_mib": args.l1_mib.map_or(json!("library default"), |m| json!(m)),
        "loader_ms": args.loader_ms,
        "rounds": args.rounds,
        "secs_per_round": round(args.duration_secs as f64 / f64::from(args.rounds), 3),
        "warmup_calls_per_side": if args.cold { 0 } else { args.warmup_calls },
        "cold_rounds": args.cold,
        "stratacache_read": if args.clone_reads { "get_or_load" } else { "get_or_load_shared" },
        "stratacache_fill": if args.fill_in_background { "background" } else { "foreground" },
        "value_json_bytes": Product::sample(0).json_len(),
        "share_of_calls_on_hottest_1_percent_of_keys": round(top_share, 3),
        "sides": sides,
        "ratios": ratios,
        "target": { "min_ratio_stratacache_l1_l2_each_peer": TARGET_MIN_RATIO },
        "met": if all_present { json!(met) } else { Value::Null },
    }))
}

/// In-process side `i` (`0..IN_PROCESS`), new: an empty L1, a new connection.
async fn build_side(url: &str, args: &PeersArgs, i: usize, ns: &str) -> Result<Rust> {
    let ttl = Duration::from_secs(SAFETY_TTL_SECS);
    let db = Database::new(args.loader_ms);
    let reads = (args.clone_reads, args.fill_in_background);
    Ok(match SIDES[i] {
        "stratacache_l2" => Rust::Stratacache(Arc::new(
            Stratacache::build(url, ns, L1::Off, ttl, db, reads).await?,
        )),
        "stratacache_l1_l2" => Rust::Stratacache(Arc::new(
            Stratacache::build(
                url,
                ns,
                args.l1_mib.map_or(L1::Default, L1::Mib),
                ttl,
                db,
                reads,
            )
            .await?,
        )),
        "naive_redis_rs" => Rust::Naive(Arc::new(Naive::new(
            bare_connection(url).await?,
            ns,
            ttl,
            db,
        ))),
        "cached_crate_redis" => Rust::Cached(Arc::new(CachedCrate::build(url, ns, ttl, db).await?)),
        "naive_moka_redis" => Rust::TwoTier(Arc::new(NaiveTwoTier::new(
            Naive::new(bare_connection(url).await?, ns, ttl, db),
            args.keys,
        ))),
        other => anyhow::bail!("{other} is not an in-process side"),
    })
}

/// How long one phase of calls lasts.
#[derive(Debug, Clone, Copy)]
enum Budget {
    /// A fixed time: the measured rounds.
    Time(Duration),
    /// A fixed number of calls, split over the callers: the warm-up, so that
    /// every side has seen the same keys, however fast it is.
    Calls(u64),
}

/// `callers` tasks call `peer.fetch` on Zipf-drawn ids until `budget` is spent.
async fn drive<P: Peer>(
    peer: &Arc<P>,
    zipf: &Arc<Zipf>,
    callers: usize,
    budget: Budget,
    seed: u64,
) -> Result<RoundFigures> {
    let loads_before = peer.loads();
    let started = Instant::now();
    let (deadline, calls_each) = match budget {
        Budget::Time(d) => (started + d, u64::MAX),
        Budget::Calls(n) => (
            started + Duration::from_secs(86_400),
            n.div_ceil(callers as u64),
        ),
    };
    let mut handles = Vec::with_capacity(callers);
    for c in 0..callers {
        let (peer, zipf) = (Arc::clone(peer), Arc::clone(zipf));
        handles.push(tokio::spawn(async move {
            let mut rng = Rng::new(seed.wrapping_mul(1_000_003) ^ c as u64);
            let mut hist = latency_histogram();
            let mut errors = 0u64;
            for _ in 0..calls_each {
                let id = zipf.sample(&mut rng);
                let t0 = Instant::now();
                if peer.fetch(id).await.is_err() {
                    errors += 1;
                }
                let now = Instant::now();
                hist.saturating_record((now - t0).as_nanos().max(1) as u64);
                if now >= deadline {
                    break;
                }
            }
            (hist, errors)
        }));
    }
    let mut hist = latency_histogram();
    let mut errors = 0;
    for handle in handles {
        let (h, e) = handle.await?;
        hist.add(&h).context("merging histograms")?;
        errors += e;
    }
    Ok(RoundFigures::from_latencies(
        &hist,
        started.elapsed(),
        peer.loads() - loads_before,
        errors,
    ))
}
