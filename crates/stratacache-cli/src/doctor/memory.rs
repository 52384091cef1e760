//! Memory and eviction, persistence: what survives when Redis is full or
//! restarts, judged for a cache and for write-behind queues.

use std::collections::HashMap;

use redis::aio::MultiplexedConnection;
use serde_json::json;

use super::server::number;
use super::{bytes, Finding, Severity};

pub(super) fn memory(info: &HashMap<String, String>, write_behind: bool) -> Vec<Finding> {
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
    if out.iter().all(|f| f.severity <= Severity::Info) {
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

pub(super) async fn persistence(
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
