//! Scaling: how ops/s and p99 of reads grow with the number of concurrent
//! callers (1 to 1,024, ~300-byte rows) and with the value size (100 B to
//! 1 MB, 64 callers), for stratacache without L1, stratacache with L1, and a
//! bare redis-rs `GET` + decode of the same values as the reference. Every
//! key is present (all hits). Writes the figures as JSON and a log–log SVG
//! plot.

pub(crate) mod svg;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use stratacache::{Cache, EntryOptions};
use svg::{Panel, Series};

use crate::report::{
    bare_connection, delete_keys, item_key, latency_histogram, round, stored_key, unique_namespace,
    Rng, SAFETY_TTL_SECS,
};
use crate::{progress, ScalingArgs};

/// A value of a chosen size: an id and a text payload (not compressible
/// much, and stratacache's compression is off here: like for like).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Blob {
    id: u64,
    data: String,
}

impl Blob {
    fn new(id: u64, bytes: usize) -> Self {
        let mut rng = Rng::new(id + 1);
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let data = (0..bytes.saturating_sub(20))
            .map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize] as char)
            .collect();
        Self { id, data }
    }
}

const SERIES: [&str; 3] = [
    "stratacache L2 only",
    "stratacache L1 + L2",
    "bare redis-rs GET",
];

#[derive(Clone)]
enum Reader {
    Cache(Cache),
    Bare(MultiplexedConnection, String),
}

impl Reader {
    async fn read(&self, key: &str) -> bool {
        match self {
            Reader::Cache(cache) => matches!(cache.get::<Blob>(key).await, Ok(Some(_))),
            Reader::Bare(conn, ns) => {
                let mut conn = conn.clone();
                let raw: Option<Vec<u8>> =
                    conn.get(format!("{ns}:bare:{key}")).await.ok().flatten();
                raw.is_some_and(|b| serde_json::from_slice::<Blob>(&b).is_ok())
            }
        }
    }
}

struct Point {
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    misses: u64,
}

pub async fn run(url: &str, args: &ScalingArgs) -> Result<Value> {
    ensure!(args.point_ms > 0, "arguments must be positive");
    let ns = unique_namespace("scaling");
    let mut conn = bare_connection(url).await?;
    progress!("scaling: namespace {ns} on {url}");
    let mut written = Vec::new();
    let result = measure(url, args, &ns, &mut conn, &mut written).await;
    match delete_keys(&mut conn, &written).await {
        Ok(n) => progress!("scaling: deleted {n} keys"),
        Err(e) => progress!("scaling: clean-up failed: {e:#}"),
    }
    result
}

async fn measure(
    url: &str,
    args: &ScalingArgs,
    ns: &str,
    conn: &mut MultiplexedConnection,
    written: &mut Vec<String>,
) -> Result<Value> {
    let budget = Duration::from_millis(args.point_ms);
    let mut by_callers: Vec<Vec<(usize, Point)>> = SERIES.iter().map(|_| Vec::new()).collect();
    let mut by_size: Vec<Vec<(usize, Point)>> = SERIES.iter().map(|_| Vec::new()).collect();

    // Concurrency sweep: ~300-byte values.
    let base = 300;
    let (readers, keys) = prepare(url, ns, "c", base, 10_000, conn, written).await?;
    for &callers in &args.callers {
        for (s, reader) in readers.iter().enumerate() {
            let p = point(reader, &keys, callers, budget).await?;
            progress!(
                "scaling: {:<20} {callers:>5} callers: {:>9.0} ops/s  p50 {:>9.1} µs  p99 {:>9.1} µs",
                SERIES[s], p.ops_per_sec, p.p50_us, p.p99_us
            );
            by_callers[s].push((callers, p));
        }
    }
    // Value-size sweep: 64 callers, at most ~64 MB of values per side.
    for &size in &args.sizes {
        let n = (64 * 1024 * 1024 / size.max(1)).clamp(16, 10_000) as u64;
        let (readers, keys) = prepare(url, ns, &format!("s{size}"), size, n, conn, written).await?;
        for (s, reader) in readers.iter().enumerate() {
            let p = point(reader, &keys, args.size_callers, budget).await?;
            progress!(
                "scaling: {:<20} {size:>8} bytes: {:>9.0} ops/s  p50 {:>9.1} µs  p99 {:>9.1} µs",
                SERIES[s],
                p.ops_per_sec,
                p.p50_us,
                p.p99_us
            );
            by_size[s].push((size, p));
        }
    }

    let panel =
        |title: &str, x: &str, y: &str, data: &[Vec<(usize, Point)>], f: fn(&Point) -> f64| Panel {
            title: title.into(),
            x_label: x.into(),
            y_label: y.into(),
            series: SERIES
                .iter()
                .zip(data)
                .map(|(name, pts)| Series {
                    name: (*name).into(),
                    points: pts.iter().map(|(x, p)| (*x as f64, f(p))).collect(),
                })
                .collect(),
        };
    let panels = [
        panel(
            "ops/s vs concurrent callers (300 B values)",
            "concurrent callers",
            "ops/s",
            &by_callers,
            |p| p.ops_per_sec,
        ),
        panel(
            "p99 vs concurrent callers (300 B values)",
            "concurrent callers",
            "p99 latency, µs",
            &by_callers,
            |p| p.p99_us,
        ),
        panel(
            &format!("ops/s vs value size ({} callers)", args.size_callers),
            "value size, bytes",
            "ops/s",
            &by_size,
            |p| p.ops_per_sec,
        ),
        panel(
            &format!("p99 vs value size ({} callers)", args.size_callers),
            "value size, bytes",
            "p99 latency, µs",
            &by_size,
            |p| p.p99_us,
        ),
    ];
    let svg = svg::render(
        "stratacache read scaling (all hits, one Redis on loopback, 2 vCPUs)",
        &panels,
        2,
    );
    let out = args.svg.clone().unwrap_or_else(default_svg_path);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&out, svg).with_context(|| format!("writing {}", out.display()))?;
    progress!("scaling: plot written to {}", out.display());

    let table = |data: &[Vec<(usize, Point)>], x: &str| -> Value {
        SERIES
            .iter()
            .zip(data)
            .map(|(name, pts)| {
                let rows: Vec<Value> = pts
                    .iter()
                    .map(|(v, p)| {
                        json!({ x: v, "ops_per_sec": round(p.ops_per_sec, 0),
                                "p50_us": round(p.p50_us, 1), "p99_us": round(p.p99_us, 1), "misses": p.misses })
                    })
                    .collect();
                ((*name).to_string(), Value::Array(rows))
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    Ok(json!({
        "scenario": "scaling",
        "point_ms": args.point_ms,
        "size_callers": args.size_callers,
        "by_callers": table(&by_callers, "callers"),
        "by_value_bytes": table(&by_size, "value_bytes"),
        "svg": out.display().to_string(),
    }))
}

fn default_svg_path() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repo = manifest.ancestors().nth(2).unwrap_or(manifest);
    repo.join("bench-results").join("scaling.svg")
}

/// Write `n` values of `size` bytes for both caches and the bare side; build
/// the three readers; warm L1 by reading every key once.
async fn prepare(
    url: &str,
    ns: &str,
    set: &str,
    size: usize,
    n: u64,
    conn: &mut MultiplexedConnection,
    written: &mut Vec<String>,
) -> Result<([Reader; 3], Arc<Vec<String>>)> {
    let build = |l1: bool| {
        let b = crate::report::cache_builder()
            .namespace(ns)
            .redis_url(url)
            .compress_above(None)
            .max_value_bytes(8 * 1024 * 1024);
        let b = if l1 { b } else { b.without_l1() };
        b.build()
    };
    let (l2_only, with_l1) = (build(false).await?, build(true).await?);
    let keys: Vec<String> = (0..n).map(|i| format!("{set}:{}", item_key(i))).collect();
    let opts = EntryOptions::new().ttl(Duration::from_secs(SAFETY_TTL_SECS));
    // Batches of at most ~4 MB, so no write waits past the Redis timeout.
    let chunk = (4 * 1024 * 1024 / size.max(1)).clamp(1, 100);
    for (start, batch) in (0u64..).step_by(chunk).zip(keys.chunks(chunk)) {
        let blobs: Vec<(String, Blob)> = batch
            .iter()
            .zip(start..)
            .map(|(k, i)| (k.clone(), Blob::new(i, size)))
            .collect();
        let entries: Vec<(&str, Blob)> =
            blobs.iter().map(|(k, b)| (k.as_str(), b.clone())).collect();
        l2_only.set_many(&entries, &opts).await?;
        let mut pipe = redis::pipe();
        for (k, b) in &blobs {
            pipe.set_ex(
                format!("{ns}:bare:{k}"),
                serde_json::to_vec(b)?,
                SAFETY_TTL_SECS,
            )
            .ignore();
        }
        pipe.query_async::<()>(conn)
            .await
            .context("writing the bare values")?;
    }
    for k in &keys {
        let stored = stored_key(ns, k);
        written.extend([
            format!("{stored}:lease"),
            format!("{stored}:waiting"),
            format!("{stored}:ver"),
            stored,
        ]);
        written.push(format!("{ns}:bare:{k}"));
        ensure!(
            with_l1.get::<Blob>(k).await?.is_some(),
            "value {k} did not read back"
        );
    }
    let bare = Reader::Bare(bare_connection(url).await?, ns.to_string());
    Ok((
        [Reader::Cache(l2_only), Reader::Cache(with_l1), bare],
        Arc::new(keys),
    ))
}

/// `callers` tasks read uniformly random keys for `budget`.
async fn point(
    reader: &Reader,
    keys: &Arc<Vec<String>>,
    callers: usize,
    budget: Duration,
) -> Result<Point> {
    let started = Instant::now();
    let deadline = started + budget;
    let mut handles = Vec::with_capacity(callers);
    for c in 0..callers {
        let (reader, keys) = (reader.clone(), Arc::clone(keys));
        handles.push(tokio::spawn(async move {
            let mut rng = Rng::new(c as u64 + 17);
            let mut hist = latency_histogram();
            let mut misses = 0u64;
            loop {
                let key = &keys[rng.below(keys.len() as u64) as usize];
                let t0 = Instant::now();
                misses += u64::from(!reader.read(key).await);
                let now = Instant::now();
                hist.saturating_record((now - t0).as_nanos().max(1) as u64);
                if now >= deadline {
                    break;
                }
            }
            (hist, misses)
        }));
    }
    let (mut hist, mut misses) = (latency_histogram(), 0);
    for h in handles {
        let (one, m) = h.await?;
        hist.add(&one).context("merging histograms")?;
        misses += m;
    }
    Ok(Point {
        ops_per_sec: hist.len() as f64 / started.elapsed().as_secs_f64(),
        p50_us: hist.value_at_quantile(0.5) as f64 / 1_000.0,
        p99_us: hist.value_at_quantile(0.99) as f64 / 1_000.0,
        misses,
    })
}
