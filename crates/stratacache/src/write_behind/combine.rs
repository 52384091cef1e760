//! Group commit of writes into Redis: writes submitted while a script is in
//! flight are sent together in the next one (up to [`MAX_WRITES`]), so under
//! load one round trip carries many writes, and alone a write goes at once.
//!
//! Each write is still atomic on its own (its cache entry or running total
//! together with its stream entry): the script does them one after the other
//! and Redis runs a script as one step. Each caller is answered only after
//! the script that carried its write returned.

use std::sync::Arc;
use std::sync::LazyLock;

use tokio::sync::{mpsc, oneshot};

use super::acks::ReplicaAcks;
use crate::l2::{L2Error, L2};

/// Most writes per script.
const MAX_WRITES: usize = 256;
/// Writes waiting for a script; a caller waits (backpressure) beyond it.
const QUEUE: usize = 8_192;

/// One write, ready to send.
pub(crate) enum Op {
    /// A value: the envelope under the entry's key (lease revoked), and the
    /// JSON in the stream.
    Set {
        stored: String,
        lease: String,
        envelope: Vec<u8>,
        ttl_ms: u64,
        write_id: String,
        key: String,
        json: Vec<u8>,
    },
    /// A counter delta: the running total, and the delta in the stream. With
    /// no running total and no seed, nothing is written.
    Incr {
        total_key: String,
        delta: i64,
        write_id: String,
        key: String,
        seed: Seed,
        ttl_ms: u64,
    },
}

/// Where a counter's running total starts when Redis has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seed {
    /// Not asked yet: without a running total, write nothing and say so.
    Unknown,
    /// The sink's total.
    Total(i64),
    /// The sink could not be read: queue the delta without a running total.
    Unreachable,
}

/// What Redis answered for one write.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Queued under this stream entry id.
    Queued(String),
    /// Counter incremented to this total, queued under this id.
    Total(i64, String),
    /// The counter has no running total: seed it and submit again.
    NeedsSeed,
}

pub(crate) type Reply = oneshot::Sender<Result<Answer, L2Error>>;

/// The sending side; the task runs while a handle exists.
pub(crate) struct Combiner {
    tx: mpsc::Sender<(Op, Reply)>,
}

impl Combiner {
    /// `streams`: the queue's one stream on a single node, its shards on a
    /// Cluster. `acks`: the replica acknowledgement after each entry, if asked for.
    pub(crate) fn spawn(
        l2: Arc<L2>,
        streams: Vec<String>,
        cluster: bool,
        acks: Option<Arc<ReplicaAcks>>,
    ) -> Combiner {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(l2, streams, cluster, acks, rx));
        Combiner { tx }
    }

    /// Send one write and wait for Redis's answer to it.
    pub(crate) async fn submit(&self, op: Op) -> Result<Answer, L2Error> {
        let (reply, answer) = oneshot::channel();
        if self.tx.send((op, reply)).await.is_err() {
            return Err(L2Error::Unavailable);
        }
        answer.await.unwrap_or(Err(L2Error::Unavailable))
    }
}

/// KEYS: the stream, then per write its keys (value: entry, lease; counter:
/// total). ARGV: six per write — `v`, envelope, ttl ms, write id, key, JSON;
/// or `c`, delta, write id, key, seed ('' none yet, '-' the sink is
/// unreachable, else the total), ttl ms. All the writes go into one stream
/// entry (format in `stream.rs`). Answers one item per write: the entry id,
/// `{total, id}`, or nil (counter needs a seed; not queued).
static SCRIPT: LazyLock<crate::l2::LuaScript> = LazyLock::new(|| {
    crate::l2::LuaScript::new(
        r"
local stream, k, parts, count, out = KEYS[1], 2, {}, 0, {}
local function put(kind, id, key, payload)
  parts[#parts + 1] = '1:' .. kind .. #id .. ':' .. id .. #key .. ':' .. key .. #payload .. ':' .. payload
  count = count + 1
end
for a = 1, #ARGV, 6 do
  if ARGV[a] == 'v' then
    redis.call('SET', KEYS[k], ARGV[a + 1], 'PX', ARGV[a + 2])
    redis.call('DEL', KEYS[k + 1])
    put('v', ARGV[a + 3], ARGV[a + 4], ARGV[a + 5])
    out[#out + 1] = true
    k = k + 2
  else
    local total_key = KEYS[k]
    local missing = redis.call('EXISTS', total_key) == 0
    if missing and ARGV[a + 4] == '-' then
      put('c', ARGV[a + 2], ARGV[a + 3], ARGV[a + 1])
      out[#out + 1] = true
    else
      if missing and ARGV[a + 4] ~= '' then
        redis.call('SET', total_key, ARGV[a + 4])
        missing = false
      end
      if missing then
        out[#out + 1] = false
      else
        out[#out + 1] = redis.call('INCRBY', total_key, ARGV[a + 1])
        redis.call('PEXPIRE', total_key, ARGV[a + 5])
        put('c', ARGV[a + 2], ARGV[a + 3], ARGV[a + 1])
      end
    end
    k = k + 1
  end
end
if count == 0 then return out end
local id = redis.call('XADD', stream, '*', 'n', count, 'b', table.concat(parts))
for i = 1, #out do
  if out[i] == true then out[i] = id
  elseif out[i] ~= false then out[i] = {out[i], id} end
end
return out
",
    )
});

async fn run(
    l2: Arc<L2>,
    streams: Vec<String>,
    cluster: bool,
    acks: Option<Arc<ReplicaAcks>>,
    mut rx: mpsc::Receiver<(Op, Reply)>,
) {
    let mut batch = Vec::with_capacity(MAX_WRITES);
    let confirm = |shard: usize| {
        let acks = acks.clone();
        async move {
            match acks {
                Some(acks) => acks.confirm(shard).await,
                None => Ok(()),
            }
        }
    };
    while rx.recv_many(&mut batch, MAX_WRITES).await > 0 {
        if cluster {
            let writes = std::mem::replace(&mut batch, Vec::with_capacity(MAX_WRITES));
            super::cluster::send(&l2, &streams, writes, confirm).await;
            continue;
        }
        let (keys, args) = encode(&streams[0], &batch);
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let arg_refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let answer = l2
            .run_script::<Vec<redis::Value>>(&SCRIPT, &key_refs, &arg_refs, false)
            .await;
        let answer = match answer {
            Ok(items) => confirm(0).await.map(|()| items),
            Err(err) => Err(err),
        };
        match answer {
            Ok(items) if items.len() == batch.len() => {
                for ((_, reply), item) in batch.drain(..).zip(items) {
                    let _ = reply.send(Ok(decode(item)));
                }
            }
            Ok(items) => {
                // Cannot happen with this script; answer each caller rather than guess.
                tracing::error!(
                    writes = batch.len(),
                    answers = items.len(),
                    "write-behind script answered a different number of items"
                );
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(L2Error::Unavailable));
                }
            }
            Err(err) => {
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}

fn encode(stream: &str, batch: &[(Op, Reply)]) -> (Vec<String>, Vec<Vec<u8>>) {
    let mut keys = Vec::with_capacity(1 + 2 * batch.len());
    let mut args: Vec<Vec<u8>> = Vec::with_capacity(6 * batch.len());
    keys.push(stream.to_string());
    for (op, _) in batch {
        match op {
            Op::Set {
                stored,
                lease,
                envelope,
                ttl_ms,
                write_id,
                key,
                json,
            } => {
                keys.push(stored.clone());
                keys.push(lease.clone());
                args.push(b"v".to_vec());
                args.push(envelope.clone());
                args.push(ttl_ms.max(&1).to_string().into_bytes());
                args.push(write_id.clone().into_bytes());
                args.push(key.clone().into_bytes());
                args.push(json.clone());
            }
            Op::Incr {
                total_key,
                delta,
                write_id,
                key,
                seed,
                ttl_ms,
            } => {
                keys.push(total_key.clone());
                args.push(b"c".to_vec());
                args.push(delta.to_string().into_bytes());
                args.push(write_id.clone().into_bytes());
                args.push(key.clone().into_bytes());
                args.push(match seed {
                    Seed::Unknown => Vec::new(),
                    Seed::Total(total) => total.to_string().into_bytes(),
                    Seed::Unreachable => b"-".to_vec(),
                });
                args.push(ttl_ms.max(&1).to_string().into_bytes());
            }
        }
    }
    (keys, args)
}

fn decode(item: redis::Value) -> Answer {
    use redis::Value;
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        _ => String::new(),
    };
    match item {
        Value::Array(parts) if parts.len() == 2 => match &parts[0] {
            Value::Int(total) => Answer::Total(*total, text(&parts[1])),
            _ => Answer::NeedsSeed,
        },
        Value::Nil | Value::Boolean(false) => Answer::NeedsSeed,
        other => Answer::Queued(text(&other)),
    }
}
