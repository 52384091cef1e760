//! Stale-while-revalidate: past its TTL an entry is still served, at once,
//! while one background load refreshes it.
//!
//! `cargo run -p stratacache --example stale_while_revalidate`

use std::time::{Duration, Instant};

use stratacache::{Cache, EntryOptions, Loaded};

#[tokio::main]
async fn main() -> Result<(), stratacache::Error> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let cache = Cache::builder()
        .namespace("example-swr")
        .redis_url(&url)
        .build()
        .await?;
    let opts = EntryOptions::new()
        .ttl(Duration::from_millis(500))
        .stale_for(Duration::from_secs(60));

    for round in 1..=4 {
        let started = Instant::now();
        let overview = cache
            .get_or_load_with_context("market:overview", &opts, move |_| async move {
                tokio::time::sleep(Duration::from_millis(300)).await; // an expensive aggregate
                Ok::<_, std::io::Error>(Loaded::value(format!("overview #{round}")))
            })
            .await?;
        println!(
            "round {round}: {:?} stale={} in {:?}",
            overview.value(),
            overview.is_stale(),
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    cache.delete("market:overview").await?;
    Ok(())
}
