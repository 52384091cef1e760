//! Following a Sentinel-managed master across failovers.
//!
//! redis-rs resolves the master once; after a failover the old address keeps
//! refusing writes (READONLY) or connections — and, worse, keeps *answering
//! reads* once it is a replica, with whatever it holds. [`SentinelMaster`]
//! keeps a connection to the current master and moves it to the new one as
//! soon as either of two things says the master moved:
//!
//! - the Sentinels announce it: a subscription to `+switch-master` on each
//!   Sentinel — the prompt path, which also covers a `SENTINEL FAILOVER`,
//!   where nothing fails;
//! - a call fails in a way that hints at a failover (READONLY, a refused or
//!   dropped connection, a timeout): ask the Sentinels again, at most once per
//!   `RESOLVE_INTERVAL`.
//!
//! Every move bumps a generation that [`SentinelMaster::moves`] watches: the
//! backplane ends its subscription on the old node, and the cache replays its
//! recent invalidations against the new master (a promoted replica may lack
//! the tail the old master had not yet replicated). Until the instances have
//! done so, entries the new master held before the move are not trusted
//! ([`SentinelMaster::moved_at_ms`], `invalidate::failover::FENCE`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{ConnectionInfo, IntoConnectionInfo, RedisError, RedisResult};

use super::managed::Silence;
use super::tls::{self, RedisTls};
use tokio::sync::watch;

const RESOLVE_INTERVAL: Duration = Duration::from_millis(200);
/// How long the current node may take to say whether it is still the master.
const ROLE_TIMEOUT: Duration = Duration::from_millis(200);
/// How long connecting and subscribing to a Sentinel may take.
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) struct SentinelMaster {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    current: RwLock<(ConnectionInfo, ConnectionManager)>,
    last_resolve: Mutex<Option<Instant>>,
    manager_config: ConnectionManagerConfig,
    /// Bumped each time the connection moves to another master.
    moved: watch::Sender<u64>,
    /// When it last moved (ms since the epoch; 0: never).
    moved_at_ms: AtomicU64,
    /// Whether the connection to the master has gone silent (`managed.rs`).
    silence: Silence,
}

impl SentinelMaster {
    pub(crate) async fn connect(
        sentinels: &[String],
        master_name: &str,
        master_url: &str,
        (manager_config, response_timeout): (ConnectionManagerConfig, Duration),
        tls: Option<&RedisTls>,
    ) -> RedisResult<Arc<Self>> {
        let master_info = master_url.into_connection_info()?;
        let mut client = match tls {
            None => {
                let node_info = SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(master_info.redis_settings().clone());
                SentinelClient::build(
                    sentinels.to_vec(),
                    String::from(master_name),
                    Some(node_info),
                    SentinelServerType::Master,
                )?
            }
            Some(tls) => tls::sentinel_client(sentinels, master_name, &master_info, tls)?,
        };
        let master = client.async_get_client().await?;
        let info = master.get_connection_info().clone();
        let manager = ConnectionManager::new_lazy_with_config(master, manager_config.clone())?;
        let this = Arc::new(Self {
            sentinels: tokio::sync::Mutex::new(client),
            current: RwLock::new((info, manager)),
            last_resolve: Mutex::new(None),
            manager_config,
            moved: watch::channel(0).0,
            moved_at_ms: AtomicU64::new(0),
            silence: Silence::new(response_timeout),
        });
        spawn_announcement_listeners(
            Arc::downgrade(&this),
            sentinels.to_vec(),
            master_name.to_string(),
            tls.cloned().map(Arc::new),
        );
        Ok(this)
    }

    /// When the connection last moved to another master (ms since the
    /// epoch; 0: never).
    pub(crate) fn moved_at_ms(&self) -> u64 {
        self.moved_at_ms.load(Ordering::Acquire)
    }

    /// Wakes when the connection has moved to another master.
    pub(crate) fn moves(&self) -> watch::Receiver<u64> {
        self.moved.subscribe()
    }

    pub(crate) fn connection(&self) -> ConnectionManager {
        self.current.read().expect("sentinel lock").1.clone()
    }

    /// Run one call on the master's connection, watching for silence.
    pub(crate) async fn watch<T>(
        &self,
        call: impl std::future::Future<Output = RedisResult<T>>,
    ) -> RedisResult<T> {
        self.silence.watch(call).await
    }

    /// A call timed out: the master may have moved (ask the Sentinels), or
    /// the connection to it may have gone silent (connect to it again).
    pub(crate) fn on_timeout(self: &Arc<Self>) {
        self.maybe_resolve();
        self.silence
            .replace_if_silent(&self.current, |(info, manager)| {
                *manager = redis::Client::open(info.clone()).and_then(|c| {
                    ConnectionManager::new_lazy_with_config(c, self.manager_config.clone())
                })?;
                Ok(())
            });
    }

    /// A plain client to the current master.
    pub(crate) fn master_client(&self) -> Option<redis::Client> {
        redis::Client::open(self.current.read().expect("sentinel lock").0.clone()).ok()
    }

    /// Called after a failed call: re-resolve in the background when the error
    /// looks like the master moved.
    pub(crate) fn on_error(self: &Arc<Self>, err: &RedisError) {
        let moved = err.is_io_error()
            || err.is_connection_refusal()
            || err.is_connection_dropped()
            || err.is_timeout()
            || matches!(err.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"));
        if moved {
            self.maybe_resolve();
        }
    }

    /// Ask the Sentinels for the master again, unless that was done moments ago.
    pub(crate) fn maybe_resolve(self: &Arc<Self>) {
        {
            let mut last = self.last_resolve.lock().expect("sentinel lock");
            if last.is_some_and(|t| t.elapsed() < RESOLVE_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(err) = this.resolve().await {
                tracing::warn!(error = %err, "sentinel: could not resolve the master");
            }
        });
    }

    /// Move to the master a Sentinel announced. Its address is taken as
    /// announced: asking a Sentinel again could reach one that has not heard
    /// of the switch yet, and the old master, not yet turned into a replica,
    /// would still say it is the master.
    fn follow(&self, host: &str, port: u16) {
        let info = {
            let current = self.current.read().expect("sentinel lock");
            let addr = match current.0.addr().clone() {
                redis::ConnectionAddr::TcpTls {
                    insecure,
                    tls_params,
                    ..
                } => redis::ConnectionAddr::TcpTls {
                    host: host.to_string(),
                    port,
                    insecure,
                    tls_params,
                },
                _ => redis::ConnectionAddr::Tcp(host.to_string(), port),
            };
            if *current.0.addr() == addr {
                return;
            }
            current.0.clone().set_addr(addr)
        };
        *self.last_resolve.lock().expect("sentinel lock") = Some(Instant::now());
        match redis::Client::open(info.clone())
            .and_then(|c| ConnectionManager::new_lazy_with_config(c, self.manager_config.clone()))
        {
            Ok(manager) => self.swap(info, manager),
            Err(err) => tracing::warn!(error = %err, "sentinel: could not follow the new master"),
        }
    }

    fn swap(&self, info: ConnectionInfo, manager: ConnectionManager) {
        tracing::info!(master = %info.addr(), "sentinel: following the new master");
        *self.current.write().expect("sentinel lock") = (info, manager);
        self.silence.reset();
        self.moved_at_ms
            .store(crate::clock::system_now_ms(), Ordering::Release);
        self.moved.send_modify(|generation| *generation += 1);
    }

    /// Ask the Sentinels for the master and move there — unless the current
    /// node still says it is the master. While a failover is under way the
    /// Sentinels already name the promoted replica, yet the old master takes
    /// writes until it is turned into a replica; moving early would split
    /// the instances between two masters (and two backplanes). The switch is
    /// followed when it is announced, or when the old node stops being a
    /// master or stops answering.
    async fn resolve(&self) -> RedisResult<()> {
        let master = self.sentinels.lock().await.async_get_client().await?;
        let info = master.get_connection_info().clone();
        let mut current = {
            let current = self.current.read().expect("sentinel lock");
            if current.0.addr() == info.addr() {
                return Ok(());
            }
            current.1.clone()
        };
        let role = tokio::time::timeout(
            ROLE_TIMEOUT,
            redis::cmd("ROLE").query_async::<redis::Value>(&mut current),
        )
        .await;
        if let Ok(Ok(redis::Value::Array(role))) = &role {
            if matches!(role.first(), Some(redis::Value::BulkString(r)) if r.as_slice() == b"master")
            {
                tracing::debug!("sentinel: a failover is under way; staying on the current master until it ends");
                return Ok(());
            }
        }
        let manager = ConnectionManager::new_lazy_with_config(master, self.manager_config.clone())?;
        self.swap(info, manager);
        Ok(())
    }
}

/// Listen for `+switch-master` on every Sentinel, re-resolving at once when
/// one names this master, until the [`SentinelMaster`] is dropped. Every
/// Sentinel, not one: the leader of a failover announces the switch when it
/// ends, the others only after hearing of it (their hello messages, every
/// 2 s), and an instance listening to a late one would serve a stale L1 for
/// that long.
fn spawn_announcement_listeners(
    master: Weak<SentinelMaster>,
    sentinels: Vec<String>,
    name: String,
    tls: Option<Arc<RedisTls>>,
) {
    for url in sentinels {
        let (master, name, tls) = (master.clone(), name.clone(), tls.clone());
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            let mut resubscribing = false;
            while master.strong_count() > 0 {
                if listen_for_switches(&master, &url, &name, tls.as_deref(), resubscribing).await {
                    backoff = Duration::from_millis(50);
                    resubscribing = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        });
    }
}

/// One subscription to a Sentinel; returns whether it came up.
async fn listen_for_switches(
    master: &Weak<SentinelMaster>,
    url: &str,
    name: &str,
    tls: Option<&RedisTls>,
    resubscribing: bool,
) -> bool {
    // A `rediss://` Sentinel is reached with the deployment's CA.
    let tls = tls.filter(|_| url.starts_with("rediss://"));
    let Ok(client) = tls::client(url, tls) else {
        return false;
    };
    let Ok(Ok(mut pubsub)) =
        tokio::time::timeout(SENTINEL_TIMEOUT, client.get_async_pubsub()).await
    else {
        return false;
    };
    if !matches!(
        tokio::time::timeout(SENTINEL_TIMEOUT, pubsub.subscribe("+switch-master")).await,
        Ok(Ok(()))
    ) {
        return false;
    }
    // A switch announced while this subscription was down was missed.
    if resubscribing {
        let Some(m) = master.upgrade() else {
            return true;
        };
        if let Err(err) = m.resolve().await {
            tracing::debug!(error = %err, "sentinel: could not resolve the master");
        }
    }
    let mut messages = pubsub.on_message();
    loop {
        match tokio::time::timeout(Duration::from_secs(1), messages.next()).await {
            Ok(Some(message)) => {
                let Some(m) = master.upgrade() else {
                    return true;
                };
                // "<name> <old-ip> <old-port> <new-ip> <new-port>"
                let payload: String = message.get_payload().unwrap_or_default();
                let fields: Vec<&str> = payload.split(' ').collect();
                if let [announced, _, _, host, port] = fields.as_slice() {
                    if *announced == name {
                        if let Ok(port) = port.parse() {
                            m.follow(host, port);
                        }
                    }
                }
            }
            Ok(None) => return true,
            Err(_) if master.strong_count() == 0 => return true,
            Err(_) => {}
        }
    }
}
