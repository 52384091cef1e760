//! In-process single-flight: one load per key at a time.
//!
//! The first caller for a key starts the load as its own tokio task; every
//! caller, the first included, awaits a shared handle to it. Running the load
//! in a task means a caller that gives up (a dropped future, a request timeout)
//! never cancels the load the others are waiting for. The flight removes itself
//! from the map as the task ends, after it filled the cache, so a caller
//! arriving later finds the value in a tier instead of starting a second load.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};

use crate::error::Error;

type SharedLoad<T> = Shared<BoxFuture<'static, Result<T, Error>>>;

/// Outstanding loads, keyed by stored key.
#[derive(Default)]
pub(crate) struct Flights {
    in_flight: Mutex<HashMap<String, Box<dyn Any + Send + Sync>>>,
}

/// Whether the caller started the flight or joined one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Leader,
    Follower,
}

impl Flights {
    /// Join the flight for `key`, or start one running `load`.
    ///
    /// Two calls for one key with different result types cannot share a
    /// flight; the later one then runs on its own (correct, merely uncoalesced).
    pub(crate) fn join_or_start<T, Fut>(
        self: &Arc<Self>,
        key: &str,
        load: impl FnOnce() -> Fut,
    ) -> (
        impl Future<Output = Result<T, Error>> + Send + 'static,
        Role,
    )
    where
        T: Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let mut map = self.in_flight.lock().expect("flight map poisoned");
        if let Some(existing) = map.get(key) {
            if let Some(shared) = existing.downcast_ref::<SharedLoad<T>>() {
                return (shared.clone(), Role::Follower);
            }
            drop(map);
            return (Self::spawn(load()).shared(), Role::Leader);
        }
        let flights = Arc::clone(self);
        let owned_key = key.to_owned();
        let body = load();
        let task = Self::spawn(async move {
            // Leaves the map when the load ends, also by panic.
            let _leave = LeaveOnDrop {
                flights,
                key: owned_key,
            };
            body.await
        })
        .shared();
        map.insert(key.to_owned(), Box::new(task.clone()));
        (task, Role::Leader)
    }

    fn spawn<T: Send + 'static>(
        fut: impl Future<Output = Result<T, Error>> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, Error>> {
        let handle = tokio::spawn(fut);
        async move {
            handle.await.unwrap_or_else(|join_error| {
                Err(Error::LoaderAborted(join_error.to_string().into()))
            })
        }
        .boxed()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.in_flight.lock().unwrap().len()
    }
}

struct LeaveOnDrop {
    flights: Arc<Flights>,
    key: String,
}

impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        if let Ok(mut map) = self.flights.in_flight.lock() {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_load_and_its_error() {
        let flights = Arc::new(Flights::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for _ in 0..200 {
            let flights = flights.clone();
            let calls = calls.clone();
            handles.push(tokio::spawn(async move {
                let (fut, _) = flights.join_or_start::<u32, _>("k", || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err(Error::config("boom"))
                });
                fut.await
            }));
        }
        for h in handles {
            assert!(matches!(h.await.unwrap(), Err(Error::Config(m)) if m == "boom"));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(flights.len(), 0, "finished flights leave the map");
    }

    #[tokio::test]
    async fn a_dropped_leader_does_not_cancel_the_load() {
        let flights = Arc::new(Flights::default());
        let (leader, role) = flights.join_or_start::<u32, _>("k", || async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok(7)
        });
        assert_eq!(role, Role::Leader);
        let (follower, role) =
            flights.join_or_start::<u32, _>("k", || async { unreachable!("joins the first") });
        assert_eq!(role, Role::Follower);
        drop(leader);
        assert_eq!(follower.await.unwrap(), 7);
    }

    #[tokio::test]
    async fn a_panicking_load_is_an_error_for_everyone() {
        let flights = Arc::new(Flights::default());
        let (fut, _) = flights.join_or_start::<u32, _>("k", || async { panic!("loader bug") });
        assert!(matches!(fut.await, Err(Error::LoaderAborted(_))));
        assert_eq!(flights.len(), 0);
    }
}
