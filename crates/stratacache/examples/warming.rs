//! Cache warming: fill both tiers before traffic arrives, in pipelined
//! batches, at a bounded rate, with progress reports.
//!
//! `cargo run -p stratacache --example warming` (Redis at `REDIS_URL`,
//! default `redis://127.0.0.1:6379`).

use std::time::Duration;

use stratacache::{Cache, EntryOptions, WarmSettings};

#[tokio::main]
async fn main() -> Result<(), stratacache::Error> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let cache = Cache::builder()
        .namespace("example-warming")
        .redis_url(&url)
        .build()
        .await?;

    // Stands in for rows streamed from the database.
    let rows = (0..10_000u32).map(|id| (format!("product:{id}"), format!("Product #{id}")));
    let settings = WarmSettings::new()
        .batch_size(1_000)
        .max_entries_per_sec(20_000)
        .progress(|p| {
            println!(
                "  {} done ({} skipped) after {:?}",
                p.done, p.skipped, p.elapsed
            )
        });
    let opts = EntryOptions::new()
        .ttl(Duration::from_secs(600))
        .jitter(0.1);
    let report = cache
        .warm(futures::stream::iter(rows), &opts, settings)
        .await?;
    println!("{report:?}");

    println!(
        "product:42 = {:?}",
        cache.get::<String>("product:42").await?
    );
    cache.invalidate_prefix("product:").await?;
    Ok(())
}
