//! Following a Sentinel-managed master across failovers.
//!
//! redis-rs resolves the master once; after a failover the old address keeps
//! refusing writes (READONLY) or connections. [`SentinelMaster`] keeps a
//! connection to the current master and, when a call fails in a way that hints
//! at a failover, asks the Sentinels again (at most once per
//! `RESOLVE_INTERVAL`) and swaps in a connection to the new master.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{ConnectionInfo, IntoConnectionInfo, RedisError, RedisResult};

const RESOLVE_INTERVAL: Duration = Duration::from_millis(200);

pub(crate) struct SentinelMaster {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    current: RwLock<(ConnectionInfo, ConnectionManager)>,
    last_resolve: Mutex<Option<Instant>>,
    manager_config: ConnectionManagerConfig,
}

impl SentinelMaster {
    pub(crate) async fn connect(
        sentinels: &[String],
        master_name: &str,
        master_url: &str,
        manager_config: ConnectionManagerConfig,
    ) -> RedisResult<Arc<Self>> {
        let master_info = master_url.into_connection_info()?;
        let node_info = SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(master_info.redis_settings().clone());
        let mut client = SentinelClient::build(
            sentinels.to_vec(),
            String::from(master_name),
            Some(node_info),
            SentinelServerType::Master,
        )?;
        let master = client.async_get_client().await?;
        let info = master.get_connection_info().clone();
        let manager = ConnectionManager::new_lazy_with_config(master, manager_config.clone())?;
        Ok(Arc::new(Self {
            sentinels: tokio::sync::Mutex::new(client),
            current: RwLock::new((info, manager)),
            last_resolve: Mutex::new(None),
            manager_config,
        }))
    }

    pub(crate) fn connection(&self) -> ConnectionManager {
        self.current.read().expect("sentinel lock").1.clone()
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

    async fn resolve(&self) -> RedisResult<()> {
        let master = self.sentinels.lock().await.async_get_client().await?;
        let info = master.get_connection_info().clone();
        if self.current.read().expect("sentinel lock").0.addr() == info.addr() {
            return Ok(());
        }
        let manager = ConnectionManager::new_lazy_with_config(master, self.manager_config.clone())?;
        tracing::info!(master = %info.addr(), "sentinel: following the new master");
        *self.current.write().expect("sentinel lock") = (info, manager);
        Ok(())
    }
}
