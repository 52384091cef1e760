//! Waking the instances that wait for another's fill.
//!
//! Every fill publishes its stored key on the namespace's fill channel. One
//! subscriber task per cache (started on the first wait) turns messages into
//! `Notify` wake-ups for the keys this process waits on. Notifications are an
//! optimisation: a waiter also re-checks after a short, growing backoff, so a
//! lost message (reconnect, failover) costs latency, never correctness.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;

/// Where the subscriber connects: any node sees a Cluster's PUBLISH.
pub(crate) type ClientSource = Arc<dyn Fn() -> Option<redis::Client> + Send + Sync>;

pub(crate) struct FillWaiters {
    channel: String,
    waiting: Mutex<HashMap<String, Weak<Notify>>>,
    listening: AtomicBool,
    client: ClientSource,
}

impl FillWaiters {
    pub(crate) fn new(channel: String, client: ClientSource) -> Arc<Self> {
        Arc::new(Self {
            channel,
            waiting: Mutex::new(HashMap::new()),
            listening: AtomicBool::new(false),
            client,
        })
    }

    pub(crate) fn channel(&self) -> &str {
        &self.channel
    }

    /// A handle that is notified when `stored` is filled. Keep it for the
    /// whole wait; create the `notified()` future before re-checking Redis.
    pub(crate) fn register(self: &Arc<Self>, stored: &str) -> Arc<Notify> {
        if !self.listening.swap(true, Ordering::AcqRel) {
            self.spawn_listener();
        }
        let mut waiting = self.waiting.lock().expect("waiters lock");
        if let Some(existing) = waiting.get(stored).and_then(Weak::upgrade) {
            return existing;
        }
        waiting.retain(|_, w| w.strong_count() > 0);
        let notify = Arc::new(Notify::new());
        waiting.insert(stored.to_owned(), Arc::downgrade(&notify));
        notify
    }

    fn wake(&self, stored: &str) {
        let notify = self
            .waiting
            .lock()
            .expect("waiters lock")
            .get(stored)
            .and_then(Weak::upgrade);
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
    }

    fn spawn_listener(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            loop {
                let Some((client, channel)) =
                    this.upgrade().map(|w| ((w.client)(), w.channel.clone()))
                else {
                    return;
                };
                if let Some(client) = client {
                    if let Ok(Ok(mut pubsub)) =
                        tokio::time::timeout(Duration::from_secs(2), client.get_async_pubsub())
                            .await
                    {
                        if pubsub.subscribe(&channel).await.is_ok() {
                            backoff = Duration::from_millis(50);
                            let mut messages = pubsub.on_message();
                            loop {
                                // Wake up now and then to notice a dropped cache.
                                match tokio::time::timeout(Duration::from_secs(1), messages.next())
                                    .await
                                {
                                    Ok(Some(message)) => {
                                        let Some(waiters) = this.upgrade() else {
                                            return;
                                        };
                                        if let Ok(stored) = message.get_payload::<String>() {
                                            waiters.wake(&stored);
                                        }
                                    }
                                    Ok(None) => break, // connection lost: resubscribe
                                    Err(_) if this.strong_count() == 0 => return,
                                    Err(_) => {}
                                }
                            }
                        }
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        });
    }
}
