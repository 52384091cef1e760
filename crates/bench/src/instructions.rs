//! Instructions per operation on the hot paths, counted by callgrind.
//!
//! Wall-clock figures on a shared 2-core VM move by a third between runs;
//! instruction counts do not depend on what else the machine does. This
//! scenario re-executes the bench binary under `valgrind --tool=callgrind` as
//! `bench hot-path --path P --ops N` twice per path, with `N` and `3N`
//! operations, and divides the difference by `2N`: set-up, connection and
//! first-call costs cancel out, leaving the instructions of one operation in
//! this process (Redis's own work is another process and not counted).
//!
//! The paths pair stratacache with its bare building block — an L1 hit with
//! a bare moka get, an L2 hit with a bare redis-rs GET + decode — and each
//! stratacache path once more with a Prometheus recorder installed, which
//! prices the metrics the library records.

use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, ValueEnum};
use redis::AsyncCommands;
use serde_json::{json, Value};
use stratacache::{Codec, EntryOptions};

use crate::progress;
use crate::report::{
    bare_connection, delete_keys, item_key, ratio, round, stored_key, unique_namespace, Product,
    Rng,
};

/// Keys of the L1 paths: a working set that stays in the CPU caches, so
/// the count is the code's, not the memory's.
const L1_KEYS: u64 = 1_000;

/// One hot path, run a fixed number of times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HotPath {
    /// `cache.get` answered by L1 (no L2 configured).
    L1Hit,
    /// The same with a Prometheus recorder installed.
    L1HitMetrics,
    /// `cache.get_or_load` answered by L1.
    GetOrLoadL1Hit,
    /// The same under a named policy's options, with a Prometheus recorder
    /// installed: how a service that labels its calls reads.
    GetOrLoadL1HitPolicy,
    /// A bare `moka::sync::Cache<String, Product>` get (a clone of the value).
    MokaGet,
    /// `cache.get` answered by Redis (L1 disabled).
    L2Hit,
    /// The same with a Prometheus recorder installed.
    L2HitMetrics,
    /// `cache.get_or_load` answered by Redis (L1 disabled): the caller-side read.
    GetOrLoadL2Hit,
    /// `cache.get` answered by Redis with the postcard codec instead of JSON.
    L2HitPostcard,
    /// A bare redis-rs GET on a multiplexed connection + `serde_json` decode.
    RedisGet,
    /// `cache.get_or_load` of a key in neither tier (L1 + L2): the whole miss
    /// path — L2 read, flight, lease, load (an immediate loader), fill.
    GetOrLoadMiss,
    /// The seeds' cache-aside on a miss: GET, load, `SETEX` of the JSON.
    NaiveMiss,
}

#[derive(Args, Debug, Clone)]
pub struct HotPathArgs {
    #[arg(long, value_enum)]
    path: HotPath,
    /// Operations to run after set-up.
    #[arg(long)]
    ops: u64,
}

#[derive(Args, Debug, Clone)]
pub struct InstructionsArgs {
    /// Operations per L1 path in the shorter run (the longer runs three times as many).
    #[arg(long, default_value_t = 50_000)]
    l1_ops: u64,
    /// Operations per L2 path in the shorter run.
    #[arg(long, default_value_t = 5_000)]
    l2_ops: u64,
    /// The valgrind binary.
    #[arg(long, default_value = "valgrind")]
    valgrind: String,
}

/// `bench hot-path`: set up, then run `ops` operations of one path, sequentially.
pub async fn hot_path(url: &str, args: &HotPathArgs) -> Result<Value> {
    use HotPath::*;
    if matches!(
        args.path,
        L1HitMetrics | L2HitMetrics | GetOrLoadL1HitPolicy
    ) {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .context("installing the Prometheus recorder")?;
    }
    let opts = EntryOptions::new().ttl(Duration::from_secs(600));
    let mut order: Vec<String> = (0..L1_KEYS).map(item_key).collect();
    Rng::new(7).shuffle(&mut order);
    let key_at = |i: u64| &order[(i % L1_KEYS) as usize];
    match args.path {
        L1Hit | L1HitMetrics | GetOrLoadL1Hit | GetOrLoadL1HitPolicy => {
            let cache = crate::report::cache_builder()
                .namespace("bench")
                .policy("products", opts.clone())
                .build()
                .await?;
            let opts = if args.path == GetOrLoadL1HitPolicy {
                cache.policy("products")?.clone()
            } else {
                opts
            };
            for i in 0..L1_KEYS {
                cache.set(&item_key(i), &Product::sample(i), &opts).await?;
            }
            for i in 0..args.ops {
                let key = key_at(i);
                let value: Option<Product> =
                    if matches!(args.path, GetOrLoadL1Hit | GetOrLoadL1HitPolicy) {
                        Some(
                            cache
                                .get_or_load(key, &opts, || async {
                                    Err::<Product, _>(std::io::Error::other("L1 holds every key"))
                                })
                                .await?,
                        )
                    } else {
                        cache.get(key).await?
                    };
                ensure!(black_box(value).is_some(), "L1 missed {key}");
            }
        }
        MokaGet => {
            let bare: moka::sync::Cache<String, Product> = moka::sync::Cache::new(100_000);
            for i in 0..L1_KEYS {
                bare.insert(item_key(i), Product::sample(i));
            }
            for i in 0..args.ops {
                ensure!(black_box(bare.get(key_at(i).as_str())).is_some());
            }
        }
        L2Hit | L2HitMetrics | GetOrLoadL2Hit | L2HitPostcard => {
            let ns = unique_namespace("instructions");
            let codec = if args.path == L2HitPostcard {
                Codec::Postcard
            } else {
                Codec::Json
            };
            let cache = crate::report::cache_builder()
                .namespace(ns.clone())
                .redis_url(url)
                .without_l1()
                .codec(codec)
                .build()
                .await?;
            let key = item_key(0);
            cache.set(&key, &Product::sample(0), &opts).await?;
            let result = async {
                for _ in 0..args.ops {
                    let value: Option<Product> = if args.path == GetOrLoadL2Hit {
                        Some(
                            cache
                                .get_or_load(&key, &opts, || async {
                                    Err::<Product, _>(std::io::Error::other("Redis holds it"))
                                })
                                .await?,
                        )
                    } else {
                        cache.get(&key).await?
                    };
                    ensure!(black_box(value).is_some(), "L2 missed {key}");
                }
                Ok(())
            }
            .await;
            let mut conn = bare_connection(url).await?;
            delete_keys(&mut conn, &[stored_key(&ns, &key)]).await?;
            result?;
        }
        GetOrLoadMiss => {
            let ns = unique_namespace("instructions");
            let cache = crate::report::cache_builder()
                .namespace(ns.clone())
                .redis_url(url)
                .build()
                .await?;
            let result = async {
                for i in 0..args.ops {
                    let key = item_key(i);
                    let value: Product = cache
                        .get_or_load(&key, &opts, move || async move {
                            Ok::<_, std::io::Error>(Product::sample(i))
                        })
                        .await?;
                    black_box(value);
                }
                Ok::<_, anyhow::Error>(())
            }
            .await;
            let mut conn = bare_connection(url).await?;
            let written: Vec<String> = (0..args.ops)
                .map(|i| stored_key(&ns, &item_key(i)))
                .collect();
            delete_keys(&mut conn, &written).await?;
            result?;
        }
        NaiveMiss => {
            let mut conn = bare_connection(url).await?;
            let ns = unique_namespace("instructions");
            let result = async {
                for i in 0..args.ops {
                    let key = format!("{ns}:{}", item_key(i));
                    let cached: Option<Vec<u8>> = conn.get(&key).await?;
                    ensure!(cached.is_none(), "{key} is cold");
                    let value = Product::sample(i);
                    let _: () = conn.set_ex(&key, serde_json::to_vec(&value)?, 600).await?;
                    black_box(value);
                }
                Ok(())
            }
            .await;
            let written: Vec<String> = (0..args.ops)
                .map(|i| format!("{ns}:{}", item_key(i)))
                .collect();
            delete_keys(&mut conn, &written).await?;
            result?;
        }
        RedisGet => {
            let mut conn = bare_connection(url).await?;
            let key = format!("{}:bare", unique_namespace("instructions"));
            let json = serde_json::to_vec(&Product::sample(0))?;
            let _: () = conn.set_ex(&key, json, 600).await?;
            let result = async {
                for _ in 0..args.ops {
                    let bytes: Option<Vec<u8>> = conn.get(&key).await?;
                    let bytes = bytes.context("the bare key is missing")?;
                    black_box(serde_json::from_slice::<Product>(&bytes)?);
                }
                Ok::<_, anyhow::Error>(())
            }
            .await;
            delete_keys(&mut conn, std::slice::from_ref(&key)).await?;
            result?;
        }
    }
    Ok(json!({ "scenario": "hot-path", "path": format!("{:?}", args.path), "ops": args.ops }))
}

/// `bench instructions`: every hot path under callgrind, per-operation counts and ratios.
pub async fn run(url: &str, args: &InstructionsArgs) -> Result<Value> {
    ensure!(
        args.l1_ops > 0 && args.l2_ops > 0,
        "--l1-ops and --l2-ops must be positive"
    );
    let exe = std::env::current_exe()?;
    let probe = Command::new(&args.valgrind).arg("--version").output();
    let Ok(version) = probe else {
        bail!(
            "{} not found: install valgrind (apt-get install valgrind)",
            args.valgrind
        );
    };
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    progress!("instructions: {version}, {}", exe.display());

    let mut per_op = serde_json::Map::new();
    for path in HotPath::value_variants() {
        let ops = match path {
            HotPath::L1Hit
            | HotPath::L1HitMetrics
            | HotPath::GetOrLoadL1Hit
            | HotPath::GetOrLoadL1HitPolicy
            | HotPath::MokaGet => args.l1_ops,
            _ => args.l2_ops,
        };
        let name = path
            .to_possible_value()
            .expect("named")
            .get_name()
            .to_string();
        let short = callgrind(&args.valgrind, &exe, url, &name, ops)?;
        let long = callgrind(&args.valgrind, &exe, url, &name, 3 * ops)?;
        let instructions = long.saturating_sub(short) as f64 / (2 * ops) as f64;
        progress!("instructions: {name}: {instructions:.0} per operation");
        per_op.insert(name, json!(round(instructions, 0)));
    }
    let get = |name: &str| per_op[name].as_f64().unwrap_or(f64::NAN);
    Ok(json!({
        "scenario": "instructions",
        "valgrind": version,
        "l1_keys": L1_KEYS,
        "ops": { "l1": [args.l1_ops, 3 * args.l1_ops], "l2": [args.l2_ops, 3 * args.l2_ops] },
        "instructions_per_op": per_op,
        "ratios": {
            "l1_hit_vs_moka_get": ratio(get("l1-hit"), get("moka-get")),
            "get_or_load_l1_hit_vs_moka_get": ratio(get("get-or-load-l1-hit"), get("moka-get")),
            "l2_hit_vs_redis_get": ratio(get("l2-hit"), get("redis-get")),
            "get_or_load_l2_hit_vs_redis_get": ratio(get("get-or-load-l2-hit"), get("redis-get")),
            "get_or_load_miss_vs_naive_miss": ratio(get("get-or-load-miss"), get("naive-miss")),
            "l2_hit_postcard_vs_json": ratio(get("l2-hit-postcard"), get("l2-hit")),
        },
        "metrics_overhead_per_op": {
            "l1_hit": round(get("l1-hit-metrics") - get("l1-hit"), 0),
            "l2_hit": round(get("l2-hit-metrics") - get("l2-hit"), 0),
        },
    }))
}

/// Total instructions of one `hot-path` run under callgrind.
fn callgrind(valgrind: &str, exe: &Path, url: &str, path: &str, ops: u64) -> Result<u64> {
    let output = Command::new(valgrind)
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(exe)
        .args([
            "--redis-url",
            url,
            "--worker-threads",
            "1",
            "hot-path",
            "--path",
            path,
        ])
        .args(["--ops", &ops.to_string()])
        .output()
        .with_context(|| format!("running {valgrind}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "hot-path {path} --ops {ops} failed under callgrind: {}",
        stderr.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
    );
    // "==1234== Collected : 123456789"
    stderr
        .lines()
        .find_map(|line| line.split("Collected :").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("no instruction total in callgrind's output for {path}"))
}
