//! Stampede protection across instances: a lease in Redis so that one
//! instance loads a key while the others wait for its fill.
//!
//! The lease lives beside its entry, at `{stored key}:lease` — the same hash
//! slot on a Cluster, so every script below touches one slot.
//!
//! ```text
//! A: acquire ── SET lease tokA NX PX ──► won ── load … (keepalive extends) … ── fill: SET value if lease is tokA; DEL lease; PUBLISH if awaited
//! B: acquire ── lost (marks the key awaited), value stale/missing ──► wait: woken by the PUBLISH (or a growing backoff) ── GET value ── done
//! A crashes ──► no keepalive ── lease expires after lock_timeout ──► B's next acquire wins ── B loads
//! ```
//!
//! A caller that loses the acquire marks the key as awaited
//! (`{stored key}:waiting`, living as long as a lease); a fill publishes its
//! key only when it finds that mark, so a fill nobody waits for — nearly
//! every fill — costs no pub/sub message to every instance.
//!
//! Acquire returns the value as it was at that instant (one script), so a
//! fill that landed between a reader's miss and its acquire is seen rather
//! than loaded again. A leased fill lands only while the lease is still its
//! own; an unleased one only while nobody holds a lease. Every write and
//! invalidation of a key deletes its lease, so a load that began before the
//! invalidation can never put its older value back (the stale-set race of
//! cache-aside; Facebook's memcache leases close it the same way). Leases
//! are for efficiency and cache consistency, not for the database's.

pub(crate) mod waiters;

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use crate::l2::LuaScript as Script;

use crate::codec::envelope::EntryMeta;
use crate::keys::{lease_key, waiting_key};
use crate::l2::{L2Error, Write, L2};

/// Reads the value key into `value`. A key of another type (a list, a hash
/// … written by someone else) holds no entry of ours, and the fill must be
/// able to land: it is cleared and read as nothing.
const READ_VALUE: &str = r"
        local value = redis.pcall('GET', KEYS[1])
        if type(value) == 'table' and value.err then
            redis.call('UNLINK', KEYS[1])
            value = false
        end
";

/// Takes the lease if it is free: replies `{1, value}`.
const TAKE_FREE_LEASE: &str = r"
        if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1, value} end
";

/// The lease is held — by this very caller if its plain-command try (see
/// [`acquire`]) took it before failing on the value key: won. Every lease of
/// ours has an expiry, so one without
/// (planted by hand, or by a foreign client) has no holder to wait for and
/// would block the key for good: it is taken over (`{1, value}`). Otherwise
/// the key is marked awaited, so the holder's fill wakes this instance
/// (`{0, value}`).
const TAKE_OVER_OR_AWAIT: &str = r"
        if redis.call('GET', KEYS[2]) == ARGV[1] then return {1, value} end
        if redis.call('PTTL', KEYS[2]) == -1 then
            redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
            return {1, value}
        end
        redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
        return {0, value}
";

/// Take the lease, and read the value as it is at that instant. Replies
/// `{1, value}` lease won, `{0, value}` held by another (key marked awaited).
static ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(format!("{READ_VALUE}{TAKE_FREE_LEASE}{TAKE_OVER_OR_AWAIT}")));

/// A read that takes the lease when it finds nothing: a miss costs the same
/// round trip as a plain `GET`, and the load that follows needs no second one
/// to take the lease. A value found is returned without taking the lease (the
/// caller judges it; a stale one is refreshed through [`ACQUIRE`]). Replies
/// `{2, value}` found, `{1, false}` lease won, `{0, false}` lease held by
/// another (the key is marked awaited).
static READ_OR_ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(format!(
        "{READ_VALUE}        if value then return {{2, value}} end\n{TAKE_FREE_LEASE}{TAKE_OVER_OR_AWAIT}"
    ))
});

/// The guard of every write through a lease (KEYS[2] is the lease, ARGV[1]
/// the writer's token or empty): a leased write lands only while the lease is
/// still the writer's own, an unleased one only while nobody holds a lease.
const LEASE_GUARD: &str = r"
        local holder = redis.call('GET', KEYS[2])
        if ARGV[1] ~= '' then
            if holder ~= ARGV[1] then return 0 end
        elseif holder then
            return 0
        end
";

static FILL: LazyLock<Script> = LazyLock::new(|| {
    guarded(
        r"
        redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
        if holder then redis.call('DEL', KEYS[2]) end
        if redis.call('DEL', KEYS[3]) == 1 then redis.call('PUBLISH', ARGV[4], KEYS[1]) end
        return 1
        ",
    )
});

/// Rewrite an entry's flags (fail-safe bit only) and timestamps in place —
/// "not modified" refreshes and fail-safe throttling send 29 bytes, not the value.
static RETIME: LazyLock<Script> = LazyLock::new(|| {
    guarded(
        r"
        local value = redis.call('GET', KEYS[1])
        if not value or string.sub(value, 6, 13) ~= ARGV[2] then return 0 end
        local flags = string.byte(value, 5)
        if ARGV[4] == '1' then flags = bit.bor(flags, 4) else flags = bit.band(flags, 251) end
        redis.call('SETRANGE', KEYS[1], 4, string.char(flags) .. ARGV[3])
        redis.call('PEXPIRE', KEYS[1], ARGV[5])
        if holder then redis.call('DEL', KEYS[2]) end
        if redis.call('DEL', KEYS[3]) == 1 then redis.call('PUBLISH', ARGV[6], KEYS[1]) end
        return 1
        ",
    )
});

fn guarded(body: &str) -> Script {
    Script::new(format!("{LEASE_GUARD}{body}"))
}

static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
        return 0
        ",
    )
});

static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0
        ",
    )
});

/// The outcome of trying to take the lease.
pub(crate) enum Acquired {
    /// This caller holds the lease and should load — unless `current` (the
    /// value as it was when the lease was taken) makes the load moot.
    Won {
        /// The lease.
        lease: Lease,
        /// The value key at that instant.
        current: Option<Vec<u8>>,
    },
    /// Another instance holds it; `current` is the value key as it is now.
    Lost { current: Option<Vec<u8>> },
}

/// What a read that takes the lease on a miss found.
pub(crate) enum ReadOrAcquired {
    /// The value key held this.
    Found(Vec<u8>),
    /// Nothing there; this caller holds the lease and should load.
    Won(Lease),
    /// Nothing there; another instance holds the lease (the key is now
    /// marked awaited, so its fill will wake this instance).
    Lost,
}

/// A held lease. It is kept alive only while [`Lease::hold_while`] runs the
/// load; otherwise it expires on its own unless released or consumed by a fill.
pub(crate) struct Lease {
    lease_key: String,
    token: String,
    ttl: Duration,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("lease_key", &self.lease_key)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// A new lease token and the lease lifetime as Redis wants it.
fn new_token(ttl: Duration) -> (String, String) {
    let token = hex_token(rand::random::<u128>());
    let ttl_ms = itoa::Buffer::new()
        .format(ttl.min(crate::options::MAX_DURATION).as_millis().max(1))
        .to_owned();
    (token, ttl_ms)
}

/// `bits` as 32 lowercase hex digits, written directly: every miss takes a
/// token, and `format!` would run the formatting machinery for it.
fn hex_token(bits: u128) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(32);
    for shift in (0..32).rev() {
        out.push(char::from(DIGITS[(bits >> (shift * 4)) as usize & 0xf]));
    }
    out
}

/// Read `stored`; if nothing is there, try to take its lease in the same
/// step (see [`READ_OR_ACQUIRE`]).
pub(crate) async fn read_or_acquire(
    l2: &L2,
    stored: &str,
    ttl: Duration,
) -> Result<ReadOrAcquired, L2Error> {
    let lease_key = lease_key(stored);
    let waiting = waiting_key(stored);
    let (token, ttl_ms) = new_token(ttl);
    let (outcome, value): (i64, Option<Vec<u8>>) = l2
        .run_script(
            &READ_OR_ACQUIRE,
            &[stored, &lease_key, &waiting],
            &[token.as_bytes(), ttl_ms.as_bytes()],
            false,
        )
        .await?;
    Ok(match (outcome, value) {
        (2, Some(bytes)) => ReadOrAcquired::Found(bytes),
        (1, _) => ReadOrAcquired::Won(Lease {
            lease_key,
            token,
            ttl,
        }),
        _ => ReadOrAcquired::Lost,
    })
}

/// Try to take the lease on `stored`, reading the value in the same step.
///
/// First with two plain commands in one round trip — `SET lease token NX PX`,
/// then `GET value` — because nearly every try finds the lease free, and a
/// script costs Redis several times what two of its cheapest commands do
/// (BENCHMARKS.md, "Taking a lease without a script"). The `GET` runs after
/// the `SET`, so a fill that landed before the lease was taken is seen (and a
/// fill after it cannot land: the lease is ours). Commands of other clients
/// between the two are harmless: a write deletes the lease (this load's fill
/// is then refused) and the `GET` sees what it wrote. When the lease is held
/// — or the value key holds something else, which only the script clears —
/// [`ACQUIRE`] decides with the same token: it takes over a lease without
/// expiry, marks the key awaited, and counts a lease this try took as won.
pub(crate) async fn acquire(l2: &L2, stored: &str, ttl: Duration) -> Result<Acquired, L2Error> {
    let lease_key = lease_key(stored);
    let (token, ttl_ms) = new_token(ttl);
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(&lease_key)
        .arg(&token)
        .arg("NX")
        .arg("PX")
        .arg(&ttl_ms)
        .cmd("GET")
        .arg(stored);
    match l2
        .pipeline::<(Option<String>, Option<Vec<u8>>)>(&pipe, false)
        .await
    {
        Ok((Some(_), current)) => {
            return Ok(Acquired::Won {
                lease: Lease {
                    lease_key,
                    token,
                    ttl,
                },
                current,
            })
        }
        Err(err) if err.is_unavailable() => return Err(err),
        // Held by another, or an error reply (a value key of another type).
        Ok((None, _)) | Err(_) => {}
    }
    let waiting = waiting_key(stored);
    let (won, current): (i64, Option<Vec<u8>>) = l2
        .run_script(
            &ACQUIRE,
            &[stored, &lease_key, &waiting],
            &[token.as_bytes(), ttl_ms.as_bytes()],
            false,
        )
        .await?;
    if won == 0 {
        return Ok(Acquired::Lost { current });
    }
    Ok(Acquired::Won {
        lease: Lease {
            lease_key,
            token,
            ttl,
        },
        current,
    })
}

impl Lease {
    /// Run `work` (the load) while pushing the lease's expiry forward every
    /// third of its lifetime, so a long load keeps it and a crashed holder
    /// loses it quickly. The keepalive is polled beside `work` in the same
    /// task — no task of its own per lease — and never delays it: a slow
    /// extension is simply still pending when `work` finishes.
    pub(crate) async fn hold_while<F: Future>(&self, l2: &L2, work: F) -> F::Output {
        let keepalive = async {
            let ttl_ms = self.ttl.as_millis().max(1).to_string();
            loop {
                tokio::time::sleep(self.ttl / 3).await;
                let extended: Result<i64, _> = l2
                    .run_script(
                        &EXTEND,
                        &[&self.lease_key],
                        &[self.token.as_bytes(), ttl_ms.as_bytes()],
                        true,
                    )
                    .await;
                if matches!(extended, Ok(0)) {
                    // Taken over or revoked: nothing left to keep alive; the
                    // fill will be refused.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            biased;
            out = work => out,
            _ = keepalive => unreachable!("the keepalive never ends"),
        }
    }

    /// The holder's token, which guarded writes compare with the lease key.
    pub(crate) fn token(&self) -> &[u8] {
        self.token.as_bytes()
    }

    /// Give the lease up without filling (the load failed or was not needed).
    pub(crate) async fn release(self, l2: &L2) {
        let _: Result<i64, _> = l2
            .run_script(&RELEASE, &[&self.lease_key], &[self.token.as_bytes()], true)
            .await;
    }
}

/// Write `write` if `lease` (or no lease at all) still guards the key, release
/// the lease and wake the waiters. `Ok(false)`: another holder took over; the
/// write was dropped.
pub(crate) async fn fill(
    l2: &L2,
    lease: Option<&Lease>,
    write: &Write,
    channel: &str,
) -> Result<bool, L2Error> {
    let lease_key = lease_key(&write.key);
    let waiting = waiting_key(&write.key);
    let token = lease.map_or(&[][..], |l| l.token.as_bytes());
    let ttl_ms = write.ttl_ms.max(1).to_string();
    let landed: i64 = l2
        .run_script(
            &FILL,
            &[&write.key, &lease_key, &waiting],
            &[token, &write.bytes, ttl_ms.as_bytes(), channel.as_bytes()],
            false,
        )
        .await?;
    Ok(landed == 1)
}

/// Give the entry created at `old_created_at_us` the timestamps and
/// fail-safe flag of `renewed`, if it is still that entry and `lease` (or no
/// lease at all) still guards it.
pub(crate) async fn retime(
    l2: &L2,
    lease: Option<&Lease>,
    stored: &str,
    old_created_at_us: u64,
    renewed: &EntryMeta,
    ttl: Duration,
    channel: &str,
) -> Result<bool, L2Error> {
    let lease_key = lease_key(stored);
    let waiting = waiting_key(stored);
    let token = lease.map_or(&[][..], |l| l.token.as_bytes());
    let ttl_ms = ttl.as_millis().max(1).to_string();
    let created = old_created_at_us.to_le_bytes();
    let times = renewed.times_bytes();
    let flag: &[u8] = if renewed.fail_safe { b"1" } else { b"0" };
    let landed: i64 = l2
        .run_script(
            &RETIME,
            &[stored, &lease_key, &waiting],
            &[
                token,
                &created,
                &times,
                flag,
                ttl_ms.as_bytes(),
                channel.as_bytes(),
            ],
            false,
        )
        .await?;
    Ok(landed == 1)
}

#[cfg(test)]
mod tests {
    use super::hex_token;

    #[test]
    fn a_token_is_its_bits_in_32_hex_digits() {
        for bits in [0, 1, 0xdead_beef, u128::MAX, rand::random::<u128>()] {
            assert_eq!(hex_token(bits), format!("{bits:032x}"));
        }
    }
}
