//! The write path of a queue on a Redis Cluster, where a key's cache entry
//! (`{ns}:{key}`, the key's slot) and its stream shard
//! (`{ns:write-behind:name:i}`, the shard's slot) live in different slots and
//! no one script can write both.
//!
//! Instead, in three steps per group commit, each atomic in its own slot:
//!
//! 1. in the key's slot: a value's old entry (and lease) is deleted; a
//!    counter's running total is incremented (or found missing: seed it);
//! 2. in the shard's slot: one stream entry carries all the writes of that
//!    shard — from here on a write is queued, and it is acknowledged;
//! 3. in the key's slot: a value's entry is set, unless a write of the key
//!    with a newer stream id got there first (`{stored}:wbv` holds the id).
//!
//! What this costs against a single node's one script: a process that dies
//! between the steps leaves its write in doubt (as on a single node), but
//! with a value's entry deleted (read from the sink, which gets the write
//! if step 2 ran) and a counter's running total possibly holding an
//! increment that never reached the stream (the database's total is exact;
//! the running total is corrected when it lapses). A step-3 failure after
//! the write was queued leaves the entry deleted: readers get the sink's
//! value until the worker applied the write. The sink still applies every
//! queued write once, by write id.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, LazyLock};

use futures::future::join_all;

use super::combine::{Answer, Op, Reply, Seed};
use super::stream::shard_of;
use crate::l2::{L2Error, LuaScript, L2};

/// Step 1 of a value: delete the old entry and its lease. KEYS: entry, lease.
static CLEAR: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("return redis.call('DEL', KEYS[1], KEYS[2])"));

/// Step 1 of a counter. KEYS: total. ARGV: delta, seed ('' none yet, '-'
/// the sink is unreachable, else the total), ttl ms. Answers the new total;
/// `false` (no running total: seed it); `queue` (queue it without a total).
static COUNT: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        r"
local missing = redis.call('EXISTS', KEYS[1]) == 0
if missing and ARGV[2] == '-' then return 'queue' end
if missing and ARGV[2] ~= '' then
  redis.call('SET', KEYS[1], ARGV[2])
  missing = false
end
if missing then return false end
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return total
",
    )
});

/// Step 2: one stream entry for the writes of a shard (the format of
/// `stream.rs`). KEYS: stream. ARGV: four per write — kind, write id, key,
/// payload. Answers the entry id.
static ENQUEUE: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        r"
local parts = {}
for a = 1, #ARGV, 4 do
  parts[#parts + 1] = '1:' .. ARGV[a] .. #ARGV[a + 1] .. ':' .. ARGV[a + 1] .. #ARGV[a + 2] .. ':' .. ARGV[a + 2] .. #ARGV[a + 3] .. ':' .. ARGV[a + 3]
end
return redis.call('XADD', KEYS[1], '*', 'n', #parts, 'b', table.concat(parts))
",
    )
});

/// Step 3 of a value. KEYS: entry, lease, version. ARGV: envelope, ttl ms,
/// stream id. Sets the entry unless the version names a newer write.
static PUT: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        r"
local function split(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms) or 0, tonumber(seq) or 0
end
local seen = redis.call('GET', KEYS[3])
if seen then
  local ms, seq = split(ARGV[3])
  local sms, sseq = split(seen)
  if sms > ms or (sms == ms and sseq > seq) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
return 1
",
    )
});

/// The key that orders a value's entry writes on a Cluster.
fn version_key(stored: &str) -> String {
    format!("{stored}:wbv")
}

/// What step 1 left of one write.
enum Prepared {
    /// Queue it (a counter: with this total, if any).
    Queue(Option<i64>),
    /// Answered already (a counter to seed, or a failure).
    Done(Result<Answer, L2Error>),
}

/// Send a batch on a Cluster: every caller in `batch` is answered. `streams`
/// are the shards' stream keys; `confirm` is run once per shard entry that
/// was written (the replica acknowledgement, if asked for).
pub(crate) async fn send<F, Fut>(
    l2: &Arc<L2>,
    streams: &[String],
    batch: Vec<(Op, Reply)>,
    confirm: F,
) where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), L2Error>>,
{
    // Step 1, all writes at once (each in its key's slot).
    let prepared = join_all(batch.iter().map(|(op, _)| prepare(l2, op))).await;

    // Step 2: per shard, one entry.
    let mut shards: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, ((op, _), p)) in batch.iter().zip(&prepared).enumerate() {
        if matches!(p, Prepared::Queue(_)) {
            shards
                .entry(shard_of(op_slot_key(op), streams.len()))
                .or_default()
                .push(i);
        }
    }
    let enqueued = join_all(shards.iter().map(|(&shard, members)| {
        let args: Vec<Vec<u8>> = members
            .iter()
            .flat_map(|&i| stream_fields(&batch[i].0))
            .collect();
        let confirm = &confirm;
        async move {
            let arg_refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let id = l2
                .run_script::<String>(&ENQUEUE, &[streams[shard].as_str()], &arg_refs, false)
                .await?;
            confirm(shard).await?;
            Ok::<_, L2Error>(id)
        }
    }))
    .await;
    let mut entry_of: Vec<Option<Result<String, L2Error>>> =
        (0..batch.len()).map(|_| None).collect();
    for ((_, members), result) in shards.iter().zip(enqueued) {
        for &i in members {
            entry_of[i] = Some(result.clone());
        }
    }

    // Step 3 for the queued values; then answer everyone.
    // Writes of one key in one batch share a stream entry (so its id): only
    // the last may set the entry, as only the last reaches the sink.
    let mut last_of_key: HashMap<&str, usize> = HashMap::new();
    for (i, (op, _)) in batch.iter().enumerate() {
        if let Op::Set { stored, .. } = op {
            last_of_key.insert(stored, i);
        }
    }
    let last: HashSet<usize> = last_of_key.into_values().collect();
    let puts = batch.iter().zip(&entry_of).enumerate().map(|(i, ((op, _), entry))| {
        let last = last.contains(&i);
        async move {
        if let (
            Op::Set {
                stored,
                lease,
                envelope,
                ttl_ms,
                ..
            },
            Some(Ok(id)),
            true,
        ) = (op, entry, last)
        {
            let version = version_key(stored);
            let ttl = ttl_ms.max(&1).to_string();
            let put = l2
                .run_script::<i64>(
                    &PUT,
                    &[stored.as_str(), lease.as_str(), version.as_str()],
                    &[envelope.as_slice(), ttl.as_bytes(), id.as_bytes()],
                    true,
                )
                .await;
            if let Err(err) = put {
                // Queued all the same: the entry stays deleted, and readers
                // get the sink's value until the worker applied this write.
                tracing::warn!(error = ?err, "write-behind: the cache entry could not be set after its write was queued");
            }
        }
        }
    });
    join_all(puts).await;
    for (((_, reply), p), entry) in batch.into_iter().zip(prepared).zip(entry_of) {
        let answer = match (p, entry) {
            (Prepared::Done(answer), _) => answer,
            (Prepared::Queue(total), Some(Ok(id))) => Ok(match total {
                Some(total) => Answer::Total(total, id),
                None => Answer::Queued(id),
            }),
            (Prepared::Queue(_), Some(Err(err))) => Err(err),
            (Prepared::Queue(_), None) => Err(L2Error::Unavailable),
        };
        let _ = reply.send(answer);
    }
}

/// The stored key whose slot picks a write's shard (a counter's total lives
/// in the slot of its entry).
fn op_slot_key(op: &Op) -> &str {
    match op {
        Op::Set { stored, .. } => stored,
        Op::Incr { total_key, .. } => total_key,
    }
}

fn stream_fields(op: &Op) -> [Vec<u8>; 4] {
    match op {
        Op::Set {
            write_id,
            key,
            json,
            ..
        } => [
            b"v".to_vec(),
            write_id.clone().into_bytes(),
            key.clone().into_bytes(),
            json.clone(),
        ],
        Op::Incr {
            write_id,
            key,
            delta,
            ..
        } => [
            b"c".to_vec(),
            write_id.clone().into_bytes(),
            key.clone().into_bytes(),
            delta.to_string().into_bytes(),
        ],
    }
}

async fn prepare(l2: &L2, op: &Op) -> Prepared {
    match op {
        Op::Set { stored, lease, .. } => {
            match l2
                .run_script::<i64>(&CLEAR, &[stored.as_str(), lease.as_str()], &[], true)
                .await
            {
                Ok(_) => Prepared::Queue(None),
                Err(err) => Prepared::Done(Err(err)),
            }
        }
        Op::Incr {
            total_key,
            delta,
            seed,
            ttl_ms,
            ..
        } => {
            let seed = match seed {
                Seed::Unknown => String::new(),
                Seed::Total(total) => total.to_string(),
                Seed::Unreachable => "-".to_string(),
            };
            let (delta, ttl) = (delta.to_string(), ttl_ms.max(&1).to_string());
            let answer = l2
                .run_script::<redis::Value>(
                    &COUNT,
                    &[total_key.as_str()],
                    &[delta.as_bytes(), seed.as_bytes(), ttl.as_bytes()],
                    false,
                )
                .await;
            match answer {
                Ok(redis::Value::Int(total)) => Prepared::Queue(Some(total)),
                Ok(redis::Value::Nil | redis::Value::Boolean(false)) => {
                    Prepared::Done(Ok(Answer::NeedsSeed))
                }
                Ok(_) => Prepared::Queue(None),
                Err(err) => Prepared::Done(Err(err)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_key_shares_the_entry_slot() {
        let stored = "ns:{user:1}";
        assert_eq!(
            crate::keys::hash_slot(super::version_key(stored).as_bytes()),
            crate::keys::hash_slot(stored.as_bytes())
        );
    }
}
