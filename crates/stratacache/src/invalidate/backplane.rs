//! The backplane: one pub/sub subscription per cache instance that carries
//! invalidations between instances (and fill notifications for lease waiters).
//!
//! ```text
//! instance A: delete("k") ── UNLINK k, k:lease; PUBLISH bus {keys:["k"]} ──► Redis
//! instance B: subscriber ◄── message ── drop "k" from L1, forget its flight
//! ```
//!
//! While the subscription is down an instance may miss invalidations, so it
//! stops trusting L1: entries put in L1 more than `outage_l1_max_age` ago are
//! treated as misses, and L1 is cleared when the subscription is back.
//! Redis Cluster forwards PUBLISH to every node, so subscribing to any node
//! (the seeds in turn) hears the whole namespace.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Weak;
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::message::{Incoming, Message};
use crate::cache::Inner;

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

    /// Whether an L1 entry put there at `inserted` may be served.
    pub(crate) fn trusts(&self, inserted: Instant) -> bool {
        self.connected.load(Ordering::Acquire) || inserted.elapsed() <= self.outage_l1_max_age
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }
}

/// Run the subscriber until the cache is dropped.
pub(crate) fn spawn_subscriber(cache: Weak<Inner>) {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(50);
        loop {
            let Some(inner) = cache.upgrade() else { return };
            let (Some(l2), Some(backplane), Some(waiters)) =
                (&inner.l2, &inner.backplane, &inner.waiters)
            else {
                return;
            };
            let client = l2.node_client();
            let channels = [backplane.channel.clone(), waiters.channel().to_string()];
            drop(inner);

            if let Some(client) = client {
                if let Ok(Ok(mut pubsub)) =
                    tokio::time::timeout(Duration::from_secs(2), client.get_async_pubsub()).await
                {
                    if pubsub.subscribe(&channels[..]).await.is_ok() {
                        backoff = Duration::from_millis(50);
                        let Some(inner) = cache.upgrade() else { return };
                        inner.backplane_connected().await;
                        drop(inner);
                        let mut messages = pubsub.on_message();
                        loop {
                            // Wake up now and then to notice a dropped cache.
                            match tokio::time::timeout(Duration::from_secs(1), messages.next())
                                .await
                            {
                                Ok(Some(message)) => {
                                    let Some(inner) = cache.upgrade() else { return };
                                    dispatch(
                                        &inner,
                                        message.get_channel_name(),
                                        message.get_payload_bytes(),
                                    );
                                }
                                Ok(None) => break, // connection lost
                                Err(_) if cache.strong_count() == 0 => return,
                                Err(_) => {}
                            }
                        }
                        let Some(inner) = cache.upgrade() else { return };
                        inner.backplane_lost();
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    });
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
