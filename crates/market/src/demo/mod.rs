//! `market demo`: services up, database migrated and seeded, then the same
//! load against the service with the cache off and on, and the before/after
//! table — printed and written to a file.
//!
//! Database queries/s come from PostgreSQL's own statistics: the delta of
//! `xact_commit + xact_rollback` in `pg_stat_database` for the service's
//! database over the measured part (every autocommitted statement is one
//! transaction; an order's transaction counts once). `pg_stat_statements` is
//! not used because it needs `shared_preload_libraries` and a restart.

mod report;
pub mod staleness;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::app::ServeConfig;
use crate::caching::ResourceCount;
use crate::db::{self, seed};
use crate::load::{Driver, LoadConfig, LoadReport};
use crate::policy::Policy;
use crate::server;
use crate::telemetry::{library_hits_by_policy, prometheus};
pub use report::table;

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    pub database_url: String,
    pub redis_url: String,
    pub scale: f64,
    pub virtual_users: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Requests/s offered to both sides (0 = closed loop). A fixed rate
    /// compares database queries/s and latency at the same traffic.
    pub rate: f64,
    /// Run `scripts/services.sh` first.
    pub start_services: bool,
    /// Where the table goes (`.md`; the JSON beside it).
    pub out: PathBuf,
    pub progress: bool,
    /// Before the cached side's load, warm every user's profile and
    /// watchlist as a deploy would (`crate::warm`); `--no-warm` turns it off.
    pub warm_users: bool,
    /// Run the cached side with the market-data feed (`crate::feed`);
    /// `--no-feed` turns it off.
    pub feed: bool,
}

impl DemoConfig {
    /// The default run: scale 1, 32 virtual users offering 400 requests/s,
    /// 15 s warm-up and 20 s measured per side.
    pub fn new(database_url: &str, redis_url: &str) -> Self {
        Self {
            database_url: database_url.into(),
            redis_url: redis_url.into(),
            scale: 1.0,
            virtual_users: 32,
            warmup: Duration::from_secs(15),
            duration: Duration::from_secs(20),
            rate: 400.0,
            start_services: true,
            out: repo_root().join("target/market-demo.md"),
            progress: true,
            warm_users: true,
            feed: true,
        }
    }

    /// `--quick`: 2 s warm-up, 5 s measured, 16 virtual users offering 200 requests/s.
    pub fn quick(mut self) -> Self {
        self.virtual_users = 16;
        self.rate = 200.0;
        self.warmup = Duration::from_secs(2);
        self.duration = Duration::from_secs(5);
        self
    }
}

/// One side of the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModeResult {
    pub cache: bool,
    pub load: LoadReport,
    /// PostgreSQL transactions per second (pg_stat_database).
    pub db_queries_per_sec: f64,
    /// Queries the service itself counted, per second (cross-check).
    pub service_queries_per_sec: f64,
    /// Answers from L1 or L2 over lookups, as the cache counts them, over
    /// the measured part (0 with the cache off).
    pub hit_rate: f64,
    /// Database loads (foreground and background refreshes) per cached
    /// read (1 with the cache off).
    pub loads_per_lookup: f64,
    /// The same per resource.
    #[serde(default)]
    pub resources: Vec<ResourceFigures>,
    /// Cached side: how stale a second instance was under the same load.
    #[serde(default)]
    pub staleness: Option<staleness::Staleness>,
}

/// One resource's reads over the measured part.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResourceFigures {
    /// The resource (its policy's name).
    pub resource: String,
    /// Reads that asked the cache (or would have, with it off), per second.
    pub lookups_per_sec: f64,
    /// Database loads per second (background refreshes included).
    pub loads_per_sec: f64,
    /// The feed's set-based queries per second (`crate::feed`).
    #[serde(default)]
    pub feed_queries_per_sec: f64,
    /// The cache's own hit rate for the resource's policy; `None` with the cache off.
    pub hit_rate: Option<f64>,
}

/// The cache's per-policy `(hits, lookups)` of the run's namespace.
type PolicyHits = BTreeMap<String, (f64, f64)>;

fn resources(
    counts: &BTreeMap<Policy, ResourceCount>,
    counts0: &BTreeMap<Policy, ResourceCount>,
    hits: &PolicyHits,
    hits0: &PolicyHits,
    secs: f64,
) -> Vec<ResourceFigures> {
    let count = |m: &BTreeMap<Policy, ResourceCount>, name: &str| {
        Policy::from_name(name)
            .and_then(|p| m.get(&p).copied())
            .unwrap_or_default()
    };
    let mut names: Vec<String> = counts.keys().map(|k| k.to_string()).collect();
    names.extend(
        hits.keys()
            .filter(|k| !names.contains(k))
            .cloned()
            .collect::<Vec<_>>(),
    );
    names
        .into_iter()
        .map(|name| {
            let (now, before) = (count(counts, &name), count(counts0, &name));
            let hit_rate = hits.get(&name).map(|(h, n)| {
                let (h0, n0) = hits0.get(&name).copied().unwrap_or_default();
                if n - n0 > 0.0 {
                    (h - h0) / (n - n0)
                } else {
                    0.0
                }
            });
            ResourceFigures {
                lookups_per_sec: (now.lookups - before.lookups) as f64 / secs,
                loads_per_sec: (now.loads - before.loads) as f64 / secs,
                feed_queries_per_sec: (now.feed_queries - before.feed_queries) as f64 / secs,
                hit_rate,
                resource: name,
            }
        })
        .collect()
}

/// Both sides.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoResult {
    pub scale: f64,
    pub instruments: i64,
    pub users: i64,
    pub off: ModeResult,
    pub on: ModeResult,
}

/// The workspace root (two levels above this crate).
fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .unwrap_or(manifest)
        .to_path_buf()
}

fn start_services() -> anyhow::Result<()> {
    let script = repo_root().join("scripts/services.sh");
    if !script.exists() {
        eprintln!(
            "demo: {} not found; using the services configured",
            script.display()
        );
        return Ok(());
    }
    eprintln!(
        "demo: making sure Redis and PostgreSQL run ({})",
        script.display()
    );
    // Its report goes to stderr: stdout is the table's.
    let status = std::process::Command::new("bash")
        .arg(&script)
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .status()?;
    anyhow::ensure!(status.success(), "scripts/services.sh failed ({status})");
    Ok(())
}

/// Migrate and, unless the database already holds a seed of `scale`, seed it.
pub async fn prepare_database(
    url: &str,
    scale: f64,
    progress: bool,
) -> anyhow::Result<seed::SeedInfo> {
    db::create_database_if_missing(url).await?;
    let pool = PgPool::connect(url).await?;
    db::migrate(&pool).await?;
    let plan = seed::SeedPlan::at_scale(scale)?;
    let info = match seed::seeded(&pool).await? {
        Some(info) if info.scale == scale => {
            eprintln!("demo: database already seeded at scale {scale}");
            info
        }
        _ => {
            eprintln!(
                "demo: seeding {} instruments, {} users (scale {scale})",
                plan.instruments, plan.users
            );
            let took = seed::seed(&pool, plan, progress).await?;
            eprintln!("demo: seeded in {:.1} s", took.as_secs_f64());
            seed::seeded(&pool)
                .await?
                .ok_or_else(|| anyhow::anyhow!("seed did not finish"))?
        }
    };
    pool.close().await;
    Ok(info)
}

async fn transactions(pool: &PgPool, database: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT (xact_commit + xact_rollback)::BIGINT FROM pg_stat_database WHERE datname = $1",
    )
    .bind(database)
    .fetch_one(pool)
    .await?)
}

/// Backends report their statistics at most once a second while busy and
/// shortly after going idle; waiting this long after traffic stops lets the
/// counters settle.
const STATS_SETTLE: Duration = Duration::from_millis(1500);

async fn run_mode(
    config: &DemoConfig,
    cache: bool,
    stats_pool: &PgPool,
    database: &str,
) -> anyhow::Result<ModeResult> {
    let mut serve = ServeConfig::new(&config.database_url, &config.redis_url);
    serve.cache = cache;
    serve.feed = config.feed;
    serve.bind = "127.0.0.1:0".parse()?;
    serve.namespace = format!(
        "market-demo-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    // The demo's own operator token, for the load's market-data writes.
    let token = format!("{:032x}", rand::random::<u128>());
    serve.admin_token = Some(token.clone());
    let server = server::start(&serve).await?;
    let label = if cache { "cache on" } else { "cache off" };
    eprintln!(
        "demo: {label}: {} virtual users, {} s warm-up, {} s measured",
        config.virtual_users,
        config.warmup.as_secs(),
        config.duration.as_secs()
    );

    let mut load = LoadConfig::new(&server.url());
    load.virtual_users = config.virtual_users;
    load.rate = config.rate;
    load.progress = config.progress;
    load.admin_token = Some(token);
    // Every user signed in once, before anything is measured.
    let driver = Driver::prepare(&load).await?;
    if cache && config.warm_users {
        let warmed = crate::warm::user_data(&server.state).await?;
        let held = crate::warm::positions(&server.state).await?;
        eprintln!(
            "demo: {label}: warmed {} profiles and watchlists and {} users' positions in {:.1} s (a deploy's warm-up; --no-warm skips it)",
            warmed.entries,
            held.entries,
            (warmed.took + held.took).as_secs_f64()
        );
    }
    if !config.warmup.is_zero() {
        // Warm-up as fast as answered: it stands for the hours a running
        // service has had to fill its cache (and PostgreSQL its buffers);
        // only the part after it is measured, at the offered rate.
        load.rate = 0.0;
        load.warmup = Duration::ZERO;
        load.duration = config.warmup;
        driver.run(&load).await?;
        load.rate = config.rate;
    }
    tokio::time::sleep(STATS_SETTLE).await;
    let counters = server.state.caching.counters().clone();
    let library = || match (prometheus(), server.state.caching.cache()) {
        (Some(h), Some(cache)) => library_hits_by_policy(&h.render(), cache.namespace()),
        _ => PolicyHits::new(),
    };
    let (loads0, queries0) = (counters.loads(), server.state.db.queries());
    let by_resource0 = counters.by_resource();
    let policy_hits0 = library();
    let xact0 = transactions(stats_pool, database).await?;
    load.warmup = Duration::ZERO;
    load.duration = config.duration;
    let report = driver.run(&load).await?;
    let (loads, queries) = (
        counters.loads() - loads0,
        server.state.db.queries() - queries0,
    );
    let by_resource = counters.by_resource();
    let route_lookups = |m: &BTreeMap<Policy, ResourceCount>| -> u64 {
        m.iter()
            .filter(|(r, _)| !r.is_internal())
            .map(|(_, c)| c.lookups)
            .sum()
    };
    let lookups = route_lookups(&by_resource) - route_lookups(&by_resource0);
    let feed_queries: u64 = by_resource.values().map(|c| c.feed_queries).sum::<u64>()
        - by_resource0.values().map(|c| c.feed_queries).sum::<u64>();
    let policy_hits = library();
    // One lookup per read of a route's resource: the parts a composed read
    // is made of are not reads of their own (`Policy::PARTS`).
    let sum = |m: &PolicyHits| {
        m.iter()
            .filter(|(policy, _)| !Policy::name_is_internal(policy))
            .fold((0.0, 0.0), |(h, n), (_, (dh, dn))| (h + dh, n + dn))
    };
    let (hits, counted) = (
        sum(&policy_hits).0 - sum(&policy_hits0).0,
        sum(&policy_hits).1 - sum(&policy_hits0).1,
    );
    // The database's count of the measured part, before anything else runs:
    // the feed stops, the statistics settle.
    drop(server.state.feed.lock().expect("feed lock").take());
    tokio::time::sleep(STATS_SETTLE).await;
    let xact = transactions(stats_pool, database).await? - xact0;
    let staleness = if cache {
        Some(staleness::under_load(config, &serve, &server, &driver, &load).await?)
    } else {
        None
    };
    if let Some(cache) = server.state.caching.cache() {
        // The demo's namespace is its own; drop what it wrote.
        for prefix in crate::keys::PREFIXES {
            let _ = cache.invalidate_prefix(prefix).await;
        }
    }
    server.stop().await?;
    let secs = report.duration_s;
    Ok(ModeResult {
        cache,
        db_queries_per_sec: xact.max(0) as f64 / secs,
        service_queries_per_sec: queries as f64 / secs,
        hit_rate: if cache && counted > 0.0 {
            hits / counted
        } else {
            0.0
        },
        // The feed's queries are loads the cached side pays for its reads.
        loads_per_lookup: if lookups > 0 {
            (loads + feed_queries) as f64 / lookups as f64
        } else {
            0.0
        },
        resources: resources(
            &by_resource,
            &by_resource0,
            &policy_hits,
            &policy_hits0,
            secs,
        ),
        load: report,
        staleness,
    })
}

/// Run the whole demo and write the table.
pub async fn run(config: &DemoConfig) -> anyhow::Result<DemoResult> {
    if config.start_services {
        start_services()?;
    }
    let info = prepare_database(&config.database_url, config.scale, config.progress).await?;
    let database = db::database_name(&config.database_url)?;
    let stats_pool = PgPool::connect(&config.database_url).await?;
    let off = run_mode(config, false, &stats_pool, &database).await?;
    let on = run_mode(config, true, &stats_pool, &database).await?;
    stats_pool.close().await;
    let result = DemoResult {
        scale: config.scale,
        instruments: info.instruments,
        users: info.users,
        off,
        on,
    };
    let table = table(&result, config);
    println!("{table}");
    if let Some(dir) = config.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&config.out, &table)?;
    std::fs::write(
        config.out.with_extension("json"),
        serde_json::to_string_pretty(&result)?,
    )?;
    eprintln!("demo: table written to {}", config.out.display());
    Ok(result)
}

impl DemoResult {
    /// Whether the cache won where a short run can show it: median latency,
    /// database queries/s, a hit rate above one half, and the same traffic
    /// served. The tail (p99) is left to the full run: while the hit rate is
    /// below 99 %, the p99 request is a miss, which costs the query plus the
    /// cache's own work.
    pub fn cache_wins(&self) -> bool {
        let (off, on) = (&self.off, &self.on);
        on.load.latency_ms.p50 < off.load.latency_ms.p50
            && on.db_queries_per_sec < off.db_queries_per_sec
            && on.hit_rate > 0.5
            // At a fixed offered rate both sides serve about the same.
            && on.load.requests_per_sec >= 0.9 * off.load.requests_per_sec
    }
}
