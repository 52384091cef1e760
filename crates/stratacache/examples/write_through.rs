//! Write-through: the database first, then both cache tiers.
//!
//! `cargo run -p stratacache --example write_through`

use std::time::Duration;

use stratacache::{Cache, EntryOptions};

#[tokio::main]
async fn main() -> Result<(), stratacache::Error> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let cache = Cache::builder()
        .namespace("example-write-through")
        .redis_url(&url)
        .build()
        .await?;
    let opts = EntryOptions::new().ttl(Duration::from_secs(2));

    let stored = cache
        .write_through("price:ACME", &opts, || async {
            // UPDATE prices SET cents = 10150 WHERE symbol = 'ACME' RETURNING cents
            Ok::<_, std::io::Error>(10_150u64)
        })
        .await?;
    println!(
        "written: {stored}, cached: {:?}",
        cache.get::<u64>("price:ACME").await?
    );

    let failed = cache
        .write_through::<u64, _, _, _>("price:ACME", &opts, || async {
            Err(std::io::Error::other("serialization failure"))
        })
        .await;
    println!(
        "failed write: {failed:?}; cache still: {:?}",
        cache.get::<u64>("price:ACME").await?
    );
    cache.delete("price:ACME").await?;
    Ok(())
}
