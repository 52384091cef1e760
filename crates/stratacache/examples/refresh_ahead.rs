//! Refresh-ahead: hot entries are reloaded in the background before they
//! expire, so readers never wait for a miss.
//!
//! `cargo run -p stratacache --example refresh_ahead`

use std::time::{Duration, Instant};

use stratacache::{Cache, EagerRefresh, EntryOptions, Loaded};

#[tokio::main]
async fn main() -> Result<(), stratacache::Error> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let cache = Cache::builder()
        .namespace("example-refresh-ahead")
        .redis_url(&url)
        .build()
        .await?;
    // XFetch: the slower the load, the earlier the refresh (β = 1).
    let opts = EntryOptions::new()
        .ttl(Duration::from_secs(1))
        .eager_refresh(EagerRefresh::XFetch { beta: 1.0 });

    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(4) {
        let read = Instant::now();
        let trending = cache
            .get_or_load_with_context("trending", &opts, |_| async {
                tokio::time::sleep(Duration::from_millis(150)).await;
                let at = std::time::SystemTime::now();
                Ok::<_, std::io::Error>(Loaded::value(format!("{at:?}")))
            })
            .await?;
        slowest = slowest.max(read.elapsed());
        let _ = trending;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("4 s of reads on a 1 s TTL with a 150 ms load: slowest read {slowest:?} (only the very first one missed)");
    cache.delete("trending").await?;
    Ok(())
}
