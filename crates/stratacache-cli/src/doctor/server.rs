//! The server side, per master: version and commands, latency; and the
//! order of every server check (memory, persistence, topology, pub/sub
//! live in their own files).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::Value;
use serde_json::json;

use super::memory::{memory, persistence};
use super::pubsub::pubsub;
use super::topology::{cluster_state, replication, sentinel};
use super::{DoctorArgs, Finding};
use crate::target::{info, Node, Target};

/// What the write-behind queue needs besides the cache's own commands.
const QUEUE_COMMANDS: [&str; 8] = [
    "xadd",
    "xreadgroup",
    "xautoclaim",
    "xack",
    "xdel",
    "xpending",
    "xrange",
    "xlen",
];
/// What every cache needs.
const CACHE_COMMANDS: [&str; 16] = [
    "get",
    "set",
    "del",
    "exists",
    "pttl",
    "setrange",
    "mget",
    "evalsha",
    "eval",
    "script",
    "unlink",
    "pexpire",
    "scan",
    "publish",
    "subscribe",
    "ping",
];
/// The backplane on a Cluster is a sharded channel.
const CLUSTER_COMMANDS: [&str; 2] = ["spublish", "ssubscribe"];

/// A master, connected, with its `INFO`.
pub(super) struct Master {
    pub(super) node: Node,
    pub(super) conn: MultiplexedConnection,
    pub(super) info: HashMap<String, String>,
}

pub async fn check(
    target: &mut Target,
    args: &DoctorArgs,
    write_behind: bool,
    out: &mut Vec<Finding>,
) {
    let cluster = target.is_cluster();
    let mut masters = Vec::new();
    let mut found = Vec::new();
    for node in target.masters().cloned().collect::<Vec<_>>() {
        let connected = async {
            let mut conn = target.connect(&node).await?;
            let info = info(&mut conn).await?;
            anyhow::Ok((conn, info))
        };
        match connected.await {
            Ok((conn, info)) => masters.push(Master { node, conn, info }),
            Err(e) if cluster => found.push(
                Finding::error("connect", format!("cannot reach this master: {e:#}"))
                    .node(&node.addr)
                    .why("keys in its slots always miss, and their fills and invalidations fail")
                    .fix("bring the node back or fail it over to its replica"),
            ),
            Err(e) => found.push(
                Finding::error("connect", format!("cannot reach Redis: {e:#}"))
                    .why("without Redis the cache runs on L1 and the loaders alone: every instance loads every key itself, and invalidations do not reach the other instances")
                    .fix("check the URL, the network path and the credentials"),
            ),
        }
    }
    if masters.is_empty() {
        if found.is_empty() {
            found.push(Finding::error("connect", "no master found"));
        }
        out.extend(found);
        return;
    }
    let first = &masters[0];
    if !cluster && first.info.get("cluster_enabled").map(String::as_str) == Some("1") {
        found.push(
            Finding::error(
                "cluster.single-url",
                "this node is part of a Redis Cluster, but the URL names one node",
            )
            .node(&first.node.addr)
            .why(
                "keys of other slots answer MOVED: every read of them misses and every write fails",
            )
            .fix(format!(
                "use redis+cluster://{} (a few seed nodes, comma-separated)",
                first.node.addr
            )),
        );
    }
    for m in &mut masters {
        let addr = m.node.addr.clone();
        let mut here = Vec::new();
        here.push(version(&m.info, cluster, write_behind));
        here.extend(commands(&mut m.conn, cluster, write_behind).await);
        here.extend(memory(&m.info, write_behind));
        here.extend(persistence(&mut m.conn, &m.info, write_behind).await);
        here.push(latency(&mut m.conn, args.pings, args.redis_timeout).await);
        here.extend(replication(
            &m.info,
            matches!(target.topology, stratacache::RedisTopology::Sentinel { .. }),
        ));
        // Name the node only where there are several.
        if cluster {
            found.extend(here.into_iter().map(|f| f.node(&addr)));
        } else {
            found.extend(here);
        }
    }
    if cluster {
        found.extend(cluster_state(&mut masters[0].conn, target, write_behind).await);
    }
    if let stratacache::RedisTopology::Sentinel {
        sentinels,
        master_name,
        ..
    } = &target.topology
    {
        found.push(sentinel(sentinels, master_name, target.timeout).await);
    }
    found.extend(pubsub(target, &mut masters, args).await);
    out.extend(merge(found));
}

/// Findings that say the same of several nodes become one, naming them all.
fn merge(findings: Vec<Finding>) -> Vec<Finding> {
    let mut merged: Vec<Finding> = Vec::new();
    for f in findings {
        let same = merged
            .iter_mut()
            .find(|m| m.id == f.id && m.severity == f.severity && m.what == f.what);
        match (same, &f.node) {
            (Some(m), Some(node)) => {
                let nodes = m.node.get_or_insert_with(String::new);
                if !nodes.is_empty() {
                    nodes.push_str(", ");
                }
                nodes.push_str(node);
            }
            _ => merged.push(f),
        }
    }
    merged
}

pub(super) fn number(info: &HashMap<String, String>, field: &str) -> Option<u64> {
    info.get(field)?.parse().ok()
}

fn version(info: &HashMap<String, String>, cluster: bool, write_behind: bool) -> Finding {
    let text = info.get("redis_version").cloned().unwrap_or_default();
    let mut parts = text.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let v = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    let mut needs = vec![((4, 0), "UNLINK")];
    if write_behind {
        needs.push((
            (6, 2),
            "XAUTOCLAIM (write-behind claims a dead worker's entries)",
        ));
    }
    if cluster {
        needs.push((
            (7, 0),
            "sharded pub/sub (SPUBLISH/SSUBSCRIBE: the backplane on a Cluster)",
        ));
    }
    let missing: Vec<String> = needs
        .iter()
        .filter(|(at, _)| v < *at)
        .map(|((a, b), what)| format!("{what} needs {a}.{b}"))
        .collect();
    if text.is_empty() {
        return Finding::warning("version", "INFO does not say the server's version")
            .why("commands the library needs may be missing")
            .fix("run Redis 7.0 or later");
    }
    if missing.is_empty() {
        Finding::ok("version", format!("Redis {text}"))
    } else {
        Finding::error("version", format!("Redis {text} is too old: {}", missing.join("; ")))
            .why("the library calls these commands; where they are missing, the calls fail and the cache degrades to the loaders")
            .fix("upgrade to Redis 7.0 or later")
    }
}

async fn commands(
    conn: &mut MultiplexedConnection,
    cluster: bool,
    write_behind: bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut wanted: Vec<&str> = CACHE_COMMANDS.to_vec();
    wanted.extend(QUEUE_COMMANDS);
    if cluster {
        wanted.extend(CLUSTER_COMMANDS);
    }
    let mut cmd = redis::cmd("COMMAND");
    cmd.arg("INFO");
    for name in &wanted {
        cmd.arg(*name);
    }
    match cmd.query_async::<Vec<Value>>(conn).await {
        Ok(answers) => {
            let missing = |names: &[&str]| -> Vec<String> {
                names
                    .iter()
                    .filter(|name| {
                        let at = wanted.iter().position(|w| w == *name);
                        at.is_none_or(|i| matches!(answers.get(i), None | Some(Value::Nil)))
                    })
                    .map(|n| n.to_uppercase())
                    .collect()
            };
            let mut needed: Vec<&str> = CACHE_COMMANDS.to_vec();
            if cluster {
                needed.extend(CLUSTER_COMMANDS);
            }
            let cache_missing = missing(&needed);
            let queue_missing = missing(&QUEUE_COMMANDS);
            if !cache_missing.is_empty() {
                out.push(
                    Finding::error("commands.cache", format!("commands missing (renamed or disabled): {}", cache_missing.join(", ")))
                        .why("the cache's reads, fills, leases and invalidations use them: without them it degrades to the loaders, and invalidations do not reach Redis")
                        .fix("remove their rename-command lines (or ask the provider to allow them)"),
                );
            }
            if !queue_missing.is_empty() {
                let f = Finding::new(
                    "commands.streams",
                    if write_behind {
                        super::Severity::Error
                    } else {
                        super::Severity::Info
                    },
                    format!("stream commands missing: {}", queue_missing.join(", ")),
                )
                .why("write-behind queues are Redis Streams read by a consumer group")
                .fix("allow the stream commands, or do not use write-behind on this Redis");
                out.push(f);
            }
            if cache_missing.is_empty() && queue_missing.is_empty() {
                out.push(Finding::ok(
                    "commands",
                    "scripts, UNLINK, pub/sub and stream commands are available",
                ));
            }
        }
        Err(e) => out.push(Finding::info(
            "commands",
            format!("COMMAND INFO refused ({e}); trying the commands themselves"),
        )),
    }
    // Scripts and UNLINK for real: an ACL can refuse what COMMAND INFO lists.
    let scripts = async {
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg("return 1")
            .query_async(conn)
            .await?;
        let one: i64 = redis::cmd("EVALSHA")
            .arg(sha)
            .arg(0)
            .query_async(conn)
            .await?;
        let _: i64 = redis::cmd("UNLINK")
            .arg("stratacache:doctor:probe:absent")
            .query_async(conn)
            .await?;
        redis::RedisResult::Ok(one)
    };
    match scripts.await {
        Ok(1) => {}
        Ok(other) => out.push(Finding::error("commands.scripts", format!("a test script answered {other}, not 1"))),
        Err(e) => out.push(
            Finding::error("commands.scripts", format!("SCRIPT LOAD / EVALSHA / UNLINK refused: {e}"))
                .why("leases, fills, version floors, stamps and write-behind are Lua scripts: without them no entry is ever filled in Redis")
                .fix("grant the cache's user +@scripting +unlink (ACL SETUSER … +@scripting +unlink)"),
        ),
    }
    out
}

async fn latency(conn: &mut MultiplexedConnection, pings: usize, timeout: Duration) -> Finding {
    let mut took = Vec::with_capacity(pings.max(1));
    for _ in 0..pings.max(1) {
        let start = Instant::now();
        if let Err(e) = redis::cmd("PING").query_async::<String>(conn).await {
            return Finding::error("latency", format!("PING failed: {e}"));
        }
        took.push(start.elapsed());
    }
    took.sort();
    let at = |q: f64| took[((q * took.len() as f64).ceil() as usize).clamp(1, took.len()) - 1];
    let (p50, p99, max) = (at(0.5), at(0.99), *took.last().expect("one ping"));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let what = format!(
        "PING over {} calls: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        took.len(),
        ms(p50),
        ms(p99),
        ms(max)
    );
    let data = json!({"pings": took.len(), "p50_ms": ms(p50), "p99_ms": ms(p99), "max_ms": ms(max), "redis_timeout_ms": ms(timeout)});
    if p99 >= timeout {
        Finding::error("latency", format!("{what}: p99 at or over the cache's redis_timeout ({:.0} ms)", ms(timeout)))
            .why("calls slower than redis_timeout count as failures: reads miss, and the breaker opens and stops using Redis")
            .fix("move the cache next to Redis, relieve the server (slow commands: SLOWLOG GET; CPU; swapping), or raise redis_timeout")
            .data(data)
    } else if p99 * 4 >= timeout || p50 >= Duration::from_millis(5) {
        Finding::warning("latency", what)
            .why("every L2 read and fill pays this; near redis_timeout, slow calls fail and trip the breaker")
            .fix("put the cache next to Redis (same zone), check SLOWLOG GET and the server's CPU")
            .data(data)
    } else {
        Finding::ok("latency", what).data(data)
    }
}
