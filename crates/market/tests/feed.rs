//! The market-data feed: every quote and order book is pushed into the
//! cache, so reads of them load nothing; what the database gets from
//! elsewhere shows within a push; and a snapshot older than a `PUT` never
//! replaces the `PUT`'s value (the versioned write is refused).

mod common;

use std::time::Duration;

use common::*;
use market::db::snapshots;
use market::policy::Policy;
use reqwest::Method;
use serde_json::json;

/// A push every half TTL (1 s for quotes, 0.5 s for books); on a loaded
/// machine allow a few.
const PUSHED_WITHIN: Duration = Duration::from_secs(5);

#[tokio::test]
async fn every_quote_and_book_is_pushed_and_matches_the_database() {
    let db = TestDb::seeded().await;
    let on = serve(&db, true, &unique("market-feed")).await;
    let off = serve(&db, false, &unique("market-feed-off")).await;
    let c = client();
    let symbols: Vec<String> = {
        let mut all = Vec::new();
        for id in 1..=20 {
            all.push(db.symbol(id).await);
        }
        all
    };
    // The first push runs at start; wait until it has reached the cache.
    let deadline = tokio::time::Instant::now() + PUSHED_WITHIN;
    loop {
        let counts = on.state.caching.counters().by_resource();
        let fed = |r: Policy| counts.get(&r).map_or(0, |c| c.feed_queries);
        if fed(Policy::StockPrice) >= 2 && fed(Policy::MarketDepth) >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no pushes: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = loads(&on);
    for symbol in &symbols {
        for path in [
            format!("/api/stocks/{symbol}/price"),
            format!("/api/stocks/{symbol}/depth"),
        ] {
            let cached = get(&c, &format!("{}{path}", on.url())).await;
            let direct = get(&c, &format!("{}{path}", off.url())).await;
            assert_eq!(cached.0, 200, "{path}");
            assert_eq!(cached, direct, "{path}");
        }
    }
    assert_eq!(
        loads(&on),
        before,
        "every quote and book read came from the cache"
    );

    // A tick written to the database by something else than the service
    // shows within a push, without a read having to miss.
    let symbol = &symbols[3];
    let pool = db.pool().await;
    sqlx::query(
        "INSERT INTO prices (instrument_id, ts, price, volume)
         SELECT id, now() + interval '1 second', 4242.5, 9 FROM instruments WHERE symbol = $1",
    )
    .bind(symbol)
    .execute(&pool)
    .await
    .unwrap();
    eventually(
        &c,
        &format!("{}/api/stocks/{symbol}/price", on.url()),
        PUSHED_WITHIN,
        |q| q["price"] == 4242.5,
    )
    .await;
    pool.close().await;
    on.stop().await.unwrap();
    off.stop().await.unwrap();
}

#[tokio::test]
async fn a_snapshot_older_than_a_put_never_replaces_it() {
    let db = TestDb::seeded().await;
    let namespace = unique("market-feed-race");
    let on = serve(&db, true, &namespace).await;
    let other = serve(&db, true, &namespace).await;
    let c = operator();
    let symbol = db.symbol(7).await;
    let feed_db = market::db::Db::connect(&db.url, 2).await.unwrap();

    // The feed read its snapshot, then a PUT committed and wrote through,
    // then the snapshot reached the cache: the race the versions close.
    let quotes = snapshots::all_quotes(&feed_db).await.unwrap();
    let books = snapshots::all_depths(&feed_db).await.unwrap();
    let (status, body) = send(
        &c,
        Method::PUT,
        &format!("{}/api/stocks/{symbol}/price", on.url()),
        json!({"price": 321.25, "volume": 5}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let book = json!({"bids": [{"price": 320.0, "quantity": 3}], "asks": []});
    let (status, body) = send(
        &c,
        Method::PUT,
        &format!("{}/api/stocks/{symbol}/depth", on.url()),
        book.clone(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let pushed = market::feed::write_quotes(&other.state.caching, quotes)
        .await
        .unwrap();
    assert_eq!(pushed.superseded, 1, "{pushed:?}");
    assert_eq!(pushed.failed, 0, "{pushed:?}");
    let pushed = market::feed::write_depths(&other.state.caching, books)
        .await
        .unwrap();
    assert_eq!(pushed.superseded, 1, "{pushed:?}");
    for server in [&on, &other] {
        let (_, quote) = get(&c, &format!("{}/api/stocks/{symbol}/price", server.url())).await;
        assert_eq!(quote["price"], 321.25, "{quote}");
        let (_, depth) = get(&c, &format!("{}/api/stocks/{symbol}/depth", server.url())).await;
        assert_eq!(depth["bids"], book["bids"], "{depth}");
    }
    // And the feeds running on both instances keep the written values.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for server in [&on, &other] {
        let (_, quote) = get(&c, &format!("{}/api/stocks/{symbol}/price", server.url())).await;
        assert_eq!(quote["price"], 321.25, "{quote}");
        let (_, depth) = get(&c, &format!("{}/api/stocks/{symbol}/depth", server.url())).await;
        assert_eq!(depth["bids"], book["bids"], "{depth}");
    }
    feed_db.close().await;
    on.stop().await.unwrap();
    other.stop().await.unwrap();
}
