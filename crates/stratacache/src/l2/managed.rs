//! redis-rs's connection manager (TLS, Unix sockets, RESP3, and every
//! Sentinel master), given up and made again when its peer goes silent.
//!
//! The manager reconnects when its socket fails. A peer that vanishes
//! without closing — a host gone, a NAT or firewall that dropped the flow —
//! never makes it fail: every command waits, the breaker's probes included,
//! until the kernel gives up the socket many minutes later. The tier above
//! bounds each call with its timeout; on a timeout, [`Silence`] says whether
//! the connection has answered nothing for a while although commands were
//! sent, and the connection is then replaced (our own pipelined connection
//! applies the same rule from inside, `pipelined.rs`). A Redis that is
//! merely slow still answers something, and keeps its connection.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisResult;

/// The shortest silence after which a connection is given up (twice the
/// call timeout when that is longer).
const MIN_SILENCE: Duration = Duration::from_secs(1);

/// Whether a connection has answered nothing for too long.
pub(crate) struct Silence {
    since: Instant,
    /// When the oldest command sent after the last answer was sent (ms
    /// after `since`, plus one; 0: every command sent has been answered).
    unanswered_since: AtomicU64,
    silent_after: Duration,
}

impl Silence {
    pub(crate) fn new(response_timeout: Duration) -> Self {
        Self {
            since: Instant::now(),
            unanswered_since: AtomicU64::new(0),
            silent_after: (response_timeout * 2).max(MIN_SILENCE),
        }
    }

    /// Run one call on the watched connection. Its answer — a reply or an
    /// error, anything but waiting — shows the connection is not silent.
    /// A call given up (dropped) answers nothing.
    pub(crate) async fn watch<T>(
        &self,
        call: impl Future<Output = RedisResult<T>>,
    ) -> RedisResult<T> {
        let now = self.now();
        let _ = self
            .unanswered_since
            .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
        let result = call.await;
        self.unanswered_since.store(0, Ordering::Release);
        result
    }

    /// A command has waited `silent_after` with nothing answered since.
    fn is_silent(&self) -> bool {
        match self.unanswered_since.load(Ordering::Acquire) {
            0 => false,
            sent => self.now().saturating_sub(sent) >= self.silent_after.as_millis() as u64,
        }
    }

    /// The connection was replaced: what the old one left unanswered does
    /// not count against the new one.
    pub(crate) fn reset(&self) {
        self.unanswered_since.store(0, Ordering::Release);
    }

    /// If the connection has gone silent, `replace` it (under the write
    /// lock of `current`, checking again there: another timed-out call may
    /// have replaced it meanwhile) and count afresh.
    pub(crate) fn replace_if_silent<C>(
        &self,
        current: &RwLock<C>,
        replace: impl FnOnce(&mut C) -> RedisResult<()>,
    ) {
        if !self.is_silent() {
            return;
        }
        let mut current = current.write().unwrap_or_else(|e| e.into_inner());
        if !self.is_silent() {
            return;
        }
        if let Err(err) = replace(&mut current) {
            tracing::warn!(error = %err, "could not make a new redis connection");
            return;
        }
        self.reset();
        drop(current);
        tracing::warn!(
            silent_for = ?self.silent_after,
            "redis connection sent nothing while commands waited; connecting again"
        );
    }

    fn now(&self) -> u64 {
        self.since.elapsed().as_millis() as u64 + 1
    }
}

/// A connection manager to one node, replaced when it goes silent. Cheap
/// to clone: clones share it.
#[derive(Clone)]
pub(crate) struct ManagedConnection {
    shared: Arc<Shared>,
}

struct Shared {
    client: Arc<redis::Client>,
    config: ConnectionManagerConfig,
    manager: RwLock<ConnectionManager>,
    silence: Silence,
}

impl ManagedConnection {
    /// Connects when the first command needs it (a cache can be built while
    /// Redis is down).
    pub(crate) fn new(
        client: Arc<redis::Client>,
        config: ConnectionManagerConfig,
        response_timeout: Duration,
    ) -> RedisResult<Self> {
        let manager = ConnectionManager::new_lazy_with_config((*client).clone(), config.clone())?;
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                config,
                manager: RwLock::new(manager),
                silence: Silence::new(response_timeout),
            }),
        })
    }

    /// The current manager, for one call run through [`watch`](Self::watch).
    pub(crate) fn connection(&self) -> ConnectionManager {
        self.shared
            .manager
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) async fn watch<T>(
        &self,
        call: impl Future<Output = RedisResult<T>>,
    ) -> RedisResult<T> {
        self.shared.silence.watch(call).await
    }

    /// A call timed out: give the connection up if it has gone silent. Calls
    /// already waiting on it end with their timeouts; the next ones go to a
    /// new connection.
    pub(crate) fn on_timeout(&self) {
        let shared = &self.shared;
        shared
            .silence
            .replace_if_silent(&shared.manager, |manager| {
                *manager = ConnectionManager::new_lazy_with_config(
                    (*shared.client).clone(),
                    shared.config.clone(),
                )?;
                Ok(())
            });
    }
}
