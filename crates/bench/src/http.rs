//! HTTP: requests/s and p99 of a route behind the response cache layer
//! against the same route without it, driven by `wrk` in the same run.
//!
//! One axum server in this process serves `/cached/product/{id}` (through
//! `HttpCacheLayer`, on `--redis-url`) and `/uncached/product/{id}` (the same
//! handler, no layer). The handler stands for a database-backed page: it
//! waits `--handler-ms` (the query) and renders `--items` products as JSON.
//! `wrk` (`-t --threads -c --connections --latency`) requests ids uniformly
//! from `1..=--keys`; after a warm-up of each side, the sides alternate over
//! `--rounds` rounds (cached, uncached, uncached, cached, …). Reported per
//! side: the median over rounds of requests/s and of wrk's p99 latency.
//! Server and wrk share the machine's cores.
//!
//! Needs `wrk` on the PATH (Debian/Ubuntu: `apt-get install -y wrk`).

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use stratacache::Cache;
use stratacache_http::{HttpCacheLayer, RouteRule};

use crate::report::{median, ratio, round, unique_namespace, Product, SAFETY_TTL_SECS};
use crate::{progress, HttpArgs};

#[derive(Clone)]
struct Backend {
    calls: Arc<AtomicU64>,
    delay: Duration,
    items: u64,
}

async fn product_page(State(backend): State<Backend>, Path(id): Path<u64>) -> Json<Vec<Product>> {
    backend.calls.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(backend.delay).await;
    Json(
        (0..backend.items)
            .map(|i| Product::sample(id * 1_000 + i))
            .collect(),
    )
}

/// What one wrk run measured.
#[derive(Debug, Clone, Copy)]
struct WrkRun {
    requests_per_sec: f64,
    p99_ms: f64,
    p50_ms: f64,
    bad_responses: u64,
}

pub async fn run(redis_url: &str, args: &HttpArgs) -> Result<Value> {
    let wrk_version = wrk_version()?;
    let namespace = unique_namespace("http");
    let cache = Cache::builder()
        .namespace(&namespace)
        .redis_url(redis_url)
        .build()
        .await?;
    let layer = HttpCacheLayer::builder(cache.clone())
        .route(
            "/cached/product/{id}",
            RouteRule::new()
                .ttl(Duration::from_secs(SAFETY_TTL_SECS))
                .tag("product:{id}"),
        )
        .build()?;
    let cached_backend = Backend {
        calls: Arc::new(AtomicU64::new(0)),
        delay: Duration::from_millis(args.handler_ms),
        items: args.items,
    };
    let plain_backend = Backend {
        calls: Arc::new(AtomicU64::new(0)),
        ..cached_backend.clone()
    };
    let app = Router::new()
        .route("/cached/product/{id}", get(product_page))
        .with_state(cached_backend.clone())
        .layer(layer)
        .merge(
            Router::new()
                .route("/uncached/product/{id}", get(product_page))
                .with_state(plain_backend.clone()),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let script = write_script()?;

    let sides = [
        ("cached", "/cached/product/"),
        ("uncached", "/uncached/product/"),
    ];
    for (name, prefix) in sides {
        progress!("http: warming up {name} ({} s)", args.warmup_secs);
        wrk(&base, prefix, &script, args, args.warmup_secs).await?;
    }
    let cached_calls_before = cached_backend.calls.load(Ordering::Relaxed);
    let mut results: [Vec<WrkRun>; 2] = [Vec::new(), Vec::new()];
    for round_no in 0..args.rounds {
        let order = if round_no % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let (name, prefix) = sides[side];
            let run = wrk(&base, prefix, &script, args, args.duration_secs).await?;
            progress!(
                "http: round {} {name}: {:.0} req/s, p99 {:.2} ms",
                round_no + 1,
                run.requests_per_sec,
                run.p99_ms
            );
            results[side].push(run);
        }
    }
    let cached_calls_measuring = cached_backend.calls.load(Ordering::Relaxed) - cached_calls_before;
    server.abort();
    let _ = std::fs::remove_file(&script);
    let deleted = cache.invalidate_prefix("http:").await.unwrap_or(0);
    progress!("http: deleted {deleted} keys of namespace {namespace}");

    let summary = |runs: &[WrkRun]| {
        let rps: Vec<f64> = runs.iter().map(|r| r.requests_per_sec).collect();
        let p99: Vec<f64> = runs.iter().map(|r| r.p99_ms).collect();
        let p50: Vec<f64> = runs.iter().map(|r| r.p50_ms).collect();
        json!({
            "requests_per_sec": round(median(&rps), 0),
            "p99_ms": round(median(&p99), 3),
            "p50_ms": round(median(&p50), 3),
            "rounds_requests_per_sec": rps.iter().map(|x| round(*x, 0)).collect::<Vec<_>>(),
            "rounds_p99_ms": p99.iter().map(|x| round(*x, 3)).collect::<Vec<_>>(),
            "bad_responses": runs.iter().map(|r| r.bad_responses).sum::<u64>(),
        })
    };
    let cached_rps = median(
        &results[0]
            .iter()
            .map(|r| r.requests_per_sec)
            .collect::<Vec<_>>(),
    );
    let plain_rps = median(
        &results[1]
            .iter()
            .map(|r| r.requests_per_sec)
            .collect::<Vec<_>>(),
    );
    let cached_p99 = median(&results[0].iter().map(|r| r.p99_ms).collect::<Vec<_>>());
    let plain_p99 = median(&results[1].iter().map(|r| r.p99_ms).collect::<Vec<_>>());
    Ok(json!({
        "scenario": "http",
        "load_generator": wrk_version,
        "connections": args.connections,
        "wrk_threads": args.threads,
        "keys": args.keys,
        "handler_ms": args.handler_ms,
        "body_items": args.items,
        "duration_secs": args.duration_secs,
        "rounds": args.rounds,
        "cached": summary(&results[0]),
        "uncached": summary(&results[1]),
        "requests_per_sec_ratio": ratio(cached_rps, plain_rps),
        "p99_ratio_uncached_over_cached": ratio(plain_p99, cached_p99),
        "cached_handler_calls_while_measuring": cached_calls_measuring,
    }))
}

fn wrk_version() -> Result<String> {
    let output = Command::new("wrk").arg("-v").output().context(
        "`wrk` is not installed or not on the PATH; on Debian/Ubuntu: apt-get install -y wrk",
    )?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    Ok(text.lines().next().unwrap_or("wrk").trim().to_string())
}

/// The Lua script that spreads requests over the ids.
fn write_script() -> Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("bench-http-{}.lua", std::process::id()));
    std::fs::write(
        &path,
        r#"local keys = tonumber(os.getenv("BENCH_KEYS"))
local prefix = os.getenv("BENCH_PREFIX")
request = function()
  return wrk.format("GET", prefix .. math.random(1, keys))
end
"#,
    )?;
    Ok(path)
}

async fn wrk(
    base: &str,
    prefix: &str,
    script: &PathBuf,
    args: &HttpArgs,
    secs: u64,
) -> Result<WrkRun> {
    let mut command = tokio::process::Command::new("wrk");
    command
        .arg(format!("-t{}", args.threads))
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{secs}s"))
        .arg("--latency")
        .arg("-s")
        .arg(script)
        .arg(base)
        .env("BENCH_KEYS", args.keys.to_string())
        .env("BENCH_PREFIX", prefix);
    let output = command.output().await.context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_wrk(&text).with_context(|| format!("reading wrk's output:\n{text}"))
}

fn parse_wrk(text: &str) -> Result<WrkRun> {
    let mut run = WrkRun {
        requests_per_sec: f64::NAN,
        p99_ms: f64::NAN,
        p50_ms: f64::NAN,
        bad_responses: 0,
    };
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            run.requests_per_sec = rest.trim().parse()?;
        } else if let Some(rest) = line.strip_prefix("99%") {
            run.p99_ms = duration_ms(rest.trim())?;
        } else if let Some(rest) = line.strip_prefix("50%") {
            run.p50_ms = duration_ms(rest.trim())?;
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            run.bad_responses += rest.trim().parse::<u64>()?;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            for part in rest.split(',') {
                if let Some(n) = part.split_whitespace().nth(1) {
                    run.bad_responses += n.parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    if run.requests_per_sec.is_nan() || run.p99_ms.is_nan() {
        bail!("no Requests/sec or 99% line");
    }
    Ok(run)
}

/// wrk's durations: `812.00us`, `1.25ms`, `2.01s`, `1.00m`.
fn duration_ms(text: &str) -> Result<f64> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .context("a unit")?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse()?;
    Ok(match unit {
        "us" => value / 1_000.0,
        "ms" => value,
        "s" => value * 1_000.0,
        "m" => value * 60_000.0,
        other => bail!("unknown unit {other}"),
    })
}
