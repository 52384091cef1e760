//! `market serve`'s configuration and the state every handler shares
//! (started by [`crate::server::start`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use stratacache::write_behind::{WorkerHandle, WriteBehind};
use stratacache::{Cache, Policies};
use stratacache_http::HttpCacheLayer;

use crate::auth::OperatorToken;
use crate::caching::Caching;
use crate::db::seed::SeedInfo;
use crate::db::{self, Db};
use crate::feed::{self, Feed};
use crate::middleware::server_names::{self, ServerNames};
use crate::patterns::http_response_cache;
use crate::patterns::read_through::InstrumentDetails;
use crate::patterns::sessions::{self, Sessions};
use crate::patterns::write_behind::{SqlViewCounter, ViewCountSink, ViewCounter, WriteBehindViews};
use crate::policy::Policy;
use crate::redis_link::RedisLink;
use crate::serve::Limits;
use crate::telemetry::Telemetry;

/// How long the view counts' write-behind worker gathers increments before
/// one transaction adds them to `view_counts`: a count reaches PostgreSQL a
/// second late at most, read back through `GET /api/trending`'s 10 s entry.
pub const VIEW_FLUSH: Duration = Duration::from_secs(1);

/// How often the service checks that Redis answers (to log it going and
/// coming back).
pub const REDIS_WATCH: Duration = Duration::from_secs(1);

/// How `market serve` runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// PostgreSQL URL.
    pub database_url: String,
    /// Redis URL (cache and sessions).
    pub redis_url: String,
    /// Whether to cache (`--cache on|off`).
    pub cache: bool,
    /// Policy file; `None` uses the compiled-in `market-policies.toml`.
    pub policies: Option<PathBuf>,
    /// Cache key namespace (instances that share it share their cache).
    pub namespace: String,
    /// Where to listen.
    pub bind: SocketAddr,
    /// PostgreSQL pool size.
    pub db_connections: u32,
    /// Per-call Redis timeout.
    pub redis_timeout: Duration,
    /// With the cache on, push every quote and order book into it
    /// ([`crate::feed`]); `--no-feed` leaves them to the read-through alone.
    pub feed: bool,
    /// The operator token (`MARKET_ADMIN_TOKEN` or `--admin-token-file`);
    /// `None` refuses operator routes to everyone.
    pub admin_token: Option<String>,
    /// The names the service is reached by (`--server-name`), for the
    /// response cache's key.
    pub server_names: Vec<String>,
    /// Body, request and connection limits.
    pub limits: Limits,
}

impl ServeConfig {
    /// Defaults: loopback services, cache on, port 8080, no operator token.
    pub fn new(database_url: &str, redis_url: &str) -> Self {
        Self {
            database_url: database_url.to_string(),
            redis_url: redis_url.to_string(),
            cache: true,
            policies: None,
            namespace: "market".into(),
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            db_connections: 16,
            redis_timeout: Duration::from_millis(250),
            feed: true,
            admin_token: None,
            server_names: server_names::DEFAULT
                .iter()
                .map(|s| s.to_string())
                .collect(),
            limits: Limits::default(),
        }
    }
}

/// What every handler shares.
pub struct AppState {
    /// The database.
    pub db: Db,
    /// The cache, or none.
    pub caching: Caching,
    /// Instrument details (read-through).
    pub instruments: InstrumentDetails,
    /// The response cache in front of the listing (cache on only).
    pub listing_cache: Option<HttpCacheLayer>,
    /// The view counter.
    pub views: Box<dyn ViewCounter>,
    /// The write-behind worker flushing view counts (cache on only).
    pub view_worker: std::sync::Mutex<Option<WorkerHandle>>,
    /// The market-data feed (cache on, unless `--no-feed`).
    pub feed: std::sync::Mutex<Option<Feed>>,
    /// The sessions layer (tower-sessions on Redis).
    pub sessions: Sessions,
    /// The session store's Redis connection.
    pub session_redis: redis::aio::ConnectionManager,
    /// The service's own Redis connection.
    pub redis: Arc<RedisLink>,
    /// The operator token.
    pub operator: OperatorToken,
    /// The names the service is reached by.
    pub server_names: ServerNames,
    /// Request counts and latencies.
    pub telemetry: Arc<Telemetry>,
    /// What the database was seeded with, read at start.
    pub seed: Option<SeedInfo>,
}

/// Shared state handle.
pub type Shared = Arc<AppState>;

/// The operator token, for [`crate::auth::Operator`].
impl axum::extract::FromRef<Shared> for OperatorToken {
    fn from_ref(state: &Shared) -> Self {
        state.operator.clone()
    }
}

fn policies(config: &ServeConfig) -> anyhow::Result<Policies> {
    let mut policies = match &config.policies {
        Some(path) => Policies::from_toml_file(path)?,
        None => Policies::from_toml_str(crate::policy::FILE)?,
    };
    policies.overlay_env("MARKET")?;
    for policy in Policy::in_file() {
        policies
            .get(policy.name())
            .map_err(|_| anyhow::anyhow!("the policy file has no policy {:?}", policy.name()))?;
    }
    Ok(policies)
}

async fn caching(config: &ServeConfig, policies: &Policies) -> anyhow::Result<Caching> {
    if !config.cache {
        return Ok(Caching::off());
    }
    let mut builder = Cache::builder()
        .namespace(config.namespace.clone())
        .redis_url(&config.redis_url)
        .redis_timeout(config.redis_timeout)
        .metrics(true);
    for policy in policies.iter() {
        builder = builder.policy(policy.name(), policy.options().clone());
    }
    // The same entries, refreshed after writes, counted apart (`crate::parts`).
    for refresh in Policy::ALL {
        if let Some(original) = refresh.refreshes() {
            let policy = policies.get(original.name())?;
            builder = builder.policy(refresh.name(), policy.options().clone());
        }
    }
    Ok(Caching::on(builder.build().await?))
}

/// Build the state: database pool (migrated), cache, patterns.
pub async fn build_state(config: &ServeConfig) -> anyhow::Result<Shared> {
    crate::telemetry::prometheus();
    // Refused before anything is started.
    let operator = OperatorToken::new(config.admin_token.as_deref())?;
    let server_names = ServerNames::new(&config.server_names)?;
    if !operator.is_set() {
        tracing::warn!("no operator token (MARKET_ADMIN_TOKEN or --admin-token-file): operator routes are refused");
    }
    let redis = Arc::new(RedisLink::new(&config.redis_url, Duration::from_secs(1))?);
    let redis_answers = redis.check_at_start().await;
    let db = Db::connect(&config.database_url, config.db_connections).await?;
    // An unreachable database at start is not fatal: routes answer 503 until it is back.
    if let Err(err) = db::migrate(db.pool()).await {
        tracing::warn!(error = %err, "could not migrate the database at start");
    }
    let seed = db::seed::seeded(db.pool()).await.unwrap_or(None);
    let policies = policies(config)?;
    let session_ttl = policies
        .get(Policy::Session.name())?
        .options()
        .configured_ttl();
    let caching = caching(config, &policies).await?;
    let listing_cache = match caching.cache() {
        Some(cache) => Some(http_response_cache::layer(
            cache.clone(),
            caching.options(Policy::InstrumentList)?,
        )?),
        None => None,
    };
    let (views, view_worker): (Box<dyn ViewCounter>, _) = match caching.cache() {
        Some(cache) => {
            let queue = WriteBehind::builder(cache.clone(), ViewCountSink { db: db.clone() })
                .name("views")
                .batch_interval(VIEW_FLUSH)
                .build()
                .await?;
            // `market serve` flushes the counts itself; instances sharing the
            // namespace share the queue, each worker a consumer of its group.
            let worker = queue.spawn_worker();
            let views = WriteBehindViews {
                queue,
                db: db.clone(),
                caching: caching.clone(),
            };
            (Box::new(views) as Box<dyn ViewCounter>, Some(worker))
        }
        None => (
            Box::new(SqlViewCounter { db: db.clone() }) as Box<dyn ViewCounter>,
            None,
        ),
    };
    let (sessions, session_redis) = sessions::layer(
        &config.redis_url,
        &config.namespace,
        session_ttl,
        config.redis_timeout,
    )?;
    let feed = if config.feed {
        feed::spawn(&db, &caching)?
    } else {
        None
    };
    redis.watch(redis_answers, REDIS_WATCH);
    let telemetry = Telemetry::new();
    telemetry.spawn_ticker();
    Ok(Arc::new(AppState {
        instruments: InstrumentDetails::new(&caching, &db)?,
        listing_cache,
        views,
        view_worker: std::sync::Mutex::new(view_worker),
        feed: std::sync::Mutex::new(feed),
        sessions,
        session_redis,
        db,
        caching,
        redis,
        operator,
        server_names,
        telemetry,
        seed,
    }))
}
