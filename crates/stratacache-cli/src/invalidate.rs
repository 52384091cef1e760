//! `stratacache invalidate`: through a `Cache` of the namespace, so the
//! invalidation takes the library's own pipeline — Redis first, then the
//! backplane, which every running instance's L1 hears.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::{ArgGroup, Args};
use stratacache::Cache;

use crate::RedisArgs;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("what").required(true).args(["key", "tag", "prefix", "all"])))]
pub struct InvalidateArgs {
    /// The cache's namespace.
    #[arg(long)]
    pub namespace: String,
    /// Delete this key (repeatable).
    #[arg(long)]
    pub key: Vec<String>,
    /// Invalidate every entry with this tag (repeatable).
    #[arg(long)]
    pub tag: Vec<String>,
    /// Delete every key starting with this prefix.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Invalidate the whole namespace (one stamp, no SCAN).
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// The cache's `max_key_len` (keys longer than this are stored as a digest).
    #[arg(long, default_value_t = 256)]
    pub max_key_len: usize,
}

/// A cache of the namespace with no L1 of its own: it only writes.
pub async fn cache(namespace: &str, redis: &RedisArgs, max_key_len: usize) -> Result<Cache> {
    let mut builder = Cache::builder();
    if let Some(tls) = redis.redis_tls()? {
        builder = builder.redis_tls(tls);
    }
    let cache = builder
        .namespace(namespace)
        .redis_url(&redis.redis_url)
        .without_l1()
        .metrics(false)
        .max_key_len(max_key_len)
        .redis_timeout(redis.timeout)
        .redis_connect_timeout(redis.timeout)
        .wait_for_backplane(Duration::ZERO)
        .build()
        .await
        .map_err(|e| anyhow!("{e}"))?;
    // An invalidation Redis cannot take now is deferred for a replay this
    // short-lived process would never make: refuse to start instead.
    cache
        .ping_redis()
        .await
        .map_err(|e| anyhow!("Redis does not answer: {e}"))?;
    Ok(cache)
}

pub async fn run(args: InvalidateArgs) -> Result<u8> {
    let cache = cache(&args.namespace, &args.redis, args.max_key_len).await?;
    let ns = &args.namespace;
    let outcome = async {
        if !args.key.is_empty() {
            let keys: Vec<&str> = args.key.iter().map(String::as_str).collect();
            cache.delete_many(&keys).await?;
            println!(
                "deleted {} key(s) in namespace {ns:?} on every instance",
                keys.len()
            );
        }
        for tag in &args.tag {
            cache.invalidate_tag(tag).await?;
            println!("invalidated tag {tag:?} in namespace {ns:?} on every instance");
        }
        if let Some(prefix) = &args.prefix {
            let n = cache.invalidate_prefix(prefix).await?;
            println!("invalidated prefix {prefix:?} in namespace {ns:?}: {n} Redis key(s) deleted, every instance's L1 told");
        }
        if args.all {
            cache.invalidate_all().await?;
            println!("cleared namespace {ns:?} on every instance");
        }
        Ok::<_, stratacache::Error>(())
    };
    if let Err(e) = outcome.await {
        bail!("the invalidation did not reach Redis or the other instances: {e}");
    }
    if cache.pending_recovery() > 0 {
        bail!(
            "{} invalidation(s) could not be announced and would only be replayed by a running instance: run the command again",
            cache.pending_recovery()
        );
    }
    Ok(0)
}
