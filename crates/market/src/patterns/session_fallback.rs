//! Sessions that outlive a Redis outage: a session store that asks Redis
//! first and, when Redis does not answer, the in-process copy of the
//! session it last read or wrote.
//!
//! Why Redis first: Redis is the only place a logout on another instance is
//! seen. An in-process copy read first (tower-sessions' `CachingSessionStore`
//! in front of the Redis store) would keep a logged-out session alive on
//! every instance that had cached it, until the copy expired. Why copies at
//! all: without them, every signed-in request fails while Redis is down.
//!
//! | Redis | `load` answers |
//! |---|---|
//! | answers | its record (the copy is refreshed), or none (the copy dropped) |
//! | fails or is slower than the timeout | the copy, until the session's own expiry; none held: the error (503) |
//!
//! After a failure, reads and saves leave Redis alone for [`RETRY_AFTER`],
//! so a request pays at most one Redis timeout for its session. Saves that Redis refuses keep
//! the copy (a request that changed its session is not failed for it);
//! creating a session (login) and deleting one (logout) need Redis and fail
//! without it, so no instance ever holds a session Redis has not seen, and
//! no logout is half done. Limit: a session that this instance never read
//! before the outage cannot be checked during it (with a load balancer that
//! keeps a user on one instance, the instance of the login always has it).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

/// How long Redis is left alone after it failed a session call.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Copies held at most (about 200 bytes each).
const MAX_COPIES: u64 = 100_000;

/// A session store that falls back to in-process copies when `S` fails.
/// Clones share their copies.
#[derive(Debug, Clone)]
pub struct FallbackStore<S> {
    store: S,
    copies: moka::sync::Cache<Id, Record>,
    /// Until when the store is not asked (it failed recently).
    resting_until: Arc<Mutex<Option<Instant>>>,
}

impl<S> FallbackStore<S> {
    /// Copies of sessions unused for `idle` are dropped (the session's
    /// inactivity expiry: a session idle that long has expired anyway).
    pub fn new(store: S, idle: Duration) -> Self {
        Self {
            store,
            copies: moka::sync::Cache::builder()
                .max_capacity(MAX_COPIES)
                .time_to_idle(idle)
                .build(),
            resting_until: Arc::default(),
        }
    }

    /// Whether the store failed within [`RETRY_AFTER`].
    fn resting(&self) -> bool {
        let until = *self.resting_until.lock().unwrap_or_else(|p| p.into_inner());
        until.is_some_and(|until| Instant::now() < until)
    }

    fn failed(&self, err: &session_store::Error) {
        let mut until = self.resting_until.lock().unwrap_or_else(|p| p.into_inner());
        if until.is_none_or(|u| Instant::now() >= u) {
            tracing::warn!(error = %err, "session store unavailable; serving sessions from this instance's copies");
        }
        *until = Some(Instant::now() + RETRY_AFTER);
    }

    fn recovered(&self) {
        let mut until = self.resting_until.lock().unwrap_or_else(|p| p.into_inner());
        if until.take().is_some() {
            tracing::info!("session store answers again");
        }
    }

    /// The copy of `id`, unless the session expired.
    fn copy(&self, id: &Id) -> Option<Record> {
        self.copies
            .get(id)
            .filter(|record| record.expiry_date > time::OffsetDateTime::now_utc())
    }

    /// Whether a copy of `id` is held (for tests and the health figures).
    pub fn holds_copy(&self, id: &Id) -> bool {
        self.copy(id).is_some()
    }
}

fn unavailable() -> session_store::Error {
    session_store::Error::Backend("session store unavailable (recent failure)".into())
}

#[async_trait]
impl<S: SessionStore + Clone> SessionStore for FallbackStore<S> {
    // Creating and deleting (sign-in, sign-out) always ask the store: they
    // are rare, and the first one after an outage should not be refused for
    // a failure of the reads' hot path a moment before.
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        match self.store.create(record).await {
            Ok(()) => {
                self.recovered();
                self.copies.insert(record.id, record.clone());
                Ok(())
            }
            Err(err) => {
                self.failed(&err);
                Err(err)
            }
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        if !self.resting() {
            match self.store.save(record).await {
                Ok(()) => self.recovered(),
                Err(err) => self.failed(&err),
            }
        }
        // Kept here either way: the request that changed the session is
        // answered, and this instance goes on seeing the change.
        self.copies.insert(record.id, record.clone());
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        if self.resting() {
            return self.copy(id).map(Some).ok_or_else(unavailable);
        }
        match self.store.load(id).await {
            Ok(Some(record)) => {
                self.recovered();
                self.copies.insert(*id, record.clone());
                Ok(Some(record))
            }
            Ok(None) => {
                self.recovered();
                self.copies.invalidate(id);
                Ok(None)
            }
            Err(err) => {
                self.failed(&err);
                self.copy(id).map(Some).ok_or(err)
            }
        }
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        match self.store.delete(id).await {
            Ok(()) => {
                self.recovered();
                self.copies.invalidate(id);
                Ok(())
            }
            Err(err) => {
                self.failed(&err);
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tower_sessions::MemoryStore;

    /// A store that fails while `down` is set.
    #[derive(Debug, Clone, Default)]
    struct Flaky {
        inner: MemoryStore,
        down: Arc<AtomicBool>,
    }

    impl Flaky {
        fn check(&self) -> session_store::Result<()> {
            if self.down.load(Ordering::Relaxed) {
                Err(session_store::Error::Backend("down".into()))
            } else {
                Ok(())
            }
        }
    }

    #[async_trait]
    impl SessionStore for Flaky {
        async fn create(&self, record: &mut Record) -> session_store::Result<()> {
            self.check()?;
            self.inner.create(record).await
        }
        async fn save(&self, record: &Record) -> session_store::Result<()> {
            self.check()?;
            self.inner.save(record).await
        }
        async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
            self.check()?;
            self.inner.load(id).await
        }
        async fn delete(&self, id: &Id) -> session_store::Result<()> {
            self.check()?;
            self.inner.delete(id).await
        }
    }

    fn record() -> Record {
        Record {
            id: Id::default(),
            data: Default::default(),
            expiry_date: time::OffsetDateTime::now_utc() + time::Duration::minutes(30),
        }
    }

    #[tokio::test]
    async fn a_session_read_before_the_outage_is_served_during_it_and_a_logout_needs_the_store() {
        let flaky = Flaky::default();
        let store = FallbackStore::new(flaky.clone(), Duration::from_secs(60));
        let mut known = record();
        store.create(&mut known).await.unwrap();
        let never_seen = record();
        flaky.inner.save(&never_seen).await.unwrap();

        flaky.down.store(true, Ordering::Relaxed);
        assert!(store.load(&known.id).await.unwrap().is_some());
        assert!(store.load(&never_seen.id).await.is_err());
        assert!(store.save(&known).await.is_ok(), "a save keeps the copy");
        assert!(store.delete(&known.id).await.is_err());
        assert!(store.create(&mut record()).await.is_err());
    }

    #[tokio::test]
    async fn a_logout_elsewhere_is_seen_at_once_while_the_store_answers() {
        let flaky = Flaky::default();
        let here = FallbackStore::new(flaky.clone(), Duration::from_secs(60));
        let mut session = record();
        here.create(&mut session).await.unwrap();
        // Another instance deletes it from the shared store.
        flaky.inner.delete(&session.id).await.unwrap();
        assert!(here.load(&session.id).await.unwrap().is_none());
        assert!(!here.holds_copy(&session.id), "the copy goes with it");
    }
}
