//! Pub/sub, the backplane's transport: a timed round trip between two
//! connections, and how many instances listen on the namespace's channel.

use std::time::{Duration, Instant};

use futures::StreamExt;

use super::server::Master;
use super::{DoctorArgs, Finding};
use crate::target::Target;

pub(super) async fn pubsub(
    target: &Target,
    masters: &mut [Master],
    args: &DoctorArgs,
) -> Vec<Finding> {
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
