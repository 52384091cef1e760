//! Tag invalidation: stratacache's lazily checked per-tag timestamp against
//! the per-tag Redis set the seed articles use, on the same server(s) in the
//! same run.
//!
//! * **stratacache**: `--entries` entries written with
//!   `cache.set_many(.., &EntryOptions::new().ttl(600 s).tags(["t"]))` in
//!   chunks of 2,000, then `cache.invalidate_tag("t")` (one SET of the tag's
//!   timestamp, one PUBLISH). Checked afterwards: a fresh `Cache` on the same
//!   namespace reads 1,000 of the keys and must get `None` for every one.
//! * **tag set**: for every entry `SET key value EX 600` + `SADD tag:t key`
//!   (pipelined, same chunks); invalidation is `SMEMBERS tag:t`, `UNLINK` of
//!   the members in batches of 1,000 and `DEL tag:t`. On a Cluster the members
//!   live in many hash slots, so the UNLINKs are split per slot.
//!
//! Commands are counted on the server: `CONFIG RESETSTAT` before the
//! invalidation, `INFO commandstats` after it, summed over every node
//! (`commands`) and over the masters only (`commands_masters`: what the
//! client sent; replicas execute replicated writes again).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{Cmd, FromRedisValue, Pipeline};
use serde_json::{json, Value};
use stratacache::{Cache, EntryOptions, RedisTopology};
use stratacache_testkit::RedisCluster;

use crate::report::{
    bare_connection, item_key, ratio, round, stored_key, unique_namespace, Product, SAFETY_TTL_SECS,
};
use crate::{progress, InvalidateTagArgs};

/// The tag every entry carries.
const TAG: &str = "t";
/// Entries per `set_many` call, and per pipeline of the tag-set side.
const WRITE_CHUNK: usize = 2_000;
/// Members per `UNLINK` of the tag-set side (and keys per clean-up `DEL`).
const UNLINK_BATCH: usize = 1_000;
/// Keys read back after each invalidation.
const VERIFY_SAMPLE: u64 = 1_000;
/// Keys read before the invalidation, to show the check is not vacuous.
const PRECHECK_SAMPLE: u64 = 100;
/// Commands of the measurement itself (and replication), not of either side;
/// subcommands (`config|resetstat`) are matched by their command.
const NOT_COUNTED: &[&str] = &["config", "info", "replconf", "ping"];

/// A connection to the server under test: one node or a Cluster.
#[derive(Clone)]
enum Target {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Target {
    async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> Result<T> {
        Ok(match self {
            Target::Single(conn) => cmd.query_async(conn).await?,
            Target::Cluster(conn) => cmd.query_async(conn).await?,
        })
    }

    /// Send `cmds` (each with the key that routes it), replies ignored but
    /// errors not: on one node as one pipeline; on a Cluster as one pipeline
    /// per hash slot (a Cluster pipeline may not cross slots), all in flight
    /// at once.
    async fn send_all(&mut self, cmds: Vec<(String, Cmd)>) -> Result<()> {
        match self {
            Target::Single(conn) => {
                let mut pipe = Pipeline::with_capacity(cmds.len());
                for (_, cmd) in cmds {
                    pipe.add_command(cmd);
                }
                pipe.query_async::<()>(conn).await?;
            }
            Target::Cluster(conn) => {
                let mut by_slot: HashMap<Slot, Pipeline> = HashMap::new();
                for (key, cmd) in cmds {
                    by_slot
                        .entry(Slot::for_key(key.as_bytes()))
                        .or_default()
                        .add_command(cmd);
                }
                let sends = by_slot.into_values().map(|pipe| {
                    let mut conn = conn.clone();
                    async move { pipe.query_async::<()>(&mut conn).await }
                });
                futures::future::try_join_all(sends).await?;
            }
        }
        Ok(())
    }

    /// `UNLINK` (or `DEL`) `keys` in batches of at most [`UNLINK_BATCH`]; on
    /// a Cluster, every batch holds keys of one hash slot only.
    async fn remove(&mut self, verb: &str, keys: &[String]) -> Result<usize> {
        let batches: Vec<Vec<&String>> = match self {
            Target::Single(_) => keys
                .chunks(UNLINK_BATCH)
                .map(|c| c.iter().collect())
                .collect(),
            Target::Cluster(_) => {
                let mut by_slot: HashMap<Slot, Vec<&String>> = HashMap::new();
                for key in keys {
                    by_slot
                        .entry(Slot::for_key(key.as_bytes()))
                        .or_default()
                        .push(key);
                }
                by_slot
                    .into_values()
                    .flat_map(|ks| {
                        ks.chunks(UNLINK_BATCH)
                            .map(<[&String]>::to_vec)
                            .collect::<Vec<_>>()
                    })
                    .collect()
            }
        };
        let commands = batches.len();
        let cmds = batches
            .into_iter()
            .map(|batch| {
                let mut cmd = redis::cmd(verb);
                cmd.arg(&batch);
                (batch[0].clone(), cmd)
            })
            .collect();
        self.send_all(cmds).await?;
        Ok(commands)
    }

    /// `MEMORY USAGE key SAMPLES 0`: every element counted, not estimated.
    async fn memory_usage(&mut self, key: &str) -> Result<u64> {
        let bytes: Option<u64> = self
            .query(
                redis::cmd("MEMORY")
                    .arg("USAGE")
                    .arg(key)
                    .arg("SAMPLES")
                    .arg(0),
            )
            .await
            .with_context(|| format!("MEMORY USAGE {key}"))?;
        bytes.with_context(|| format!("{key} does not exist"))
    }
}

/// A node's own connection, for `CONFIG RESETSTAT` / `INFO commandstats`.
struct Node {
    url: String,
    conn: MultiplexedConnection,
    master: bool,
}

/// Every node of the server under test.
struct Nodes(Vec<Node>);

/// Commands the server(s) executed between [`Nodes::reset`] and [`Nodes::count`].
struct Commands {
    /// Summed over every node. A replica executes again every write its
    /// master replicates to it, so on a Cluster writes count twice here.
    total: u64,
    /// Summed over the masters only: what the client sent.
    masters: u64,
    /// Per command name, summed over every node.
    by_command: BTreeMap<String, u64>,
    /// Per node (`<url> master|replica`), its total.
    by_node: BTreeMap<String, u64>,
}

impl Commands {
    fn json(&self) -> Value {
        json!({
            "total": self.total,
            "masters": self.masters,
            "by_command": self.by_command,
            "by_node": self.by_node,
        })
    }
}

impl Nodes {
    async fn connect(urls: &[String]) -> Result<Self> {
        let mut nodes = Vec::with_capacity(urls.len());
        for url in urls {
            let mut conn = bare_connection(url).await?;
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut conn)
                .await
                .with_context(|| format!("INFO replication on {url}"))?;
            let master = info.lines().any(|l| l.trim() == "role:master");
            nodes.push(Node {
                url: url.clone(),
                conn,
                master,
            });
        }
        Ok(Self(nodes))
    }

    async fn reset(&mut self) -> Result<()> {
        for node in &mut self.0 {
            redis::cmd("CONFIG")
                .arg("RESETSTAT")
                .query_async::<()>(&mut node.conn)
                .await
                .with_context(|| format!("CONFIG RESETSTAT on {}", node.url))?;
        }
        Ok(())
    }

    async fn count(&mut self) -> Result<Commands> {
        let mut out = Commands {
            total: 0,
            masters: 0,
            by_command: BTreeMap::new(),
            by_node: BTreeMap::new(),
        };
        for node in &mut self.0 {
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .query_async(&mut node.conn)
                .await
                .with_context(|| format!("INFO commandstats on {}", node.url))?;
            let mut node_total = 0;
            for (name, calls) in parse_commandstats(&info) {
                let base = name.split('|').next().unwrap_or_default();
                if NOT_COUNTED.contains(&base) {
                    continue;
                }
                node_total += calls;
                *out.by_command.entry(name).or_default() += calls;
            }
            out.total += node_total;
            if node.master {
                out.masters += node_total;
            }
            let role = if node.master { "master" } else { "replica" };
            out.by_node
                .insert(format!("{} {role}", node.url), node_total);
        }
        Ok(out)
    }
}

/// `cmdstat_<name>:calls=<n>,…` lines of `INFO commandstats`.
fn parse_commandstats(info: &str) -> Vec<(String, u64)> {
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split(',')
                .find_map(|field| field.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// One approach's figures.
struct Side {
    write_secs: f64,
    invalidate_ms: f64,
    commands: Commands,
    extra_memory_bytes: u64,
    details: Value,
}

impl Side {
    fn json(&self) -> Value {
        json!({
            "invalidate_ms": round(self.invalidate_ms, 3),
            "commands": self.commands.total,
            "commands_masters": self.commands.masters,
            "write_secs": round(self.write_secs, 3),
            "extra_memory_bytes": self.extra_memory_bytes,
            "commands_detail": self.commands.json(),
            "details": self.details,
        })
    }
}

pub async fn run(url: &str, args: &InvalidateTagArgs) -> Result<Value> {
    ensure!(args.entries > 0, "--entries must be at least 1");
    let cluster = if args.cluster {
        progress!("invalidate-tag: starting a throwaway Redis Cluster (3 masters, 3 replicas)");
        Some(tokio::task::spawn_blocking(RedisCluster::start).await?)
    } else {
        None
    };
    let (topology, node_urls, target) = match &cluster {
        Some(c) => {
            let seeds = c.seed_urls();
            let client = redis::cluster::ClusterClient::new(seeds.clone())?;
            let conn = client
                .get_async_connection()
                .await
                .context("connecting to the cluster")?;
            (
                RedisTopology::Cluster(seeds.clone()),
                seeds,
                Target::Cluster(conn),
            )
        }
        None => (
            RedisTopology::Single(url.to_string()),
            vec![url.to_string()],
            Target::Single(bare_connection(url).await?),
        ),
    };
    let mut nodes = Nodes::connect(&node_urls).await?;
    let ns = unique_namespace("invalidate-tag");
    progress!(
        "invalidate-tag: namespace {ns} on {}; {} entries tagged \"{TAG}\"",
        node_urls.join(","),
        args.entries
    );

    let ours = stratacache_side(&topology, target.clone(), &mut nodes, &ns, args.entries).await;
    let set = tag_set_side(target.clone(), &mut nodes, &ns, args.entries).await;
    if let Some(c) = cluster {
        drop(target);
        tokio::task::spawn_blocking(move || drop(c)).await?;
    }
    let (ours, set) = (ours?, set?);

    let ok = ours.details["verify"]["non_none"] == 0
        && ours.details["verify"]["errors"] == 0
        && set.details["verify"]["still_existing"] == 0;
    progress!(
        "invalidate-tag: invalidate {:.3} ms / {} commands (stratacache) vs {:.1} ms / {} commands (tag set); {}",
        ours.invalidate_ms,
        ours.commands.total,
        set.invalidate_ms,
        set.commands.total,
        if ok { "both verified" } else { "VERIFICATION FAILED" }
    );
    Ok(json!({
        "scenario": "invalidate-tag",
        "topology": if args.cluster { "cluster" } else { "single" },
        "nodes": node_urls.len(),
        "entries": args.entries,
        "stratacache": ours.json(),
        "tag_set": set.json(),
        "ratios": {
            "invalidate_ms_tag_set_over_stratacache": ratio(set.invalidate_ms, ours.invalidate_ms),
            "commands_tag_set_over_stratacache":
                ratio(set.commands.total as f64, ours.commands.total as f64),
            "commands_masters_tag_set_over_stratacache":
                ratio(set.commands.masters as f64, ours.commands.masters as f64),
            "write_secs_tag_set_over_stratacache": ratio(set.write_secs, ours.write_secs),
            "extra_memory_tag_set_over_stratacache":
                ratio(set.extra_memory_bytes as f64, ours.extra_memory_bytes as f64),
        },
        "verified": ok,
    }))
}

/// Keys spread evenly over `0..entries`.
fn sample(entries: u64, n: u64) -> impl Iterator<Item = u64> {
    let n = n.min(entries);
    (0..n).map(move |j| j * entries / n)
}

async fn build_cache(topology: &RedisTopology, ns: &str, l1: bool) -> Result<Cache> {
    let mut builder = crate::report::cache_builder()
        .namespace(ns)
        .redis(topology.clone());
    if !l1 {
        builder = builder.without_l1();
    }
    Ok(builder.build().await?)
}

/// (a) stratacache: write, invalidate the tag, read back from a fresh `Cache`.
async fn stratacache_side(
    topology: &RedisTopology,
    mut target: Target,
    nodes: &mut Nodes,
    ns: &str,
    entries: u64,
) -> Result<Side> {
    let ttl = Duration::from_secs(SAFETY_TTL_SECS);
    let tagged = EntryOptions::new().ttl(ttl).tags([TAG]);
    // Without L1: the comparison is of what each side does in Redis.
    let cache = build_cache(topology, ns, false).await?;
    let mut written = vec![
        stored_key(ns, "probe-tagged"),
        stored_key(ns, "probe-untagged"),
    ];
    written.push(format!("{ns}:__tag:{TAG}"));

    progress!("stratacache: writing {entries} entries with set_many in chunks of {WRITE_CHUNK}");
    nodes.reset().await?;
    let started = Instant::now();
    let mut i = 0u64;
    while i < entries {
        let end = (i + WRITE_CHUNK as u64).min(entries);
        let keys: Vec<String> = (i..end).map(item_key).collect();
        let batch: Vec<(&str, Product)> = keys
            .iter()
            .zip(i..end)
            .map(|(k, id)| (k.as_str(), Product::sample(id)))
            .collect();
        cache.set_many(&batch, &tagged).await?;
        written.extend(keys.iter().map(|k| stored_key(ns, k)));
        i = end;
    }
    let write_secs = started.elapsed().as_secs_f64();
    let write_commands = nodes.count().await?;
    progress!(
        "stratacache: written in {write_secs:.2} s, {} commands {:?}",
        write_commands.total,
        write_commands.by_command
    );

    // What the tag costs per entry: the same value stored with and without it.
    let value = Product::sample(0);
    cache.set("probe-tagged", &value, &tagged).await?;
    cache
        .set("probe-untagged", &value, &EntryOptions::new().ttl(ttl))
        .await?;
    let strlen = |key: String| {
        let mut target = target.clone();
        async move { target.query::<u64>(redis::cmd("STRLEN").arg(key)).await }
    };
    let tagged_len = strlen(stored_key(ns, "probe-tagged")).await?;
    let untagged_len = strlen(stored_key(ns, "probe-untagged")).await?;
    let per_entry_tag_bytes = tagged_len.saturating_sub(untagged_len);

    // Before: a fresh instance finds the entries (so the check after is not vacuous).
    let before = build_cache(topology, ns, true).await?;
    let mut found_before = 0u64;
    for id in sample(entries, PRECHECK_SAMPLE) {
        if before.get::<Product>(&item_key(id)).await?.is_some() {
            found_before += 1;
        }
    }
    drop(before);
    progress!(
        "stratacache: a fresh instance finds {found_before} of {} sampled keys before the invalidation",
        PRECHECK_SAMPLE.min(entries)
    );

    nodes.reset().await?;
    let started = Instant::now();
    cache.invalidate_tag(TAG).await?;
    let invalidate_ms = started.elapsed().as_secs_f64() * 1_000.0;
    let commands = nodes.count().await?;
    progress!(
        "stratacache: invalidate_tag took {invalidate_ms:.3} ms, {} commands {:?}",
        commands.total,
        commands.by_command
    );
    let tag_key_bytes = target.memory_usage(&format!("{ns}:__tag:{TAG}")).await?;

    // After: a fresh instance (nothing known in process) must miss every key.
    let after = build_cache(topology, ns, true).await?;
    let (mut non_none, mut errors, mut checked) = (0u64, 0u64, 0u64);
    let mut first_error = None;
    for id in sample(entries, VERIFY_SAMPLE) {
        checked += 1;
        match after.get::<Product>(&item_key(id)).await {
            Ok(None) => {}
            Ok(Some(_)) => non_none += 1,
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    drop(after);
    progress!(
        "stratacache: a fresh instance reads {checked} sampled keys after it: {} None, {non_none} values, {errors} errors",
        checked - non_none - errors
    );

    let deleted = target.remove("DEL", &written).await.map(|_| ());
    if let Err(e) = deleted {
        progress!("stratacache: clean-up failed: {e:#}");
    }
    drop(cache);

    Ok(Side {
        write_secs,
        invalidate_ms,
        extra_memory_bytes: tag_key_bytes + per_entry_tag_bytes * entries,
        details: json!({
            "write_commands": write_commands.json(),
            "tag_key_memory_bytes": tag_key_bytes,
            "per_entry_tag_bytes": per_entry_tag_bytes,
            "entry_bytes_tagged": tagged_len,
            "entry_bytes_untagged": untagged_len,
            "precheck": {"sampled": PRECHECK_SAMPLE.min(entries), "found": found_before},
            "verify": {
                "sampled": checked,
                "none": checked - non_none - errors,
                "non_none": non_none,
                "errors": errors,
                "first_error": first_error,
            },
        }),
        commands,
    })
}

/// (b) the per-tag Redis set: SET + SADD per entry; SMEMBERS, UNLINK, DEL.
async fn tag_set_side(
    mut target: Target,
    nodes: &mut Nodes,
    ns: &str,
    entries: u64,
) -> Result<Side> {
    let tag_key = format!("{ns}:tag:{TAG}");
    let key = |i: u64| format!("{ns}:{}", item_key(i));

    progress!(
        "tag set: writing {entries} entries (SET EX + SADD, pipelined in chunks of {WRITE_CHUNK})"
    );
    nodes.reset().await?;
    let started = Instant::now();
    let mut i = 0u64;
    while i < entries {
        let end = (i + WRITE_CHUNK as u64).min(entries);
        let mut cmds = Vec::with_capacity(2 * (end - i) as usize);
        for id in i..end {
            let k = key(id);
            let value = serde_json::to_vec(&Product::sample(id))?;
            let mut set = redis::cmd("SET");
            set.arg(&k).arg(value).arg("EX").arg(SAFETY_TTL_SECS);
            let mut sadd = redis::cmd("SADD");
            sadd.arg(&tag_key).arg(&k);
            cmds.push((k, set));
            cmds.push((tag_key.clone(), sadd));
        }
        target.send_all(cmds).await?;
        i = end;
    }
    let write_secs = started.elapsed().as_secs_f64();
    let write_commands = nodes.count().await?;
    progress!(
        "tag set: written in {write_secs:.2} s, {} commands {:?}",
        write_commands.total,
        write_commands.by_command
    );
    // The safety net only; the pattern itself gives the set no TTL.
    target
        .query::<()>(redis::cmd("EXPIRE").arg(&tag_key).arg(SAFETY_TTL_SECS))
        .await?;
    let set_bytes = target.memory_usage(&tag_key).await?;
    let members: u64 = target.query(redis::cmd("SCARD").arg(&tag_key)).await?;
    progress!("tag set: {tag_key} holds {members} members in {set_bytes} bytes");

    nodes.reset().await?;
    let started = Instant::now();
    let listed: Vec<String> = target.query(redis::cmd("SMEMBERS").arg(&tag_key)).await?;
    let unlinks = target.remove("UNLINK", &listed).await?;
    target.query::<()>(redis::cmd("DEL").arg(&tag_key)).await?;
    let invalidate_ms = started.elapsed().as_secs_f64() * 1_000.0;
    let commands = nodes.count().await?;
    progress!(
        "tag set: SMEMBERS + {unlinks} UNLINKs + DEL took {invalidate_ms:.1} ms, {} commands {:?}",
        commands.total,
        commands.by_command
    );

    let sampled: Vec<String> = sample(entries, VERIFY_SAMPLE).map(key).collect();
    let mut still_existing = 0u64;
    for k in &sampled {
        still_existing += target.query::<u64>(redis::cmd("EXISTS").arg(k)).await?;
    }
    progress!(
        "tag set: {still_existing} of {} sampled keys still exist",
        sampled.len()
    );
    if still_existing > 0 {
        if let Err(e) = target.remove("DEL", &sampled).await {
            progress!("tag set: clean-up failed: {e:#}");
        }
    }

    Ok(Side {
        write_secs,
        invalidate_ms,
        extra_memory_bytes: set_bytes,
        details: json!({
            "write_commands": write_commands.json(),
            "tag_set_members": members,
            "tag_set_memory_bytes": set_bytes,
            "unlink_commands": unlinks,
            "verify": {"sampled": sampled.len(), "still_existing": still_existing},
        }),
        commands,
    })
}
