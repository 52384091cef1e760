//! `--cache off` serves the same API: the same answers, byte for byte in
//! JSON, with and without the cache — before and after writes.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn cache_off_and_on_give_the_same_answers() {
    let db = TestDb::seeded().await;
    let on = serve(&db, true, &unique("market-parity")).await;
    let off = serve(&db, false, &unique("market-parity-off")).await;
    // Each side's own sessions (the namespaces differ), and the operator.
    let (c_on, c_off) = (
        user_client(&on.url(), 3).await,
        user_client(&off.url(), 3).await,
    );
    let op = operator();
    let (s1, s2) = (db.symbol(1).await, db.symbol(2).await);
    let paths = vec![
        "/api/instruments".to_string(),
        "/api/instruments?sector=TECH".to_string(),
        "/api/instruments?exchange=NYSE&sector=FIN".to_string(),
        format!("/api/instruments/{s1}"),
        format!("/api/instruments/{s2}"),
        format!("/api/stocks/{s1}/price"),
        format!("/api/stocks/{s2}/depth"),
        "/api/portfolios/3".to_string(),
        "/api/watchlists/3".to_string(),
        "/api/users/3/profile".to_string(),
        "/api/trending".to_string(),
        "/api/market/overview".to_string(),
        "/api/instruments/NOPE9".to_string(),
        "/api/portfolios/999999".to_string(),
        "/api/users/abc/profile".to_string(),
        "/api/users/4/profile".to_string(),
    ];
    let compare = |round: &'static str| {
        let (c_on, c_off) = (c_on.clone(), c_off.clone());
        let (paths, on_url, off_url) = (paths.clone(), on.url(), off.url());
        async move {
            for path in &paths {
                // Twice on the cached side: the second answer comes from the cache.
                for _ in 0..2 {
                    let cached = get(&c_on, &format!("{on_url}{path}")).await;
                    let direct = get(&c_off, &format!("{off_url}{path}")).await;
                    assert_eq!(cached, direct, "{round}: {path}");
                }
            }
        }
    };
    compare("before writes").await;

    // Writes through either side; reads must agree afterwards.
    let (status, _) = send(
        &op,
        Method::PUT,
        &format!("{}/api/stocks/{s1}/price", on.url()),
        json!({"price": 77.0}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(
        &c_off,
        Method::POST,
        &format!("{}/api/orders", off.url()),
        json!({"user_id": 3, "symbol": s2, "side": "buy", "quantity": 3}),
    )
    .await;
    assert_eq!(status, 201);
    // The off instance cannot invalidate the on instance's cache; a write
    // through the on instance to the same data does (what a deployment of
    // one mode does): the next order, of the same user on the same symbol,
    // hands the cache the user's positions and the symbol's holders and
    // trades as both orders left them.
    let (status, _) = send(
        &c_on,
        Method::POST,
        &format!("{}/api/orders", on.url()),
        json!({"user_id": 3, "symbol": s2, "side": "buy", "quantity": 1}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = send(
        &c_on,
        Method::PUT,
        &format!("{}/api/users/3/profile", on.url()),
        json!({"country": "FR"}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(
        &c_on,
        Method::PUT,
        &format!("{}/api/watchlists/3", on.url()),
        json!({"symbols": [s2, s1]}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(
        &op,
        Method::PUT,
        &format!("{}/api/stocks/{s2}/depth", on.url()),
        json!({"bids": [], "asks": [{"price": 5.0, "quantity": 1}]}),
    )
    .await;
    assert_eq!(status, 200);
    let after: Vec<String> = paths
        .iter()
        .filter(|p| !p.contains("overview") && !p.contains("trending"))
        .cloned()
        .collect();
    for path in &after {
        let cached = get(&c_on, &format!("{}{path}", on.url())).await;
        let direct = get(&c_off, &format!("{}{path}", off.url())).await;
        assert_eq!(cached, direct, "after writes: {path}");
    }
    on.stop().await.unwrap();
    off.stop().await.unwrap();
}
