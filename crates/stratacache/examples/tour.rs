//! A tour of stratacache against a real Redis: misses, L1 and L2 hits,
//! a stampede of 1,000 callers, then Redis killed and restarted under it.
//!
//! It starts its own throwaway `redis-server` (so it can kill it safely):
//!
//! ```text
//! cargo run --release -p stratacache --example tour
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use stratacache::{BreakerConfig, Cache, EntryOptions};
use stratacache_testkit::RedisServer;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Quote {
    symbol: String,
    price_cents: u64,
}

/// Stands in for the database: 25 ms per query, and it counts them.
#[derive(Clone, Default)]
struct Database {
    queries: Arc<AtomicUsize>,
}

impl Database {
    async fn quote(&self, symbol: &str) -> Result<Quote, std::io::Error> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(25)).await;
        Ok(Quote {
            symbol: symbol.to_string(),
            price_cents: 10_000 + symbol.len() as u64,
        })
    }
    fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

async fn instance(redis_url: &str) -> Cache {
    Cache::builder()
        .namespace("tour")
        .redis_url(redis_url)
        .redis_timeout(Duration::from_millis(100))
        .breaker(BreakerConfig {
            failure_threshold: 3,
            probe_interval: Duration::from_millis(100),
        })
        .build()
        .await
        .expect("valid configuration")
}

async fn quote(cache: &Cache, db: &Database, symbol: &str) -> Quote {
    let opts = EntryOptions::new().ttl(Duration::from_secs(30)).jitter(0.1);
    let (db, owned) = (db.clone(), symbol.to_string());
    cache
        .get_or_load(&format!("quote:{symbol}"), &opts, move || async move {
            db.quote(&owned).await
        })
        .await
        .expect("the loader does not fail here")
}

/// Run `f`, print what it cost and where the answer came from.
async fn step<F, Fut>(label: &str, db: &Database, f: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let before = db.queries();
    let started = Instant::now();
    let outcome = f().await;
    let took = started.elapsed();
    let queries = db.queries() - before;
    println!(
        "{label:<52} {outcome:<22} {:>10.3} ms   db queries: {queries}",
        took.as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() {
    let mut redis = RedisServer::start();
    println!("throwaway redis-server on {}\n", redis.url());
    let db = Database::default();
    let a = instance(&redis.url()).await;
    let b = instance(&redis.url()).await;

    println!("── tiers ──");
    step("instance A, cold key: miss → database", &db, || async {
        format!("{:?}", quote(&a, &db, "ACME").await.price_cents)
    })
    .await;
    step("instance A again: L1 hit", &db, || async {
        format!("{:?}", quote(&a, &db, "ACME").await.price_cents)
    })
    .await;
    step("instance B (empty L1): L2 hit from Redis", &db, || async {
        format!("{:?}", quote(&b, &db, "ACME").await.price_cents)
    })
    .await;
    step("instance B again: L1 hit", &db, || async {
        format!("{:?}", quote(&b, &db, "ACME").await.price_cents)
    })
    .await;

    println!("\n── stampede ──");
    step("1,000 concurrent callers on a cold key", &db, || async {
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let (a, db) = (a.clone(), db.clone());
                tokio::spawn(async move { quote(&a, &db, "GLOBEX").await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        "1,000 answers".to_string()
    })
    .await;

    println!("\n── Redis killed ──");
    redis.kill();
    step("instance A, cached key: L1 still serves", &db, || async {
        format!("{:?}", quote(&a, &db, "ACME").await.price_cents)
    })
    .await;
    step(
        "instance A, new key: loader, Redis timed out",
        &db,
        || async { format!("{:?}", quote(&a, &db, "INITECH").await.price_cents) },
    )
    .await;
    for i in 0..3 {
        let _ = quote(&a, &db, &format!("WARMUP{i}")).await;
    }
    println!(
        "{:<52} {:?}",
        "breaker after repeated failures",
        a.breaker_state().unwrap()
    );
    step(
        "instance A, new key: loader, Redis skipped",
        &db,
        || async { format!("{:?}", quote(&a, &db, "UMBRELLA").await.price_cents) },
    )
    .await;

    println!("\n── Redis restarted ──");
    redis.restart();
    let restarted = Instant::now();
    while a.breaker_state() != Some(stratacache::BreakerState::Closed) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "{:<52} {:?} after {} ms",
        "breaker",
        a.breaker_state().unwrap(),
        restarted.elapsed().as_millis()
    );
    step(
        "instance A, new key: loader, stored in Redis again",
        &db,
        || async { format!("{:?}", quote(&a, &db, "HOOLI").await.price_cents) },
    )
    .await;
    step("instance B, same key: L2 hit", &db, || async {
        format!("{:?}", quote(&b, &db, "HOOLI").await.price_cents)
    })
    .await;

    println!(
        "\nrequests failed: 0 · database queries in total: {}",
        db.queries()
    );
}
