//! Where the data lives: replication, Cluster state, Sentinels.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde_json::json;

use super::server::number;
use super::{bytes, Finding};
use crate::target::Target;

pub(super) fn replication(info: &HashMap<String, String>, sentinel: bool) -> Vec<Finding> {
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

pub(super) async fn cluster_state(
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

/// The Sentinels of the URL: how many answer, and what they say of the master.
pub(super) async fn sentinel(sentinels: &[String], name: &str, timeout: Duration) -> Finding {
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
