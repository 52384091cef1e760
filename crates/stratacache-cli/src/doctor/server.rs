//! The server side: version and commands, memory and eviction,
//! persistence, latency, Cluster state, replication, pub/sub.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::Value;
use serde_json::json;

use super::{bytes, DoctorArgs, Finding};
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
struct Master {
    node: Node,
    conn: MultiplexedConnection,
    info: HashMap<String, String>,
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

fn number(info: &HashMap<String, String>, field: &str) -> Option<u64> {
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

fn memory(info: &HashMap<String, String>, write_behind: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    let max = number(info, "maxmemory").unwrap_or(0);
    let used = number(info, "used_memory").unwrap_or(0);
    let policy = info.get("maxmemory_policy").cloned().unwrap_or_default();
    let data = json!({"maxmemory": max, "used_memory": used, "maxmemory_policy": policy});
    let shared_fix = "put write-behind queues on a Redis of their own (maxmemory-policy noeviction, appendonly yes) and the cache on one with allkeys-lru; sharing one, use volatile-lru or volatile-lfu — every cache entry has a TTL, a stream none, so only cache entries are evicted";
    if max == 0 {
        out.push(
            Finding::warning("memory.unbounded", "maxmemory is 0: Redis may grow without bound")
                .why("entries leave only when their TTL ends; with no ceiling, memory follows the working set until the host runs out (the OOM killer, or swapping that slows every call), and no eviction policy ever applies")
                .fix(if write_behind {
                    format!("set maxmemory to what the host can give (CONFIG SET maxmemory 2gb, and in redis.conf); then {shared_fix}")
                } else {
                    "set maxmemory to what the host can give (CONFIG SET maxmemory 2gb, and in redis.conf) with maxmemory-policy allkeys-lru (or allkeys-lfu)".to_string()
                })
                .data(data.clone()),
        );
    }
    let full = max > 0 && used as f64 >= 0.9 * max as f64;
    if policy == "noeviction" && max > 0 {
        let what = format!(
            "maxmemory-policy noeviction with maxmemory {} ({} used)",
            bytes(max),
            bytes(used)
        );
        let f = if full {
            Finding::error("memory.noeviction", format!("{what}: full now"))
        } else {
            Finding::warning("memory.noeviction", what)
        };
        out.push(
            f.why("when memory reaches maxmemory Redis refuses writes (OOM command not allowed): fills, leases and invalidation stamps fail, every miss goes to the database, and write-behind writes fall back to the sink")
                .fix(if write_behind { shared_fix.to_string() } else { "maxmemory-policy allkeys-lru (or allkeys-lfu): a cache should evict, not refuse".to_string() })
                .data(data.clone()),
        );
    }
    if write_behind && policy.starts_with("allkeys") {
        let f = if max > 0 {
            Finding::error(
                "memory.evicts-queue",
                format!("maxmemory-policy {policy} on a Redis that holds write-behind queues"),
            )
        } else {
            Finding::warning("memory.evicts-queue", format!("maxmemory-policy {policy} on a Redis that holds write-behind queues (inert while maxmemory is 0)"))
        };
        out.push(
            f.why("an allkeys policy evicts any key under memory pressure, the write-behind stream included: acknowledged writes not yet in the database are lost without a trace")
                .fix(shared_fix)
                .data(data.clone()),
        );
    }
    if max > 0 && full && policy != "noeviction" {
        out.push(
            Finding::info(
                "memory.full",
                format!("{} of {} used: Redis is evicting", bytes(used), bytes(max)),
            )
            .why("evictions are expected in a full cache; many of them lower the hit rate")
            .data(data.clone()),
        );
    }
    if let Some(evicted) = number(info, "evicted_keys").filter(|n| *n > 0) {
        out.push(Finding::info(
            "memory.evictions",
            format!("{evicted} keys evicted since the server started ({policy})"),
        ));
    }
    if out.iter().all(|f| f.severity <= super::Severity::Info) {
        out.push(
            Finding::ok(
                "memory",
                format!(
                    "maxmemory {} ({} used), policy {policy}",
                    bytes(max),
                    bytes(used)
                ),
            )
            .data(data),
        );
    }
    out
}

async fn persistence(
    conn: &mut MultiplexedConnection,
    info: &HashMap<String, String>,
    write_behind: bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let aof = info.get("aof_enabled").map(String::as_str) == Some("1");
    let fsync: Option<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendfsync")
        .query_async::<(String, String)>(conn)
        .await
        .ok()
        .map(|(_, v)| v);
    if info.get("aof_last_write_status").is_some_and(|s| s != "ok") {
        out.push(
            Finding::error("persistence.aof-write", "the last AOF write failed")
                .why("Redis refuses writes while it cannot write its AOF (disk full or read-only): fills, invalidations and write-behind fail")
                .fix("free disk space or fix the AOF directory's permissions"),
        );
    }
    if info
        .get("rdb_last_bgsave_status")
        .is_some_and(|s| s != "ok")
    {
        out.push(
            Finding::warning("persistence.rdb", "the last RDB snapshot failed")
                .why("with stop-writes-on-bgsave-error yes (the default) Redis refuses writes until a snapshot succeeds")
                .fix("fix the snapshot's cause (disk, fork memory), or for a cache alone: save \"\""),
        );
    }
    let data = json!({"aof_enabled": aof, "appendfsync": fsync});
    if write_behind {
        if !aof {
            out.push(
                Finding::error("persistence.aof-off", "appendonly is no on a Redis that holds write-behind queues")
                    .why("a write-behind write is acknowledged once it is in the stream; without AOF a Redis restart loses every acknowledged write not yet applied to the database (RDB snapshots lose all since the last one)")
                    .fix("appendonly yes with appendfsync everysec (up to ~1 s of writes at risk) or always (none): CONFIG SET appendonly yes, then CONFIG REWRITE")
                    .data(data),
            );
        } else {
            match fsync.as_deref() {
                Some("always") => out.push(Finding::ok("persistence", "AOF on, appendfsync always: acknowledged writes survive a crash").data(data)),
                Some("everysec") => out.push(
                    Finding::ok("persistence", "AOF on, appendfsync everysec: a crash can lose up to ~1 s of acknowledged writes")
                        .fix("appendfsync always closes that window, at some write latency")
                        .data(data),
                ),
                Some(other) => out.push(
                    Finding::warning("persistence.fsync", format!("AOF on, but appendfsync {other}"))
                        .why("the OS decides when the AOF reaches the disk: a crash of the host can lose many seconds of acknowledged write-behind writes")
                        .fix("appendfsync everysec (or always)")
                        .data(data),
                ),
                None => out.push(
                    Finding::info("persistence", "AOF on; appendfsync unknown (CONFIG GET refused)")
                        .fix("make sure appendfsync is everysec or always")
                        .data(data),
                ),
            }
        }
    } else if aof {
        out.push(
            Finding::ok(
                "persistence",
                format!(
                    "AOF on (appendfsync {})",
                    fsync.as_deref().unwrap_or("unknown")
                ),
            )
            .data(data),
        );
    } else {
        out.push(Finding::ok("persistence", "no AOF: fine for a cache (entries are loaded again after a restart); write-behind queues would need it").data(data));
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

fn replication(info: &HashMap<String, String>, sentinel: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    if info.get("role").map(String::as_str) == Some("slave") {
        out.push(
            Finding::error("replication.replica", "the URL names a replica, not a master")
                .why("a replica refuses writes (READONLY): every fill, lease and invalidation fails and the cache degrades to the loaders")
                .fix("point the cache at the master, or at the Sentinels (redis+sentinel://…/MASTER) to follow failovers"),
        );
        return out;
    }
    let offset = number(info, "master_repl_offset").unwrap_or(0);
    let replicas: Vec<HashMap<String, String>> = (0..number(info, "connected_slaves").unwrap_or(0))
        .filter_map(|i| info.get(&format!("slave{i}")))
        .map(|line| {
            line.split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect();
    if replicas.is_empty() {
        if sentinel {
            out.push(
                Finding::warning("replication", "the master has no connected replica")
                    .why("Sentinel has nothing to promote: when the master fails, the cache runs without Redis until it is back")
                    .fix("check the replicas' master_link_status and their replicaof settings"),
            );
        }
        return out;
    }
    let mut worst = Vec::new();
    for r in &replicas {
        let addr = format!(
            "{}:{}",
            r.get("ip").map_or("?", |s| s),
            r.get("port").map_or("?", |s| s)
        );
        let behind =
            offset.saturating_sub(r.get("offset").and_then(|o| o.parse().ok()).unwrap_or(0));
        let lag: u64 = r.get("lag").and_then(|l| l.parse().ok()).unwrap_or(0);
        let state = r.get("state").cloned().unwrap_or_default();
        if state != "online" || lag > 10 || behind > 1 << 20 {
            worst.push(format!(
                "{addr}: {state}, {} behind, last ack {lag}s ago",
                bytes(behind)
            ));
        }
    }
    if worst.is_empty() {
        out.push(Finding::ok(
            "replication",
            format!("{} replica(s) online and caught up", replicas.len()),
        ));
    } else {
        out.push(
            Finding::warning("replication.lag", format!("replicas behind: {}", worst.join("; ")))
                .why("on a failover the replica becomes master without what it had not received: invalidation stamps and write-behind entries among them (the library replays its last 10 s of invalidations after a failover it follows)")
                .fix("find why the replica falls behind (network, its load, client-output-buffer-limit replica); min-replicas-to-write 1 with min-replicas-max-lag 10 refuses writes when none keeps up"),
        );
    }
    out
}

async fn cluster_state(
    conn: &mut MultiplexedConnection,
    target: &Target,
    write_behind: bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let text: String = match redis::cmd("CLUSTER").arg("INFO").query_async(conn).await {
        Ok(t) => t,
        Err(e) => {
            return vec![Finding::error(
                "cluster",
                format!("CLUSTER INFO failed: {e}"),
            )]
        }
    };
    let info = crate::target::parse_info(&text);
    let state = info.get("cluster_state").cloned().unwrap_or_default();
    let assigned = number(&info, "cluster_slots_assigned").unwrap_or(0);
    let ok = number(&info, "cluster_slots_ok").unwrap_or(0);
    let pfail = number(&info, "cluster_slots_pfail").unwrap_or(0);
    let fail = number(&info, "cluster_slots_fail").unwrap_or(0);
    let data = json!({"cluster_state": state, "slots_assigned": assigned, "slots_ok": ok, "slots_pfail": pfail, "slots_fail": fail});
    if state != "ok" || assigned < 16384 || ok < 16384 {
        out.push(
            Finding::error("cluster.state", format!("cluster_state {state}, {assigned} of 16384 slots assigned, {ok} ok"))
                .why("keys in uncovered or failed slots can be neither read nor written: their entries always miss, their invalidations are deferred")
                .fix("assign every slot (redis-cli --cluster fix) and bring failed masters back or fail them over")
                .data(data),
        );
    } else if pfail + fail > 0 {
        out.push(
            Finding::warning(
                "cluster.state",
                format!("{pfail} slots possibly failing, {fail} failed"),
            )
            .why("a master may be going away; its keys miss until its replica takes over")
            .data(data),
        );
    } else {
        out.push(
            Finding::ok("cluster.state", "cluster_state ok, all 16384 slots covered").data(data),
        );
    }
    let masters = target.masters().count();
    let replicas = target.nodes.len() - masters;
    if replicas < masters {
        out.push(
            Finding::warning("cluster.replicas", format!("{masters} masters, {replicas} replicas"))
                .why("a master without a replica takes its slots with it when it fails: those keys miss until it is back")
                .fix("give every master a replica"),
        );
    }
    if write_behind {
        out.push(
            Finding::error("cluster.write-behind", "write-behind queues on a Redis Cluster")
                .why("the library refuses write-behind on a Cluster: the entry and the stream live in different slots and cannot be written in one script")
                .fix("run the queues on a single node or behind Sentinel"),
        );
    }
    out
}

async fn pubsub(target: &Target, masters: &mut [Master], args: &DoctorArgs) -> Vec<Finding> {
    let mut out = Vec::new();
    let channel = format!(
        "{}:__stratacache:doctor:{}:{}",
        args.namespace.as_deref().unwrap_or("stratacache"),
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let sub_node = masters[0].node.clone();
    let probe = async {
        let client = crate::target::client(&sub_node.url, target.tls.as_ref())?;
        let mut pubsub = tokio::time::timeout(target.timeout, client.get_async_pubsub())
            .await
            .map_err(|_| anyhow::anyhow!("no subscription within {:?}", target.timeout))??;
        pubsub.subscribe(&channel).await?;
        let publisher = masters.last_mut().expect("one master");
        let mut rounds = Vec::new();
        for i in 0..5 {
            let start = Instant::now();
            let _: i64 = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(i)
                .query_async(&mut publisher.conn)
                .await?;
            let message =
                tokio::time::timeout(Duration::from_secs(2), pubsub.on_message().next()).await;
            match message {
                Ok(Some(_)) => rounds.push(start.elapsed()),
                _ => anyhow::bail!(
                    "a message published on {} did not arrive within 2 s",
                    publisher.node.addr
                ),
            }
        }
        anyhow::Ok(rounds)
    };
    match probe.await {
        Ok(mut rounds) => {
            rounds.sort();
            let worst = *rounds.last().expect("five rounds");
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            let what = format!(
                "publish → subscriber round trip: median {:.2} ms, max {:.2} ms",
                ms(rounds[rounds.len() / 2]),
                ms(worst)
            );
            if worst * 2 >= args.redis_timeout {
                out.push(
                    Finding::warning("pubsub", what)
                        .why("invalidations reach other instances' L1 this late; the backplane's heartbeat also fails near redis_timeout, making L1 distrusted")
                        .fix("reduce the latency to Redis (see latency)"),
                );
            } else {
                out.push(Finding::ok("pubsub", what));
            }
        }
        Err(e) => out.push(
            Finding::error("pubsub", format!("pub/sub does not work: {e:#}"))
                .why("the backplane carries invalidations between instances: without it each instance's L1 keeps entries other instances invalidated (served as fresh until the library notices the silent backplane)")
                .fix("allow SUBSCRIBE/PUBLISH (and SSUBSCRIBE/SPUBLISH on a Cluster) for the cache's user (ACL: &* or the namespace's channels); check proxies that drop pub/sub"),
        ),
    }
    if let Some(ns) = &args.namespace {
        if let Ok(bus) = stratacache::inspect::backplane_channel(ns) {
            let (sub, shard) = if target.is_cluster() {
                ("SHARDNUMSUB", true)
            } else {
                ("NUMSUB", false)
            };
            let mut listeners = 0u64;
            for m in masters.iter_mut() {
                let counts: redis::RedisResult<(String, u64)> = redis::cmd("PUBSUB")
                    .arg(sub)
                    .arg(&bus)
                    .query_async(&mut m.conn)
                    .await;
                if let Ok((_, n)) = counts {
                    listeners += n;
                }
                if !shard {
                    break;
                }
            }
            out.push(Finding::info(
                "pubsub.listeners",
                format!(
                    "{listeners} cache instance(s) of namespace {ns:?} subscribed to its backplane"
                ),
            ));
        }
    }
    out
}

/// The Sentinels of the URL: how many answer, and what they say of the master.
async fn sentinel(sentinels: &[String], name: &str, timeout: Duration) -> Finding {
    let mut answering = 0;
    let mut seen: Option<HashMap<String, String>> = None;
    for url in sentinels {
        let asked = async {
            let mut conn = crate::target::connect(url, timeout, None).await?;
            let fields: Vec<String> = redis::cmd("SENTINEL")
                .arg("MASTER")
                .arg(name)
                .query_async(&mut conn)
                .await?;
            anyhow::Ok(
                fields
                    .chunks(2)
                    .filter(|c| c.len() == 2)
                    .map(|c| (c[0].clone(), c[1].clone()))
                    .collect::<HashMap<_, _>>(),
            )
        };
        if let Ok(fields) = asked.await {
            answering += 1;
            seen.get_or_insert(fields);
        }
    }
    let Some(master) = seen else {
        return Finding::error(
            "sentinel",
            "no Sentinel of the URL answers about the master",
        );
    };
    let flags = master.get("flags").cloned().unwrap_or_default();
    let total = master
        .get("num-other-sentinels")
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    let quorum = master.get("quorum").cloned().unwrap_or_default();
    let what = format!(
        "{answering} of {} Sentinels in the URL answer; they know {total}; master {name:?} at {}:{} ({flags}), quorum {quorum}",
        sentinels.len(),
        master.get("ip").map_or("?", |s| s),
        master.get("port").map_or("?", |s| s)
    );
    let data = json!({"answering": answering, "in_url": sentinels.len(), "known": total, "flags": flags, "quorum": quorum});
    if flags.contains("o_down") || flags.contains("s_down") {
        Finding::error("sentinel", what)
            .why("the Sentinels see the master down: writes fail until a replica is promoted")
            .data(data)
    } else if answering < sentinels.len() || total < 3 {
        Finding::warning("sentinel", what)
            .why("a failover needs a majority of the Sentinels, and the cache needs one that answers to find the master when it starts")
            .fix("run at least three Sentinels on separate hosts, and list them all in the URL")
            .data(data)
    } else {
        Finding::ok("sentinel", what).data(data)
    }
}
