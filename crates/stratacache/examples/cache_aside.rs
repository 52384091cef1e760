//! Cache-aside: read the cache, load on a miss, store the result.
//!
//! `cargo run -p stratacache --example cache_aside` (Redis at `REDIS_URL`,
//! default `redis://127.0.0.1:6379`).

use std::time::Duration;

use stratacache::{Cache, EntryOptions};

#[tokio::main]
async fn main() -> Result<(), stratacache::Error> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let cache = Cache::builder()
        .namespace("example-aside")
        .redis_url(&url)
        .build()
        .await?;
    let opts = EntryOptions::new().ttl(Duration::from_secs(60)).jitter(0.1);

    for attempt in 1..=3 {
        let name: String = cache
            .get_or_load("user:42:name", &opts, || async {
                println!("  loading from the database…");
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, std::io::Error>("Ada".to_string())
            })
            .await?;
        println!("attempt {attempt}: {name}");
    }
    cache.delete("user:42:name").await?;
    Ok(())
}
