//! `bench`: stratacache measured against its own building blocks in the same
//! run (bare moka, bare redis-rs, `redis-benchmark`).
//!
//! Every scenario writes progress to stderr and exactly one JSON object as the
//! last line of stdout, with both figures and their ratio.

mod backplane;
mod consistency;
mod external;
mod faults;
mod http;
mod instructions;
mod invalidate_tag;
mod l1_hit;
mod l1_memory;
mod l2_hit;
mod l2_throughput;
mod peers;
mod report;
mod scaling;
mod simulate;
mod stampede;
mod stampede_worker;
mod write_behind;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bench",
    about = "stratacache benchmarks: each figure next to its baseline, measured in the same run"
)]
struct Cli {
    /// Redis to benchmark against (the L2 scenarios write only keys under a
    /// unique namespace, and delete them afterwards).
    #[arg(long, global = true, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,

    /// Worker threads of the tokio multi-thread runtime (default: one per core).
    #[arg(long, global = true)]
    worker_threads: Option<usize>,

    /// How stratacache's sides reach a single Redis node: the cache's own
    /// auto-pipelining connection (the default), or redis-rs's connection
    /// manager (for A/B runs of the same binary).
    #[arg(long, global = true, value_enum)]
    redis_client: Option<report::RedisClient>,

    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// L1 hit: `cache.get` on a filled L1 vs a bare moka get of the same keys.
    L1Hit(L1HitArgs),
    /// L1 memory: fill an L1-only cache past its byte bound; the bound vs
    /// what L1 counts and what resident memory grew by, bytes per entry.
    L1Memory(L1MemoryArgs),
    /// L2 hit, one task: `cache.get` without L1 vs a bare redis-rs GET + decode.
    L2Hit(L2HitArgs),
    /// L2 hits from many tasks vs bare redis-rs and `redis-benchmark` ceilings.
    L2Throughput(L2ThroughputArgs),
    /// Many processes × tasks miss the same cold key at once: stratacache's
    /// `get_or_load` vs naive cache-aside vs a polling mutex.
    Stampede(StampedeArgs),
    /// Invalidate one tag over many entries: stratacache's per-tag timestamp
    /// vs a per-tag Redis set (SMEMBERS + UNLINK), commands counted on the server.
    InvalidateTag(InvalidateTagArgs),
    /// How an invalidation reaches other instances on a Cluster: pub/sub vs
    /// sharded pub/sub vs RESP3 client tracking (latency, cluster-bus cost).
    Backplane(BackplaneArgs),
    /// Stale reads after acknowledged writes (stratacache's two fill guards
    /// vs naive cache-aside, PostgreSQL rows), and invalidation propagation
    /// to every instance's L1.
    Consistency(ConsistencyArgs),
    /// The same workload (Zipf keys, 1 ms loader, 64 callers) through
    /// stratacache and its peers: the seeds' cache-aside on redis-rs (alone
    /// and behind a hand-rolled moka tier), the `cached` crate's Redis store,
    /// the seeds' Node.js code on ioredis.
    Peers(peers::PeersArgs),
    /// Read scaling with concurrency (1–1,024 callers) and value size
    /// (100 B–1 MB): stratacache with and without L1 vs bare redis-rs; an SVG plot.
    Scaling(ScalingArgs),
    /// One reader process of `consistency` (started by it; the plan is JSON).
    #[command(hide = true)]
    ConsistencyWorker { plan: String },
    /// Counter increments through write-behind (Redis stream → batched,
    /// coalesced PostgreSQL upserts) vs one UPDATE per increment.
    WriteBehind(WriteBehindArgs),
    /// A route behind the HTTP response cache layer vs the same route
    /// without it, loaded by `wrk`: requests/s and p99.
    Http(HttpArgs),
    /// The fault suite: Redis killed, slow, failing over; PostgreSQL down; the
    /// backplane cut — under load, on the library and on `market serve`; bad
    /// input and security rows; optionally written to RELIABILITY.md.
    Faults(FaultsArgs),
    /// One process of `stampede` (started by it; the plan is JSON).
    #[command(hide = true)]
    StampedeWorker { plan: String },
    /// The race simulation over many seeds of every scenario (several
    /// instances, a simulated Redis with faults, checked for stale reads,
    /// hidden writes and convergence).
    Simulate(simulate::SimulateArgs),
    /// Instructions per operation of the hot paths (L1 hit, L2 hit, with
    /// and without metrics) beside bare moka and bare redis-rs, by callgrind.
    Instructions(instructions::InstructionsArgs),
    /// One fixed-count run of a hot path (started by `instructions` under callgrind).
    #[command(hide = true)]
    HotPath(instructions::HotPathArgs),
}

#[derive(Args, Debug, Clone)]
pub struct L1HitArgs {
    /// Distinct keys, all in L1.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Total measuring time, split evenly over the rounds and both sides.
    #[arg(long, default_value_t = 5)]
    duration_secs: u64,
    /// Interleaved rounds (stratacache, bare, bare, stratacache, …); medians are reported.
    #[arg(long, default_value_t = 10)]
    rounds: u32,
}

#[derive(Args, Debug, Clone)]
pub struct L1MemoryArgs {
    /// The L1 byte bound (`l1_max_bytes`), in MiB.
    #[arg(long, default_value_t = 64)]
    max_mib: u64,
    /// Write this many times the entries that fit (at ~512 bytes each).
    #[arg(long, default_value_t = 3.0)]
    fill_factor: f64,
}

#[derive(Args, Debug, Clone)]
pub struct ScalingArgs {
    /// Concurrent callers of the concurrency sweep.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4, 16, 64, 256, 1024])]
    callers: Vec<usize>,
    /// Value sizes of the size sweep, in bytes.
    #[arg(long, value_delimiter = ',', default_values_t = [100, 1_000, 10_000, 100_000, 1_000_000])]
    sizes: Vec<usize>,
    /// Concurrent callers of the size sweep.
    #[arg(long, default_value_t = 64)]
    size_callers: usize,
    /// Measuring time of each point, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    point_ms: u64,
    /// Where to write the plot (default: bench-results/scaling.svg in the repository).
    #[arg(long)]
    svg: Option<std::path::PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct L2HitArgs {
    /// Total measuring time, split evenly over the rounds and both sides.
    #[arg(long, default_value_t = 5)]
    duration_secs: u64,
    /// Interleaved rounds; latencies of all rounds are pooled per side.
    #[arg(long, default_value_t = 10)]
    rounds: u32,
}

#[derive(Args, Debug, Clone)]
pub struct L2ThroughputArgs {
    /// Concurrent tasks on each side (and `redis-benchmark -c`).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Distinct keys, read uniformly at random.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Total measuring time of the two Rust sides, split evenly over the rounds.
    #[arg(long, default_value_t = 5)]
    duration_secs: u64,
    /// Interleaved rounds; the median ops/s per side is reported.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Requests per `redis-benchmark` run (`-n`).
    #[arg(long, default_value_t = 200_000)]
    requests: u64,
    /// Runs of each `redis-benchmark` variant; the median is reported.
    #[arg(long, default_value_t = 3)]
    external_runs: u32,
    /// Skip the `redis-benchmark` ceilings.
    #[arg(long)]
    no_external: bool,
}

#[derive(Args, Debug, Clone)]
pub struct StampedeArgs {
    /// OS processes per strategy, each a `bench stampede-worker`.
    #[arg(long, default_value_t = 4)]
    processes: usize,
    /// Tasks per process, all asking for the same cold key at one instant.
    #[arg(long, default_value_t = 250)]
    tasks: usize,
    /// How long the loader takes, in milliseconds.
    #[arg(long, default_value_t = 200)]
    loader_ms: u64,
    /// Rounds; each runs every strategy once, on a fresh key.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// The agreed start instant lies this far after the workers are started, in ms.
    #[arg(long, default_value_t = 2_000)]
    lead_ms: u64,
}

#[derive(Args, Debug, Clone)]
pub struct InvalidateTagArgs {
    /// Entries carrying the tag, on each side.
    #[arg(long, default_value_t = 100_000)]
    entries: u64,
    /// Run on a throwaway Redis Cluster (3 masters, 3 replicas) started for
    /// the run, instead of `--redis-url`.
    #[arg(long)]
    cluster: bool,
}

#[derive(Args, Debug, Clone)]
pub struct BackplaneArgs {
    /// Invalidations sent on each side, one at a time.
    #[arg(long, default_value_t = 3_000)]
    messages: u64,
    /// Interleaved rounds (pub/sub, sharded, tracking, pub/sub, …); latencies pooled.
    #[arg(long, default_value_t = 10)]
    rounds: u32,
}

#[derive(Args, Debug, Clone)]
pub struct ConsistencyArgs {
    /// Run on a throwaway Redis Cluster (3 masters, 3 replicas) started for
    /// the run, instead of `--redis-url`.
    #[arg(long)]
    cluster: bool,
    /// Rows in the table (fewer rows, more races).
    #[arg(long, default_value_t = 20)]
    rows: i32,
    /// Reader processes per side.
    #[arg(long, default_value_t = 3)]
    readers: usize,
    /// Reading tasks per process.
    #[arg(long, default_value_t = 8)]
    tasks: usize,
    /// How long each side runs.
    #[arg(long, default_value_t = 5)]
    duration_secs: u64,
    /// Reader instances for the propagation measurement.
    #[arg(long, default_value_t = 3)]
    instances: usize,
    /// Writes timed for the propagation measurement.
    #[arg(long, default_value_t = 500)]
    samples: u64,
}

#[derive(Args, Debug, Clone)]
pub struct WriteBehindArgs {
    /// PostgreSQL to write to (a schema of its own is created and dropped).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg_url: String,
    /// Connections in the pool (the baseline's UPDATEs and the sink share it).
    #[arg(long, default_value_t = 16)]
    pg_connections: u32,
    /// Concurrent incrementing tasks, on each side.
    #[arg(long, default_value_t = 64)]
    tasks: usize,
    /// Distinct counters, picked uniformly at random.
    #[arg(long, default_value_t = 1_000)]
    keys: u64,
    /// Measuring time of each side.
    #[arg(long, default_value_t = 5)]
    duration_secs: u64,
    /// Write-behind workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Most stream entries per batch (each carries one or more writes).
    #[arg(long, default_value_t = 2_000)]
    batch_size: usize,
    /// Longest wait to fill a batch, in ms.
    #[arg(long, default_value_t = 50)]
    batch_interval_ms: u64,
}

#[derive(Args, Debug, Clone)]
pub struct HttpArgs {
    /// Open connections (`wrk -c`).
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// wrk threads (`wrk -t`).
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Open connections of the light load (one wrk thread), for latency.
    #[arg(long, default_value_t = 4)]
    light_connections: u32,
    /// Pause of each light-load connection between two requests, in ms.
    #[arg(long, default_value_t = 1)]
    light_pause_ms: u64,
    /// Calls of each route in process (no sockets), before the wrk runs.
    #[arg(long, default_value_t = 100_000)]
    in_process_calls: u32,
    /// Distinct product ids, requested uniformly.
    #[arg(long, default_value_t = 100)]
    keys: u64,
    /// Time the handler waits, standing for its database query, in ms.
    #[arg(long, default_value_t = 2)]
    handler_ms: u64,
    /// Products rendered into each response body (about 300 bytes each).
    #[arg(long, default_value_t = 10)]
    items: u64,
    /// Seconds of each measured wrk run.
    #[arg(long, default_value_t = 5)]
    duration_secs: u64,
    /// Seconds of the warm-up run of each side.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Interleaved rounds (cached, uncached, uncached, cached, …), each
    /// with a saturating and a light load.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
}

#[derive(Args, Debug, Clone)]
pub struct FaultsArgs {
    /// Shorter faults (3 s instead of 10 s) and fewer generated inputs.
    #[arg(long)]
    quick: bool,
    /// Run only these scenarios (see `faults::ALL`: redis-killed, redis-slow,
    /// postgres-down, backplane-cut, cluster-failover, sentinel-failover,
    /// market-redis-killed, market-postgres-down, market-poisoning,
    /// market-bad-requests, fuzzed-input, odd-keys, oversized-values,
    /// corrupt-entries, policy-files, redis-auth, acl-user, tls, namespaces,
    /// secrets-in-logs); default: all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Write the results into this file's tables (between its fault-suite
    /// markers); rows of scenarios not run are kept from bench-results/faults.json.
    #[arg(long)]
    write: Option<String>,
    /// Seconds of `cargo fuzz run` per fuzz target in fuzzed-input (needs
    /// cargo-fuzz; 0 skips it).
    #[arg(long, default_value_t = 0)]
    cargo_fuzz_secs: u64,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // Through the environment, so that child processes (callgrind runs,
    // stampede workers) build their caches the same way.
    if let Some(client) = cli.redis_client {
        std::env::set_var(report::REDIS_CLIENT_ENV, client.as_env());
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = cli.worker_threads {
        runtime.worker_threads(n.max(1));
    }
    let runtime = runtime.build()?;
    let report = runtime.block_on(async {
        match cli.scenario {
            Scenario::L1Hit(args) => l1_hit::run(&args).await,
            Scenario::L1Memory(args) => l1_memory::run(&args).await,
            Scenario::L2Hit(args) => l2_hit::run(&cli.redis_url, &args).await,
            Scenario::L2Throughput(args) => l2_throughput::run(&cli.redis_url, &args).await,
            Scenario::Stampede(args) => {
                stampede::run(&cli.redis_url, cli.worker_threads, &args).await
            }
            Scenario::InvalidateTag(args) => invalidate_tag::run(&cli.redis_url, &args).await,
            Scenario::Backplane(args) => backplane::run(&args).await,
            Scenario::Consistency(args) => consistency::run(&cli.redis_url, &args).await,
            Scenario::Scaling(args) => scaling::run(&cli.redis_url, &args).await,
            Scenario::Peers(args) => peers::run(&cli.redis_url, &args).await,
            Scenario::ConsistencyWorker { plan } => consistency::run_worker(&plan).await,
            Scenario::WriteBehind(args) => write_behind::run(&cli.redis_url, &args).await,
            Scenario::Http(args) => http::run(&cli.redis_url, &args).await,
            Scenario::Faults(args) => faults::run(&args).await,
            Scenario::Simulate(args) => simulate::run(&args).await,
            Scenario::StampedeWorker { plan } => stampede_worker::run(&plan).await,
            Scenario::Instructions(args) => instructions::run(&cli.redis_url, &args).await,
            Scenario::HotPath(args) => instructions::hot_path(&cli.redis_url, &args).await,
        }
    })?;
    report::emit(&report);
    Ok(())
}
