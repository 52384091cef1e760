//! `stratacache queue`: write-behind queues through the library's own
//! `WriteBehind` (`queue_status`, `replay_dead_letters`), with the
//! consumers read from the group.

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use stratacache::inspect::{classify_key, namespace_pattern, write_behind_keys, KeyKind};
use stratacache::write_behind::{Batch, Sink, WriteBehind};
use stratacache::BoxError;

use crate::target::Target;
use crate::time::human;
use crate::RedisArgs;

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Depth, pending entries, lag, consumers and dead letters of the queues.
    Status(QueueArgs),
    /// Put dead letters back on the queue (same write ids: a write the sink
    /// applied after all is not applied twice).
    ReplayDeadLetters {
        #[command(flatten)]
        queue: QueueArgs,
        /// Most dead letters moved.
        #[arg(long, default_value_t = 1000)]
        max: usize,
    },
}

#[derive(Debug, Args)]
pub struct QueueArgs {
    /// The cache's namespace.
    #[arg(long)]
    pub namespace: String,
    /// The queue's name (default: every queue found in the namespace).
    #[arg(long)]
    pub queue: Option<String>,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The command line never applies writes: it only reads a queue's state and
/// moves dead letters. A worker of the service applies them.
struct NoSink;

impl Sink for NoSink {
    async fn apply(&self, _batch: &Batch) -> Result<(), BoxError> {
        Err("the command line applies no writes".into())
    }
    async fn read_value(&self, _key: &str) -> Result<Option<Vec<u8>>, BoxError> {
        Ok(None)
    }
    async fn read_counter(&self, _key: &str) -> Result<i64, BoxError> {
        Ok(0)
    }
}

/// The queues of `namespace` found by SCAN (by their stream or dead-letter keys).
async fn discover(target: &Target, namespace: &str) -> Result<Vec<String>> {
    let mut names = std::collections::BTreeSet::new();
    for node in target.masters() {
        let mut conn = target.connect(node).await?;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!(
                    "{}write-behind:*",
                    namespace_pattern(namespace).trim_end_matches('*')
                ))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            for key in keys {
                if let KeyKind::WriteBehindStream(n) | KeyKind::WriteBehindDeadLetters(n) =
                    classify_key(namespace, &key)
                {
                    names.insert(n);
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }
    Ok(names.into_iter().collect())
}

async fn queues(args: &QueueArgs, target: &Target) -> Result<Vec<String>> {
    match &args.queue {
        Some(q) => Ok(vec![q.clone()]),
        None => discover(target, &args.namespace).await,
    }
}

async fn open(args: &QueueArgs, name: &str) -> Result<WriteBehind<NoSink>> {
    let cache = crate::invalidate::cache(&args.namespace, &args.redis, 256).await?;
    WriteBehind::builder(cache, NoSink)
        .name(name)
        .build()
        .await
        .map_err(|e| anyhow!("queue {name:?}: {e}"))
}

pub async fn run(command: QueueCommand) -> Result<u8> {
    match command {
        QueueCommand::Status(args) => status(args).await,
        QueueCommand::ReplayDeadLetters { queue, max } => replay(queue, max).await,
    }
}

async fn status(args: QueueArgs) -> Result<u8> {
    let target = Target::discover(&args.redis).await?;
    let names = queues(&args, &target).await?;
    let mut report = Vec::new();
    let mut worst = 0;
    for name in &names {
        let wb = open(&args, name).await?;
        let status = wb.queue_status().await.map_err(|e| anyhow!("{e}"))?;
        let node = target.masters().next().ok_or_else(|| anyhow!("no node"))?;
        let mut conn = target.connect(node).await?;
        let keys = write_behind_keys(&args.namespace, name);
        let consumers: Vec<redis::Value> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&keys.stream)
            .arg(&keys.group)
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        let consumers: Vec<serde_json::Value> = consumers
            .iter()
            .map(|c| {
                let f = fields(c);
                json!({
                    "name": f.get("name").cloned().unwrap_or_default(),
                    "pending": f.get("pending").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0),
                    "idle_ms": f.get("idle").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0),
                })
            })
            .collect();
        if status.dead_letters > 0 || (status.depth > 0 && consumers.is_empty()) {
            worst = 1;
        }
        report.push(json!({
            "queue": name,
            "stream": wb.stream_key(),
            "dead_letter_stream": wb.dead_letter_key(),
            "depth": status.depth,
            "pending": status.pending,
            "lag_ms": status.lag.as_millis() as u64,
            "dead_letters": status.dead_letters,
            "consumers": consumers,
        }));
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"namespace": args.namespace, "queues": report}))?
        );
    } else if report.is_empty() {
        println!("no write-behind queue in namespace {:?}", args.namespace);
    } else {
        for q in &report {
            println!("queue {}", q["queue"].as_str().unwrap_or_default());
            println!(
                "  stream          {}",
                q["stream"].as_str().unwrap_or_default()
            );
            println!("  not applied     {}", q["depth"]);
            println!("  unacknowledged  {}", q["pending"]);
            println!(
                "  lag             {}",
                human(std::time::Duration::from_millis(
                    q["lag_ms"].as_u64().unwrap_or(0)
                ))
            );
            println!("  dead letters    {}", q["dead_letters"]);
            let consumers = q["consumers"].as_array().cloned().unwrap_or_default();
            println!("  consumers       {}", consumers.len());
            for c in consumers {
                println!(
                    "    {} ({} pending, idle {})",
                    c["name"].as_str().unwrap_or_default(),
                    c["pending"],
                    human(std::time::Duration::from_millis(
                        c["idle_ms"].as_u64().unwrap_or(0)
                    ))
                );
            }
        }
    }
    Ok(worst)
}

async fn replay(args: QueueArgs, max: usize) -> Result<u8> {
    let target = Target::discover(&args.redis).await?;
    let names = queues(&args, &target).await?;
    let name = match names.as_slice() {
        [one] => one.clone(),
        [] => bail!("no write-behind queue in namespace {:?}", args.namespace),
        many => bail!(
            "several queues ({}): name one with --queue",
            many.join(", ")
        ),
    };
    let wb = open(&args, &name).await?;
    let moved = wb
        .replay_dead_letters(max)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    if args.json {
        println!("{}", json!({"queue": name, "replayed": moved}));
    } else {
        println!("queue {name:?}: {moved} dead letter(s) put back on the queue");
    }
    Ok(0)
}

/// Field → text of an XINFO reply (RESP2 flat array or RESP3 map).
fn fields(value: &redis::Value) -> std::collections::HashMap<String, String> {
    use redis::Value;
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        _ => String::new(),
    };
    match value {
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (text(k), text(v))).collect(),
        Value::Array(items) => items
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (text(&c[0]), text(&c[1])))
            .collect(),
        _ => Default::default(),
    }
}
