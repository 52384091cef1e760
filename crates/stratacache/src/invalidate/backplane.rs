//! The backplane: one pub/sub subscription per cache instance that carries
//! invalidations between instances (and fill notifications for lease waiters).
//!
//! ```text
//! instance A: delete("k") ── UNLINK k, k:lease; PUBLISH bus {keys:["k"]} ──► Redis
//! instance B: subscriber ◄── message ── drop "k" from L1, forget its flight
//! ```
//!
//! While the subscription is down an instance may miss invalidations, so it
//! stops trusting L1: entries whose load began more than `outage_l1_max_age`
//! ago are treated as misses, and L1 is cleared when the subscription is back.
//!
//! On a Cluster the bus is a *sharded* channel (SPUBLISH / SSUBSCRIBE, on the
//! master serving the channel's slot): a classic PUBLISH is copied to every
//! node over the cluster bus, a sharded one only within its shard — 1 bus
//! message per invalidation instead of 5 on 3 masters + 3 replicas, and a
//! lower propagation latency (`bench backplane`, BENCHMARKS.md). Fill
//! notifications stay classic PUBLISH: they are sent from the fill scripts,
//! which may only touch their entry's slot, and every node hears a classic
//! PUBLISH — the bus owner too, so one RESP3 connection carries both. When
//! the slot moves (failover, resharding) Redis ends the sharded subscription
//! (`sunsubscribe`), which counts as a lost backplane: resubscribe where the
//! slot now lives. RESP3 client tracking was measured too and not chosen: it
//! needs a connection to every master per instance, and carries key
//! invalidations only (no tags, prefixes or namespace clears).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use redis::PushKind;
use tokio::sync::{mpsc, watch};

use super::message::{Incoming, Message};
use crate::cache::Inner;
use crate::l2::L2;

/// How long connecting and subscribing may take before trying again.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) struct Backplane {
    /// This instance's id, to skip its own messages.
    pub(crate) instance: String,
    /// The invalidation channel of the namespace.
    pub(crate) channel: String,
    connected: AtomicBool,
    /// Set after the first subscription: later ones follow an outage.
    subscribed_before: AtomicBool,
    outage_l1_max_age: Duration,
}

impl Backplane {
    pub(crate) fn new(namespace: &str, outage_l1_max_age: Duration) -> Self {
        Self {
            instance: format!("{:016x}", rand::random::<u64>()),
            channel: format!("{namespace}:__stratacache:bus"),
            connected: AtomicBool::new(false),
            subscribed_before: AtomicBool::new(false),
            outage_l1_max_age,
        }
    }

    /// Whether an L1 entry whose load began at `created_at_ms` may be served.
    pub(crate) fn trusts(&self, created_at_ms: u64, now_ms: u64) -> bool {
        self.connected.load(Ordering::Acquire)
            || now_ms.saturating_sub(created_at_ms) <= self.outage_l1_max_age.as_millis() as u64
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }
}

/// Run the subscriber until the cache is dropped.
pub(crate) fn spawn_subscriber(cache: Weak<Inner>) {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(50);
        let mut moves = cache
            .upgrade()
            .and_then(|inner| inner.l2.as_ref().and_then(|l2| l2.master_moves()));
        loop {
            if let Some(moves) = moves.as_mut().filter(|m| m.has_changed().unwrap_or(false)) {
                moves.mark_unchanged();
                let Some(inner) = cache.upgrade() else { return };
                inner.master_moved().await;
            }
            let Some(inner) = cache.upgrade() else { return };
            let (Some(l2), Some(backplane), Some(waiters)) =
                (&inner.l2, &inner.backplane, &inner.waiters)
            else {
                return;
            };
            let (l2, bus, fills) = (
                Arc::clone(l2),
                backplane.channel.clone(),
                waiters.channel().to_string(),
            );
            drop(inner);
            #[cfg(feature = "simulation")]
            if let Some(sim) = l2.simulated_connection() {
                match listen_simulated(&cache, sim, &bus, &fills).await {
                    Session::CacheDropped => return,
                    Session::Lost => {
                        let Some(inner) = cache.upgrade() else { return };
                        inner.backplane_lost();
                    }
                    _ => {}
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let session = if l2.is_cluster() {
                listen_sharded(&cache, &l2, &bus, &fills).await
            } else {
                listen(&cache, &l2, &bus, &fills, moves.as_mut()).await
            };
            match session {
                Session::CacheDropped => return,
                Session::NotSubscribed => {}
                Session::Lost => {
                    backoff = Duration::from_millis(50);
                    let Some(inner) = cache.upgrade() else { return };
                    inner.backplane_lost();
                }
                Session::MasterMoved => {
                    let Some(inner) = cache.upgrade() else { return };
                    inner.backplane_lost();
                    inner.master_moved().await;
                    // Subscribe on the new master at once.
                    backoff = Duration::from_millis(50);
                    continue;
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    });
}

/// How a subscription ended.
enum Session {
    CacheDropped,
    /// It never came up (Redis down, node unknown).
    NotSubscribed,
    /// It was up, and the connection or the subscription is gone.
    Lost,
    /// The connection moved to a new master (Sentinel): the subscription
    /// was on the old one, and messages published during the switch may
    /// have been missed.
    MasterMoved,
}

/// Single node and Sentinel: SUBSCRIBE to both channels on the (master) node.
async fn listen(
    cache: &Weak<Inner>,
    l2: &L2,
    bus: &str,
    fills: &str,
    moves: Option<&mut watch::Receiver<u64>>,
) -> Session {
    let Some(client) = l2.node_client() else {
        return Session::NotSubscribed;
    };
    let Ok(Ok(mut pubsub)) =
        tokio::time::timeout(SUBSCRIBE_TIMEOUT, client.get_async_pubsub()).await
    else {
        return Session::NotSubscribed;
    };
    if !matches!(
        tokio::time::timeout(SUBSCRIBE_TIMEOUT, pubsub.subscribe(&[bus, fills][..])).await,
        Ok(Ok(()))
    ) {
        return Session::NotSubscribed;
    }
    let Some(inner) = cache.upgrade() else {
        return Session::CacheDropped;
    };
    inner.backplane_connected().await;
    drop(inner);
    let mut messages = pubsub.on_message();
    let master_moved = async {
        let moved = match moves {
            Some(moves) => moves.changed().await.is_ok(),
            None => false,
        };
        if !moved {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(master_moved);
    loop {
        // Wake up now and then to notice a dropped cache.
        let next = tokio::select! {
            next = tokio::time::timeout(Duration::from_secs(1), messages.next()) => next,
            () = &mut master_moved => return Session::MasterMoved,
        };
        match next {
            Ok(Some(message)) => {
                let Some(inner) = cache.upgrade() else {
                    return Session::CacheDropped;
                };
                dispatch(
                    &inner,
                    message.get_channel_name(),
                    message.get_payload_bytes(),
                );
            }
            Ok(None) => return Session::Lost,
            Err(_) if cache.strong_count() == 0 => return Session::CacheDropped,
            Err(_) => {}
        }
    }
}

/// Cluster: one RESP3 connection to the master serving the bus channel's
/// slot, SSUBSCRIBEd to the bus and SUBSCRIBEd to the fill channel.
async fn listen_sharded(cache: &Weak<Inner>, l2: &L2, bus: &str, fills: &str) -> Session {
    let Some(url) = l2.shard_owner_url(bus).await else {
        return Session::NotSubscribed;
    };
    let separator = if url.contains('?') { '&' } else { '?' };
    let Some(client) = l2.client_for(&format!("{url}{separator}protocol=resp3")) else {
        return Session::NotSubscribed;
    };
    let (tx, mut pushes) = mpsc::unbounded_channel();
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(SUBSCRIBE_TIMEOUT))
        .set_response_timeout(Some(SUBSCRIBE_TIMEOUT))
        .set_push_sender(tx);
    let Ok(mut conn) = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
    else {
        return Session::NotSubscribed;
    };
    let subscribed = async {
        redis::cmd("SSUBSCRIBE")
            .arg(bus)
            .query_async::<()>(&mut conn)
            .await?;
        redis::cmd("SUBSCRIBE")
            .arg(fills)
            .query_async::<()>(&mut conn)
            .await
    };
    if !matches!(
        tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribed).await,
        Ok(Ok(()))
    ) {
        return Session::NotSubscribed;
    }
    let Some(inner) = cache.upgrade() else {
        return Session::CacheDropped;
    };
    inner.backplane_connected().await;
    drop(inner);
    loop {
        match tokio::time::timeout(Duration::from_secs(1), pushes.recv()).await {
            Ok(Some(push)) => match push.kind {
                PushKind::SMessage | PushKind::Message => {
                    let Some(inner) = cache.upgrade() else {
                        return Session::CacheDropped;
                    };
                    if let [channel, payload, ..] = push.data.as_slice() {
                        if let (Some(channel), Some(payload)) = (bytes(channel), bytes(payload)) {
                            if let Ok(channel) = std::str::from_utf8(channel) {
                                dispatch(&inner, channel, payload);
                            }
                        }
                    }
                }
                // The connection dropped, or the slot moved away from this
                // node (failover, resharding) and Redis ended the subscription.
                PushKind::Disconnection | PushKind::SUnsubscribe => return Session::Lost,
                _ => {}
            },
            Ok(None) => return Session::Lost,
            Err(_) if cache.strong_count() == 0 => return Session::CacheDropped,
            Err(_) => {}
        }
    }
}

/// A simulated server: the same subscription, in memory.
#[cfg(feature = "simulation")]
async fn listen_simulated(
    cache: &Weak<Inner>,
    sim: &crate::l2::sim::SimConnection,
    bus: &str,
    fills: &str,
) -> Session {
    let Ok(Ok(mut subscription)) =
        tokio::time::timeout(SUBSCRIBE_TIMEOUT, sim.subscribe(&[bus, fills])).await
    else {
        return Session::NotSubscribed;
    };
    let Some(inner) = cache.upgrade() else {
        return Session::CacheDropped;
    };
    inner.backplane_connected().await;
    drop(inner);
    loop {
        match tokio::time::timeout(Duration::from_secs(1), subscription.next()).await {
            Ok(Some((channel, payload))) => {
                let Some(inner) = cache.upgrade() else {
                    return Session::CacheDropped;
                };
                if let Ok(channel) = std::str::from_utf8(&channel) {
                    dispatch(&inner, channel, &payload);
                }
            }
            Ok(None) => return Session::Lost,
            Err(_) if cache.strong_count() == 0 => return Session::CacheDropped,
            Err(_) => {}
        }
    }
}

fn bytes(value: &redis::Value) -> Option<&[u8]> {
    match value {
        redis::Value::BulkString(b) => Some(b),
        redis::Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn dispatch(inner: &Inner, channel: &str, payload: &[u8]) {
    let (Some(backplane), Some(waiters)) = (&inner.backplane, &inner.waiters) else {
        return;
    };
    if channel == waiters.channel() {
        if let Ok(stored) = std::str::from_utf8(payload) {
            waiters.wake(stored);
        }
        return;
    }
    match Message::decode(payload, &backplane.instance) {
        Incoming::Own => {}
        Incoming::Apply(what) => inner.apply_invalidation(&what),
        Incoming::Unknown => {
            tracing::warn!("backplane message of an unknown format; clearing L1");
            inner.clear_l1_only();
        }
    }
}

impl Inner {
    async fn backplane_connected(&self) {
        let Some(b) = &self.backplane else { return };
        if b.subscribed_before.swap(true, Ordering::AcqRel) {
            // Invalidations sent during the outage were missed.
            self.refresh_invalidation_state().await;
            self.clear_l1_only();
        }
        b.connected.store(true, Ordering::Release);
        tracing::debug!("backplane subscribed");
    }

    fn backplane_lost(&self) {
        if let Some(b) = &self.backplane {
            b.connected.store(false, Ordering::Release);
        }
        tracing::warn!(
            "backplane connection lost; L1 is trusted only for recent entries until it is back"
        );
    }
}
