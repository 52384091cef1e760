//! Version compare-and-set: the fill guard of [`Consistency::Version`].
//!
//! Beside each entry Redis keeps the newest version of its source row known
//! so far — the *floor* — at `{stored key}:ver` (same hash slot as the entry
//! and its lease). A fill carries the version its loader read and lands only
//! if that version is not older than the floor; a writer raises the floor to
//! the version it committed ([`Cache::invalidate_version`]) or writes the
//! value and the floor together ([`Cache::set_versioned`]).
//!
//! ```text
//! reader: load reads v1 ───────────────────────────────► fill v1: floor is v2 → refused
//! writer:           commit v2 ─► invalidate_version(k, v2): floor := v2, entry deleted
//! reader 2:                                    load reads v2 ─► fill v2: lands
//! ```
//!
//! Compared with lease revocation ([`Consistency::Lease`]): a load that
//! overlapped a write but read the *new* row still lands (no wasted load),
//! and two write-throughs that reach Redis out of order keep the newer one.
//! The price is one more small key per entry and loaders that know their
//! row's version.
//!
//! Versions are compared as 20-digit zero-padded decimals, so the Lua string
//! comparison is the numeric one for every `u64` (Lua numbers are doubles
//! and would round versions above 2^53).
//!
//! [`Consistency::Version`]: crate::Consistency::Version
//! [`Consistency::Lease`]: crate::Consistency::Lease

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use crate::l2::LuaScript as Script;

use crate::cache::{Cache, CacheValue, FillHints, Inner};
use crate::error::Result;
use crate::invalidate::failover::Replay;
use crate::l2::{L2Error, Write, L2};
use crate::lease::{lease_key, waiting_key, Lease};
use crate::options::EntryOptions;

/// How long a floor outlives the last write that raised it. A load that
/// began before that write and is still running after this long could put
/// its older value back — far beyond any sane `hard_timeout`.
pub(crate) const FLOOR_TTL: Duration = Duration::from_secs(600);

/// KEYS: entry, lease, floor, waiting mark. ARGV: lease token or '', entry
/// bytes, entry TTL (ms), fill channel, version, floor TTL (ms).
static FILL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local floor = redis.call('GET', KEYS[3])
        local landed = 0
        if not floor or floor <= ARGV[5] then
            redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
            redis.call('SET', KEYS[3], ARGV[5], 'PX', ARGV[6])
            landed = 1
        end
        if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) == ARGV[1] then
            redis.call('DEL', KEYS[2])
        end
        if redis.call('DEL', KEYS[4]) == 1 then redis.call('PUBLISH', ARGV[4], KEYS[1]) end
        return landed
        ",
    )
});

/// KEYS: entry, lease, floor. ARGV: version, floor TTL (ms). Raises the
/// floor and drops the entry and its lease, unless the floor is there already
/// (then the entry, if any, is at least that new).
static RAISE_FLOOR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local floor = redis.call('GET', KEYS[3])
        if floor and floor >= ARGV[1] then return 0 end
        redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
        redis.call('UNLINK', KEYS[1], KEYS[2])
        return 1
        ",
    )
});

/// KEYS: entry, lease, floor. ARGV: entry bytes, entry TTL (ms), version,
/// floor TTL (ms). A write-through that lands only if it is not older than
/// what Redis knows.
static SET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local floor = redis.call('GET', KEYS[3])
        if floor and floor > ARGV[3] then return 0 end
        redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
        redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
        redis.call('UNLINK', KEYS[2])
        return 1
        ",
    )
});

pub(crate) fn floor_key(stored: &str) -> String {
    format!("{stored}:ver")
}

/// Entries' stored keys end in `}`; only floors end in `}:ver`.
pub(crate) fn is_floor_key(key: &str) -> bool {
    key.ends_with("}:ver")
}

fn encode_version(version: u64) -> String {
    format!("{version:020}")
}

/// The floor must outlive the entry it vouches for.
fn floor_ttl_ms(entry_ttl_ms: u64) -> String {
    entry_ttl_ms
        .max(FLOOR_TTL.as_millis() as u64)
        .max(1)
        .to_string()
}

impl Cache {
    /// Announce that the source of `key` now holds `version` (a row version
    /// committed by a write or a delete): every instance drops its copy, and
    /// no fill that read an older version can land afterwards. For keys read
    /// under [`Consistency::Version`](crate::Consistency::Version).
    ///
    /// An error means Redis could not be told; the key is gone from this
    /// instance's L1 and is invalidated (with its version) when Redis is back.
    pub async fn invalidate_version(&self, key: &str, version: u64) -> Result<()> {
        let stored = self.inner.keys.stored(key)?;
        let inner = &self.inner;
        inner.forget_locally(&stored);
        let Some(l2) = &inner.l2 else { return Ok(()) };
        inner
            .failover_log
            .note([Replay::Version(stored.clone(), version)]);
        let raised = raise_floor(l2, &stored, version).await;
        if raised.is_err() {
            inner.recovery.defer_versioned(&stored, version);
        }
        inner.announce_written(std::slice::from_ref(&stored)).await;
        raised.map(|_| ()).map_err(Into::into)
    }

    /// Write-through with a version: store `value` as `key`'s value at
    /// `version`, unless Redis already knows a newer version of it (then
    /// nothing is stored and `Ok(false)` is returned — a newer write won).
    /// Without Redis the value is stored in L1 unconditionally.
    pub async fn set_versioned<V: CacheValue>(
        &self,
        key: &str,
        value: &V,
        version: u64,
        opts: &EntryOptions,
    ) -> Result<bool> {
        let inner = &self.inner;
        let stored = inner.keys.stored(key)?;
        let prepared = inner.prepare(&stored, Some(value), opts, &FillHints::default())?;
        let Some(l2) = inner.l2.as_ref().filter(|_| !opts.skip_l2) else {
            inner
                .store(stored, Some(value.clone()), prepared, opts)
                .await;
            return Ok(true);
        };
        inner.forget_locally(&stored);
        inner
            .failover_log
            .note([Replay::Version(stored.clone(), version)]);
        let lease = lease_key(&stored);
        let floor = floor_key(&stored);
        let ttl_ms = prepared.l2_ttl.as_millis() as u64;
        let version_text = encode_version(version);
        let landed: std::result::Result<i64, L2Error> = l2
            .run_script(
                &SET,
                &[&stored, &lease, &floor],
                &[
                    &prepared.bytes,
                    ttl_ms.max(1).to_string().as_bytes(),
                    version_text.as_bytes(),
                    floor_ttl_ms(ttl_ms).as_bytes(),
                ],
                true,
            )
            .await;
        let landed = match landed {
            Ok(n) => n == 1,
            Err(err) => {
                tracing::warn!(error = ?err, "redis write failed; key invalidated when redis is back");
                inner.recovery.defer_versioned(&stored, version);
                inner.announce_written(std::slice::from_ref(&stored)).await;
                return Err(err.into());
            }
        };
        if landed {
            inner.fill_l1(
                &stored,
                &Some(value.clone()),
                prepared.meta,
                prepared.bytes.len(),
                opts,
                inner.invalidations.mark(),
            );
        }
        inner.announce_written(std::slice::from_ref(&stored)).await;
        Ok(landed)
    }
}

async fn raise_floor(l2: &L2, stored: &str, version: u64) -> std::result::Result<bool, L2Error> {
    let lease = lease_key(stored);
    let floor = floor_key(stored);
    let raised: i64 = l2
        .run_script(
            &RAISE_FLOOR,
            &[stored, &lease, &floor],
            &[
                encode_version(version).as_bytes(),
                FLOOR_TTL.as_millis().to_string().as_bytes(),
            ],
            true,
        )
        .await?;
    Ok(raised == 1)
}

impl Inner {
    /// Fill L2 unless it knows a newer version than `version`; returns
    /// whether L1 may keep the value. A refused fill still releases the
    /// lease and wakes the waiters, who then read or load the newer version.
    pub(crate) async fn fill_l2_versioned(
        &self,
        l2: &L2,
        lease: Option<&Lease>,
        write: &Write,
        version: u64,
    ) -> bool {
        let channel = self.waiters.as_ref().map_or("", |w| w.channel());
        let lease_key = lease_key(&write.key);
        let floor = floor_key(&write.key);
        let waiting = waiting_key(&write.key);
        let token = lease.map_or(&[][..], |l| l.token());
        let landed: std::result::Result<i64, L2Error> = l2
            .run_script(
                &FILL,
                &[&write.key, &lease_key, &floor, &waiting],
                &[
                    token,
                    &write.bytes,
                    write.ttl_ms.max(1).to_string().as_bytes(),
                    channel.as_bytes(),
                    encode_version(version).as_bytes(),
                    floor_ttl_ms(write.ttl_ms).as_bytes(),
                ],
                false,
            )
            .await;
        match landed {
            Ok(1) => true,
            Ok(_) => {
                self.metrics.global.fills_refused_version.increment(1);
                tracing::debug!(key = %write.key, version, "fill refused: redis knows a newer version");
                false
            }
            Err(err) => {
                tracing::warn!(key = %write.key, error = ?err, "redis fill failed; value kept in L1 only");
                true
            }
        }
    }

    /// Replay floors that could not be raised while Redis was down.
    pub(crate) async fn replay_floors(
        self: &Arc<Self>,
        floors: &[(String, u64)],
    ) -> std::result::Result<(), L2Error> {
        let Some(l2) = &self.l2 else { return Ok(()) };
        let raises = floors
            .iter()
            .map(|(stored, version)| raise_floor(l2, stored, *version));
        futures::future::try_join_all(raises).await.map(|_| ())
    }

    /// This instance stops serving and joining loads of `stored`.
    pub(crate) fn forget_locally(&self, stored: &str) {
        self.remove_from_l1(stored);
        self.flights.forget(stored);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_versions_order_as_numbers() {
        let versions = [0, 1, 9, 10, 99, 100, 1 << 53, (1 << 53) + 1, u64::MAX];
        for pair in versions.windows(2) {
            assert!(
                encode_version(pair[0]) < encode_version(pair[1]),
                "{pair:?}"
            );
        }
        assert_eq!(encode_version(u64::MAX).len(), 20);
    }

    #[test]
    fn floors_outlive_their_entries() {
        assert_eq!(floor_ttl_ms(1_000), FLOOR_TTL.as_millis().to_string());
        assert_eq!(floor_ttl_ms(3_600_000), "3600000");
    }
}
