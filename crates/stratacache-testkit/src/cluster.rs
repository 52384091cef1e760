//! A throwaway 3-master / 3-replica Redis Cluster.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::net;
use crate::process::{poll, tail};
use crate::server::{base_args, RedisServer};

/// Default `cluster-node-timeout` in milliseconds.
pub const DEFAULT_NODE_TIMEOUT_MS: u64 = 2000;
/// Number of nodes: 3 masters + 3 replicas.
pub const CLUSTER_NODES: usize = 6;
const MASTERS: usize = 3;
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
const QUERY_TIMEOUT: Duration = Duration::from_millis(1000);

/// One line of `CLUSTER NODES`, as seen by some node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The 40-character node id.
    pub id: String,
    /// Client port (the address is always 127.0.0.1 here).
    pub port: u16,
    /// Flags such as `myself`, `master`, `slave`, `fail?`, `fail`.
    pub flags: Vec<String>,
    /// Id of the master this node replicates, for replicas.
    pub master_id: Option<String>,
    /// Whether the cluster bus link is `connected`.
    pub connected: bool,
    /// Slot ranges served (inclusive), for masters.
    pub slots: Vec<(u16, u16)>,
}

impl NodeInfo {
    /// Flag `master`, without `fail` (a `fail?` suspicion still counts).
    pub fn is_master(&self) -> bool {
        self.has_flag("master") && !self.has_flag("fail")
    }

    /// Flag `slave`, without `fail`.
    pub fn is_replica(&self) -> bool {
        self.has_flag("slave") && !self.has_flag("fail")
    }

    /// Whether `flag` is among the flags.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// Whether this node serves `slot`.
    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }
}

/// Parses the text of `CLUSTER NODES`.
pub fn parse_cluster_nodes(text: &str) -> Vec<NodeInfo> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            // 127.0.0.1:30001@40001[,hostname]
            let port = f[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|x| (x, x)),
                })
                .collect();
            Some(NodeInfo {
                id: f[0].to_string(),
                port,
                flags: f[2].split(',').map(str::to_string).collect(),
                master_id: (f[3] != "-").then(|| f[3].to_string()),
                connected: f[7] == "connected",
                slots,
            })
        })
        .collect()
}

/// The cluster hash slot of `key` (CRC16/XMODEM mod 16384, honouring
/// `{hash tags}`).
pub fn key_slot(key: &[u8]) -> u16 {
    let mut k = key;
    if let Some(open) = k.iter().position(|&b| b == b'{') {
        if let Some(len) = k[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                k = &k[open + 1..open + 1 + len];
            }
        }
    }
    let mut crc: u16 = 0;
    for &b in k {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// A Redis Cluster of 3 masters and 3 replicas on loopback, each node a
/// [`RedisServer`] with its own directory (so `nodes.conf` survives a
/// [`RedisServer::restart`] and the node rejoins).
///
/// Nodes run with `cluster-replica-validity-factor 0`, so a replica may
/// always take over from a failed master however long its link was idle.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    node_timeout_ms: u64,
}

impl RedisCluster {
    /// Starts a cluster with the default node timeout (2000 ms).
    pub fn start() -> RedisCluster {
        Self::start_with_node_timeout(DEFAULT_NODE_TIMEOUT_MS)
    }

    /// Starts 6 nodes with `cluster-node-timeout ms`, joins them with
    /// `redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`
    /// and waits (up to 60 s) until every node reports `cluster_state:ok`
    /// and every replica is attached. Panics with logs on failure.
    pub fn start_with_node_timeout(ms: u64) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..CLUSTER_NODES)
            .map(|_| {
                let dir = tempfile::Builder::new()
                    .prefix("stratacache-cluster-")
                    .tempdir()
                    .expect("cannot create a temporary directory");
                RedisServer::launch(dir, |port, dir| cluster_args(port, dir, ms))
            })
            .collect();
        let cluster = RedisCluster {
            nodes,
            node_timeout_ms: ms,
        };
        cluster.create();
        if !cluster.wait_ready(CREATE_TIMEOUT) {
            panic!(
                "cluster did not become ready within {CREATE_TIMEOUT:?}\n{}",
                cluster.diagnostics()
            );
        }
        cluster
    }

    fn create(&self) {
        let log_path = self.nodes[0].dir().join("cluster-create.log");
        let log = File::create(&log_path).expect("cannot create cluster-create.log");
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        cmd.args(self.nodes.iter().map(RedisServer::addr));
        cmd.args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("dup log")))
            .stderr(Stdio::from(log));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
        let deadline = Instant::now() + CREATE_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for redis-cli") {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if status.is_none_or(|s| !s.success()) {
            panic!(
                "redis-cli --cluster create failed ({status:?}):\n{}\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default(),
                self.diagnostics()
            );
        }
    }

    /// The `cluster-node-timeout` in milliseconds.
    pub fn node_timeout_ms(&self) -> u64 {
        self.node_timeout_ms
    }

    /// `redis://127.0.0.1:PORT` for every node (masters and replicas).
    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// All six nodes, in start order. Right after start, nodes 0..3 are
    /// the masters (as assigned by `redis-cli --cluster create`); use
    /// [`RedisCluster::master_ports`] for the current roles.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// All six nodes, mutably (to kill, restart, pause ...).
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// The node listening on `port`.
    pub fn node_by_port(&self, port: u16) -> Option<&RedisServer> {
        self.nodes.iter().find(|n| n.port() == port)
    }

    /// The node listening on `port`, mutably.
    pub fn node_by_port_mut(&mut self, port: u16) -> Option<&mut RedisServer> {
        self.nodes.iter_mut().find(|n| n.port() == port)
    }

    fn live(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|n| n.is_alive() && !n.is_paused())
    }

    /// `CLUSTER NODES` as seen by the first live node that answers.
    pub fn cluster_nodes(&self) -> Vec<NodeInfo> {
        self.live()
            .find_map(|n| n.query(&["CLUSTER", "NODES"], QUERY_TIMEOUT).ok())
            .map(|t| parse_cluster_nodes(&t))
            .unwrap_or_default()
    }

    /// Ports of the current masters (not failed, serving slots), sorted, as
    /// reported by `CLUSTER NODES` on the first live node that answers.
    pub fn master_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .cluster_nodes()
            .iter()
            .filter(|n| n.is_master() && !n.slots.is_empty())
            .map(|n| n.port)
            .collect();
        ports.sort_unstable();
        ports
    }

    /// Ports of the current (not failed) replicas, sorted.
    pub fn replica_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .cluster_nodes()
            .iter()
            .filter(|n| n.is_replica())
            .map(|n| n.port)
            .collect();
        ports.sort_unstable();
        ports
    }

    /// Port of the master currently serving `key`'s slot.
    pub fn master_port_for_key(&self, key: &[u8]) -> Option<u16> {
        let slot = key_slot(key);
        self.cluster_nodes()
            .iter()
            .find(|n| n.is_master() && n.serves(slot))
            .map(|n| n.port)
    }

    /// Waits until every live (running, not paused) node reports
    /// `cluster_state:ok`; false on timeout.
    pub fn wait_ok(&self, timeout: Duration) -> bool {
        poll(timeout, || {
            self.live()
                .all(|n| n.info_cluster("cluster_state").as_deref() == Some("ok"))
        })
    }

    /// Waits until the cluster is fully healthy: all six nodes alive and not
    /// paused, each reporting `cluster_state:ok` with 6 known nodes and all
    /// slots assigned, seeing 3 masters with slots and 3 connected replicas,
    /// and every replica's `master_link_status:up`. False on timeout.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        poll(timeout, || self.is_ready())
    }

    fn is_ready(&self) -> bool {
        if self.live().count() != CLUSTER_NODES {
            return false;
        }
        self.nodes.iter().all(|n| {
            let Ok(info) = n.query(&["CLUSTER", "INFO"], QUERY_TIMEOUT) else {
                return false;
            };
            let field = |f| net::info_field(&info, f);
            if field("cluster_state").as_deref() != Some("ok")
                || field("cluster_known_nodes").as_deref() != Some("6")
                || field("cluster_slots_assigned").as_deref() != Some("16384")
            {
                return false;
            }
            let Ok(text) = n.query(&["CLUSTER", "NODES"], QUERY_TIMEOUT) else {
                return false;
            };
            let view = parse_cluster_nodes(&text);
            let masters = view
                .iter()
                .filter(|v| v.is_master() && !v.slots.is_empty() && !v.has_flag("fail?"))
                .count();
            let replicas = view
                .iter()
                .filter(|v| v.is_replica() && !v.has_flag("fail?") && v.master_id.is_some())
                .count();
            let all_connected = view.iter().all(|v| v.has_flag("myself") || v.connected);
            let me_replica = view
                .iter()
                .any(|v| v.has_flag("myself") && v.has_flag("slave"));
            masters == MASTERS
                && replicas == CLUSTER_NODES - MASTERS
                && all_connected
                && (!me_replica
                    || n.info_field("replication", "master_link_status").as_deref() == Some("up"))
        })
    }

    /// A human-readable dump of every node's state and log tail, for panic
    /// messages.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out.push_str(&format!(
                "--- node {} (alive {}, paused {}) ---\n",
                n.port(),
                n.is_alive(),
                n.is_paused()
            ));
            if n.is_alive() && !n.is_paused() {
                if let Ok(t) = n.query(&["CLUSTER", "NODES"], QUERY_TIMEOUT) {
                    out.push_str(&t);
                    out.push('\n');
                }
            }
            out.push_str(&tail(&n.log(), 15));
        }
        out
    }
}

impl RedisServer {
    fn info_cluster(&self, field: &str) -> Option<String> {
        let info = self.query(&["CLUSTER", "INFO"], QUERY_TIMEOUT).ok()?;
        net::info_field(&info, field)
    }
}

fn cluster_args(port: u16, dir: &Path, node_timeout_ms: u64) -> Vec<String> {
    let mut args = base_args(port, dir);
    for (k, v) in [
        ("--cluster-enabled", "yes".to_string()),
        ("--cluster-config-file", "nodes.conf".to_string()),
        ("--cluster-node-timeout", node_timeout_ms.to_string()),
        ("--cluster-replica-validity-factor", "0".to_string()),
    ] {
        args.push(k.to_string());
        args.push(v);
    }
    args
}

/// The cluster shared by every test in this process: started on first use
/// and torn down when the process exits (an `atexit` handler kills the
/// nodes and removes their directories; if the process is killed instead,
/// the nodes die with it through their parent-death signal).
///
/// Tests sharing it must not kill, pause or reconfigure its nodes (it is
/// only reachable through `&`); start a private [`RedisCluster`] for that.
pub fn shared_cluster() -> &'static RedisCluster {
    static SHARED: OnceLock<RedisCluster> = OnceLock::new();
    SHARED.get_or_init(RedisCluster::start)
}
