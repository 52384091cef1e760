//! What a running loader's own cache calls must know about the load they
//! are part of (a task-local, set while a loader runs):
//!
//! - which keys are being loaded up the chain: a loader that asks for its own
//!   key (directly, or through the loaders of other keys it asks for) would
//!   wait for itself forever — and keep its lease alive, so every other
//!   instance would wait too; it fails at once with [`Error::ReentrantLoad`];
//! - whether Redis failed in the load: then the loader's cache calls skip
//!   Redis too, so a request pays one Redis timeout, not one per nested call.
//!
//! [`Error::ReentrantLoad`]: crate::Error::ReentrantLoad

use std::future::Future;
use std::sync::Arc;

tokio::task_local! {
    static SCOPE: LoadScope;
}

/// The loads a loader runs within.
#[derive(Debug, Clone, Default)]
pub(crate) struct LoadScope {
    /// Stored keys being loaded, outermost first.
    keys: Arc<Vec<String>>,
    redis_failed: bool,
}

impl LoadScope {
    /// The scope of the calling task (empty outside a loader).
    pub(crate) fn current() -> Self {
        SCOPE.try_with(Clone::clone).unwrap_or_default()
    }

    /// Whether `stored` is being loaded up the chain.
    pub(crate) fn loads(&self, stored: &str) -> bool {
        self.keys.iter().any(|k| k == stored)
    }

    /// Whether the load this task's loader belongs to found Redis failing.
    pub(crate) fn redis_failed(&self) -> bool {
        self.redis_failed
    }

    /// The scope of a loader for `stored` started from this one.
    pub(crate) fn enter(&self, stored: &str, redis_failed: bool) -> Self {
        let mut keys = Vec::with_capacity(self.keys.len() + 1);
        keys.extend(self.keys.iter().cloned());
        keys.push(stored.to_string());
        Self {
            keys: Arc::new(keys),
            redis_failed: redis_failed || self.redis_failed,
        }
    }

    /// Run `work` (a loader) within this scope.
    pub(crate) async fn run<F: Future>(self, work: F) -> F::Output {
        SCOPE.scope(self, work).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_loader_sees_the_keys_up_its_chain() {
        assert!(!LoadScope::current().loads("a"));
        let outer = LoadScope::current().enter("a", false);
        outer
            .run(async {
                let here = LoadScope::current();
                assert!(here.loads("a") && !here.loads("b"));
                let inner = here.enter("b", true);
                inner
                    .run(async {
                        let here = LoadScope::current();
                        assert!(here.loads("a") && here.loads("b") && here.redis_failed());
                    })
                    .await;
            })
            .await;
    }
}
