//! The Redis side of write-behind: key names, the entry format, and the
//! scripts and commands that touch the stream.
//!
//! An entry carries the writes of one script call (one, or many under load:
//! see `combine.rs`): `n` (how many) and `b`, the writes one after the other,
//! each four netstrings (`<len>:<bytes>`): kind (`v` value, `c` counter), write
//! id (random, unique), key, payload (JSON, or a decimal delta). The write id,
//! not the stream id, is what the sink records as applied: a write that timed
//! out towards Redis and was then applied directly can still be in the
//! stream, and must not be applied a second time from there. A single write
//! may also be given as plain fields `w`, `k` and `v` or `c`.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use redis::streams::StreamId;
use redis::Value;

/// A stream entry id (`<ms>-<seq>`): orders the writes of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EntryId {
    /// Milliseconds since the Unix epoch (Redis's clock, or this process's
    /// for a write applied directly).
    pub ms: u64,
    /// Sequence number within the millisecond.
    pub seq: u64,
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for EntryId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (ms, seq) = s.split_once('-').ok_or(())?;
        Ok(EntryId {
            ms: ms.parse().map_err(|_| ())?,
            seq: seq.parse().map_err(|_| ())?,
        })
    }
}

/// What a write does.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    /// Replace the value (JSON bytes).
    Set(Vec<u8>),
    /// Add to a counter.
    Add(i64),
}

/// One write read from the stream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StreamEntry {
    /// The stream entry that carried it (what is acknowledged).
    pub(crate) stream_id: String,
    /// Its order among all writes: the entry's id, the write's index within
    /// the entry in the low 16 bits of `seq`.
    pub(crate) id: EntryId,
    pub(crate) write_id: String,
    pub(crate) key: String,
    pub(crate) op: Op,
}

/// An entry that does not have the write-behind format (written by hand or
/// by another program): it goes to the dead-letter stream as it is.
#[derive(Debug, Clone)]
pub(crate) struct Malformed {
    pub(crate) id: String,
    pub(crate) why: &'static str,
}

/// The writes of one stream entry, in order.
pub(crate) fn parse(raw: &StreamId) -> Result<Vec<StreamEntry>, Malformed> {
    let bad = |why| Malformed {
        id: raw.id.clone(),
        why,
    };
    let id: EntryId = raw.id.parse().map_err(|_| bad("unparsable entry id"))?;
    if id.seq >= 1 << 47 {
        return Err(bad("entry sequence number too large"));
    }
    let field = |name: &str| match raw.map.get(name) {
        Some(Value::BulkString(bytes)) => Some(bytes.as_slice()),
        Some(Value::SimpleString(s)) => Some(s.as_bytes()),
        _ => None,
    };
    let write = |index: u64, kind: &[u8], write_id: &[u8], key: &[u8], payload: &[u8]| {
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| bad("field is not UTF-8"));
        let op = match kind {
            b"v" => Op::Set(payload.to_vec()),
            b"c" => Op::Add(
                text(payload)?
                    .parse()
                    .map_err(|_| bad("counter delta is not an integer"))?,
            ),
            _ => return Err(bad("neither a value nor a counter delta")),
        };
        Ok(StreamEntry {
            stream_id: raw.id.clone(),
            id: EntryId {
                ms: id.ms,
                seq: (id.seq << 16) | index,
            },
            write_id: text(write_id)?,
            key: text(key)?,
            op,
        })
    };
    if let Some(blob) = field("b") {
        let count: u64 = field("n")
            .and_then(|n| std::str::from_utf8(n).ok()?.parse().ok())
            .ok_or_else(|| bad("no write count"))?;
        if count > 1 << 16 {
            return Err(bad("too many writes in one entry"));
        }
        let mut rest = blob;
        let mut out = Vec::with_capacity(count as usize);
        for index in 0..count {
            let mut parts = [&b""[..]; 4];
            for part in &mut parts {
                let (item, tail) = netstring(rest).ok_or_else(|| bad("truncated write"))?;
                *part = item;
                rest = tail;
            }
            out.push(write(index, parts[0], parts[1], parts[2], parts[3])?);
        }
        return if rest.is_empty() {
            Ok(out)
        } else {
            Err(bad("bytes after the last write"))
        };
    }
    let write_id = field("w").ok_or_else(|| bad("no write id"))?;
    let key = field("k").ok_or_else(|| bad("no key"))?;
    match (field("v"), field("c")) {
        (Some(json), None) => Ok(vec![write(0, b"v", write_id, key, json)?]),
        (None, Some(delta)) => Ok(vec![write(0, b"c", write_id, key, delta)?]),
        _ => Err(bad("neither a value nor a counter delta")),
    }
}

/// Split `<len>:<bytes>` off the front of `input`.
fn netstring(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = input.iter().take(12).position(|&b| b == b':')?;
    let len: usize = std::str::from_utf8(&input[..colon]).ok()?.parse().ok()?;
    let start = colon + 1;
    let end = start.checked_add(len)?;
    (end <= input.len()).then(|| (&input[start..end], &input[end..]))
}

/// The Redis keys of one write-behind stream: the queue's only stream on a
/// single node, one of its shards on a Cluster.
#[derive(Debug, Clone)]
pub(crate) struct StreamKeys {
    pub(crate) stream: String,
    pub(crate) dead: String,
    pub(crate) group: String,
    /// The key a replica acknowledgement writes before `WAIT` (same node).
    pub(crate) wait: String,
}

impl StreamKeys {
    pub(crate) fn new(namespace: &str, name: &str) -> Self {
        // No braces: these are not cache entries, and no prefix invalidation
        // (`{namespace}:{prefix*`) may match them.
        let stream = format!("{namespace}:write-behind:{name}");
        Self::with_stream(stream)
    }

    /// Shard `index` of a queue on a Cluster: the whole name is the hash
    /// tag, so the stream, its dead letters and its acknowledgement key share
    /// one slot, and shards spread over the masters. It starts with a brace,
    /// so no prefix invalidation (`{namespace}:{prefix*`) matches it.
    pub(crate) fn shard(namespace: &str, name: &str, index: usize) -> Self {
        Self::with_stream(format!("{{{namespace}:write-behind:{name}:{index}}}"))
    }

    fn with_stream(stream: String) -> Self {
        Self {
            dead: format!("{stream}:dead"),
            wait: format!("{stream}:ack"),
            stream,
            group: "write-behind".to_string(),
        }
    }
}

/// The shard of a stored key among `shards`: a function of its hash slot, so
/// every write of a key goes to one stream, in order.
pub(crate) fn shard_of(stored: &str, shards: usize) -> usize {
    crate::keys::hash_slot(stored.as_bytes()) as usize % shards.max(1)
}

/// The key of a counter's running total, next to the cache entry of the
/// same key (same hash slot, not an envelope: `get` never reads it).
pub(crate) fn counter_key(stored: &str) -> String {
    format!("{stored}:total")
}

/// A write-behind queue's state in Redis (one stream: a queue, or one
/// shard of a queue on a Cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueState {
    /// Stream entries not yet applied, read by a worker or not.
    pub depth: u64,
    /// The oldest of them: its id's `ms` is when it was queued.
    pub oldest: Option<EntryId>,
    /// Entries in the dead-letter stream.
    pub dead_letters: u64,
}

/// The state of the queue whose stream is `stream` and dead-letter stream
/// `dead`, in one round trip: its length, its oldest entry, the dead-letter
/// stream's length. The one reading of a queue's state: workers, the
/// operator's `queue_status` and tools (`inspect::queue_state`) call it.
pub(crate) async fn queue_state(
    conn: &mut impl redis::aio::ConnectionLike,
    stream: &str,
    dead: &str,
) -> redis::RedisResult<QueueState> {
    type Head = Vec<(String, Vec<Vec<u8>>)>;
    let (depth, head, dead_letters): (u64, Head, u64) = redis::pipe()
        .cmd("XLEN")
        .arg(stream)
        .cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .cmd("XLEN")
        .arg(dead)
        .query_async(conn)
        .await?;
    let oldest = head.first().and_then(|(id, _)| id.parse().ok());
    Ok(QueueState {
        depth,
        oldest,
        dead_letters,
    })
}

/// A random write id: 128 bits, hex.
pub(crate) fn new_write_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Acknowledge and delete applied entries in one step: the stream then
/// holds exactly the entries not yet applied (its length is the queue
/// depth, its first entry the lag). KEYS: stream. ARGV: group, ids…
pub(crate) static ACK_SCRIPT: LazyLock<crate::l2::LuaScript> = LazyLock::new(|| {
    crate::l2::LuaScript::new(
        r"
local group = table.remove(ARGV, 1)
for i = 1, #ARGV, 500 do
  local ids = {unpack(ARGV, i, math.min(i + 499, #ARGV))}
  redis.call('XACK', KEYS[1], group, unpack(ids))
  redis.call('XDEL', KEYS[1], unpack(ids))
end
return #ARGV
",
    )
});

/// Move one entry to the dead-letter stream (fields kept, the reason and the
/// original id added) and remove it from the queue, atomically.
/// KEYS: stream, dead. ARGV: group, id, reason.
pub(crate) static DEAD_LETTER_SCRIPT: LazyLock<crate::l2::LuaScript> = LazyLock::new(|| {
    crate::l2::LuaScript::new(
        r"
local entry = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #entry == 1 then
  local fields = entry[1][2]
  table.insert(fields, 'error') table.insert(fields, ARGV[3])
  table.insert(fields, 'origin') table.insert(fields, ARGV[2])
  redis.call('XADD', KEYS[2], '*', unpack(fields))
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return #entry
",
    )
});

/// Put dead letters back on the queue (same write ids, so a write that was
/// applied after all is not applied again) and delete them from the
/// dead-letter stream. KEYS: stream, dead. ARGV: how many. Answers the count.
pub(crate) static REPLAY_SCRIPT: LazyLock<crate::l2::LuaScript> = LazyLock::new(|| {
    crate::l2::LuaScript::new(
        r"
local entries = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', ARGV[1])
for _, entry in ipairs(entries) do
  local fields, kept = entry[2], {}
  for i = 1, #fields, 2 do
    if fields[i] ~= 'error' and fields[i] ~= 'origin' then
      table.insert(kept, fields[i]) table.insert(kept, fields[i + 1])
    end
  end
  redis.call('XADD', KEYS[1], '*', unpack(kept))
  redis.call('XDEL', KEYS[2], entry[1])
end
return #entries
",
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_order_numerically() {
        let a: EntryId = "99-5".parse().unwrap();
        let b: EntryId = "100-0".parse().unwrap();
        assert!(a < b);
        assert_eq!(b.to_string(), "100-0");
        assert!("100".parse::<EntryId>().is_err());
    }

    #[test]
    fn malformed_entries_are_reported_not_panicked_on() {
        let mut raw = StreamId {
            id: "1-0".into(),
            ..Default::default()
        };
        raw.map.insert("k".into(), Value::BulkString(b"a".to_vec()));
        assert!(parse(&raw).is_err());
        raw.map.insert("w".into(), Value::BulkString(b"x".to_vec()));
        raw.map
            .insert("c".into(), Value::BulkString(b"nope".to_vec()));
        assert!(parse(&raw).is_err());
        raw.map
            .insert("c".into(), Value::BulkString(b"-3".to_vec()));
        assert_eq!(parse(&raw).unwrap()[0].op, Op::Add(-3));
    }

    #[test]
    fn packed_entries_unpack_in_order_and_truncation_is_refused() {
        let mut raw = StreamId {
            id: "5-1".into(),
            ..Default::default()
        };
        let blob = br#"1:v2:w13:k:a7:{"x":1}1:c2:w24:ke:y2:-4"#.to_vec();
        raw.map.insert("n".into(), Value::BulkString(b"2".to_vec()));
        raw.map.insert("b".into(), Value::BulkString(blob.clone()));
        let writes = parse(&raw).unwrap();
        assert_eq!(writes.len(), 2);
        assert_eq!(writes[0].key, "k:a");
        assert_eq!(writes[0].op, Op::Set(br#"{"x":1}"#.to_vec()));
        assert_eq!(writes[1].op, Op::Add(-4));
        assert_eq!(writes[1].key, "ke:y");
        assert!(writes[0].id < writes[1].id);
        assert!(writes.iter().all(|w| w.stream_id == "5-1"));
        raw.map.insert(
            "b".into(),
            Value::BulkString(blob[..blob.len() - 1].to_vec()),
        );
        assert!(parse(&raw).is_err());
        raw.map
            .insert("b".into(), Value::BulkString(b"99999999999999:x".to_vec()));
        assert!(parse(&raw).is_err());
    }
}
