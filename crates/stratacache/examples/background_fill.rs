//! Answer a miss as soon as the database has, and fill the cache after
//! (`EntryOptions::fill_in_background`): the caller does not wait for Redis
//! to take the value, yet the next call — here or on another instance — is
//! a hit, and the database is asked once.
//!
//! `cargo run -p stratacache --example background_fill` (Redis at
//! `REDIS_URL`, default `redis://127.0.0.1:6379`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stratacache::{Cache, EntryOptions};

#[tokio::main]
async fn main() -> Result<(), stratacache::Error> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let cache = Cache::builder()
        .namespace("example-background-fill")
        .redis_url(&url)
        .build()
        .await?;
    let opts = EntryOptions::new()
        .ttl(Duration::from_secs(60))
        .fill_in_background(true);
    let queries = Arc::new(AtomicUsize::new(0));

    for attempt in 1..=3 {
        let started = Instant::now();
        let queries = queries.clone();
        let price: f64 = cache
            .get_or_load("quote:ACME", &opts, move || async move {
                queries.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await; // the database
                Ok::<_, std::io::Error>(101.5)
            })
            .await?;
        println!("attempt {attempt}: {price} in {:?}", started.elapsed());
    }
    println!("database queries: {}", queries.load(Ordering::SeqCst));
    cache.delete("quote:ACME").await?;
    Ok(())
}
