//! `stratacache inspect KEY`: a stored entry decoded by the library
//! (`stratacache::inspect`), with its lease, waiting mark and version floor.

use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::Args;
use redis::aio::ConnectionLike;
use serde::Serialize;
use stratacache::inspect::{decode_entry, entry_keys_with_max_len, parse_stamp, EntryInfo};
use stratacache::Codec;

use crate::target::Target;
use crate::time::{now_ms, relative_ms, rfc3339_us};
use crate::RedisArgs;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The cache key (as the application passes it, without the namespace).
    pub key: String,
    /// The cache's namespace.
    #[arg(long)]
    pub namespace: String,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// The cache's `max_key_len` (keys longer than this are stored as a digest).
    #[arg(long, default_value_t = 256)]
    pub max_key_len: usize,
    /// The cache's `max_value_bytes` (bounds decompression).
    #[arg(long, default_value_t = 1 << 20)]
    pub max_value_bytes: usize,
    /// Bytes of a JSON value to show.
    #[arg(long, default_value_t = 2048)]
    pub preview: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Inspected {
    key: String,
    redis_key: String,
    found: bool,
    /// The Redis TTL (ms), `None` without one.
    ttl_ms: Option<i64>,
    state: Option<&'static str>,
    created: Option<String>,
    fresh_until: Option<String>,
    stale_until: Option<String>,
    created_at_us: Option<u64>,
    fresh_until_ms: Option<u64>,
    stale_until_ms: Option<u64>,
    format: Option<u8>,
    codec: Option<&'static str>,
    compressed: Option<bool>,
    negative: Option<bool>,
    fail_safe: Option<bool>,
    schema_version: Option<u32>,
    tags: Vec<String>,
    etag: Option<String>,
    load_ms: Option<f64>,
    stored_bytes: Option<usize>,
    payload_bytes: Option<usize>,
    value_bytes: Option<usize>,
    value: Option<String>,
    /// Why the bytes are not an entry.
    error: Option<String>,
    version_floor: Option<u64>,
    lease_holder: Option<String>,
    lease_ttl_ms: Option<i64>,
    awaited: bool,
}

fn codec_name(codec: Codec) -> &'static str {
    match codec {
        Codec::Json => "json",
        Codec::Postcard => "postcard",
        _ => "other",
    }
}

pub async fn run(args: InspectArgs) -> Result<u8> {
    let keys = entry_keys_with_max_len(&args.namespace, &args.key, args.max_key_len)
        .map_err(|e| anyhow!("{e}"))?;
    let target = Target::discover(&args.redis).await?;
    let read = async {
        if target.is_cluster() {
            let urls: Vec<String> = target.masters().map(|n| n.url.clone()).collect();
            #[allow(unused_mut)]
            let mut builder = redis::cluster::ClusterClientBuilder::new(urls);
            #[cfg(feature = "tls")]
            if let Some(files) = &target.tls {
                builder = builder.certs(crate::target::certificates(files));
            }
            let client = builder.build()?;
            let mut conn = client.get_async_connection().await?;
            read_all(&mut conn, &keys).await
        } else {
            let node = target.masters().next().ok_or_else(|| anyhow!("no node"))?;
            let mut conn = target.connect(node).await?;
            read_all(&mut conn, &keys).await
        }
    };
    let raw = tokio::time::timeout(args.redis.timeout * 2, read)
        .await
        .map_err(|_| anyhow!("Redis did not answer within {:?}", args.redis.timeout * 2))??;
    let now = now_ms();
    let mut out = Inspected {
        key: args.key.clone(),
        redis_key: keys.entry.clone(),
        found: raw.value.is_some(),
        ttl_ms: (raw.ttl >= 0).then_some(raw.ttl),
        state: None,
        created: None,
        fresh_until: None,
        stale_until: None,
        created_at_us: None,
        fresh_until_ms: None,
        stale_until_ms: None,
        format: None,
        codec: None,
        compressed: None,
        negative: None,
        fail_safe: None,
        schema_version: None,
        tags: Vec::new(),
        etag: None,
        load_ms: None,
        stored_bytes: raw.value.as_ref().map(Vec::len),
        payload_bytes: None,
        value_bytes: None,
        value: None,
        error: None,
        version_floor: raw.floor.as_deref().and_then(parse_stamp),
        lease_holder: raw
            .lease
            .as_ref()
            .map(|l| String::from_utf8_lossy(l).into_owned()),
        lease_ttl_ms: raw.lease.as_ref().map(|_| raw.lease_ttl),
        awaited: raw.waiting,
    };
    if let Some(bytes) = &raw.value {
        match decode_entry(bytes, args.max_value_bytes, args.preview) {
            Ok(info) => fill(&mut out, &info, now),
            Err(e) => out.error = Some(e.to_string()),
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", text(&out, now));
    }
    Ok(if out.found && out.error.is_none() {
        0
    } else {
        1
    })
}

fn fill(out: &mut Inspected, info: &EntryInfo, now: u64) {
    out.state = Some(if info.fail_safe && now < info.stale_until_ms {
        "fail-safe (a stale value kept after a failed refresh)"
    } else if now < info.fresh_until_ms {
        "fresh"
    } else if now < info.stale_until_ms {
        "stale"
    } else {
        "expired"
    });
    out.created = Some(rfc3339_us(info.created_at_us));
    out.fresh_until = Some(rfc3339_us(info.fresh_until_ms * 1000));
    out.stale_until = Some(rfc3339_us(info.stale_until_ms * 1000));
    out.created_at_us = Some(info.created_at_us);
    out.fresh_until_ms = Some(info.fresh_until_ms);
    out.stale_until_ms = Some(info.stale_until_ms);
    out.format = Some(info.format);
    out.codec = Some(info.codec.map_or("none (negative entry)", codec_name));
    out.compressed = Some(info.compressed);
    out.negative = Some(info.negative);
    out.fail_safe = Some(info.fail_safe);
    out.schema_version = Some(info.schema_version);
    out.tags = info.tags.clone();
    out.etag = info.etag.clone();
    out.load_ms = Some(f64::from(info.load_micros) / 1000.0);
    out.payload_bytes = Some(info.payload_bytes);
    out.value_bytes = Some(info.value_bytes);
    out.value = info.value_json.clone();
}

fn text(e: &Inspected, now: u64) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let mut row = |name: &str, value: String| {
        let _ = writeln!(s, "{name:<14} {value}");
    };
    row("key", e.key.clone());
    row("redis key", e.redis_key.clone());
    if !e.found {
        row("entry", "not in Redis".into());
    }
    if let Some(err) = &e.error {
        row("entry", format!("unreadable: {err}"));
    }
    if let Some(state) = e.state {
        row("state", state.into());
        row(
            "ttl",
            e.ttl_ms.map_or("none (never expires)".into(), |ms| {
                crate::time::human(Duration::from_millis(ms as u64))
            }),
        );
        let at = |text: &Option<String>, ms: Option<u64>| {
            format!(
                "{} ({})",
                text.clone().unwrap_or_default(),
                relative_ms(ms.unwrap_or(0), now)
            )
        };
        row(
            "created",
            at(&e.created, e.created_at_us.map(|us| us / 1000)),
        );
        row("fresh until", at(&e.fresh_until, e.fresh_until_ms));
        row("stale until", at(&e.stale_until, e.stale_until_ms));
        row(
            "codec",
            format!(
                "{}{} (format {})",
                e.codec.unwrap_or("?"),
                if e.compressed == Some(true) {
                    ", lz4"
                } else {
                    ""
                },
                e.format.unwrap_or(0)
            ),
        );
        row(
            "size",
            format!(
                "{} B stored, payload {} B, value {} B",
                e.stored_bytes.unwrap_or(0),
                e.payload_bytes.unwrap_or(0),
                e.value_bytes.unwrap_or(0)
            ),
        );
        row(
            "tags",
            if e.tags.is_empty() {
                "none".into()
            } else {
                e.tags.join(", ")
            },
        );
        row("schema", e.schema_version.unwrap_or(0).to_string());
        if let Some(etag) = &e.etag {
            row("etag", etag.clone());
        }
        row("load took", format!("{:.3} ms", e.load_ms.unwrap_or(0.0)));
        if e.negative == Some(true) {
            row("value", "absent (negative entry)".into());
        } else if let Some(v) = &e.value {
            row("value", v.clone());
        } else {
            row("value", "(postcard: binary)".into());
        }
    }
    row(
        "version floor",
        e.version_floor.map_or("none".into(), |v| v.to_string()),
    );
    row(
        "lease",
        match (&e.lease_holder, e.lease_ttl_ms) {
            (Some(holder), Some(ttl)) if ttl >= 0 => format!(
                "held by {holder}, expires {}",
                relative_ms(now + ttl as u64, now)
            ),
            (Some(holder), _) => format!("held by {holder}, without a TTL (stuck)"),
            _ => "none".into(),
        },
    );
    row("awaited", if e.awaited { "yes" } else { "no" }.into());
    s
}

struct Raw {
    value: Option<Vec<u8>>,
    ttl: i64,
    floor: Option<Vec<u8>>,
    lease: Option<Vec<u8>>,
    lease_ttl: i64,
    waiting: bool,
}

async fn read_all<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &stratacache::inspect::EntryKeys,
) -> Result<Raw> {
    // One key at a time: they share a hash slot, but this stays simple for
    // every connection kind.
    let value: Option<Vec<u8>> = redis::cmd("GET").arg(&keys.entry).query_async(conn).await?;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&keys.entry)
        .query_async(conn)
        .await?;
    let floor: Option<Vec<u8>> = redis::cmd("GET")
        .arg(&keys.version_floor)
        .query_async(conn)
        .await?;
    let lease: Option<Vec<u8>> = redis::cmd("GET").arg(&keys.lease).query_async(conn).await?;
    let lease_ttl: i64 = redis::cmd("PTTL")
        .arg(&keys.lease)
        .query_async(conn)
        .await?;
    let waiting: i64 = redis::cmd("EXISTS")
        .arg(&keys.waiting)
        .query_async(conn)
        .await?;
    Ok(Raw {
        value,
        ttl,
        floor,
        lease,
        lease_ttl,
        waiting: waiting == 1,
    })
}
