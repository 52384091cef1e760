//! The body of a flight up to the load: L2 (unless the caller just read
//! it), then the lease — taken, or waited for until its holder fills.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::caller::Judge;
use super::{Fetched, L2Seen, LoadContext, Loaded, Loads, Mode, Start};
use crate::coalesce::Progress;
use crate::error::{BoxError, Error, Result};
use crate::l2::L2;
use crate::lease::{self, Acquired, Lease, ReadOrAcquired};
use crate::options::EntryOptions;
use crate::tiers::{CacheValue, Known, L2Read};

/// How long a caller waits for another instance's load when it has no stale
/// value and the options set no `hard_timeout`.
const DEFAULT_WAIT_LIMIT: Duration = Duration::from_secs(30);
/// The longest pause between two checks of a key another instance is loading.
const MAX_WAIT_BACKOFF: Duration = Duration::from_millis(200);

/// The outcome of the lease step.
pub(super) enum Next<V> {
    /// Load, holding the lease if one was taken.
    Load(Option<Lease>),
    /// Redis refused the lease (it answered with an error, e.g. refusing
    /// writes): load, and keep the value out of Redis — a fill without a
    /// lease could land after a write it cannot know about.
    LoadUnguarded,
    /// Redis did not answer: load without it, and do not fill it.
    RedisFailed,
    /// Another instance's fill (or a stale value at the deadline) answers.
    Done(Fetched<V>),
}

impl Loads {
    /// The body of a flight: L2 (unless the caller just read it), else the
    /// lease, else the loader; then fill.
    ///
    /// Once Redis fails to answer, the flight stops calling it — no lease, no
    /// fill — so a request pays at most one Redis timeout before its loader.
    pub(super) async fn resolve<V, F, Fut, E>(
        self: Arc<Self>,
        stored: String,
        opts: EntryOptions,
        start: Start,
        mut known: Option<Known<V>>,
        loader: F,
        progress: Progress<Fetched<V>>,
    ) -> Result<Fetched<V>>
    where
        V: CacheValue,
        F: FnOnce(LoadContext<V>) -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Loaded<V>, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let tiers = &self.tiers;
        let m = tiers.metrics().policy(opts.policy.as_ref());
        if start.mode == Mode::Miss && start.offer_known {
            if let Some((value, _, _)) = &known {
                progress.offer_stale(Fetched::stale(value.clone()));
            }
        }
        let mut l2 = tiers
            .l2()
            .cloned()
            .filter(|_| !opts.skip_l2 && start.seen != L2Seen::Failed);
        let mut keep_out_of_l2 = start.keep_out_of_l2;
        // Anything written from here on must not enter L1 from this flight.
        let since = tiers.log().mark();
        let judge = Judge {
            loads: &self,
            stored: &stored,
            opts: &opts,
            since,
            accept_absent: start.accept_absent,
            mode: start.mode,
            progress: Some(&progress),
            m: &m,
        };
        let mut lease = None;
        let mut awaited = false;
        if let (Some(l2_ref), L2Seen::NotRead) = (&l2, start.seen) {
            let read = if start.read_or_lease && !keep_out_of_l2 {
                match lease::read_or_acquire(l2_ref, &stored, opts.lock_timeout).await {
                    Ok(ReadOrAcquired::Found(bytes)) => {
                        Ok(tiers.judge_l2::<V>(&stored, &bytes, &opts).await)
                    }
                    Ok(ReadOrAcquired::Won(held)) => {
                        lease = Some(held);
                        Ok(L2Read::Missing)
                    }
                    Ok(ReadOrAcquired::Lost) => {
                        awaited = true;
                        Ok(L2Read::Missing)
                    }
                    // Refused (Redis refusing writes, a script error): a
                    // plain read still finds what is there.
                    Err(err) if !err.is_unavailable() => {
                        tiers.read_l2::<V>(l2_ref, &stored, &opts).await
                    }
                    Err(err) => Err(err),
                }
            } else {
                tiers.read_l2::<V>(l2_ref, &stored, &opts).await
            };
            if start.mode == Mode::Miss {
                self.l2_misses.record(!matches!(read, Ok(L2Read::Found(_))));
            }
            match read {
                Ok(L2Read::Found(entry)) => {
                    if let Some(done) = judge.entry(entry, &mut known) {
                        return Ok(done);
                    }
                }
                Ok(L2Read::Missing) => m.l2_misses.increment(1),
                Ok(L2Read::Foreign { newer }) => {
                    m.l2_misses.increment(1);
                    keep_out_of_l2 |= newer;
                }
                Err(err) => {
                    m.l2_misses.increment(1);
                    if err.is_unavailable() {
                        l2 = None;
                    }
                }
            }
        }
        // A load that must not replace what L2 holds takes no lease either:
        // nobody would be woken by a fill that never comes.
        let leased = opts.distributed_lease && !keep_out_of_l2 && lease.is_none();
        if let Some(l2_ref) = l2.as_ref().filter(|_| leased) {
            match self
                .lease_or_wait(l2_ref, &judge, &mut known, awaited)
                .await?
            {
                Next::Load(held) => lease = held,
                Next::LoadUnguarded => keep_out_of_l2 = true,
                Next::RedisFailed => l2 = None,
                Next::Done(fetched) => return Ok(fetched),
            }
        }
        let redis_failed = l2.is_none() && tiers.l2().is_some() && !opts.skip_l2;
        let fill_to = l2.filter(|_| !keep_out_of_l2);
        self.load_and_fill(
            &stored,
            &opts,
            (&start, redis_failed),
            known,
            loader,
            (lease, fill_to),
            (&m, since, &progress),
        )
        .await
    }

    /// Take the key's lease, or wait for whoever holds it. `awaited`: the
    /// read found the lease taken (and marked the key awaited), so wait
    /// before the first try.
    async fn lease_or_wait<V: CacheValue>(
        &self,
        l2: &Arc<L2>,
        judge: &Judge<'_, V>,
        known: &mut Option<Known<V>>,
        awaited: bool,
    ) -> Result<Next<V>> {
        let tiers = &self.tiers;
        let Some(waiters) = tiers.waiters() else {
            return Ok(Next::Load(None));
        };
        let opts = judge.opts;
        let limit = opts.hard_timeout.unwrap_or(DEFAULT_WAIT_LIMIT);
        let deadline = tokio::time::Instant::now() + limit;
        let mut backoff = Duration::from_millis(2);
        let mut waited = false;
        let mut woken = false;
        let mut try_now = !awaited;
        loop {
            let wake = waiters.register(judge.stored);
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Woken by a fill: read the value first. Taking (and then
            // releasing) the lease the holder just gave up would cost two
            // round trips and briefly block the others for nothing.
            if woken {
                if let Ok(L2Read::Found(entry)) = tiers.read_l2::<V>(l2, judge.stored, opts).await {
                    if let Some(done) = judge.entry(entry, known) {
                        return Ok(Next::Done(done));
                    }
                }
            }
            if try_now {
                if let Some(next) = self.try_lease(l2, judge, known).await {
                    return Ok(next);
                }
            }
            try_now = true;
            if !waited {
                judge.m.lease_waits.increment(1);
                waited = true;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return match known.take().filter(|_| opts.fail_safe) {
                    Some((value, _, _)) => Ok(Next::Done(Fetched::stale(value))),
                    None => Err(Error::WaitTimeout(limit)),
                };
            }
            // A short, growing backoff bounds the wait when a notification
            // is lost (reconnect, failover) or the holder died.
            woken = tokio::select! {
                biased;
                _ = &mut notified => true,
                _ = tokio::time::sleep(backoff.min(deadline - now)) => false,
            };
            backoff = (backoff * 2).min(MAX_WAIT_BACKOFF);
        }
    }

    /// One try at the key's lease, reading the value in the same step.
    /// `Some`: the wait is over (this caller loads, a value found answers, or
    /// Redis is failing); `None`: another instance holds the lease.
    async fn try_lease<V: CacheValue>(
        &self,
        l2: &Arc<L2>,
        judge: &Judge<'_, V>,
        known: &mut Option<Known<V>>,
    ) -> Option<Next<V>> {
        let opts = judge.opts;
        let (lease, current) = match lease::acquire(l2, judge.stored, opts.lock_timeout).await {
            // Redis is failing: load here rather than wait on it.
            Err(err) if err.is_unavailable() => return Some(Next::RedisFailed),
            // Redis refused the script: load, without a lease.
            Err(_) => return Some(Next::LoadUnguarded),
            Ok(Acquired::Won { lease, current }) => (Some(lease), current),
            Ok(Acquired::Lost { current }) => (None, current),
        };
        if let Some(bytes) = current {
            if let L2Read::Found(entry) = self.tiers.judge_l2::<V>(judge.stored, &bytes, opts).await
            {
                if let Some(done) = judge.entry(entry, known) {
                    if let Some(lease) = lease {
                        lease.release(l2).await;
                    }
                    return Some(Next::Done(done));
                }
            }
        }
        if lease.is_some() {
            return Some(Next::Load(lease));
        }
        if judge.mode == Mode::Refresh {
            // Another instance is refreshing this key already.
            let current = known.take().and_then(|(value, _, _)| value);
            return Some(Next::Done(Fetched::fresh(current)));
        }
        None
    }
}
