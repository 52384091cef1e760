//! HTTP: requests/s and p99 of a route behind the response cache layer
//! against the same route without it, driven by `wrk` in the same run.
//!
//! One axum server in this process serves `/cached/product/{id}` (through
//! `HttpCacheLayer`, on `--redis-url`) and `/uncached/product/{id}` (the same
//! handler, no layer). The handler stands for a database-backed page: it
//! waits `--handler-ms` (the query) and renders `--items` products as JSON.
//! `wrk` requests ids uniformly from `1..=--keys`; after a warm-up of each
//! side, the sides alternate over `--rounds` rounds (cached, uncached,
//! uncached, cached, …). Each round has two loads:
//!
//! * **saturation**: `wrk -t --threads -c --connections`, the most requests/s
//!   each side gives (closed loop, so its latencies are mostly queueing);
//! * **light load**: `wrk -t1 -c --light-connections`, each connection
//!   pausing `--light-pause-ms` between requests (wrk's `delay()`), so
//!   neither side is short of CPU and p99 is the latency of one request.
//!
//! Before the network runs, the same two routes are called in process
//! (tower `oneshot`, no sockets) `--in-process-calls` times each: the cost
//! of a hit through the layer against the bare route.
//!
//! Reported per side and load: the median over rounds of requests/s and of
//! wrk's p50/p99. Server and wrk share the machine's cores.
//!
//! Needs `wrk` on the PATH (Debian/Ubuntu: `apt-get install -y wrk`).

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use stratacache_http::{HttpCacheLayer, RouteRule};
use tower::ServiceExt;

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
    let cache = crate::report::cache_builder()
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
    let in_process = in_process(&app, args).await?;
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
        let shape = Shape {
            threads: args.threads,
            connections: args.connections,
            pause_ms: 0,
            keys: args.keys,
            secs: args.warmup_secs,
        };
        wrk(&base, prefix, &script, &shape).await?;
    }
    let cached_calls_before = cached_backend.calls.load(Ordering::Relaxed);
    let loads = [
        ("saturation", args.threads, args.connections, 0),
        ("light", 1, args.light_connections, args.light_pause_ms),
    ];
    // results[load][side]
    let mut results: Vec<[Vec<WrkRun>; 2]> =
        vec![[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
    for round_no in 0..args.rounds {
        let order = if round_no % 2 == 0 { [0, 1] } else { [1, 0] };
        for (load_no, (load, threads, connections, pause_ms)) in loads.iter().enumerate() {
            for side in order {
                let (name, prefix) = sides[side];
                let shape = Shape {
                    threads: *threads,
                    connections: *connections,
                    pause_ms: *pause_ms,
                    keys: args.keys,
                    secs: args.duration_secs,
                };
                let run = wrk(&base, prefix, &script, &shape).await?;
                progress!(
                    "http: round {} {load} {name}: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms",
                    round_no + 1,
                    run.requests_per_sec,
                    run.p50_ms,
                    run.p99_ms
                );
                results[load_no][side].push(run);
            }
        }
    }
    let cached_calls_measuring = cached_backend.calls.load(Ordering::Relaxed) - cached_calls_before;
    server.abort();
    let _ = std::fs::remove_file(&script);
    let deleted = cache.invalidate_prefix("http:").await.unwrap_or(0);
    progress!("http: deleted {deleted} keys of namespace {namespace}");

    let med =
        |runs: &[WrkRun], f: fn(&WrkRun) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    let summary = |runs: &[WrkRun]| {
        json!({
            "requests_per_sec": round(med(runs, |r| r.requests_per_sec), 0),
            "p50_ms": round(med(runs, |r| r.p50_ms), 3),
            "p99_ms": round(med(runs, |r| r.p99_ms), 3),
            "rounds_requests_per_sec": runs.iter().map(|r| round(r.requests_per_sec, 0)).collect::<Vec<_>>(),
            "rounds_p99_ms": runs.iter().map(|r| round(r.p99_ms, 3)).collect::<Vec<_>>(),
            "bad_responses": runs.iter().map(|r| r.bad_responses).sum::<u64>(),
        })
    };
    let compare = |sides: &[Vec<WrkRun>; 2]| {
        json!({
            "cached": summary(&sides[0]),
            "uncached": summary(&sides[1]),
            "requests_per_sec_ratio": ratio(med(&sides[0], |r| r.requests_per_sec), med(&sides[1], |r| r.requests_per_sec)),
            "p99_ratio_uncached_over_cached": ratio(med(&sides[1], |r| r.p99_ms), med(&sides[0], |r| r.p99_ms)),
        })
    };
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
        "light_connections": args.light_connections,
        "light_pause_ms": args.light_pause_ms,
        "in_process_us_per_call": in_process,
        "saturation": compare(&results[0]),
        "light": compare(&results[1]),
        "cached_handler_calls_while_measuring": cached_calls_measuring,
    }))
}

/// Both routes called in this process without sockets, one call at a time:
/// the cost of a hit through the layer against the route alone (whose
/// handler here neither waits nor renders: only the routing).
async fn in_process(app: &Router, args: &HttpArgs) -> Result<Value> {
    let bare = Router::new().route("/bare/product/{id}", get(|| async { "" }));
    let mut figures = serde_json::Map::new();
    for (name, router, path) in [
        ("cached_hit", app, "/cached/product/1"),
        ("bare_route", &bare, "/bare/product/1"),
    ] {
        let call = || async {
            let request = axum::http::Request::get(path)
                .header("host", "bench.example")
                .body(axum::body::Body::empty())?;
            let response = router.clone().oneshot(request).await?;
            axum::body::to_bytes(response.into_body(), usize::MAX).await?;
            anyhow::Ok(())
        };
        call().await?; // fills the cache
        let started = Instant::now();
        for _ in 0..args.in_process_calls {
            call().await?;
        }
        let us = started.elapsed().as_secs_f64() * 1e6 / args.in_process_calls as f64;
        progress!("http: in process, {name}: {us:.2} µs per call");
        figures.insert(format!("{name}_us"), json!(round(us, 2)));
    }
    Ok(Value::Object(figures))
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
local pause = tonumber(os.getenv("BENCH_PAUSE_MS") or "0")
request = function()
  return wrk.format("GET", prefix .. math.random(1, keys))
end
if pause > 0 then
  delay = function()
    return pause
  end
end
"#,
    )?;
    Ok(path)
}

/// One wrk run's load.
struct Shape {
    threads: u32,
    connections: u32,
    /// Pause of each connection between two requests, in ms.
    pause_ms: u64,
    keys: u64,
    secs: u64,
}

async fn wrk(base: &str, prefix: &str, script: &PathBuf, shape: &Shape) -> Result<WrkRun> {
    let mut command = tokio::process::Command::new("wrk");
    command
        .arg(format!("-t{}", shape.threads))
        .arg(format!("-c{}", shape.connections))
        .arg(format!("-d{}s", shape.secs))
        .arg("--latency")
        .arg("-s")
        .arg(script)
        .arg(base)
        .env("BENCH_KEYS", shape.keys.to_string())
        .env("BENCH_PAUSE_MS", shape.pause_ms.to_string())
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
