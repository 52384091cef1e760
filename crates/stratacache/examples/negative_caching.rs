//! Negative caching: a scan of ids that do not exist costs the database one
//! query per id per `negative_ttl`, not one per request.
//!
//! `cargo run -p stratacache --example negative_caching`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stratacache::{Cache, EntryOptions};

#[tokio::main]
async fn main() -> Result<(), stratacache::Error> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let cache = Cache::builder()
        .namespace("example-negative")
        .redis_url(&url)
        .build()
        .await?;
    let opts = EntryOptions::new()
        .ttl(Duration::from_secs(60))
        .negative_ttl(Duration::from_secs(10));
    let queries = Arc::new(AtomicUsize::new(0));

    for _ in 0..100 {
        for id in 1000..1010 {
            let queries = queries.clone();
            let user: Option<String> = cache
                .get_or_load_optional(&format!("user:{id}"), &opts, move || async move {
                    queries.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, std::io::Error>(None) // no such row
                })
                .await?;
            assert!(user.is_none());
        }
    }
    println!(
        "1,000 lookups of 10 missing ids → {} database queries",
        queries.load(Ordering::SeqCst)
    );
    for id in 1000..1010 {
        cache.delete(&format!("user:{id}")).await?;
    }
    Ok(())
}
