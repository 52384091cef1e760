//! In-process single-flight: one load per key at a time.
//!
//! The first caller for a key starts the load as its own tokio task; every
//! caller, the first included, holds a [`Flight`] — a watch on the task's
//! progress. Running the load in a task means a caller that gives up (a
//! dropped future, a request timeout, a soft timeout that served stale) never
//! cancels the load the others are waiting for. While it runs, the task may
//! offer a stale value ([`Progress::offer_stale`]); callers that accept stale
//! data (stale-while-revalidate, soft timeout) can leave with it early.
//! The flight leaves the map when its task ends, after it filled the cache, so
//! a caller arriving later finds the value in a tier instead of loading again.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::error::Error;

struct State<T> {
    stale: Option<T>,
    done: Option<Result<T, Error>>,
}

/// A caller's handle on a running load.
pub(crate) struct Flight<T> {
    progress: watch::Receiver<Arc<State<T>>>,
}

/// The load's side: reports a stale value while it works.
pub(crate) struct Progress<T> {
    sender: Arc<watch::Sender<Arc<State<T>>>>,
}

impl<T: Clone> Progress<T> {
    /// Let callers that accept stale data leave with `value` now.
    pub(crate) fn offer_stale(&self, value: T) {
        self.sender.send_modify(|state| {
            *state = Arc::new(State {
                stale: Some(value),
                done: None,
            })
        });
    }
}

/// A flight's progress receiver with its result type erased.
type ErasedFlight = Box<dyn Any + Send + Sync>;

/// Outstanding loads, keyed by stored key.
#[derive(Default)]
pub(crate) struct Flights {
    in_flight: Mutex<HashMap<String, (u64, ErasedFlight)>>,
    next_id: std::sync::atomic::AtomicU64,
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
        load: impl FnOnce(Progress<T>) -> Fut,
    ) -> (Flight<T>, Role)
    where
        T: Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let mut map = self.in_flight.lock().expect("flight map poisoned");
        if let Some((_, existing)) = map.get(key) {
            if let Some(progress) = existing.downcast_ref::<watch::Receiver<Arc<State<T>>>>() {
                return (
                    Flight {
                        progress: progress.clone(),
                    },
                    Role::Follower,
                );
            }
            drop(map);
            return (Self::spawn(load, None), Role::Leader);
        }
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let leave = LeaveOnDrop {
            flights: Arc::clone(self),
            key: key.to_owned(),
            id,
        };
        let flight = Self::spawn(load, Some(leave));
        map.insert(key.to_owned(), (id, Box::new(flight.progress.clone())));
        (flight, Role::Leader)
    }

    /// Join the flight for `key` if one is running (with this result type).
    pub(crate) fn join<T>(&self, key: &str) -> Option<Flight<T>>
    where
        T: Clone + Send + Sync + 'static,
    {
        let map = self.in_flight.lock().expect("flight map poisoned");
        let (_, existing) = map.get(key)?;
        let progress = existing.downcast_ref::<watch::Receiver<Arc<State<T>>>>()?;
        Some(Flight {
            progress: progress.clone(),
        })
    }

    /// The key was invalidated: callers from now on must not join a load
    /// that began before (it may return the old value). The running load
    /// goes on for those already waiting; its fill is refused by the lease.
    pub(crate) fn forget(&self, key: &str) {
        self.in_flight
            .lock()
            .expect("flight map poisoned")
            .remove(key);
    }

    /// Forget every flight whose key satisfies `matches`.
    pub(crate) fn forget_if(&self, matches: impl Fn(&str) -> bool) {
        self.in_flight
            .lock()
            .expect("flight map poisoned")
            .retain(|key, _| !matches(key));
    }

    fn spawn<T, Fut>(load: impl FnOnce(Progress<T>) -> Fut, leave: Option<LeaveOnDrop>) -> Flight<T>
    where
        T: Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let (sender, receiver) = watch::channel(Arc::new(State {
            stale: None,
            done: None,
        }));
        let sender = Arc::new(sender);
        // Boxed: a load's future is several kilobytes, and tokio moves the
        // future it spawns by value more than once; a box moves as a pointer.
        let body = Box::pin(load(Progress {
            sender: Arc::clone(&sender),
        }));
        tokio::spawn(async move {
            // Leave the map when the load ends — also by panic (then the
            // sender drops without a result and callers see an abort) — and
            // before answering, so nobody who asks later joins a finished
            // flight: a later caller sees the tiers as the load left them.
            let leave = leave;
            let result = body.await;
            drop(leave);
            sender.send_modify(|state| {
                *state = Arc::new(State {
                    stale: state.stale.clone(),
                    done: Some(result),
                })
            });
        });
        Flight { progress: receiver }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.in_flight.lock().unwrap().len()
    }
}

impl<T: Clone> Flight<T> {
    /// Wait for the load's result. With `serve_stale_after`, a stale value
    /// offered by the load is returned instead once that much time has passed
    /// (`Duration::ZERO`: as soon as it is offered).
    pub(crate) async fn wait(mut self, serve_stale_after: Option<Duration>) -> Result<T, Error> {
        let deadline = serve_stale_after.map(|d| tokio::time::Instant::now() + d);
        loop {
            let state = Arc::clone(&self.progress.borrow_and_update());
            if let Some(done) = &state.done {
                return done.clone();
            }
            let stale_ready = state.stale.is_some() && deadline.is_some();
            if let (Some(stale), Some(deadline)) = (&state.stale, deadline) {
                if tokio::time::Instant::now() >= deadline {
                    return Ok(stale.clone());
                }
            }
            let sleep =
                tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now));
            tokio::select! {
                biased;
                changed = self.progress.changed() => {
                    if changed.is_err() {
                        let last = Arc::clone(&self.progress.borrow());
                        return match &last.done {
                            Some(done) => done.clone(),
                            None => Err(Error::LoaderAborted("the load task ended without a result".into())),
                        };
                    }
                }
                _ = sleep, if stale_ready => {}
            }
        }
    }
}

struct LeaveOnDrop {
    flights: Arc<Flights>,
    key: String,
    id: u64,
}

impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        if let Ok(mut map) = self.flights.in_flight.lock() {
            // Only our own entry: a forgotten flight's key may belong to a newer one.
            if map.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_load_and_its_error() {
        let flights = Arc::new(Flights::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for _ in 0..200 {
            let flights = flights.clone();
            let calls = calls.clone();
            handles.push(tokio::spawn(async move {
                let (flight, _) = flights.join_or_start::<u32, _>("k", |_| async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err(Error::config("boom"))
                });
                flight.wait(None).await
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
        let (leader, role) = flights.join_or_start::<u32, _>("k", |_| async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok(7)
        });
        assert_eq!(role, Role::Leader);
        let (follower, role) =
            flights.join_or_start::<u32, _>("k", |_| async { unreachable!("joins the first") });
        assert_eq!(role, Role::Follower);
        drop(leader);
        assert_eq!(follower.wait(None).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn a_panicking_load_is_an_error_for_everyone() {
        let flights = Arc::new(Flights::default());
        let (flight, _) = flights.join_or_start::<u32, _>("k", |_| async { panic!("loader bug") });
        assert!(matches!(
            flight.wait(None).await,
            Err(Error::LoaderAborted(_))
        ));
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn stale_values_are_served_after_the_callers_patience_runs_out() {
        let flights = Arc::new(Flights::default());
        let (flight, _) = flights.join_or_start::<u32, _>("k", |progress| async move {
            progress.offer_stale(1);
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(2)
        });
        let (impatient, _) = flights.join_or_start::<u32, _>("k", |_| async { unreachable!() });
        let (patient, _) = flights.join_or_start::<u32, _>("k", |_| async { unreachable!() });
        let started = tokio::time::Instant::now();
        assert_eq!(flight.wait(Some(Duration::ZERO)).await.unwrap(), 1);
        assert!(started.elapsed() < Duration::from_millis(100));
        assert_eq!(
            impatient
                .wait(Some(Duration::from_millis(50)))
                .await
                .unwrap(),
            1
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(50) && waited < Duration::from_millis(190),
            "{waited:?}"
        );
        assert_eq!(patient.wait(None).await.unwrap(), 2, "the load went on");
    }
}
