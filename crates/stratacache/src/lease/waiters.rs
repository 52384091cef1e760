//! Waking the callers that wait for another instance's fill.
//!
//! Every fill publishes its stored key on the namespace's fill channel; the
//! backplane's subscriber (`write::backplane`) hands each such
//! message to [`FillWaiters::wake`]. Notifications are an optimisation: a
//! waiter also re-checks after a short, growing backoff, so a lost message
//! (reconnect, failover) costs latency, never correctness.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

pub(crate) struct FillWaiters {
    channel: String,
    waiting: Mutex<HashMap<String, Weak<Notify>>>,
}

impl FillWaiters {
    pub(crate) fn new(channel: String) -> Arc<Self> {
        Arc::new(Self {
            channel,
            waiting: Mutex::new(HashMap::new()),
        })
    }

    /// The channel fills are published on.
    pub(crate) fn channel(&self) -> &str {
        &self.channel
    }

    /// A handle that is notified when `stored` is filled. Keep it for the
    /// whole wait; create the `notified()` future before re-checking Redis.
    pub(crate) fn register(&self, stored: &str) -> Arc<Notify> {
        let mut waiting = self.waiting.lock().expect("waiters lock");
        if let Some(existing) = waiting.get(stored).and_then(Weak::upgrade) {
            return existing;
        }
        waiting.retain(|_, w| w.strong_count() > 0);
        let notify = Arc::new(Notify::new());
        waiting.insert(stored.to_owned(), Arc::downgrade(&notify));
        notify
    }

    /// `stored` was filled: wake whoever waits for it here.
    pub(crate) fn wake(&self, stored: &str) {
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
}
