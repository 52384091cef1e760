//! Write-behind: counters and values acknowledged once Redis holds them,
//! applied to PostgreSQL in batches by a worker.
//!
//! `cargo run -p stratacache --example write_behind`          — write, read, drain
//! `cargo run -p stratacache --example write_behind -- status` — the queue's state
//! `cargo run -p stratacache --example write_behind -- replay` — put dead letters back
//!
//! Uses `REDIS_URL` (default `redis://127.0.0.1:6379`) and `DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`); the tables live in
//! the schema `stratacache_example`.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use stratacache::write_behind::{PostgresSink, Sink, WriteBehind};
use stratacache::Cache;

#[tokio::main]
async fn main() -> Result<(), stratacache::BoxError> {
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let database = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&database)
        .await?;
    sqlx::query("CREATE SCHEMA IF NOT EXISTS stratacache_example")
        .execute(&pool)
        .await?;
    let sink = PostgresSink::new(pool, "stratacache_example.views")?;
    sink.create_tables().await?;

    let cache = Cache::builder()
        .namespace("example-write-behind")
        .redis_url(&redis)
        .build()
        .await?;
    // Warns (tracing) when Redis has no AOF: see RELIABILITY.md.
    let views = WriteBehind::builder(cache, sink)
        .name("views")
        .batch_interval(Duration::from_millis(20))
        .build()
        .await?;
    println!("redis durability: {:?}", views.durability());

    match std::env::args().nth(1).as_deref() {
        Some("status") => println!("{:?}", views.queue_status().await?),
        Some("replay") => println!(
            "{} dead letters back on the queue",
            views.replay_dead_letters(10_000).await?
        ),
        _ => {
            for _ in 0..1_000 {
                views.incr("instrument:ACME", 1).await?;
            }
            views
                .set("instrument:ACME:last-viewer", &"ada".to_string())
                .await?;
            // Before any worker ran: the cache has it, the database not yet.
            println!(
                "read through the cache: {} views, last viewer {:?}; queue {:?}",
                views.counter("instrument:ACME").await?,
                views.get::<String>("instrument:ACME:last-viewer").await?,
                views.queue_status().await?
            );
            let worker = views.spawn_worker();
            while views.queue_status().await?.depth > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            worker.shutdown().await;
            println!(
                "applied: {:?}; database total {}",
                views.stats(),
                views.sink().read_counter("instrument:ACME").await?
            );
        }
    }
    Ok(())
}
