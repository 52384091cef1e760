//! Tags: drop every entry about one thing at once, on every instance —
//! `invalidate_tag` writes one stamp in Redis, whatever the number of entries.
//!
//! `cargo run -p stratacache --example tags` (Redis at `REDIS_URL`, default
//! `redis://127.0.0.1:6379`).

use std::time::Duration;

use stratacache::{Cache, EntryOptions};

#[tokio::main]
async fn main() -> Result<(), stratacache::Error> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let cache = Cache::builder()
        .namespace("example-tags")
        .redis_url(&url)
        .build()
        .await?;
    let ttl = Duration::from_secs(60);

    // Everything derived from product 42 carries its tag; the category page
    // shows it too, so it carries both tags.
    let product_42 = EntryOptions::new().ttl(ttl).tags(["product:42"]);
    let category_page = EntryOptions::new()
        .ttl(ttl)
        .tags(["product:42", "category:kitchen"]);
    let product_7 = EntryOptions::new().ttl(ttl).tags(["product:7"]);
    let s = |v: &str| v.to_string();
    cache
        .set("product:42:name", &s("Teapot"), &product_42)
        .await?;
    cache
        .set("product:42:price", &s("19.90"), &product_42)
        .await?;
    cache
        .set("page:/kitchen", &s("<li>Teapot</li>"), &category_page)
        .await?;
    cache
        .set("product:7:name", &s("Kettle"), &product_7)
        .await?;

    // Product 42 changed in the database: one call drops all three entries.
    cache.invalidate_tag("product:42").await?;

    let keys = [
        "product:42:name",
        "product:42:price",
        "page:/kitchen",
        "product:7:name",
    ];
    for key in keys {
        let value: Option<String> = cache.get(key).await?;
        println!("{key:18} {value:?}");
    }
    assert_eq!(cache.get::<String>("product:42:price").await?, None);
    assert_eq!(
        cache.get::<String>("product:7:name").await?,
        Some(s("Kettle"))
    );

    cache.delete_many(&keys).await?;
    Ok(())
}
