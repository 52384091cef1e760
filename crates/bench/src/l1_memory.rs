//! L1 memory: does L1 hold its byte bound, and what does an entry really
//! cost? Fills an L1-only cache far past its `l1_max_bytes` and compares the
//! bound with what L1 says it holds (its weigher's bytes) and with what the
//! process's resident memory grew by (the real cost, allocator included).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use stratacache::{Cache, EntryOptions};

use crate::report::{item_key, ratio, round, unique_namespace, Product};
use crate::{progress, L1MemoryArgs};

/// SPEC: L1 holds its byte bound within 10 %.
const TARGET_MAX_OVER_BOUND: f64 = 1.10;

pub async fn run(args: &L1MemoryArgs) -> Result<Value> {
    ensure!(
        args.max_mib > 0 && args.fill_factor > 0.0,
        "arguments must be positive"
    );
    let bound = args.max_mib * 1024 * 1024;
    let ns = unique_namespace("l1mem");
    let opts = EntryOptions::new().ttl(Duration::from_secs(3_600));
    // Touch the code paths once so their one-off allocations are not counted.
    {
        let warm = Cache::builder().namespace(&ns).without_l2().build().await?;
        warm.set("warm", &Product::sample(0), &opts).await?;
    }
    let rss_before = resident_bytes()?;
    let cache = Cache::builder()
        .namespace(&ns)
        .without_l2()
        .l1_max_bytes(bound)
        .l1_max_entries(u64::MAX / 2)
        .build()
        .await?;
    let rss_built = resident_bytes()?;
    let per_entry_guess = 512u64;
    let writes = ((bound / per_entry_guess) as f64 * args.fill_factor) as u64;
    progress!(
        "l1-memory: bound {} MiB, writing {writes} distinct entries",
        args.max_mib
    );
    let mut peak_rss = rss_before;
    // (entries written, entries held, weigher bytes, resident growth), as it fills.
    let mut samples = Vec::new();
    for i in 0..writes {
        cache.set(&item_key(i), &Product::sample(i), &opts).await?;
        if (i + 1) % 25_000 == 0 {
            let rss = resident_bytes()?;
            peak_rss = peak_rss.max(rss);
            let s = cache.l1_stats().context("the cache has an L1")?;
            samples.push(json!([
                i + 1,
                s.entries,
                s.bytes,
                rss.saturating_sub(rss_before)
            ]));
        }
    }
    let stats = cache.l1_stats().context("the cache has an L1")?;
    let rss_after = resident_bytes()?;
    peak_rss = peak_rss.max(rss_after);
    let grown = rss_after.saturating_sub(rss_before);
    let held_ratio = stats.bytes as f64 / bound as f64;
    let rss_ratio = grown as f64 / bound as f64;
    progress!(
        "l1-memory: {} entries, weigher {} bytes ({:.3} of the bound), resident memory +{} bytes ({:.3} of the bound)",
        stats.entries,
        stats.bytes,
        held_ratio,
        grown,
        rss_ratio
    );
    let per_entry = |bytes: u64| round(bytes as f64 / stats.entries.max(1) as f64, 1);
    Ok(json!({
        "scenario": "l1-memory",
        "bound_bytes": bound,
        "entries_written": writes,
        "entries_held": stats.entries,
        "value_json_bytes": Product::sample(0).json_len(),
        "weigher_bytes_held": stats.bytes,
        "weigher_bytes_per_entry": per_entry(stats.bytes),
        "weigher_over_bound": ratio(stats.bytes as f64, bound as f64),
        "resident_growth_of_the_empty_cache_bytes": rss_built.saturating_sub(rss_before),
        "resident_growth_bytes": grown,
        "resident_bytes_per_entry": per_entry(grown),
        "resident_growth_over_bound": ratio(grown as f64, bound as f64),
        "peak_resident_growth_over_bound": ratio(peak_rss.saturating_sub(rss_before) as f64, bound as f64),
        "samples_written_held_weigher_resident": samples,
        "target": { "max_over_bound": TARGET_MAX_OVER_BOUND },
        "met_weigher": held_ratio <= TARGET_MAX_OVER_BOUND,
        "met_resident": rss_ratio <= TARGET_MAX_OVER_BOUND,
    }))
}

/// The process's resident set, from `/proc/self/statm` (Linux).
fn resident_bytes() -> Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").context("reading /proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .context("statm has no resident field")?
        .parse()
        .context("statm's resident field")?;
    Ok(pages * 4096)
}
