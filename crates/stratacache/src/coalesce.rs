//! In-process single-flight: one load per key at a time.
//!
//! The first caller for a key starts the load; every caller, the first
//! included, holds a [`Flight`] — a watch on the load's progress. The first
//! caller (the leader) runs the load in its own task while it waits: most
//! loads have nobody else waiting, and a task of their own would cost a
//! spawn and a wake-up across threads per miss. A leader that gives up (a
//! dropped future, a request timeout, a soft timeout that served stale) hands
//! the unfinished load to a task of its own, so it never cancels the load the
//! others are waiting for, nor leaves a lease taken. A load that panics is an
//! error for every caller, the leader included. While it runs, the load may
//! offer a stale value ([`Progress::offer_stale`]); callers that accept stale
//! data (stale-while-revalidate, soft timeout) can leave with it early.
//! The flight leaves the map when its load ends, after it filled the cache, so
//! a caller arriving later finds the value in a tier instead of loading again.
//! A flight may also answer early ([`Progress::answer_early`]: a load past
//! its `hard_timeout` goes on in the background to fill the cache); it then
//! leaves the map at once.
//!
//! A caller never joins a flight that began before the last tag, prefix or
//! namespace invalidation (it may be loading what that invalidation
//! replaced); it starts a new one. Key invalidations forget the key's flight.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::watch;

use crate::error::Error;

struct State<T> {
    stale: Option<T>,
    done: Option<Result<T, Error>>,
}

/// A caller's handle on a running load.
pub(crate) struct Flight<T> {
    progress: watch::Receiver<Arc<State<T>>>,
    /// The leader's: the load itself, run while the leader waits, handed to
    /// a task of its own when the leader leaves before it ends.
    driver: Option<Driver>,
}

/// A load and the publication of its result. Boxed: a load's future is
/// several kilobytes, and it moves as a pointer when handed to a task.
type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

impl<T> Drop for Flight<T> {
    fn drop(&mut self) {
        let Some(driver) = self.driver.take() else {
            return;
        };
        // Outside a runtime (it is shutting down) the load is abandoned; its
        // lease expires on its own.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(driver);
        }
    }
}

/// The load's side: reports a stale value while it works.
pub(crate) struct Progress<T> {
    sender: Arc<watch::Sender<Arc<State<T>>>>,
    /// Where this flight sits in the map, to leave it when answering early.
    place: Option<(Arc<Flights>, String, u64)>,
}

impl<T: Clone> Progress<T> {
    /// Let callers that accept stale data leave with `value` now.
    pub(crate) fn offer_stale(&self, value: T) {
        self.sender.send_modify(|state| {
            if state.done.is_none() {
                *state = Arc::new(State {
                    stale: Some(value),
                    done: None,
                })
            }
        });
    }

    /// Answer every caller now with `result`, while the load goes on (to
    /// fill the cache) and stays in the map: callers arriving meanwhile join
    /// it and are answered at once, rather than load again.
    pub(crate) fn answer(&self, result: Result<T, Error>) {
        answer(&self.sender, result);
    }

    /// Answer every caller now with `result`, and leave the map: the load
    /// goes on in the background, and callers arriving from now on do not
    /// join it (its final result goes to nobody).
    pub(crate) fn answer_early(&self, result: Result<T, Error>) {
        if let Some((flights, key, id)) = &self.place {
            flights.leave(key, *id);
        }
        answer(&self.sender, result);
    }
}

/// Publish a flight's result, unless it answered early.
fn answer<T: Clone>(sender: &watch::Sender<Arc<State<T>>>, result: Result<T, Error>) {
    sender.send_modify(|state| {
        if state.done.is_none() {
            *state = Arc::new(State {
                stale: state.stale.clone(),
                done: Some(result),
            })
        }
    });
}

/// A flight's progress receiver with its result type erased.
type ErasedFlight = Box<dyn Any + Send + Sync>;

/// Outstanding loads, keyed by stored key.
#[derive(Default)]
pub(crate) struct Flights {
    /// Per stored key: the flight's id, the log position it began at, its
    /// progress receiver.
    in_flight: Mutex<HashMap<String, (u64, u64, ErasedFlight)>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// Whether the caller started the flight or joined one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Leader,
    Follower,
}

impl Flights {
    /// Join the flight for `key`, or start one running `load`. `position`
    /// is the invalidation log's current mark, `broad` the position of its
    /// last broad invalidation: a flight that began before it is not joined.
    ///
    /// Two calls for one key with different result types cannot share a
    /// flight; the later one then runs on its own (correct, merely uncoalesced).
    pub(crate) fn join_or_start<T, Fut>(
        self: &Arc<Self>,
        key: &str,
        (position, broad): (u64, u64),
        load: impl FnOnce(Progress<T>) -> Fut,
    ) -> (Flight<T>, Role)
    where
        T: Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let mut map = self.in_flight.lock().expect("flight map poisoned");
        if let Some((_, started, existing)) = map.get(key) {
            match existing.downcast_ref::<watch::Receiver<Arc<State<T>>>>() {
                Some(progress) if *started >= broad => {
                    return (
                        Flight {
                            progress: progress.clone(),
                            driver: None,
                        },
                        Role::Follower,
                    );
                }
                Some(_) => {}
                None => {
                    drop(map);
                    return (Self::lead(load, None), Role::Leader);
                }
            }
        }
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let place = (Arc::clone(self), key.to_owned(), id);
        let flight = Self::lead(load, Some(place));
        map.insert(
            key.to_owned(),
            (id, position, Box::new(flight.progress.clone())),
        );
        (flight, Role::Leader)
    }

    /// Join the flight for `key` if one is running (with this result type)
    /// that began after the last broad invalidation (`broad`).
    pub(crate) fn join<T>(&self, key: &str, broad: u64) -> Option<Flight<T>>
    where
        T: Clone + Send + Sync + 'static,
    {
        let map = self.in_flight.lock().expect("flight map poisoned");
        let (_, _, existing) = map.get(key).filter(|(_, started, _)| *started >= broad)?;
        let progress = existing.downcast_ref::<watch::Receiver<Arc<State<T>>>>()?;
        Some(Flight {
            progress: progress.clone(),
            driver: None,
        })
    }

    /// Leave the map, if `key`'s flight is still `id` (a forgotten flight's
    /// key may belong to a newer one).
    fn leave(&self, key: &str, id: u64) {
        if let Ok(mut map) = self.in_flight.lock() {
            if map.get(key).is_some_and(|(current, _, _)| *current == id) {
                map.remove(key);
            }
        }
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

    /// Forget every flight (a namespace clear).
    pub(crate) fn forget_all(&self) {
        self.in_flight.lock().expect("flight map poisoned").clear();
    }

    /// The leader's flight: it carries the load, run by whoever waits on it.
    fn lead<T, Fut>(
        load: impl FnOnce(Progress<T>) -> Fut,
        place: Option<(Arc<Flights>, String, u64)>,
    ) -> Flight<T>
    where
        T: Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let (sender, receiver) = watch::channel(Arc::new(State {
            stale: None,
            done: None,
        }));
        let sender = Arc::new(sender);
        let leave = place
            .clone()
            .map(|(flights, key, id)| LeaveOnDrop { flights, key, id });
        // Boxed where it is made: the load's future holds the whole read
        // path and is kilobytes large; moved by value into the driver and
        // then onto the heap it would be copied several times per miss.
        let body = Box::pin(load(Progress {
            sender: Arc::clone(&sender),
            place,
        }));
        let driver = Box::pin(async move {
            // Leave the map when the load ends — by panic too — and before
            // answering, so nobody who asks later joins a finished flight: a
            // later caller sees the tiers as the load left them.
            let leave = leave;
            let result = AssertUnwindSafe(body).catch_unwind().await;
            drop(leave);
            let result =
                result.unwrap_or_else(|_| Err(Error::LoaderAborted("the load panicked".into())));
            answer(&sender, result);
        });
        Flight {
            progress: receiver,
            driver: Some(driver),
        }
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
        let Flight { progress, driver } = &mut self;
        loop {
            let state = Arc::clone(&progress.borrow_and_update());
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
            let running = async {
                match driver.as_mut() {
                    Some(load) => load.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                // The load ended and has answered: read its answer above.
                () = running => *driver = None,
                changed = progress.changed() => {
                    if changed.is_err() {
                        let last = Arc::clone(&progress.borrow());
                        return match &last.done {
                            Some(done) => done.clone(),
                            None => Err(Error::LoaderAborted("the load ended without a result".into())),
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
        self.flights.leave(&self.key, self.id);
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
                let (flight, _) = flights.join_or_start::<u32, _>("k", (0, 0), |_| async move {
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
        let (leader, role) = flights.join_or_start::<u32, _>("k", (0, 0), |_| async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok(7)
        });
        assert_eq!(role, Role::Leader);
        let (follower, role) = flights
            .join_or_start::<u32, _>("k", (0, 0), |_| async { unreachable!("joins the first") });
        assert_eq!(role, Role::Follower);
        drop(leader);
        assert_eq!(follower.wait(None).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn a_flight_older_than_a_broad_invalidation_is_not_joined() {
        let flights = Arc::new(Flights::default());
        let (old, _) = flights.join_or_start::<u32, _>("k", (5, 0), |_| async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok(1)
        });
        assert!(
            flights.join::<u32>("k", 5).is_some(),
            "began at the broad mark"
        );
        assert!(
            flights.join::<u32>("k", 6).is_none(),
            "a broad invalidation since"
        );
        let (new, role) = flights.join_or_start::<u32, _>("k", (7, 6), |_| async { Ok(2) });
        assert_eq!(role, Role::Leader);
        assert_eq!(new.wait(None).await.unwrap(), 2);
        assert_eq!(old.wait(None).await.unwrap(), 1, "the old one goes on");
    }

    #[tokio::test]
    async fn an_early_answer_leaves_the_map_and_the_load_goes_on() {
        let flights = Arc::new(Flights::default());
        let finished = Arc::new(AtomicUsize::new(0));
        let done = Arc::clone(&finished);
        let (flight, _) = flights.join_or_start::<u32, _>("k", (0, 0), |progress| async move {
            progress.answer_early(Err(Error::LoaderTimeout(Duration::from_millis(1))));
            tokio::time::sleep(Duration::from_millis(30)).await;
            done.fetch_add(1, Ordering::SeqCst);
            Ok(7)
        });
        assert!(matches!(
            flight.wait(None).await,
            Err(Error::LoaderTimeout(_))
        ));
        assert_eq!(flights.len(), 0, "callers from now on start anew");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(finished.load(Ordering::SeqCst), 1, "the load went on");
    }

    #[tokio::test]
    async fn a_panicking_load_is_an_error_for_everyone() {
        let flights = Arc::new(Flights::default());
        let (flight, _) =
            flights.join_or_start::<u32, _>("k", (0, 0), |_| async { panic!("loader bug") });
        assert!(matches!(
            flight.wait(None).await,
            Err(Error::LoaderAborted(_))
        ));
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn stale_values_are_served_after_the_callers_patience_runs_out() {
        let flights = Arc::new(Flights::default());
        let (flight, _) = flights.join_or_start::<u32, _>("k", (0, 0), |progress| async move {
            progress.offer_stale(1);
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(2)
        });
        let (impatient, _) =
            flights.join_or_start::<u32, _>("k", (0, 0), |_| async { unreachable!() });
        let (patient, _) =
            flights.join_or_start::<u32, _>("k", (0, 0), |_| async { unreachable!() });
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
