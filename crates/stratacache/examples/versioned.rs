//! Versioned consistency: with `Consistency::Version` a load that read an
//! older row than a writer committed can never store it, and write-throughs
//! that reach Redis out of order keep the newer value.
//!
//! `cargo run -p stratacache --example versioned` (Redis at `REDIS_URL`,
//! default `redis://127.0.0.1:6379`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use stratacache::{Cache, Consistency, EntryOptions, Loaded};

/// The "database": a row with a version column.
type Row = Arc<Mutex<(u64, String)>>;

#[tokio::main]
async fn main() -> Result<(), stratacache::Error> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let cache = Cache::builder()
        .namespace("example-versioned")
        .redis_url(&url)
        .build()
        .await?;
    let opts = EntryOptions::new()
        .ttl(Duration::from_secs(60))
        .consistency(Consistency::Version);
    let key = "price:ACME";
    let row: Row = Arc::new(Mutex::new((1, "191.20".into())));

    // A slow load reads version 1 of the row…
    let slow_load = tokio::spawn({
        let (cache, opts, row) = (cache.clone(), opts.clone(), row.clone());
        async move {
            cache
                .get_or_load_with_context(key, &opts, move |_| async move {
                    let (version, price) = row.lock().unwrap().clone();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok::<_, std::io::Error>(Loaded::value(price).version(version))
                })
                .await
        }
    });
    // …while a writer commits version 2 and announces it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    *row.lock().unwrap() = (2, "192.05".into());
    cache.invalidate_version(key, 2).await?;

    let loaded = slow_load.await.expect("load task").map(|f| f.into_value());
    println!("the slow load answered its caller with {loaded:?}");
    let cached: Option<String> = cache.get(key).await?;
    println!("but did not store it: cached = {cached:?}");
    assert_eq!(cached, None);

    // The next read loads version 2, which lands.
    let fresh = cache
        .get_or_load_with_context(key, &opts, {
            let row = row.clone();
            move |_| async move {
                let (version, price) = row.lock().unwrap().clone();
                Ok::<_, std::io::Error>(Loaded::value(price).version(version))
            }
        })
        .await?
        .into_value();
    println!("next read: {fresh:?}");

    // Write-throughs that arrive out of order: version 4 first, then 3.
    assert!(
        cache
            .set_versioned(key, &"193.00".to_string(), 4, &opts)
            .await?
    );
    let late = cache
        .set_versioned(key, &"192.50".to_string(), 3, &opts)
        .await?;
    println!("write of version 3 after version 4 stored: {late}");
    assert_eq!(cache.get::<String>(key).await?, Some("193.00".to_string()));

    cache.delete(key).await?;
    Ok(())
}
