//! `market serve`: the configuration, the shared state, the router, and a
//! running server that tests and the demo start in-process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use stratacache::write_behind::{WorkerHandle, WriteBehind};
use stratacache::{Cache, Policies, Resource};
use stratacache_http::HttpCacheLayer;

use crate::caching::Caching;
use crate::db::seed::SeedInfo;
use crate::db::{self, Db};
use crate::error::ApiError;
use crate::feed::{self, Feed};
use crate::model::InstrumentDetail;
use crate::redis_link::RedisLink;
use crate::routes;
use crate::routes::instruments::DetailLoader;
use crate::seams::listing::{self, DirectListing, InstrumentListing};
use crate::seams::sessions::{self, Sessions};
use crate::seams::views::{SqlViewCounter, ViewCountSink, ViewCounter, WriteBehindViews};
use crate::telemetry::Telemetry;

/// The policy file compiled in, used unless `--policies` names another.
pub const DEFAULT_POLICIES: &str = include_str!("../market-policies.toml");

/// Policies the routes use; a policy file without one of them is refused at start.
pub const REQUIRED_POLICIES: &[&str] = &[
    "instrument_list",
    "instrument",
    "instrument_ref",
    "price_history",
    "ownership",
    "positions",
    "price_window",
    "stock_price",
    "market_depth",
    "portfolio",
    "watchlist",
    "profile",
    "trending",
    "market_overview",
    "session",
];

/// How long the view counts' write-behind worker gathers increments before
/// one transaction adds them to `view_counts`: a count reaches PostgreSQL a
/// second late at most, read back through `GET /api/trending`'s 10 s entry.
pub const VIEW_FLUSH: Duration = Duration::from_secs(1);

/// Largest request body accepted; bigger ones are answered 413.
pub const BODY_LIMIT: usize = 64 * 1024;

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
}

impl ServeConfig {
    /// Defaults: loopback services, cache on, port 8080.
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
        }
    }
}

/// The read-through resource of instrument details.
pub type InstrumentResource = Resource<String, InstrumentDetail, DetailLoader>;

/// What every handler shares.
pub struct AppState {
    /// The database.
    pub db: Db,
    /// The cache, or none.
    pub caching: Caching,
    /// Read-through instrument details (cache on only).
    pub instruments: Option<InstrumentResource>,
    /// The listing seam.
    pub listing: Box<dyn InstrumentListing>,
    /// The response cache in front of the listing (cache on only).
    pub listing_cache: Option<HttpCacheLayer>,
    /// The view counter seam.
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
    /// Request counts and latencies.
    pub telemetry: Arc<Telemetry>,
    /// What the database was seeded with, read at start.
    pub seed: Option<SeedInfo>,
}

/// Shared state handle.
pub type Shared = Arc<AppState>;

fn policies(config: &ServeConfig) -> anyhow::Result<Policies> {
    let mut policies = match &config.policies {
        Some(path) => Policies::from_toml_file(path)?,
        None => Policies::from_toml_str(DEFAULT_POLICIES)?,
    };
    policies.overlay_env("MARKET")?;
    for name in REQUIRED_POLICIES {
        policies
            .get(name)
            .map_err(|_| anyhow::anyhow!("the policy file has no policy {name:?}"))?;
    }
    Ok(policies)
}

/// Build the state: database pool (migrated), cache, seams.
pub async fn build_state(config: &ServeConfig) -> anyhow::Result<Shared> {
    crate::telemetry::prometheus();
    let db = Db::connect(&config.database_url, config.db_connections).await?;
    // An unreachable database at start is not fatal: routes answer 503 until it is back.
    if let Err(err) = db::migrate(db.pool()).await {
        tracing::warn!(error = %err, "could not migrate the database at start");
    }
    let seed = db::seed::seeded(db.pool()).await.unwrap_or(None);
    let policies = policies(config)?;
    let session_ttl = policies.get("session")?.options().get_ttl();
    let caching = if config.cache {
        let mut builder = Cache::builder()
            .namespace(config.namespace.clone())
            .redis_url(&config.redis_url)
            .redis_timeout(config.redis_timeout)
            .metrics(true);
        for policy in policies.iter() {
            builder = builder.policy(policy.name(), policy.strategy(), policy.options().clone());
        }
        // The same entries, refreshed after writes, counted apart (`crate::parts`).
        for name in crate::parts::REFRESHED {
            let policy = policies.get(name)?;
            let refresh = format!("{name}_refresh");
            builder = builder.policy(&refresh, policy.strategy(), policy.options().clone());
        }
        Caching::on(builder.build().await?)
    } else {
        Caching::off()
    };
    let instruments = match caching.cache() {
        Some(cache) => Some(Resource::new(
            cache.clone(),
            "instrument",
            caching.options("instrument")?,
            DetailLoader {
                db: db.clone(),
                caching: caching.clone(),
            },
        )),
        None => None,
    };
    let listing_cache = match caching.cache() {
        Some(cache) => Some(listing::http_layer(
            cache.clone(),
            caching.options("instrument_list")?,
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
        Duration::from_secs(1),
    )?;
    let redis = Arc::new(RedisLink::new(&config.redis_url, Duration::from_secs(1))?);
    let feed = if config.feed {
        feed::spawn(&db, &caching)?
    } else {
        None
    };
    let telemetry = Telemetry::new();
    telemetry.spawn_ticker();
    Ok(Arc::new(AppState {
        listing: Box::new(DirectListing { db: db.clone() }),
        listing_cache,
        views,
        view_worker: std::sync::Mutex::new(view_worker),
        feed: std::sync::Mutex::new(feed),
        sessions,
        session_redis,
        db,
        caching,
        instruments,
        redis,
        telemetry,
        seed,
    }))
}

/// Every route of the service.
pub fn router(state: Shared) -> Router {
    use routes::*;
    let listing = match &state.listing_cache {
        Some(cache) => get(instruments::list).layer(cache.clone()),
        None => get(instruments::list),
    }
    .layer(middleware::from_fn_with_state(
        state.clone(),
        instruments::count_list_lookup,
    ));
    Router::new()
        .route("/api/instruments", listing)
        .route("/api/instruments/{symbol}", get(instruments::detail))
        .route("/api/instruments/{symbol}/views", post(market::count_view))
        .route(
            "/api/stocks/{symbol}/price",
            get(stocks::price).put(stocks::put_price),
        )
        .route(
            "/api/stocks/{symbol}/depth",
            get(stocks::depth).put(stocks::put_depth),
        )
        .route("/api/portfolios/{user_id}", get(portfolios::portfolio))
        .route("/api/orders", post(portfolios::place_order))
        .route(
            "/api/watchlists/{user_id}",
            get(users::watchlist).put(users::put_watchlist),
        )
        .route(
            "/api/users/{user_id}/profile",
            get(users::profile).put(users::put_profile),
        )
        .route("/api/trending", get(market::trending))
        .route("/api/market/overview", get(market::overview))
        .route("/login", post(sessions::login))
        .route("/logout", post(sessions::logout))
        .route("/api/me", get(sessions::me))
        .route("/admin/invalidate", post(ops::invalidate))
        .route("/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .route("/dashboard", get(ops::dashboard))
        .route("/dashboard/stats", get(ops::stats))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(state.sessions.clone())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_request,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn record_request(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let response = next.run(request).await;
    state
        .telemetry
        .record(&route, response.status().as_u16(), started.elapsed());
    response
}

/// A server running on a tokio task.
pub struct RunningServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state (for counters).
    pub state: Shared,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// `http://{addr}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop accepting, finish in-flight requests, stop the feed, flush the
    /// view counts read so far, close the pool.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await??;
        drop(self.state.feed.lock().unwrap().take());
        let worker = self.state.view_worker.lock().unwrap().take();
        if let Some(worker) = worker {
            worker.shutdown().await;
        }
        self.state.db.close().await;
        Ok(())
    }

    /// Wait until the server ends (it ends on its own only on an I/O error).
    pub async fn wait(self) -> anyhow::Result<()> {
        Ok(self.task.await??)
    }
}

/// Build the state and serve on `config.bind` (port 0 picks a free one).
pub async fn start(config: &ServeConfig) -> anyhow::Result<RunningServer> {
    let state = build_state(config).await?;
    let listener = tokio::net::TcpListener::bind(config.bind).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = router(state.clone());
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    });
    Ok(RunningServer {
        addr,
        state,
        shutdown: Some(tx),
        task,
    })
}
