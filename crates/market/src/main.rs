//! The `market` command: seed, serve, load, demo.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use market::app::ServeConfig;
use market::db::{self, seed};
use market::demo::{self, DemoConfig};
use market::load::{self, LoadConfig};
use market::logging::{self, LogFormat};
use market::middleware::server_names;
use market::serve::Limits;
use market::server;

#[derive(Parser)]
#[command(
    name = "market",
    about = "The reference service: a market API on PostgreSQL with stratacache in front"
)]
struct Cli {
    /// How log lines are written to stderr; `RUST_LOG` chooses which
    /// (default: info).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "MARKET_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Database {
    /// PostgreSQL URL (the database is created if missing).
    #[arg(long, env = "MARKET_DATABASE_URL", default_value = db::DEFAULT_DATABASE_URL)]
    database_url: String,
}

#[derive(clap::Args, Clone)]
struct Services {
    #[command(flatten)]
    database: Database,
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
        database: Database,
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
        /// Address and port to listen on (port 0: a free port, which the log
        /// names). The service speaks plain HTTP: put a TLS-terminating proxy
        /// in front of it on a public address.
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
        #[command(flatten)]
        operator: OperatorToken,
        /// A name the service is reached by, any port (repeat, or separate by
        /// commas); requests for any of them share the response cache's
        /// entries. Other hosts are served, keyed apart.
        #[arg(
            long = "server-name",
            env = "MARKET_SERVER_NAMES",
            value_delimiter = ',',
            default_values_t = server_names::DEFAULT.iter().map(|s| s.to_string())
        )]
        server_names: Vec<String>,
        #[command(flatten)]
        limits: LimitArgs,
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
        #[command(flatten)]
        operator: OperatorToken,
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

/// The operator token: from a file, else from `MARKET_ADMIN_TOKEN`. Never
/// a flag: the command line is visible to every user of the machine.
#[derive(clap::Args, Clone)]
struct OperatorToken {
    /// File holding the operator token, for `POST /admin/invalidate` and the
    /// market-data writes (else the `MARKET_ADMIN_TOKEN` variable; without
    /// either, those routes are refused to everyone).
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
}

impl OperatorToken {
    fn read(&self) -> anyhow::Result<Option<String>> {
        if let Some(path) = &self.admin_token_file {
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("reading --admin-token-file {}", path.display()))?;
            anyhow::ensure!(
                !token.trim().is_empty(),
                "--admin-token-file {} is empty",
                path.display()
            );
            return Ok(Some(token.trim().to_string()));
        }
        Ok(std::env::var("MARKET_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty()))
    }
}

/// The server's limits (see `market::serve`).
#[derive(clap::Args, Clone)]
struct LimitArgs {
    /// Longest wait for a request's head, and the most a connection may sit
    /// idle between requests.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    header_timeout: Duration,
    /// Longest wait for the next piece of a request body (then 408).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    body_timeout: Duration,
    /// Longest a request may take, its body included (then 408).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
    /// Connections served at once; more wait to be accepted.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
}

impl LimitArgs {
    fn limits(&self) -> anyhow::Result<Limits> {
        for (name, value) in [
            ("--header-timeout", self.header_timeout),
            ("--body-timeout", self.body_timeout),
            ("--request-timeout", self.request_timeout),
        ] {
            anyhow::ensure!(
                !value.is_zero(),
                "invalid configuration: {name} must be greater than zero"
            );
        }
        anyhow::ensure!(
            self.max_connections > 0,
            "invalid configuration: --max-connections must be at least 1"
        );
        Ok(Limits {
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
            request_timeout: self.request_timeout,
            max_connections: self.max_connections,
            ..Limits::default()
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_format)?;
    match cli.command {
        Command::Seed {
            database,
            scale,
            force,
        } => {
            let plan = seed::SeedPlan::at_scale(scale)?;
            db::create_database_if_missing(&database.database_url)
                .await
                .context("creating the database")?;
            let pool = sqlx::PgPool::connect(&database.database_url).await?;
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
            operator,
            server_names,
            limits,
        } => {
            // Refused before anything is created.
            anyhow::ensure!(
                !redis_timeout.is_zero(),
                "invalid configuration: --redis-timeout must be greater than zero"
            );
            let limits = limits.limits()?;
            let admin_token = operator.read()?;
            market::auth::OperatorToken::new(admin_token.as_deref())?;
            server_names::ServerNames::new(&server_names)?;
            let database_url = &services.database.database_url;
            db::create_database_if_missing(database_url)
                .await
                .context("creating the database")?;
            let mut config = ServeConfig::new(database_url, &services.redis_url);
            config.cache = matches!(cache, OnOff::On);
            config.policies = policies;
            config.bind = bind;
            config.namespace = namespace;
            config.db_connections = db_connections;
            config.feed = !no_feed;
            config.redis_timeout = redis_timeout;
            config.admin_token = admin_token;
            config.server_names = server_names;
            config.limits = limits;
            let server = server::start(&config).await?;
            tracing::info!(
                "serving on {} (cache {}); dashboard at {}/dashboard",
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
            operator,
        } => {
            let mut config = LoadConfig::new(&url);
            config.admin_token = operator.read()?;
            if config.admin_token.is_none() {
                eprintln!("market load: no operator token (MARKET_ADMIN_TOKEN or --admin-token-file): price writes are left out of the mix");
            }
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
            let mut config = DemoConfig::new(&services.database.database_url, &services.redis_url);
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
