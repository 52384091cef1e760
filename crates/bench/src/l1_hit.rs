//! L1 hit: `cache.get::<Product>(key)` on a filled L1 against a bare
//! `moka::sync::Cache<String, Product>` get of the same keys, in the same
//! loop shape, in interleaved rounds.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use serde_json::{json, Value};
use stratacache::{Cache, EntryOptions};

use crate::report::{item_key, median, ratio, round, Product, Rng};
use crate::{progress, L1HitArgs};

const TARGET_MAX_RATIO: f64 = 3.0;
const TARGET_MAX_NS: f64 = 1_000.0;

pub async fn run(args: &L1HitArgs) -> Result<Value> {
    ensure!(args.keys > 0, "--keys must be at least 1");
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    // L1 only: an L1 hit returns before L2 is consulted, so Redis plays no
    // part and the namespace needs no run id. A short, realistic namespace:
    // the stored key (`bench:{k:000000000042}`) is what L1 hashes and compares.
    let ns = "bench".to_string();
    let capacity = (args.keys * 2).max(100_000);
    let cache = crate::report::cache_builder()
        .namespace(ns.clone())
        .l1_max_entries(capacity)
        .l1_max_bytes((capacity * 2_048).max(64 << 20))
        .build()
        .await?;
    let bare: moka::sync::Cache<String, Product> = moka::sync::Cache::new(capacity);
    // For reference only: the same lookup without cloning the value.
    let bare_arc: moka::sync::Cache<String, Arc<Product>> = moka::sync::Cache::new(capacity);

    progress!("l1-hit: namespace {ns}, filling {} keys", args.keys);
    let opts = EntryOptions::new().ttl(Duration::from_secs(3_600));
    let mut order = Vec::with_capacity(args.keys as usize);
    for i in 0..args.keys {
        let key = item_key(i);
        let value = Product::sample(i);
        cache.set(&key, &value, &opts).await?;
        bare_arc.insert(key.clone(), Arc::new(value.clone()));
        bare.insert(key.clone(), value);
        order.push(key);
    }
    // Both sides read the same keys in the same (shuffled) order.
    Rng::new(42).shuffle(&mut order);

    // Every read must be a hit on both sides, or the comparison means nothing.
    for key in &order {
        let ours = cache.get::<Product>(key).await?;
        ensure!(ours.is_some(), "stratacache L1 missed {key} after filling");
        ensure!(
            ours == bare.get(key.as_str()),
            "the two sides disagree on {key}"
        );
    }

    // Warm-up, not recorded.
    let warm = Duration::from_millis(200);
    run_stratacache(&cache, &order, warm).await;
    run_bare(&bare, &order, warm);
    run_bare(&bare_arc, &order, warm);

    let slice =
        Duration::from_secs(args.duration_secs).max(Duration::from_millis(200)) / (2 * args.rounds);
    progress!(
        "l1-hit: {} interleaved rounds of {:?} per side",
        args.rounds,
        slice
    );
    let (mut ours_ns, mut bare_ns, mut arc_ns) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..args.rounds {
        // ABBA order, so neither side always runs first.
        let (a, b) = if r.is_multiple_of(2) {
            let a = run_stratacache(&cache, &order, slice).await;
            (a, run_bare(&bare, &order, slice))
        } else {
            let b = run_bare(&bare, &order, slice);
            (run_stratacache(&cache, &order, slice).await, b)
        };
        let c = run_bare(&bare_arc, &order, slice);
        progress!(
            "round {:>2}: stratacache {:>7.1} ns/op, bare moka {:>7.1} ns/op ({:.2}x); \
             moka get of an Arc {:>6.1} ns/op",
            r + 1,
            a,
            b,
            a / b,
            c
        );
        ours_ns.push(a);
        bare_ns.push(b);
        arc_ns.push(c);
    }

    let (ours, base) = (median(&ours_ns), median(&bare_ns));
    let per_round: Vec<f64> = ours_ns.iter().zip(&bare_ns).map(|(a, b)| a / b).collect();
    let r = ratio(ours, base);
    let met = r <= TARGET_MAX_RATIO && ours <= TARGET_MAX_NS;
    progress!("l1-hit: stratacache {ours:.1} ns/op, bare moka {base:.1} ns/op, ratio {r}");
    Ok(json!({
        "scenario": "l1-hit",
        "keys": args.keys,
        "duration_secs": args.duration_secs,
        "rounds": args.rounds,
        "value_json_bytes": Product::sample(0).json_len(),
        "stratacache_ns_per_op": round(ours, 1),
        "bare_moka_ns_per_op": round(base, 1),
        "ratio": r,
        "ratio_median_of_rounds": round(median(&per_round), 3),
        "reference_moka_arc_ns_per_op": round(median(&arc_ns), 1),
        "stratacache_rounds_ns": ours_ns.iter().map(|x| round(*x, 1)).collect::<Vec<_>>(),
        "bare_moka_rounds_ns": bare_ns.iter().map(|x| round(*x, 1)).collect::<Vec<_>>(),
        "target": {"max_ratio": TARGET_MAX_RATIO, "max_ns_per_op": TARGET_MAX_NS},
        "met": met,
    }))
}

/// Whole passes over `order` until `budget` is spent; returns ns per get.
async fn run_stratacache(cache: &Cache, order: &[String], budget: Duration) -> f64 {
    let started = Instant::now();
    let mut ops = 0u64;
    let mut hits = 0u64;
    loop {
        for key in order {
            let found = black_box(cache.get::<Product>(black_box(key)).await);
            hits += u64::from(matches!(found, Ok(Some(_))));
        }
        ops += order.len() as u64;
        if started.elapsed() >= budget {
            break;
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(hits, ops, "stratacache L1 missed during the run");
    elapsed.as_nanos() as f64 / ops as f64
}

/// The same loop over a bare moka cache.
fn run_bare<V: Clone + Send + Sync + 'static>(
    bare: &moka::sync::Cache<String, V>,
    order: &[String],
    budget: Duration,
) -> f64 {
    let started = Instant::now();
    let mut ops = 0u64;
    let mut hits = 0u64;
    loop {
        for key in order {
            let found = black_box(bare.get(black_box(key.as_str())));
            hits += u64::from(found.is_some());
        }
        ops += order.len() as u64;
        if started.elapsed() >= budget {
            break;
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(hits, ops, "bare moka missed during the run");
    elapsed.as_nanos() as f64 / ops as f64
}
