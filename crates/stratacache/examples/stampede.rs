//! Stampede protection: 3 instances × 300 callers miss one cold key at the
//! same moment; the database sees one query.
//!
//! `cargo run -p stratacache --example stampede`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stratacache::{Cache, EntryOptions};

#[tokio::main]
async fn main() -> Result<(), stratacache::Error> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let namespace = format!("example-stampede-{}", std::process::id());
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(
            Cache::builder()
                .namespace(namespace.clone())
                .redis_url(&url)
                .build()
                .await?,
        );
    }
    let opts = EntryOptions::new().ttl(Duration::from_secs(60));
    let queries = Arc::new(AtomicUsize::new(0));

    let started = Instant::now();
    let mut callers = Vec::new();
    for i in 0..900 {
        let (cache, opts, queries) = (instances[i % 3].clone(), opts.clone(), queries.clone());
        callers.push(tokio::spawn(async move {
            cache
                .get_or_load("portfolio:42", &opts, move || async move {
                    queries.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await; // the slow query
                    Ok::<_, std::io::Error>(1_234_567u64)
                })
                .await
        }));
    }
    for caller in callers {
        caller.await.expect("caller task")?;
    }
    println!(
        "900 callers on 3 instances answered in {:?}; database queries: {}",
        started.elapsed(),
        queries.load(Ordering::SeqCst)
    );
    instances[0].delete("portfolio:42").await?;
    Ok(())
}
