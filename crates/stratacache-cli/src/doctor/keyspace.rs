//! The namespace's keyspace, walked with SCAN on every master (never KEYS):
//! entries and their memory, keys without a TTL, stuck leases, tag stamps,
//! version floors, write-behind queues.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Result;
use redis::aio::MultiplexedConnection;
use redis::Value;
use serde::Serialize;
use serde_json::json;
use stratacache::inspect::{
    classify_key, namespace_pattern, queue_state, write_behind_keys, KeyKind,
};

use super::{bytes, DoctorArgs, Finding};
use crate::target::Target;
use crate::time::{human, now_ms, rfc3339_us};

/// A lease living longer than this was not taken with a sane lock timeout.
const LONG_LEASE: Duration = Duration::from_secs(300);
/// Keys named in a finding, at most.
const EXAMPLES: usize = 5;

/// What the scan found.
#[derive(Debug, Default, Serialize)]
pub struct Space {
    pub namespace: String,
    pub scanned: u64,
    pub truncated: bool,
    pub entries: u64,
    pub entries_without_ttl: u64,
    pub leases: u64,
    pub leases_without_ttl: u64,
    pub leases_long: u64,
    pub waiting_marks: u64,
    pub version_floors: u64,
    pub version_floors_without_ttl: u64,
    pub counter_totals: u64,
    pub tag_stamps: u64,
    pub tag_stamps_without_ttl: u64,
    pub cleared_at_us: Option<u64>,
    pub unknown: u64,
    /// Entries measured with MEMORY USAGE, and their bytes.
    pub sampled: u64,
    pub sampled_bytes: u64,
    pub queues: Vec<Queue>,
    #[serde(skip)]
    examples: BTreeMap<&'static str, Vec<String>>,
}

impl Space {
    fn example(&mut self, kind: &'static str, key: &str) {
        let list = self.examples.entry(kind).or_default();
        if list.len() < EXAMPLES {
            list.push(key.to_string());
        }
    }

    fn examples(&self, kind: &str) -> String {
        self.examples
            .get(kind)
            .map(|l| l.join(", "))
            .unwrap_or_default()
    }

    /// The estimated memory of every entry.
    pub fn estimated_bytes(&self) -> u64 {
        if self.sampled == 0 {
            return 0;
        }
        (self.sampled_bytes as f64 / self.sampled as f64 * self.entries as f64) as u64
    }
}

/// A write-behind queue's state.
#[derive(Debug, Default, Serialize)]
pub struct Queue {
    pub name: String,
    pub node: String,
    /// Entries not yet applied.
    pub depth: u64,
    /// Read by a worker, not yet acknowledged.
    pub pending: u64,
    /// The consumer group exists (a worker ran once).
    pub group: bool,
    pub consumers: u64,
    /// Consumers seen within the last minute.
    pub active_consumers: u64,
    /// Age of the oldest entry not yet applied (ms).
    pub lag_ms: u64,
    pub dead_letters: u64,
}

pub async fn scan(target: &Target, namespace: &str, args: &DoctorArgs) -> Result<Space> {
    // Validates the namespace the way the library does.
    stratacache::inspect::entry_keys(namespace, "x").map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut space = Space {
        namespace: namespace.to_string(),
        ..Space::default()
    };
    let pattern = namespace_pattern(namespace);
    let mut queue_names: BTreeMap<String, String> = BTreeMap::new();
    for node in target.masters() {
        let mut conn = target.connect(node).await?;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            space.scanned += keys.len() as u64;
            examine(
                &mut conn,
                namespace,
                &keys,
                args,
                &mut space,
                &mut queue_names,
                &node.addr,
            )
            .await?;
            cursor = next;
            if cursor == 0 {
                break;
            }
            if space.scanned >= args.scan_limit {
                space.truncated = true;
                break;
            }
        }
    }
    for (name, addr) in queue_names {
        let node = target
            .masters()
            .find(|n| n.addr == addr)
            .expect("found on a master");
        let mut conn = target.connect(node).await?;
        space
            .queues
            .push(queue(&mut conn, namespace, &name, &addr).await?);
    }
    Ok(space)
}

async fn examine(
    conn: &mut MultiplexedConnection,
    namespace: &str,
    keys: &[String],
    args: &DoctorArgs,
    space: &mut Space,
    queues: &mut BTreeMap<String, String>,
    addr: &str,
) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("PTTL").arg(key);
    }
    let ttls: Vec<i64> = pipe.query_async(conn).await?;
    let mut measure = Vec::new();
    for (key, ttl) in keys.iter().zip(ttls) {
        let no_ttl = ttl == -1;
        match classify_key(namespace, key) {
            KeyKind::Entry => {
                space.entries += 1;
                if no_ttl {
                    space.entries_without_ttl += 1;
                    space.example("entry-no-ttl", key);
                }
                if (space.sampled as usize + measure.len()) < args.memory_samples {
                    measure.push(key.clone());
                }
            }
            KeyKind::Lease => {
                space.leases += 1;
                if no_ttl {
                    space.leases_without_ttl += 1;
                    space.example("lease-stuck", key);
                } else if ttl > LONG_LEASE.as_millis() as i64 {
                    space.leases_long += 1;
                    space.example("lease-stuck", key);
                }
            }
            KeyKind::Waiting => space.waiting_marks += 1,
            KeyKind::VersionFloor => {
                space.version_floors += 1;
                if no_ttl {
                    space.version_floors_without_ttl += 1;
                    space.example("floor-no-ttl", key);
                }
            }
            KeyKind::CounterTotal => space.counter_totals += 1,
            KeyKind::TagStamp(_) => {
                space.tag_stamps += 1;
                if no_ttl {
                    space.tag_stamps_without_ttl += 1;
                    space.example("tag-no-ttl", key);
                }
            }
            KeyKind::ClearStamp => {
                let stamp: Option<Vec<u8>> = redis::cmd("GET").arg(key).query_async(conn).await?;
                space.cleared_at_us = stamp.as_deref().and_then(stratacache::inspect::parse_stamp);
            }
            KeyKind::WriteBehindStream(name) | KeyKind::WriteBehindDeadLetters(name) => {
                queues.entry(name).or_insert_with(|| addr.to_string());
            }
            _ => {
                space.unknown += 1;
                space.example("unknown", key);
            }
        }
    }
    if !measure.is_empty() {
        let mut pipe = redis::pipe();
        for key in &measure {
            pipe.cmd("MEMORY").arg("USAGE").arg(key);
        }
        // MEMORY may be refused (ACL, managed Redis): then no estimate.
        if let Ok(sizes) = pipe.query_async::<Vec<Option<u64>>>(conn).await {
            for size in sizes.into_iter().flatten() {
                space.sampled += 1;
                space.sampled_bytes += size;
            }
        }
    }
    Ok(())
}

/// Field → value of a reply that is a map (RESP3) or a flat array (RESP2).
fn fields(value: &Value) -> HashMap<String, Value> {
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        _ => String::new(),
    };
    match value {
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (text(k), v.clone())).collect(),
        Value::Array(items) => items
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (text(&c[0]), c[1].clone()))
            .collect(),
        _ => HashMap::new(),
    }
}

fn int(value: Option<&Value>) -> u64 {
    match value {
        Some(Value::Int(n)) => (*n).max(0) as u64,
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).parse().unwrap_or(0),
        _ => 0,
    }
}

/// A queue's depth, pending entries, consumers, lag and dead letters.
pub async fn queue(
    conn: &mut MultiplexedConnection,
    namespace: &str,
    name: &str,
    addr: &str,
) -> Result<Queue> {
    let keys = write_behind_keys(namespace, name);
    // The library's own reading of a queue (as its workers' gauges read it).
    let state = queue_state(conn, &keys).await?;
    let mut q = Queue {
        name: name.to_string(),
        node: addr.to_string(),
        depth: state.depth,
        dead_letters: state.dead_letters,
        lag_ms: state.oldest.map_or(0, |id| now_ms().saturating_sub(id.ms)),
        ..Queue::default()
    };
    // No group (no worker ever ran) and no stream are answered as errors.
    let groups: Vec<Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&keys.stream)
        .query_async(conn)
        .await
        .unwrap_or_default();
    for group in &groups {
        let g = fields(group);
        let group_name = match g.get("name") {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => continue,
        };
        if group_name != keys.group {
            continue;
        }
        q.group = true;
        q.consumers = int(g.get("consumers"));
        // XPENDING's summary, as the library's `queue_status` reads it.
        q.pending = redis::cmd("XPENDING")
            .arg(&keys.stream)
            .arg(&keys.group)
            .query_async::<(u64, Value, Value, Value)>(conn)
            .await
            .map_or(int(g.get("pending")), |(n, _, _, _)| n);
        let consumers: Vec<Value> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&keys.stream)
            .arg(&keys.group)
            .query_async(conn)
            .await
            .unwrap_or_default();
        q.active_consumers = consumers
            .iter()
            .filter(|c| int(fields(c).get("idle")) < 60_000)
            .count() as u64;
    }
    Ok(q)
}

pub fn findings(space: &Space, out: &mut Vec<Finding>) {
    let ns = &space.namespace;
    let estimate = space.estimated_bytes();
    out.push(
        Finding::info(
            "keyspace",
            format!(
                "namespace {ns:?}: {} entries (~{} estimated from {} measured), {} tag stamps, {} version floors, {} leases in flight, {} waiting marks, {} counter totals, {} write-behind queue(s)",
                space.entries,
                bytes(estimate),
                space.sampled,
                space.tag_stamps,
                space.version_floors,
                space.leases,
                space.waiting_marks,
                space.counter_totals,
                space.queues.len()
            ),
        )
        .data(json!({
            "scanned": space.scanned,
            "entries": space.entries,
            "estimated_entry_bytes": estimate,
            "sampled": space.sampled,
            "sampled_bytes": space.sampled_bytes,
            "entries_without_ttl": space.entries_without_ttl,
            "leases": space.leases,
            "leases_without_ttl": space.leases_without_ttl,
            "leases_long": space.leases_long,
            "waiting_marks": space.waiting_marks,
            "version_floors": space.version_floors,
            "tag_stamps": space.tag_stamps,
            "counter_totals": space.counter_totals,
            "unknown": space.unknown,
            "queues": space.queues,
        })),
    );
    if space.truncated {
        out.push(Finding::info(
            "keyspace.truncated",
            format!(
                "the scan stopped after {} keys (--scan-limit): the counts are partial",
                space.scanned
            ),
        ));
    }
    if space.scanned == 0 {
        out.push(
            Finding::info("keyspace.empty", format!("no key under {ns:?}:*"))
                .why("either nothing was cached yet, or the namespace is not the one the services use")
                .fix("check CacheBuilder::namespace in the service"),
        );
    }
    if space.entries_without_ttl > 0 {
        out.push(
            Finding::warning("keyspace.no-ttl", format!("{} entries without a TTL, e.g. {}", space.entries_without_ttl, space.examples("entry-no-ttl")))
                .why("the library gives every entry a TTL (the end of its stale window); these were written by something else or made persistent, and never leave unless evicted (never, under volatile-* policies)")
                .fix("look at one with `stratacache inspect`, then delete them (`stratacache invalidate --key …`) or find the writer"),
        );
    }
    if space.leases_without_ttl + space.leases_long > 0 {
        out.push(
            Finding::warning(
                "keyspace.stuck-leases",
                format!(
                    "{} leases without a TTL and {} with more than {} left, e.g. {}",
                    space.leases_without_ttl,
                    space.leases_long,
                    human(LONG_LEASE),
                    space.examples("lease-stuck")
                ),
            )
            .why("the library's leases live for the lock timeout (5 s by default), renewed while the load runs; a lease without expiry was not taken by the library (its next acquire of the key takes it over), and a long one holds back every other instance's load of that key until it lapses (they wait for a fill, or serve stale)")
            .fix("DEL the lease keys (the next load takes over); check the policies' lock_timeout"),
        );
    }
    if space.version_floors_without_ttl > 0 {
        out.push(
            Finding::warning("keyspace.floors-no-ttl", format!("{} version floors without a TTL, e.g. {}", space.version_floors_without_ttl, space.examples("floor-no-ttl")))
                .why("floors outlive the last versioned write by 10 minutes; one without a TTL stays forever and refuses every fill older than it")
                .fix("DEL them, or let the next versioned write set their TTL"),
        );
    }
    if space.tag_stamps_without_ttl > 0 {
        out.push(
            Finding::warning("keyspace.tags-no-ttl", format!("{} tag stamps without a TTL, e.g. {}", space.tag_stamps_without_ttl, space.examples("tag-no-ttl")))
                .why("the library keeps tag stamps 7 days; stamps without a TTL accumulate with every distinct tag ever invalidated")
                .fix("EXPIRE them (7 days), or DEL those of tags no longer used"),
        );
    }
    if space.unknown > 0 {
        out.push(
            Finding::info("keyspace.unknown", format!("{} keys under {ns:?}: that the cache does not write, e.g. {}", space.unknown, space.examples("unknown")))
                .why("another program shares the namespace; a prefix invalidation never touches them, but they count in memory"),
        );
    }
    if let Some(us) = space.cleared_at_us {
        out.push(Finding::info(
            "keyspace.cleared",
            format!("namespace last cleared at {}", rfc3339_us(us)),
        ));
    }
    for q in &space.queues {
        let summary = format!(
            "queue {:?}: {} not applied ({} read and unacknowledged), {} consumer(s) ({} active), oldest {} old, {} dead letter(s)",
            q.name,
            q.depth,
            q.pending,
            q.consumers,
            q.active_consumers,
            human(Duration::from_millis(q.lag_ms)),
            q.dead_letters
        );
        out.push(Finding::info("queue", summary));
        if q.dead_letters > 0 {
            out.push(
                Finding::warning("queue.dead-letters", format!("queue {:?} has {} dead letter(s)", q.name, q.dead_letters))
                    .why("writes the sink refused after every retry: the database does not have them (the cache may)")
                    .fix(format!("read the reason (XRANGE {} - + COUNT 10, field `error`), fix it, then `stratacache queue replay-dead-letters --namespace {ns} --queue {}`", write_behind_keys(ns, &q.name).dead_letters, q.name)),
            );
        }
        if q.depth > 0 && q.active_consumers == 0 {
            out.push(
                Finding::warning("queue.no-workers", format!("queue {:?} holds {} unapplied entries and no worker read it in the last minute", q.name, q.depth))
                    .why("acknowledged writes wait in Redis and do not reach the database until a worker runs")
                    .fix("start the service's write-behind worker (WriteBehind::spawn_worker)"),
            );
        } else if q.lag_ms > 60_000 {
            out.push(
                Finding::warning("queue.lag", format!("queue {:?} is {} behind", q.name, human(Duration::from_millis(q.lag_ms))))
                    .why("the database is that far behind the acknowledged writes; the cached values must outlive the lag")
                    .fix("look at the sink's errors and retries, add workers, or raise batch_size"),
            );
        }
    }
}
