//! The backplane on a Cluster: how an invalidation reaches other instances,
//! three ways, on one throwaway Redis Cluster (3 masters, 3 replicas) in the
//! same run.
//!
//! * **pub/sub**: `PUBLISH` through the cluster connection; the subscriber
//!   listens on one node (any node: a Cluster forwards every PUBLISH to all
//!   of them over the cluster bus).
//! * **sharded pub/sub**: `SPUBLISH`; the subscriber listens (`SSUBSCRIBE`,
//!   RESP3) on the master that owns the channel's slot, and the message
//!   travels to that shard's replicas only.
//! * **client tracking**: `CLIENT TRACKING ON BCAST PREFIX <ns>:` on a RESP3
//!   connection to *every* master (a key lives on one of them); the writer
//!   `SET`s a random key under the prefix and the subscriber waits for the
//!   server's `invalidate` push.
//!
//! Each side sends `--messages` invalidations one at a time and times each
//! from just before the command is sent to its arrival at the subscriber
//! (the propagation latency). Cost is read from the servers: the cluster-bus
//! messages each invalidation caused (`cluster_stats_messages_publish*_sent`
//! summed over every node, `CLUSTER INFO`), and the connections one instance
//! needs.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value as RedisValue};
use serde_json::{json, Value};
use stratacache_testkit::RedisCluster;
use tokio::sync::mpsc;

use crate::report::{latency_histogram, latency_json, ratio, unique_namespace, Rng};
use crate::{progress, BackplaneArgs};

const RECEIVE_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn run(args: &BackplaneArgs) -> Result<Value> {
    progress!("backplane: starting a throwaway Redis Cluster (3 masters, 3 replicas)");
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await?;
    let client = redis::cluster::ClusterClient::new(cluster.seed_urls())?;
    let mut writer = client
        .get_async_connection()
        .await
        .context("connecting to the cluster")?;
    let ns = unique_namespace("backplane");
    let channel = format!("{ns}:bus");

    // Pub/sub: any node hears every PUBLISH.
    let (tx, mut publish_rx) = mpsc::unbounded_channel();
    let _publish_sub = subscribe(&cluster.nodes()[0].url(), "SUBSCRIBE", &channel, tx).await?;
    // Sharded pub/sub: the master owning the channel's slot.
    let owner = cluster
        .master_port_for_key(channel.as_bytes())
        .context("no master owns the channel's slot")?;
    let (tx, mut sharded_rx) = mpsc::unbounded_channel();
    let _sharded_sub = subscribe(
        &format!("redis://127.0.0.1:{owner}"),
        "SSUBSCRIBE",
        &channel,
        tx,
    )
    .await?;
    // Client tracking: every master, since a key lives on one of them.
    let (tx, mut tracking_rx) = mpsc::unbounded_channel();
    let mut trackers = Vec::new();
    for port in cluster.master_ports() {
        let url = format!("redis://127.0.0.1:{port}/?protocol=resp3");
        let config = AsyncConnectionConfig::new().set_push_sender(tx.clone());
        let mut conn = redis::Client::open(url)?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .arg("BCAST")
            .arg("PREFIX")
            .arg(format!("{ns}:k:"))
            .query_async::<()>(&mut conn)
            .await
            .context("CLIENT TRACKING")?;
        trackers.push(conn);
    }
    let mut rng = Rng::new(7);
    let keys: Vec<String> = (0..args.messages)
        .map(|_| format!("{ns}:k:{}", rng.below(100_000)))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Interleaved rounds, so that a noisy moment hits every side alike.
    let per_round = (args.messages / args.rounds.max(1) as u64).max(1);
    let mut sides = [Side::new(), Side::new(), Side::new()];
    for round in 0..args.rounds.max(1) {
        progress!("backplane: round {} of {}", round + 1, args.rounds.max(1));
        let first = round as u64 * per_round;
        sides[0]
            .measure(
                &cluster,
                first,
                per_round,
                &mut publish_rx,
                PushKind::Message,
                &mut writer,
                |i| redis::cmd("PUBLISH").arg(&channel).arg(i).to_owned(),
            )
            .await?;
        sides[1]
            .measure(
                &cluster,
                first,
                per_round,
                &mut sharded_rx,
                PushKind::SMessage,
                &mut writer,
                |i| redis::cmd("SPUBLISH").arg(&channel).arg(i).to_owned(),
            )
            .await?;
        sides[2]
            .measure(
                &cluster,
                first,
                per_round,
                &mut tracking_rx,
                PushKind::Invalidate,
                &mut writer,
                |i| {
                    let key = &keys[i as usize % keys.len()];
                    redis::cmd("SET")
                        .arg(key)
                        .arg(i)
                        .arg("EX")
                        .arg(60)
                        .to_owned()
                },
            )
            .await?;
    }
    drop(trackers);
    let [publish, sharded, tracking] = sides;
    let masters = cluster.master_ports().len();
    Ok(json!({
        "scenario": "backplane",
        "messages_per_side": per_round * args.rounds.max(1) as u64,
        "rounds": args.rounds,
        "cluster": { "masters": masters, "replicas": cluster.nodes().len() - masters },
        "pubsub": publish.report(1),
        "sharded_pubsub": sharded.report(1),
        "client_tracking": tracking.report(masters),
        "ratios": {
            "bus_messages_pubsub_over_sharded": ratio(publish.bus_per_message(), sharded.bus_per_message()),
            "p50_pubsub_over_sharded": ratio(publish.quantile_us(0.5), sharded.quantile_us(0.5)),
            "p99_pubsub_over_sharded": ratio(publish.quantile_us(0.99), sharded.quantile_us(0.99)),
            "p50_tracking_over_sharded": ratio(tracking.quantile_us(0.5), sharded.quantile_us(0.5)),
        },
    }))
}

/// One way of delivering invalidations: its latencies and cluster-bus cost,
/// pooled over the rounds.
struct Side {
    histogram: hdrhistogram::Histogram<u64>,
    bus_messages: i64,
    sent: u64,
}

impl Side {
    fn new() -> Self {
        Self {
            histogram: latency_histogram(),
            bus_messages: 0,
            sent: 0,
        }
    }

    fn bus_per_message(&self) -> f64 {
        (self.bus_messages as f64 / self.sent.max(1) as f64 * 100.0).round() / 100.0
    }

    fn quantile_us(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1_000.0
    }

    fn report(&self, connections: usize) -> Value {
        json!({
            "latency": latency_json(&self.histogram),
            "cluster_bus_messages_per_invalidation": self.bus_per_message(),
            "subscriber_connections_per_instance": connections,
        })
    }

    /// Send `n` commands one at a time; time each until a push of `kind` arrives.
    #[allow(clippy::too_many_arguments)]
    async fn measure(
        &mut self,
        cluster: &RedisCluster,
        first: u64,
        n: u64,
        rx: &mut mpsc::UnboundedReceiver<PushInfo>,
        kind: PushKind,
        writer: &mut ClusterConnection,
        command: impl Fn(u64) -> redis::Cmd,
    ) -> Result<()> {
        while rx.try_recv().is_ok() {}
        let before = bus_messages(cluster);
        for i in first..first + n {
            let sent = Instant::now();
            command(i).query_async::<RedisValue>(writer).await?;
            loop {
                let push = tokio::time::timeout(RECEIVE_TIMEOUT, rx.recv())
                    .await
                    .with_context(|| {
                        format!("message {i} not delivered within {RECEIVE_TIMEOUT:?}")
                    })?
                    .context("subscriber connection closed")?;
                if push.kind == kind {
                    break;
                }
                if push.kind == PushKind::Disconnection {
                    bail!("subscriber disconnected");
                }
            }
            self.histogram.record(sent.elapsed().as_nanos() as u64)?;
        }
        self.bus_messages += bus_messages(cluster) - before;
        self.sent += n;
        Ok(())
    }
}

/// A RESP3 connection subscribed (`SUBSCRIBE` or `SSUBSCRIBE`) to `channel`,
/// its pushes sent to `tx`.
async fn subscribe(
    url: &str,
    verb: &str,
    channel: &str,
    tx: mpsc::UnboundedSender<PushInfo>,
) -> Result<redis::aio::MultiplexedConnection> {
    let url = format!("{url}/?protocol=resp3");
    let config = AsyncConnectionConfig::new().set_push_sender(tx);
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    redis::cmd(verb)
        .arg(channel)
        .query_async::<()>(&mut conn)
        .await
        .with_context(|| format!("{verb} {channel}"))?;
    Ok(conn)
}

/// Pub/sub messages sent over the cluster bus so far, summed over every node.
fn bus_messages(cluster: &RedisCluster) -> i64 {
    cluster
        .nodes()
        .iter()
        .map(|node| {
            node.cli(&["CLUSTER", "INFO"])
                .lines()
                .filter(|l| {
                    l.starts_with("cluster_stats_messages_publish_sent:")
                        || l.starts_with("cluster_stats_messages_publishshard_sent:")
                })
                .filter_map(|l| l.split(':').nth(1)?.trim().parse::<i64>().ok())
                .sum::<i64>()
        })
        .sum()
}
