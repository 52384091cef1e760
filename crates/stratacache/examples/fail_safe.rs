//! Fail-safe: when the source fails, the last good value keeps being served
//! (marked stale) and the source is not hammered while it is down.
//!
//! `cargo run -p stratacache --example fail_safe`

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stratacache::{Cache, EntryOptions, Loaded};

#[tokio::main]
async fn main() -> Result<(), stratacache::Error> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let cache = Cache::builder()
        .namespace("example-fail-safe")
        .redis_url(&url)
        .build()
        .await?;
    let opts = EntryOptions::new()
        .ttl(Duration::from_millis(300))
        .stale_for(Duration::from_secs(60))
        .soft_timeout(Duration::from_secs(1)) // wait for loads; stale only when they fail
        .hard_timeout(Duration::from_secs(2))
        .fail_safe_throttle(Duration::from_secs(1));
    let database_up = Arc::new(AtomicBool::new(true));
    let queries = Arc::new(AtomicUsize::new(0));

    for second in 0..8 {
        if second == 2 {
            database_up.store(false, Ordering::SeqCst);
            println!("-- database goes down --");
        }
        if second == 6 {
            database_up.store(true, Ordering::SeqCst);
            println!("-- database is back --");
        }
        for _ in 0..5 {
            let (up, queries) = (database_up.clone(), queries.clone());
            let price = cache
                .get_or_load_with_context("price:ACME", &opts, move |_| async move {
                    queries.fetch_add(1, Ordering::SeqCst);
                    if up.load(Ordering::SeqCst) {
                        Ok(Loaded::value(100 + second))
                    } else {
                        Err(std::io::Error::other("connection refused"))
                    }
                })
                .await?;
            print!(
                "{:?}{} ",
                price.value().unwrap(),
                if price.is_stale() { " (stale)" } else { "" }
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!(
            " | database queries so far: {}",
            queries.load(Ordering::SeqCst)
        );
    }
    cache.delete("price:ACME").await?;
    Ok(())
}
