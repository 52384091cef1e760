//! Version compare-and-set: the fill guard of [`Consistency::Version`].
//!
//! Beside each entry Redis keeps the newest version of its source row known
//! so far — the *floor* — at `{stored key}:ver` (same hash slot as the entry
//! and its lease). A fill carries the version its loader read and lands only
//! if that version is not older than the floor; a writer raises the floor to
//! the version it committed ([`Cache::invalidate_version`]) or writes the
//! value and the floor together ([`Cache::set_versioned`]). The scripts are
//! here; the write pipeline (`write`) and the read path (`read`) call them.
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

use std::sync::LazyLock;
use std::time::Duration;

use crate::keys::{floor_key, lease_key, waiting_key};
use crate::l2::LuaScript as Script;
use crate::l2::{L2Error, Write, L2};
use crate::lease::Lease;

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

/// Store `write` as the key's value at `version` unless Redis knows a newer
/// version of it; revokes the key's lease. `Ok(false)`: a newer write won.
pub(crate) async fn set_versioned(
    l2: &L2,
    write: &Write,
    version: u64,
) -> std::result::Result<bool, L2Error> {
    let lease = lease_key(&write.key);
    let floor = floor_key(&write.key);
    let landed: i64 = l2
        .run_script(
            &SET,
            &[&write.key, &lease, &floor],
            &[
                &write.bytes,
                write.ttl_ms.max(1).to_string().as_bytes(),
                encode_version(version).as_bytes(),
                floor_ttl_ms(write.ttl_ms).as_bytes(),
            ],
            true,
        )
        .await?;
    Ok(landed == 1)
}

/// Raise the floor of `stored` to `version` and drop the entry and its lease
/// (unless the floor is there already). Public within the crate for the
/// write pipeline and its replay.
pub(crate) async fn raise_floor(
    l2: &L2,
    stored: &str,
    version: u64,
) -> std::result::Result<bool, L2Error> {
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

/// Fill L2 through the lease unless it knows a newer version than
/// `version`. `Ok(false)`: refused; the lease is released and the waiters
/// woken all the same, and they then read or load the newer version.
pub(crate) async fn fill_versioned(
    l2: &L2,
    lease: Option<&Lease>,
    write: &Write,
    version: u64,
    channel: &str,
) -> std::result::Result<bool, L2Error> {
    let lease_key = lease_key(&write.key);
    let floor = floor_key(&write.key);
    let waiting = waiting_key(&write.key);
    let token = lease.map_or(&[][..], |l| l.token());
    let landed: i64 = l2
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
        .await?;
    Ok(landed == 1)
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
