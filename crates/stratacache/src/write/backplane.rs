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
//! ago are served only as fail-safe fallbacks (`invalidation::trust`). Every
//! subscription — the first too — distrusts the L1 entries created before
//! it, and re-reads the namespace's stamp.
//!
//! A frozen Redis keeps its connections open, so the subscription is checked
//! by a heartbeat: a PING on the subscriber's own connection every half
//! Redis timeout; one not answered within the timeout ends the session. A
//! session counts only once its first PING is answered in time, so a slow
//! (not dead) Redis does not make every new session drop L1.
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

use std::sync::Weak;
use std::time::Duration;

use futures::StreamExt;
use redis::PushKind;
use tokio::sync::{mpsc, watch};

use super::Pipeline;
use crate::invalidation::message::{Incoming, Message};
use crate::l2::L2;

/// How long connecting and subscribing may take before trying again.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Run the subscriber until the cache is dropped.
pub(crate) fn spawn_subscriber(pipeline: Weak<Pipeline>) {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(50);
        let mut moves = pipeline
            .upgrade()
            .and_then(|p| p.tiers.l2().and_then(|l2| l2.master_moves()));
        loop {
            if let Some(moves) = moves.as_mut().filter(|m| m.has_changed().unwrap_or(false)) {
                moves.mark_unchanged();
                let Some(pipeline) = pipeline.upgrade() else {
                    return;
                };
                pipeline.master_moved().await;
            }
            let Some(strong) = pipeline.upgrade() else {
                return;
            };
            let Some(l2) = strong.tiers.l2().cloned() else {
                return;
            };
            let (bus, fills) = (strong.bus.clone(), strong.tiers.fills_channel().to_string());
            drop(strong);
            let channels = Channels {
                bus: &bus,
                fills: &fills,
                heartbeat: (l2.timeout() / 2).max(Duration::from_millis(50)),
                timeout: l2.timeout(),
            };
            let session = listen_any(&pipeline, &l2, &channels, moves.as_mut()).await;
            match session {
                Session::CacheDropped => return,
                Session::NotSubscribed => {}
                Session::Lost => {
                    backoff = Duration::from_millis(50);
                    let Some(pipeline) = pipeline.upgrade() else {
                        return;
                    };
                    pipeline.backplane_lost();
                }
                Session::MasterMoved => {
                    let Some(pipeline) = pipeline.upgrade() else {
                        return;
                    };
                    pipeline.backplane_lost();
                    pipeline.master_moved().await;
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

/// What a session listens to, and how it checks the connection.
struct Channels<'a> {
    bus: &'a str,
    fills: &'a str,
    heartbeat: Duration,
    timeout: Duration,
}

async fn listen_any(
    pipeline: &Weak<Pipeline>,
    l2: &L2,
    channels: &Channels<'_>,
    moves: Option<&mut watch::Receiver<u64>>,
) -> Session {
    #[cfg(feature = "simulation")]
    if let Some(sim) = l2.simulated_connection() {
        return listen_simulated(pipeline, sim, channels).await;
    }
    if l2.is_cluster() {
        listen_sharded(pipeline, l2, channels).await
    } else {
        listen(pipeline, l2, channels, moves).await
    }
}

/// How a subscription ended.
enum Session {
    CacheDropped,
    /// It never came up (Redis down, node unknown).
    NotSubscribed,
    /// It was up, and the connection, the subscription or the heartbeat is gone.
    Lost,
    /// The connection moved to a new master (Sentinel): the subscription
    /// was on the old one, and messages published during the switch may
    /// have been missed.
    MasterMoved,
}

/// The subscription is up: count this instance in.
async fn subscribed(pipeline: &Weak<Pipeline>) -> bool {
    let Some(pipeline) = pipeline.upgrade() else {
        return false;
    };
    pipeline.backplane_connected().await;
    true
}

/// Single node and Sentinel: SUBSCRIBE to both channels on the (master) node.
async fn listen(
    pipeline: &Weak<Pipeline>,
    l2: &L2,
    channels: &Channels<'_>,
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
    let both = [channels.bus, channels.fills];
    if !matches!(
        tokio::time::timeout(SUBSCRIBE_TIMEOUT, pubsub.subscribe(&both[..])).await,
        Ok(Ok(()))
    ) {
        return Session::NotSubscribed;
    }
    let (mut sink, mut messages) = pubsub.split();
    // Counted in only once Redis answers in time: a slow Redis would lose
    // the session at the first heartbeat, and every new session drops L1.
    let pong = tokio::time::timeout(channels.timeout, sink.ping::<redis::Value>()).await;
    if !matches!(pong, Ok(Ok(_))) {
        return Session::NotSubscribed;
    }
    if !subscribed(pipeline).await {
        return Session::CacheDropped;
    }
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
    let mut heartbeat = tokio::time::interval(channels.heartbeat);
    loop {
        tokio::select! {
            biased;
            () = &mut master_moved => return Session::MasterMoved,
            next = messages.next() => match next {
                Some(message) => {
                    let Some(pipeline) = pipeline.upgrade() else {
                        return Session::CacheDropped;
                    };
                    pipeline.dispatch(message.get_channel_name(), message.get_payload_bytes());
                }
                None => return Session::Lost,
            },
            _ = heartbeat.tick() => {
                if pipeline.strong_count() == 0 {
                    return Session::CacheDropped;
                }
                // In subscribed mode Redis answers PING with an array.
                let pong = tokio::time::timeout(channels.timeout, sink.ping::<redis::Value>()).await;
                if !matches!(pong, Ok(Ok(_))) {
                    return Session::Lost;
                }
            }
        }
    }
}

/// Cluster: one RESP3 connection to the master serving the bus channel's
/// slot, SSUBSCRIBEd to the bus and SUBSCRIBEd to the fill channel.
async fn listen_sharded(pipeline: &Weak<Pipeline>, l2: &L2, channels: &Channels<'_>) -> Session {
    let Some(url) = l2.shard_owner_url(channels.bus).await else {
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
    let subscribe = async {
        redis::cmd("SSUBSCRIBE")
            .arg(channels.bus)
            .query_async::<()>(&mut conn)
            .await?;
        redis::cmd("SUBSCRIBE")
            .arg(channels.fills)
            .query_async::<()>(&mut conn)
            .await
    };
    if !matches!(
        tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribe).await,
        Ok(Ok(()))
    ) {
        return Session::NotSubscribed;
    }
    let ping = redis::cmd("PING");
    let pong = ping.query_async::<redis::Value>(&mut conn);
    if !matches!(
        tokio::time::timeout(channels.timeout, pong).await,
        Ok(Ok(_))
    ) {
        return Session::NotSubscribed;
    }
    if !subscribed(pipeline).await {
        return Session::CacheDropped;
    }
    let mut heartbeat = tokio::time::interval(channels.heartbeat);
    loop {
        tokio::select! {
            biased;
            push = pushes.recv() => match push {
                Some(push) => match push.kind {
                    PushKind::SMessage | PushKind::Message => {
                        let Some(pipeline) = pipeline.upgrade() else {
                            return Session::CacheDropped;
                        };
                        if let [channel, payload, ..] = push.data.as_slice() {
                            if let (Some(channel), Some(payload)) = (bytes(channel), bytes(payload)) {
                                if let Ok(channel) = std::str::from_utf8(channel) {
                                    pipeline.dispatch(channel, payload);
                                }
                            }
                        }
                    }
                    // The connection dropped, or the slot moved away from this
                    // node (failover, resharding) and Redis ended the subscription.
                    PushKind::Disconnection | PushKind::SUnsubscribe => return Session::Lost,
                    _ => {}
                },
                None => return Session::Lost,
            },
            _ = heartbeat.tick() => {
                if pipeline.strong_count() == 0 {
                    return Session::CacheDropped;
                }
                let ping = redis::cmd("PING");
                let pong = ping.query_async::<redis::Value>(&mut conn);
                if !matches!(tokio::time::timeout(channels.timeout, pong).await, Ok(Ok(_))) {
                    return Session::Lost;
                }
            }
        }
    }
}

/// A simulated server: the same subscription, in memory.
#[cfg(feature = "simulation")]
async fn listen_simulated(
    pipeline: &Weak<Pipeline>,
    sim: &crate::l2::sim::SimConnection,
    channels: &Channels<'_>,
) -> Session {
    let Ok(Ok(mut subscription)) = tokio::time::timeout(
        SUBSCRIBE_TIMEOUT,
        sim.subscribe(&[channels.bus, channels.fills]),
    )
    .await
    else {
        return Session::NotSubscribed;
    };
    let pong = tokio::time::timeout(channels.timeout, subscription.ping()).await;
    if !matches!(pong, Ok(Ok(()))) {
        return Session::NotSubscribed;
    }
    if !subscribed(pipeline).await {
        return Session::CacheDropped;
    }
    let mut heartbeat = tokio::time::interval(channels.heartbeat);
    loop {
        tokio::select! {
            biased;
            next = subscription.next() => match next {
                Some((channel, payload)) => {
                    let Some(pipeline) = pipeline.upgrade() else {
                        return Session::CacheDropped;
                    };
                    if let Ok(channel) = std::str::from_utf8(&channel) {
                        pipeline.dispatch(channel, &payload);
                    }
                }
                None => return Session::Lost,
            },
            _ = heartbeat.tick() => {
                if pipeline.strong_count() == 0 {
                    return Session::CacheDropped;
                }
                let pong = tokio::time::timeout(channels.timeout, subscription.ping()).await;
                if !matches!(pong, Ok(Ok(()))) {
                    return Session::Lost;
                }
            }
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

impl Pipeline {
    /// A message on one of the backplane's channels.
    fn dispatch(&self, channel: &str, payload: &[u8]) {
        if channel == self.tiers.fills_channel() {
            if let (Some(waiters), Ok(stored)) =
                (self.tiers.waiters(), std::str::from_utf8(payload))
            {
                waiters.wake(stored);
            }
            return;
        }
        match Message::decode(payload, &self.instance) {
            Incoming::Own => {}
            Incoming::Apply(what) => self.apply(&what),
            Incoming::Unknown => {
                tracing::warn!("backplane message of an unknown format; L1 distrusted");
                self.distrust_l1();
            }
        }
    }

    /// Subscribed (again): what was sent before may have been missed.
    async fn backplane_connected(&self) {
        self.refresh_invalidation_state().await;
        self.distrust_l1();
        self.tiers.trust().set_connected(true);
        tracing::info!("backplane subscribed; L1 entries from before distrusted");
    }

    fn backplane_lost(&self) {
        self.tiers.trust().set_connected(false);
        tracing::warn!(
            "backplane connection lost; L1 served as fresh only for recent entries until it is back"
        );
    }

    /// Re-read what may have been missed: the namespace stamp; tag stamps are
    /// fetched again on demand.
    pub(crate) async fn refresh_invalidation_state(&self) {
        let tiers = &self.tiers;
        tiers.stamps().refetch_tags();
        let Some(l2) = tiers.l2() else { return };
        if let Ok(Some(bytes)) = l2.get(&tiers.keys().clear_key()).await {
            if let Some(at) = std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.parse().ok())
            {
                let stamp = crate::clock::stamp_from_stored(at);
                tiers.clock().observe(stamp);
                tiers.stamps().set_cleared_at(stamp);
            }
        }
    }
}
