//! The `market` command: seed, serve, load, demo.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use market::app::{self, ServeConfig};
use market::db::{self, seed};
use market::demo::{self, DemoConfig};
use market::load::{self, LoadConfig};

#[derive(Parser)]
#[command(
    name = "market",
    about = "The reference service: a market API on PostgreSQL with stratacache in front"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Services {
    /// PostgreSQL URL (the database is created if missing).
    #[arg(long, env = "MARKET_DATABASE_URL", default_value = db::DEFAULT_DATABASE_URL)]
    database_url: String,
    /// Redis URL.
    #[arg(
        long,
        env = "MARKET_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Subcommand)]
enum Command {
    /// Create, migrate and seed the database (deterministic data set).
    Seed {
        #[command(flatten)]
        services: Services,
        /// Size: 1 = 500 instruments × 4,000 price ticks, 10,000 users.
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Seed again even if a seed of this scale is there.
        #[arg(long)]
        force: bool,
    },
    /// Serve the API.
    Serve {
        #[command(flatten)]
        services: Services,
        /// Serve with the cache, or straight from PostgreSQL.
        #[arg(long, value_enum, default_value = "on")]
        cache: OnOff,
        /// Policy file (TOML); the compiled-in market-policies.toml by default.
        #[arg(long)]
        policies: Option<PathBuf>,
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: SocketAddr,
        /// Cache key namespace; instances sharing it share their cache.
        #[arg(long, default_value = "market")]
        namespace: String,
        /// PostgreSQL pool size.
        #[arg(long, default_value_t = 16)]
        db_connections: u32,
        /// Do not push quotes and order books into the cache (reads pull them).
        #[arg(long)]
        no_feed: bool,
        /// Per-call Redis timeout: the most a request waits on Redis before
        /// it is answered from L1 or PostgreSQL instead.
        #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
        redis_timeout: Duration,
    },
    /// Drive a running service and print a JSON report.
    Load {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Virtual users.
        #[arg(long, default_value_t = 32)]
        users: usize,
        /// Measured duration (e.g. 20s, 1m).
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Unmeasured warm-up before it.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        warmup: Duration,
        /// Zipf exponent over users and symbols.
        #[arg(long, default_value_t = 0.99)]
        zipf: f64,
        /// Fraction of requests that write.
        #[arg(long, default_value_t = 0.05)]
        write_ratio: f64,
        /// Requests/s offered by all users together; 0 = as fast as answered.
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Services, migrations, seed, then the same load with the cache off and
    /// on, and the before/after table.
    Demo {
        #[command(flatten)]
        services: Services,
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// A short run (2 s warm-up, 5 s measured per side).
        #[arg(long)]
        quick: bool,
        /// Measured duration per side (ignored with --quick).
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Virtual users (ignored with --quick).
        #[arg(long)]
        users: Option<usize>,
        /// Requests/s offered to both sides; 0 = as fast as each answers.
        #[arg(long)]
        rate: Option<f64>,
        /// Do not run scripts/services.sh first.
        #[arg(long)]
        no_services: bool,
        /// Do not warm users' data before the cached side's load.
        #[arg(long)]
        no_warm: bool,
        /// Run the cached side without the market-data feed.
        #[arg(long)]
        no_feed: bool,
        /// Where to write the table (Markdown; the JSON goes beside it).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Seed {
            services,
            scale,
            force,
        } => {
            let plan = seed::SeedPlan::at_scale(scale)?;
            db::create_database_if_missing(&services.database_url)
                .await
                .context("creating the database")?;
            let pool = sqlx::PgPool::connect(&services.database_url).await?;
            db::migrate(&pool).await?;
            match seed::seeded(&pool).await? {
                Some(info) if info.scale == scale && !force => {
                    eprintln!("already seeded at scale {scale} ({} instruments, {} users); --force to seed again", info.instruments, info.users);
                }
                _ => {
                    let took = seed::seed(&pool, plan, true).await?;
                    eprintln!(
                        "seeded {} instruments, {} users in {:.1} s",
                        plan.instruments,
                        plan.users,
                        took.as_secs_f64()
                    );
                }
            }
        }
        Command::Serve {
            services,
            cache,
            policies,
            bind,
            namespace,
            db_connections,
            no_feed,
            redis_timeout,
        } => {
            // Refused before anything is created.
            anyhow::ensure!(
                !redis_timeout.is_zero(),
                "invalid configuration: --redis-timeout must be greater than zero"
            );
            db::create_database_if_missing(&services.database_url)
                .await
                .context("creating the database")?;
            let mut config = ServeConfig::new(&services.database_url, &services.redis_url);
            config.cache = matches!(cache, OnOff::On);
            config.policies = policies;
            config.bind = bind;
            config.namespace = namespace;
            config.db_connections = db_connections;
            config.feed = !no_feed;
            config.redis_timeout = redis_timeout;
            let server = app::start(&config).await?;
            eprintln!(
                "market: serving on {} (cache {}); dashboard at {}/dashboard",
                server.url(),
                if config.cache { "on" } else { "off" },
                server.url()
            );
            tokio::select! {
                result = tokio::signal::ctrl_c() => { result?; }
                result = server.wait() => { result?; }
            }
        }
        Command::Load {
            url,
            users,
            duration,
            warmup,
            zipf,
            write_ratio,
            rate,
            seed,
        } => {
            let mut config = LoadConfig::new(&url);
            config.virtual_users = users;
            config.duration = duration;
            config.warmup = warmup;
            config.zipf = zipf;
            config.write_ratio = write_ratio;
            config.rate = rate;
            config.seed = seed;
            let report = load::run(&config).await?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::Demo {
            services,
            scale,
            quick,
            duration,
            users,
            rate,
            no_services,
            no_warm,
            no_feed,
            out,
        } => {
            let mut config = DemoConfig::new(&services.database_url, &services.redis_url);
            config.scale = scale;
            config.start_services = !no_services;
            config.warm_users = !no_warm;
            config.feed = !no_feed;
            if quick {
                config = config.quick();
            } else {
                if let Some(d) = duration {
                    config.duration = d;
                }
                if let Some(u) = users {
                    config.virtual_users = u;
                }
            }
            if let Some(rate) = rate {
                config.rate = rate;
            }
            if let Some(out) = out {
                config.out = out;
            }
            demo::run(&config).await?;
        }
    }
    Ok(())
}
