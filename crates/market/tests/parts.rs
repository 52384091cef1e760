//! Details and portfolios composed from cached parts: they answer exactly
//! what `--cache off` answers after orders and price writes, on the
//! instance written through and on another one, and a composed miss with
//! its parts in the cache costs no database load.

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::json;

/// See `routes.rs`: how long another instance's L1 may lag a write.
const L1_BOUND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn composed_details_and_portfolios_follow_orders_and_prices_on_every_instance() {
    let db = TestDb::seeded().await;
    let namespace = unique("market-parts");
    let a = serve(&db, true, &namespace).await;
    let b = serve(&db, true, &namespace).await;
    let off = serve(&db, false, &unique("market-parts-off")).await;
    // User 21 signed in on each side (the namespaces differ).
    let (c, c_off) = (
        user_client(&a.url(), 21).await,
        user_client(&off.url(), 21).await,
    );
    let op = operator();
    let symbol = db.symbol(9).await;
    let (detail, portfolio) = (format!("/api/instruments/{symbol}"), "/api/portfolios/21");
    // Both instances compose and cache the detail and the portfolio.
    for server in [&a, &b] {
        for path in [detail.as_str(), portfolio] {
            let cached = get(&c, &format!("{}{path}", server.url())).await;
            assert_eq!(
                cached,
                get(&c_off, &format!("{}{path}", off.url())).await,
                "{path}"
            );
        }
    }

    let writes = [
        (
            Method::POST,
            "/api/orders".to_string(),
            json!({"user_id": 21, "symbol": symbol, "side": "buy", "quantity": 11}),
        ),
        (
            Method::PUT,
            format!("/api/stocks/{symbol}/price"),
            json!({"price": 55.5, "volume": 40}),
        ),
        (
            Method::POST,
            "/api/orders".to_string(),
            json!({"user_id": 21, "symbol": symbol, "side": "sell", "quantity": 4}),
        ),
    ];
    for (method, path, body) in writes {
        let writer = if method == Method::PUT { &op } else { &c };
        let (status, answer) =
            send(writer, method.clone(), &format!("{}{path}", a.url()), body).await;
        assert!(status == 200 || status == 201, "{path}: {status} {answer}");
        // A cached portfolio follows a new price within its TTL (60 s), by
        // design of its policy; an order invalidates it at once. The order
        // after the price checks that it is then valued at the new price.
        let read: &[&str] = if method == Method::PUT {
            &[detail.as_str()]
        } else {
            &[detail.as_str(), portfolio]
        };
        for &path in read {
            let direct = get(&c_off, &format!("{}{path}", off.url())).await;
            // The writer's instance answers the write's result at once.
            assert_eq!(
                get(&c, &format!("{}{path}", a.url())).await,
                direct,
                "{path}"
            );
            eventually(&c, &format!("{}{path}", b.url()), L1_BOUND, |body| {
                body == &direct.1
            })
            .await;
        }
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    off.stop().await.unwrap();
}

#[tokio::test]
async fn a_portfolio_composed_from_cached_parts_loads_nothing() {
    let db = TestDb::seeded().await;
    let on = serve(&db, true, &unique("market-parts-warm")).await;
    let off = serve(&db, false, &unique("market-parts-warm-off")).await;
    let warmed = market::warm::positions(&on.state).await.unwrap();
    assert_eq!((warmed.entries, warmed.failed), (200, 0));
    // The feed's first push of the price windows.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while on
        .state
        .caching
        .counters()
        .by_resource()
        .get(&market::policy::Policy::PriceWindow)
        .is_none_or(|c| c.feed_queries == 0)
    {
        assert!(tokio::time::Instant::now() < deadline, "no window push");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut clients = Vec::new();
    for user in [3, 40, 77, 150] {
        let signed_in = (
            user_client(&on.url(), user).await,
            user_client(&off.url(), user).await,
        );
        clients.push((user, signed_in));
    }
    let before = loads(&on);
    for (user, (c_on, c_off)) in &clients {
        let path = format!("/api/portfolios/{user}");
        let cached = get(c_on, &format!("{}{path}", on.url())).await;
        assert_eq!(cached.0, 200, "{path}");
        assert_eq!(
            cached,
            get(c_off, &format!("{}{path}", off.url())).await,
            "{path}"
        );
    }
    assert_eq!(
        loads(&on),
        before,
        "four portfolio misses, no database load"
    );
    on.stop().await.unwrap();
    off.stop().await.unwrap();
}
