//! A throwaway Sentinel setup: 1 master, 1 replica, 3 sentinels.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use crate::net::{self, Reply};
use crate::process::{poll, tail};
use crate::server::RedisServer;

/// The monitored master's name.
pub const MASTER_NAME: &str = "stratamaster";
/// Sentinel quorum.
pub const QUORUM: u32 = 2;
/// `sentinel down-after-milliseconds`.
pub const DOWN_AFTER_MS: u64 = 1000;
/// `sentinel failover-timeout`.
pub const FAILOVER_TIMEOUT_MS: u64 = 3000;
const SENTINELS: usize = 3;
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const QUERY_TIMEOUT: Duration = Duration::from_millis(1000);

/// One master, one replica and three sentinels (quorum 2,
/// `down-after-milliseconds 1000`, `failover-timeout 3000`) monitoring it
/// under the name `stratamaster`, all on loopback.
///
/// The two data nodes keep their identity across failovers: use
/// [`RedisSentinelGroup::master_mut`] / [`RedisSentinelGroup::replica_mut`]
/// to get whichever currently has that role.
#[derive(Debug)]
pub struct RedisSentinelGroup {
    data: Vec<RedisServer>,
    sentinels: Vec<RedisServer>,
}

impl RedisSentinelGroup {
    /// Starts the master, the replica (waits until its link is up), then
    /// the three sentinels, and waits until every sentinel sees the master,
    /// the replica and the two other sentinels. Panics with logs on failure.
    pub fn start() -> RedisSentinelGroup {
        let master = RedisServer::start();
        let mport = master.port().to_string();
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &mport]);
        let linked = poll(READY_TIMEOUT, || {
            replica
                .info_field("replication", "master_link_status")
                .as_deref()
                == Some("up")
        });
        assert!(
            linked,
            "replica never linked to master:\n{}",
            tail(&replica.log(), 30)
        );
        let master_port = master.port();
        let sentinels = (0..SENTINELS)
            .map(|_| {
                let dir = tempfile::Builder::new()
                    .prefix("stratacache-sentinel-")
                    .tempdir()
                    .expect("cannot create a temporary directory");
                RedisServer::launch(dir, |port, dir| sentinel_args(port, dir, master_port))
            })
            .collect();
        let group = RedisSentinelGroup {
            data: vec![master, replica],
            sentinels,
        };
        if !poll(READY_TIMEOUT, || {
            group.sentinels_ready(master_port, None, true)
        }) {
            panic!(
                "sentinels did not see master + replica + peers within {READY_TIMEOUT:?}\n{}",
                group.diagnostics()
            );
        }
        group
    }

    /// `stratamaster`.
    pub fn master_name(&self) -> &str {
        MASTER_NAME
    }

    /// `("127.0.0.1", port)` for each sentinel.
    pub fn sentinel_addrs(&self) -> Vec<(String, u16)> {
        self.sentinels
            .iter()
            .map(|s| ("127.0.0.1".to_string(), s.port()))
            .collect()
    }

    /// `redis://127.0.0.1:PORT` for each sentinel.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(RedisServer::url).collect()
    }

    /// The master's port according to the first sentinel that answers
    /// `SENTINEL get-master-addr-by-name`. Panics if none answers.
    pub fn current_master_port(&self) -> u16 {
        self.sentinels
            .iter()
            .filter(|s| s.is_alive() && !s.is_paused())
            .find_map(master_addr)
            .unwrap_or_else(|| panic!("no sentinel knows the master\n{}", self.diagnostics()))
    }

    /// Both data nodes (initially: master first, replica second).
    pub fn data_nodes(&self) -> &[RedisServer] {
        &self.data
    }

    /// Both data nodes, mutably.
    pub fn data_nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.data
    }

    /// The three sentinel processes.
    pub fn sentinels(&self) -> &[RedisServer] {
        &self.sentinels
    }

    /// The three sentinel processes, mutably.
    pub fn sentinels_mut(&mut self) -> &mut [RedisServer] {
        &mut self.sentinels
    }

    /// The data node the sentinels currently name as master.
    pub fn master(&self) -> &RedisServer {
        let port = self.current_master_port();
        self.data
            .iter()
            .find(|n| n.port() == port)
            .expect("sentinels name an unknown master")
    }

    /// The data node the sentinels currently name as master, mutably.
    pub fn master_mut(&mut self) -> &mut RedisServer {
        let port = self.current_master_port();
        self.data
            .iter_mut()
            .find(|n| n.port() == port)
            .expect("sentinels name an unknown master")
    }

    /// The data node that is not the current master.
    pub fn replica(&self) -> &RedisServer {
        let port = self.current_master_port();
        self.data
            .iter()
            .find(|n| n.port() != port)
            .expect("no replica")
    }

    /// The data node that is not the current master, mutably.
    pub fn replica_mut(&mut self) -> &mut RedisServer {
        let port = self.current_master_port();
        self.data
            .iter_mut()
            .find(|n| n.port() != port)
            .expect("no replica")
    }

    /// Runs `SENTINEL FAILOVER stratamaster` (retrying while the sentinels
    /// have no suitable replica yet), then waits until every live sentinel
    /// names the other node as master and that node answers `ROLE` master.
    ///
    /// If the old master still runs, it is then pointed at the new master
    /// right away (`REPLICAOF`, the same command the sentinels send it, but
    /// they only do so after their next 10 s `INFO` round), and the call
    /// waits until its replication link is up and every sentinel lists it
    /// as a replica, so that another failover can follow at once.
    /// Panics after 60 s per step.
    pub fn failover(&self) {
        let old = self.current_master_port();
        let mut last = None;
        let requested = poll(READY_TIMEOUT, || {
            let reply = self
                .sentinels
                .iter()
                .filter(|s| s.is_alive() && !s.is_paused())
                .find_map(|s| {
                    net::call(
                        s.port(),
                        &["SENTINEL", "FAILOVER", MASTER_NAME],
                        QUERY_TIMEOUT,
                    )
                    .ok()
                });
            let done = matches!(&reply, Some(Reply::Status(_)))
                || reply.as_ref().is_some_and(|r| r.is_error_with("INPROG"));
            last = reply;
            done
        });
        assert!(
            requested,
            "SENTINEL FAILOVER kept failing (last reply {last:?})\n{}",
            self.diagnostics()
        );
        let Some(new) = self.wait_for_master_change(old, READY_TIMEOUT) else {
            panic!(
                "failover from port {old} did not complete within {READY_TIMEOUT:?}\n{}",
                self.diagnostics()
            );
        };
        let old_alive = self
            .data
            .iter()
            .any(|n| n.port() == old && n.is_alive() && !n.is_paused());
        if !old_alive {
            return;
        }
        let new_port = new.to_string();
        let _ = net::call(old, &["REPLICAOF", "127.0.0.1", &new_port], QUERY_TIMEOUT);
        if !poll(READY_TIMEOUT, || {
            self.sentinels_ready(new, Some(old), false)
        }) {
            panic!(
                "after failover to {new}, the old master {old} did not rejoin as replica\n{}",
                self.diagnostics()
            );
        }
    }

    /// Waits until every live sentinel names a master other than
    /// `old_port` (all the same one) and that node answers `ROLE` master.
    /// Returns the new master's port, or `None` on timeout. Use after
    /// killing or pausing the master to wait for an automatic failover.
    pub fn wait_for_master_change(&self, old_port: u16, timeout: Duration) -> Option<u16> {
        let mut new = None;
        let changed = poll(timeout, || {
            let views: Vec<Option<u16>> = self
                .sentinels
                .iter()
                .filter(|s| s.is_alive() && !s.is_paused())
                .map(master_addr)
                .collect();
            let Some(Some(first)) = views.first().copied() else {
                return false;
            };
            if first == old_port || views.iter().any(|v| *v != Some(first)) {
                return false;
            }
            new = Some(first);
            net::call_text(first, &["ROLE"], QUERY_TIMEOUT)
                .is_ok_and(|r| r.lines().next() == Some("master"))
        });
        if changed {
            new
        } else {
            None
        }
    }

    /// Whether every live sentinel names `master` as master (flags exactly
    /// `master`), knows the two other sentinels, and lists `replica` (by
    /// default the other data node) as a replica with flags exactly `slave`
    /// (and, if `link_ok`, with `master-link-status ok` in its last `INFO`),
    /// and that node reports `master_link_status:up` to the right master.
    fn sentinels_ready(&self, master: u16, replica: Option<u16>, link_ok: bool) -> bool {
        let replica = replica.or_else(|| {
            self.data
                .iter()
                .find(|n| n.port() != master)
                .map(RedisServer::port)
        });
        if let Some(port) = replica {
            let up = net::call_text(port, &["INFO", "replication"], QUERY_TIMEOUT).is_ok_and(|i| {
                net::info_field(&i, "master_link_status").as_deref() == Some("up")
                    && net::info_field(&i, "master_port") == Some(master.to_string())
            });
            if !up {
                return false;
            }
        }
        let live: Vec<&RedisServer> = self
            .sentinels
            .iter()
            .filter(|s| s.is_alive() && !s.is_paused())
            .collect();
        !live.is_empty()
            && live.iter().all(|s| {
                let Ok(m) = net::call(
                    s.port(),
                    &["SENTINEL", "MASTER", MASTER_NAME],
                    QUERY_TIMEOUT,
                ) else {
                    return false;
                };
                let m = pairs(&m);
                let field = |k: &str| m.get(k).map(String::as_str);
                let others_ok = field("num-other-sentinels")
                    .and_then(|v| v.parse::<usize>().ok())
                    .is_some_and(|n| n + 1 >= live.len().max(SENTINELS - 1));
                let master_ok = field("port") == Some(master.to_string().as_str())
                    && field("flags") == Some("master");
                let replica_ok = match replica {
                    None => true,
                    Some(port) => net::call(
                        s.port(),
                        &["SENTINEL", "REPLICAS", MASTER_NAME],
                        QUERY_TIMEOUT,
                    )
                    .is_ok_and(|r| match r {
                        Reply::Array(Some(items)) => items.iter().map(pairs).any(|r| {
                            r.get("port") == Some(&port.to_string())
                                && r.get("flags").map(String::as_str) == Some("slave")
                                && (!link_ok
                                    || r.get("master-link-status").map(String::as_str)
                                        == Some("ok"))
                        }),
                        _ => false,
                    }),
                };
                others_ok && master_ok && replica_ok
            })
    }

    /// A human-readable dump of every process's state and log tail, for
    /// panic messages.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for (kind, n) in self
            .data
            .iter()
            .map(|n| ("data", n))
            .chain(self.sentinels.iter().map(|n| ("sentinel", n)))
        {
            out.push_str(&format!(
                "--- {kind} {} (alive {}, paused {}, role {:?}) ---\n",
                n.port(),
                n.is_alive(),
                n.is_paused(),
                n.role(QUERY_TIMEOUT)
            ));
            out.push_str(&tail(&n.log(), 20));
        }
        out
    }
}

/// `SENTINEL get-master-addr-by-name` on one sentinel.
fn master_addr(sentinel: &RedisServer) -> Option<u16> {
    let reply = net::call(
        sentinel.port(),
        &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
        QUERY_TIMEOUT,
    )
    .ok()?;
    match reply {
        Reply::Array(Some(items)) if items.len() == 2 => items[1].to_text().parse().ok(),
        _ => None,
    }
}

/// A flat `[key, value, key, value ...]` reply as a map.
fn pairs(reply: &Reply) -> HashMap<String, String> {
    match reply {
        Reply::Array(Some(items)) => items
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].to_text(), c[1].to_text()))
            .collect(),
        _ => HashMap::new(),
    }
}

/// Writes `sentinel.conf` into `dir` and returns the arguments to run it.
fn sentinel_args(port: u16, dir: &Path, master_port: u16) -> Vec<String> {
    let conf = dir.join("sentinel.conf");
    let text = format!(
        "port {port}\n\
         bind 127.0.0.1\n\
         daemonize no\n\
         dir \"{dir}\"\n\
         sentinel resolve-hostnames no\n\
         sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {QUORUM}\n\
         sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n\
         sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n\
         sentinel parallel-syncs {MASTER_NAME} 1\n",
        dir = dir.display()
    );
    std::fs::write(&conf, text).expect("cannot write sentinel.conf");
    vec![
        conf.to_string_lossy().into_owned(),
        "--sentinel".to_string(),
    ]
}
