//! The one write pipeline: every change to what the cache holds — `set`,
//! `set_many`, `delete`, write-through, versioned writes, tag, prefix and
//! namespace invalidations, write-behind, and the invalidations heard from
//! other instances — goes through [`Pipeline`], which orders the steps.
//!
//! The invariants, each kept in one place below:
//!
//! 1. **Stamps cannot tie.** Tag and namespace invalidations are stamped by
//!    the cache's clock (`clock`): strictly increasing, and past every stamp
//!    heard from another instance. An entry created after an invalidation is
//!    never hidden by it.
//! 2. **Mark before, keep only your own — and only if alone.** A key write
//!    marks the invalidation log before anything changes, puts its value
//!    into L1 only once Redis took it (or failed: then L1 is where it
//!    lives), marks again and keeps only its own L1 entry: a read that began
//!    before the write cannot leave what it read in L1 after it. If another
//!    write or delete of the key marked the log while this one's Redis step
//!    ran, the process cannot tell which Redis ordered last: neither stays
//!    in L1, and the next read takes Redis's ([`Pipeline::write_keys`]).
//! 3. **The old copy is gone before the announcement.** A write Redis
//!    refused deletes the old L2 copy (UNLINK works even when Redis refuses
//!    writes) before other instances are told to drop theirs; a tag or
//!    namespace stamp is written before it is announced; a prefix deletes
//!    twice, so a fill racing the first pass is caught by the second.
//! 4. **Nothing is lost.** Whatever could not reach Redis or the other
//!    instances — a key, a version floor, a tag, a prefix, a namespace
//!    clear — is deferred and replayed when Redis answers, and announced
//!    again ([`recovery`]); the last seconds of invalidations are replayed
//!    on a new master after a failover ([`failover`]).
//! 5. **No joining the past.** A key write forgets the key's flight; a
//!    caller never joins a flight older than the last broad invalidation
//!    (`coalesce`).
//! 6. **Trust follows the backplane.** A (re)subscription distrusts every L1
//!    entry created before it; while it is down, old L1 entries are
//!    fallbacks only ([`backplane`], `invalidation::trust`).

pub(crate) mod backplane;
pub(crate) mod failover;
pub(crate) mod recovery;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::coalesce::Flights;
use crate::error::{Error, Result};
use crate::invalidation::message::{stamp_of, Invalidation, Message};
use crate::keys::KeySpace;
use crate::l1::L1Entry;
use crate::l2::{LuaScript, Write, L2};
use crate::options::EntryOptions;
use crate::tiers::{CacheValue, Found, Prepared, Tiers};
use failover::{FailoverLog, Replay};
use recovery::Recovery;

/// How long tag stamps are kept in Redis: entries tagged longer ago than
/// this (ttl + stale window) could outlive their tag's invalidation.
pub(crate) const TAG_STAMP_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Keys per SCAN call of a prefix invalidation.
const SCAN_BATCH: usize = 1_000;

/// KEYS: a stamp key. ARGV: the stamp, its TTL in ms (0: none). Stamps only
/// move forward, whatever order instances write them in.
static SET_STAMP: std::sync::LazyLock<LuaScript> = std::sync::LazyLock::new(|| {
    LuaScript::new(
        r"
        local current = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
        if current >= tonumber(ARGV[1]) then return 0 end
        if ARGV[2] == '0' then
            redis.call('SET', KEYS[1], ARGV[1])
        else
            redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
        end
        return 1
        ",
    )
});

/// One key of a write: its stored key, the value for L1, its stored form.
pub(crate) struct KeyWrite<V> {
    pub(crate) stored: String,
    pub(crate) value: Found<V>,
    pub(crate) prepared: Prepared,
}

/// How the Redis step of a key write went.
pub(crate) enum Step<T, E> {
    /// Written; the step's answer.
    Landed(T),
    /// Redis answered but did not take it (a newer version is known).
    Refused,
    /// Redis failed.
    Failed(E),
}

pub(crate) struct Pipeline {
    tiers: Arc<Tiers>,
    flights: Arc<Flights>,
    recovery: Recovery,
    failover_log: FailoverLog,
    /// This instance's id on the backplane, to skip its own messages.
    instance: String,
    bus: String,
}

impl Pipeline {
    pub(crate) fn new(tiers: Arc<Tiers>, flights: Arc<Flights>, follows_failovers: bool) -> Self {
        let bus = tiers.keys().bus_channel();
        Self {
            tiers,
            flights,
            recovery: Recovery::default(),
            failover_log: FailoverLog::new(follows_failovers),
            instance: format!("{:016x}", rand::random::<u64>()),
            bus,
        }
    }

    /// How many invalidations wait to be replayed once Redis answers.
    pub(crate) fn pending_recovery(&self) -> usize {
        self.recovery.pending()
    }

    fn keys(&self) -> &KeySpace {
        self.tiers.keys()
    }

    /// Write entries to both tiers (as `opts` allow), the Redis step being
    /// `step` (SET, a versioned SET, write-behind's script). `None`: Redis
    /// was not written (no L2, or `skip_l2`).
    pub(crate) async fn write_keys<V, T, E, F, Fut>(
        &self,
        batch: Vec<KeyWrite<V>>,
        opts: &EntryOptions,
        step: F,
    ) -> Option<Step<T, E>>
    where
        V: CacheValue,
        E: std::fmt::Debug,
        F: FnOnce(Arc<L2>, Vec<Write>) -> Fut,
        Fut: Future<Output = Step<T, E>>,
    {
        let tiers = &self.tiers;
        let l1 = tiers.l1().filter(|_| !opts.skip_l1);
        // Before anything changes: a read of these keys that began earlier
        // cannot put what it read into L1 from now on.
        let marks: Vec<u64> = batch.iter().map(|w| self.mark(&w.stored)).collect();
        let writes: Vec<Write> = batch
            .iter()
            .map(|w| Write {
                key: w.stored.clone(),
                bytes: w.prepared.bytes.clone(),
                ttl_ms: w.prepared.l2_ttl.as_millis() as u64,
            })
            .collect();
        let l2 = tiers.l2().filter(|_| !opts.skip_l2).cloned();
        let outcome = match &l2 {
            Some(l2) => Some(step(Arc::clone(l2), writes).await),
            None => None,
        };
        // L1 takes the value only once Redis did (or could not: then L1 is
        // where it lives). A read that got the old value from Redis before
        // the step may have put it into L1 meanwhile: only this write's own
        // entry stays — none if Redis knows a newer version or refused it.
        let keep = !matches!(outcome, Some(Step::Refused));
        let position = tiers.log().mark();
        // `marks` are the batch's own first marks, ascending: a key of the
        // batch that shares a log slot with another key of the batch is not
        // "written by someone else" because of it.
        let mut kept = Vec::with_capacity(batch.len());
        for (
            KeyWrite {
                stored,
                value,
                prepared,
            },
            marked,
        ) in batch.into_iter().zip(marks.iter().copied())
        {
            let own = l1.filter(|_| keep).map(|l1| {
                let entry = L1Entry::new(
                    value,
                    prepared.meta,
                    prepared.l1_lifetime,
                    stored.len(),
                    prepared.bytes.len(),
                )
                .checked_at(position);
                l1.insert(stored.clone(), entry, &tiers.metrics().global)
            });
            // Another write or delete of the key here (or one heard from
            // another instance) overlapped this one's Redis step: which of
            // them Redis ordered last cannot be told in this process, so
            // none stays in L1 and the next read takes Redis's. Asked after
            // the insert, before marking again (every key of the batch is
            // asked before any is marked again, so the batch's second marks
            // do not count against its own keys): of two overlapping writes,
            // each sees the other's mark or is removed by its sweep below.
            // Without a Redis step, L1's order is the only order.
            let own = own.filter(|_| {
                let last = tiers.log().last_write(tiers.keys().inner_of(&stored));
                outcome.is_none() || last <= marked || marks.binary_search(&last).is_ok()
            });
            kept.push((stored, own));
        }
        let mut keys = Vec::with_capacity(kept.len());
        for (stored, own) in kept {
            self.mark(&stored);
            if let Some(l1) = l1 {
                l1.remove_unless(&stored, own.as_ref());
            }
            keys.push(stored);
        }
        let (Some(l2), Some(outcome)) = (l2, outcome) else {
            return None;
        };
        if let Step::Failed(err) = &outcome {
            tracing::warn!(error = ?err, keys = keys.len(), "redis write failed; value kept in L1 only, old copy deleted");
            if l2.delete(&keys).await.is_err() {
                self.defer_keys(&keys);
            }
        }
        self.announce_keys(&keys).await;
        Some(outcome)
    }

    /// Write entries with a plain SET (revoking their leases); returns
    /// whether Redis took them (`true` without L2).
    pub(crate) async fn put<V: CacheValue>(
        &self,
        batch: Vec<KeyWrite<V>>,
        opts: &EntryOptions,
    ) -> bool {
        let outcome = self
            .write_keys(batch, opts, |l2, writes| async move {
                let result = match writes.as_slice() {
                    [one] => l2.set(one).await,
                    _ => l2.set_many(&writes).await,
                };
                match result {
                    Ok(()) => Step::Landed(()),
                    Err(err) => Step::Failed(err),
                }
            })
            .await;
        !matches!(outcome, Some(Step::Failed(_)))
    }

    /// Write an entry at `version` unless Redis knows a newer one
    /// (`Ok(false)`). Without L2 the value is stored in L1 unconditionally.
    pub(crate) async fn put_versioned<V: CacheValue>(
        &self,
        write: KeyWrite<V>,
        version: u64,
        opts: &EntryOptions,
    ) -> Result<bool> {
        let stored = write.stored.clone();
        self.failover_log
            .note([Replay::Version(stored.clone(), version)]);
        let outcome = self
            .write_keys(vec![write], opts, |l2, writes| async move {
                match crate::versioned::set_versioned(&l2, &writes[0], version).await {
                    Ok(true) => Step::Landed(()),
                    Ok(false) => Step::Refused,
                    Err(err) => Step::Failed(err),
                }
            })
            .await;
        match outcome {
            None | Some(Step::Landed(())) => Ok(true),
            Some(Step::Refused) => Ok(false),
            Some(Step::Failed(err)) => {
                self.recovery.defer_floor(&stored, version);
                Err(err.into())
            }
        }
    }

    /// Delete keys from both tiers. An error means Redis could not be told
    /// now; the keys are gone from this instance's L1, and are deleted in
    /// Redis and announced again once it answers.
    pub(crate) async fn delete(&self, stored: &[String]) -> Result<()> {
        for key in stored {
            self.forget_locally(key);
        }
        let Some(l2) = self.tiers.l2() else {
            return Ok(());
        };
        let deleted = l2.delete(stored).await;
        // Until the UNLINK ran, Redis still held the old value: a read here
        // that reached Redis before it got that value with a mark taken after
        // the first sweep, and no message comes back to this instance to
        // drop what it filled. Sweeping (and marking) again now removes it.
        for key in stored {
            self.forget_locally(key);
        }
        if deleted.is_err() {
            self.defer_keys(stored);
        }
        self.announce_keys(stored).await;
        deleted.map_err(Error::from)
    }

    /// Raise `stored`'s version floor to `version` and drop the entry
    /// everywhere (`Consistency::Version`).
    pub(crate) async fn raise_floor(&self, stored: &str, version: u64) -> Result<()> {
        self.forget_locally(stored);
        let Some(l2) = self.tiers.l2() else {
            return Ok(());
        };
        self.failover_log
            .note([Replay::Version(stored.to_string(), version)]);
        let raised = crate::versioned::raise_floor(l2, stored, version).await;
        self.forget_locally(stored);
        if raised.is_err() {
            self.recovery.defer_floor(stored, version);
            self.count_deferred("version floor");
        }
        self.announce_keys(&[stored.to_string()]).await;
        raised.map(|_| ()).map_err(Into::into)
    }

    /// Invalidate every entry tagged `tag`, in every instance: one stamp.
    pub(crate) async fn invalidate_tag(&self, tag: &str) -> Result<()> {
        let stamp = self.tiers.clock().stamp();
        self.apply_tag(tag, stamp);
        self.failover_log
            .note([Replay::Tag(tag.to_string(), stamp)]);
        self.tell_tag(tag, stamp).await
    }

    /// Write a tag's stamp to Redis and announce it; what fails is deferred.
    async fn tell_tag(&self, tag: &str, stamp: u64) -> Result<()> {
        let Some(l2) = self.tiers.l2() else {
            return Ok(());
        };
        let written = write_stamp(l2, &self.keys().tag_key(tag), stamp, Some(TAG_STAMP_TTL)).await;
        // Announced even if Redis refused the stamp: the other instances
        // then hide the tag's entries themselves.
        let announced = self.publish(Invalidation::tag(tag, stamp)).await;
        if written.is_err() || !announced {
            self.recovery.defer_tag(tag, stamp);
            self.count_deferred("tag");
        }
        written.map_err(Error::from)
    }

    /// Invalidate every entry of the namespace, in every instance: one stamp.
    pub(crate) async fn invalidate_all(&self) -> Result<()> {
        let stamp = self.tiers.clock().stamp();
        self.apply_clear(stamp);
        self.flights_forget_all();
        self.failover_log.note([Replay::Clear(stamp)]);
        self.tell_clear(stamp).await
    }

    async fn tell_clear(&self, stamp: u64) -> Result<()> {
        let Some(l2) = self.tiers.l2() else {
            return Ok(());
        };
        let written = write_stamp(l2, &self.keys().clear_key(), stamp, None).await;
        let announced = self.publish(Invalidation::clear(stamp)).await;
        if written.is_err() || !announced {
            self.recovery.defer_clear(stamp);
            self.count_deferred("namespace clear");
        }
        written.map_err(Error::from)
    }

    /// Delete every key starting with `prefix`, in Redis (SCAN + UNLINK on
    /// every master, twice) and in every instance's L1; returns the number
    /// of Redis keys deleted.
    pub(crate) async fn invalidate_prefix(&self, prefix: &str) -> Result<u64> {
        self.apply_prefix(prefix);
        self.failover_log.note([Replay::Prefix(prefix.to_string())]);
        self.tell_prefix(prefix).await
    }

    async fn tell_prefix(&self, prefix: &str) -> Result<u64> {
        let Some(l2) = self.tiers.l2() else {
            return Ok(0);
        };
        let deleted = self.delete_prefix_in_redis(l2, prefix).await;
        // A read here that began after the first record but reached Redis
        // before the UNLINK got an old value with a later position: record
        // again, now that Redis holds no old copy (as `delete` sweeps twice).
        self.apply_prefix(prefix);
        let announced = self
            .publish(Invalidation::Prefix {
                prefix: prefix.to_string(),
            })
            .await;
        if deleted.is_err() || !announced {
            self.recovery.defer_prefix(prefix);
            self.count_deferred("prefix");
        }
        deleted
    }

    /// Two passes: a load whose fill lands between a pass's SCAN and its
    /// UNLINK (the SCAN saw its lease, not its entry) is caught by the
    /// second; a load still running after the first pass lost its lease.
    async fn delete_prefix_in_redis(&self, l2: &L2, prefix: &str) -> Result<u64> {
        let mut deleted = 0;
        for _ in 0..2 {
            for pattern in self.keys().prefix_patterns(prefix) {
                // Version floors stay: a load that read an older row must
                // still be refused after the entries are gone (`versioned`).
                deleted += l2
                    .delete_matching(&pattern, SCAN_BATCH, crate::keys::is_floor_key)
                    .await?;
            }
        }
        Ok(deleted)
    }

    /// An invalidation heard from another instance: apply it here.
    pub(crate) fn apply(&self, what: &Invalidation) {
        match what {
            Invalidation::Keys { keys } => {
                for key in keys {
                    self.forget_locally(&self.keys().stored_from_inner(key));
                }
            }
            Invalidation::Tag { tag, at_ms, at_us } => {
                let stamp = stamp_of(*at_ms, *at_us);
                self.tiers.clock().observe(stamp);
                self.apply_tag(tag, stamp);
            }
            Invalidation::Prefix { prefix } => self.apply_prefix(prefix),
            Invalidation::Clear { at_ms, at_us } => {
                let stamp = stamp_of(*at_ms, *at_us);
                self.tiers.clock().observe(stamp);
                self.apply_clear(stamp);
                self.flights_forget_all();
            }
        }
    }

    /// Tag and prefix invalidations leave L1 as it is: its entries are
    /// checked when read (`invalidation::stamps`), invalid ones dropped then,
    /// and the rest age out or are evicted — no O(entries) sweep per
    /// invalidation.
    fn apply_tag(&self, tag: &str, stamp: u64) {
        let tiers = &self.tiers;
        tiers.stamps().set_tag(tag, stamp);
        tiers.log().broad_invalidation();
    }

    fn apply_prefix(&self, prefix: &str) {
        let tiers = &self.tiers;
        tiers
            .log()
            .broad_invalidation_then(|position| tiers.stamps().record_prefix(position, prefix));
    }

    fn apply_clear(&self, stamp: u64) {
        let tiers = &self.tiers;
        tiers.stamps().set_cleared_at(stamp);
        tiers.log().broad_invalidation();
        if let Some(l1) = tiers.l1() {
            l1.sweep_all();
        }
    }

    fn flights_forget_all(&self) {
        // Joining is refused by the broad invalidation already; this only
        // lets the map shrink sooner.
        self.flights.forget_all();
    }

    /// Stop trusting every L1 entry created until now (invalidations may
    /// have been missed).
    pub(crate) fn distrust_l1(&self) {
        let tiers = &self.tiers;
        tiers.stamps().distrust_l1_before(tiers.clock().stamp());
        tiers.log().broad_invalidation();
        if let Some(l1) = tiers.l1() {
            l1.sweep_all();
        }
    }

    /// Mark `stored` written in the log (reads that began before cannot fill
    /// L1 with what they read).
    fn mark(&self, stored: &str) -> u64 {
        let position = self
            .tiers
            .log()
            .key_invalidated(self.keys().inner_of(stored));
        self.flights.forget(stored);
        position
    }

    /// This instance stops serving and joining loads of `stored`.
    pub(crate) fn forget_locally(&self, stored: &str) {
        self.mark(stored);
        if let Some(l1) = self.tiers.l1() {
            l1.remove(stored);
        }
    }

    /// Tell the other instances to drop `stored` keys; a lost message is
    /// deferred (the keys are deleted and announced again later).
    pub(crate) async fn announce_keys(&self, stored: &[String]) {
        self.failover_log
            .note(stored.iter().map(|k| Replay::Key(k.clone())));
        let keys = stored
            .iter()
            .map(|k| self.keys().inner_of(k).to_string())
            .collect();
        if !self.publish(Invalidation::Keys { keys }).await {
            self.defer_keys(stored);
        }
    }

    /// A background refresh changed `stored`: the other instances drop their
    /// copy and read the new one. A lost message is not replayed: their
    /// copies are still fresh for the time the old value was meant to be.
    pub(crate) async fn announce_refreshed(&self, stored: &str) {
        let keys = vec![self.keys().inner_of(stored).to_string()];
        self.publish(Invalidation::Keys { keys }).await;
    }

    fn defer_keys(&self, stored: &[String]) {
        self.recovery.defer(stored);
        self.count_deferred("keys");
    }

    fn count_deferred(&self, what: &'static str) {
        self.tiers
            .metrics()
            .global
            .invalidations_deferred
            .increment(1);
        tracing::warn!(
            what,
            "an invalidation could not reach redis or the other instances; replayed when redis answers"
        );
    }

    /// Tell the other instances; returns whether the message went out.
    async fn publish(&self, what: Invalidation) -> bool {
        let Some(l2) = self.tiers.l2() else {
            return true;
        };
        let payload = Message::encode(&self.instance, what);
        match l2.publish(&self.bus, &payload).await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(error = ?err, "could not publish an invalidation");
                false
            }
        }
    }
}

/// Write a stamp (tag or namespace) unless Redis holds a later one.
async fn write_stamp(
    l2: &L2,
    key: &str,
    stamp: u64,
    ttl: Option<Duration>,
) -> std::result::Result<(), crate::l2::L2Error> {
    let ttl_ms = ttl.map_or(0, |t| t.as_millis() as u64).to_string();
    l2.run_script::<i64>(
        &SET_STAMP,
        &[key],
        &[stamp.to_string().as_bytes(), ttl_ms.as_bytes()],
        true,
    )
    .await
    .map(|_| ())
}
