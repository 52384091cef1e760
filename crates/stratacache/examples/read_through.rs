//! Read-through: the application talks to a `Resource`; misses reach the
//! `Loader`, batched misses reach it in one `load_many` call.
//!
//! `cargo run -p stratacache --example read_through`

use std::collections::HashMap;
use std::time::Duration;

use stratacache::{Cache, EntryOptions, Loader, Resource};

/// Stands in for `SELECT … WHERE id = ANY($1)`.
struct Instruments;

impl Loader<u32, String> for Instruments {
    type Error = std::io::Error;

    async fn load(&self, id: &u32) -> Result<Option<String>, Self::Error> {
        println!("  load({id})");
        Ok((*id < 100).then(|| format!("instrument #{id}")))
    }

    async fn load_many(&self, ids: &[u32]) -> Result<HashMap<u32, String>, Self::Error> {
        println!("  load_many({ids:?})");
        Ok(ids
            .iter()
            .filter(|id| **id < 100)
            .map(|id| (*id, format!("instrument #{id}")))
            .collect())
    }
}

#[tokio::main]
async fn main() -> Result<(), stratacache::Error> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let cache = Cache::builder()
        .namespace("example-read-through")
        .redis_url(&url)
        .build()
        .await?;
    let instruments = Resource::new(
        cache,
        "instrument",
        EntryOptions::new().ttl(Duration::from_secs(60)),
        Instruments,
    );

    println!("one: {:?}", instruments.get(&7).await?);
    println!(
        "many: {:?}",
        instruments.get_many(&[7, 8, 9, 500]).await?.len()
    );
    println!(
        "many again (all cached, 500 negatively): {:?}",
        instruments.get_many(&[7, 8, 9, 500]).await?.len()
    );
    for id in [7, 8, 9, 500] {
        instruments.invalidate(&id).await?;
    }
    Ok(())
}
