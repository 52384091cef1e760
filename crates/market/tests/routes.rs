//! Every route of `market serve` over HTTP, on real PostgreSQL and Redis:
//! what it answers, read-after-write for every write route through a second
//! instance, negative caching. Bad input and sessions have their own files.

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::json;

/// How long a second instance may keep serving from its L1 after a write
/// acknowledged by the first (SPEC §3: every L1 within 50 ms on loopback;
/// the test allows for a loaded machine).
const L1_BOUND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn every_read_route_answers() {
    let db = TestDb::seeded().await;
    let server = serve(&db, true, &unique("market-routes")).await;
    let (c, base) = (client(), server.url());
    let symbol = db.symbol(3).await;

    let (status, list) = get(&c, &format!("{base}/api/instruments")).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 20);
    let sector = list[0]["sector"].as_str().unwrap().to_string();
    let (_, filtered) = get(
        &c,
        &format!("{base}/api/instruments?sector={}", sector.to_lowercase()),
    )
    .await;
    let filtered = filtered.as_array().unwrap();
    assert!(!filtered.is_empty() && filtered.iter().all(|i| i["sector"] == sector.as_str()));

    // The listing is behind the HTTP response cache: one handler call per
    // filter, the parameters' order does not matter.
    let x_cache = |url: String| {
        let c = c.clone();
        async move {
            let r = c.get(url).send().await.unwrap();
            let x = r
                .headers()
                .get("x-cache")
                .map(|v| v.to_str().unwrap().to_string());
            (x, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let by_both = format!("{base}/api/instruments?sector={sector}&exchange=NYSE");
    let loads_before = loads(&server);
    let (first, body) = x_cache(by_both.clone()).await;
    assert_eq!(first.as_deref(), Some("MISS"));
    let (again, same) = x_cache(format!(
        "{base}/api/instruments?exchange=NYSE&sector={sector}"
    ))
    .await;
    assert_eq!((again.as_deref(), &same), (Some("HIT"), &body));
    assert_eq!(loads(&server), loads_before + 1);

    let (status, detail) = get(&c, &format!("{base}/api/instruments/{symbol}")).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["symbol"], symbol.as_str());
    assert_eq!(
        detail["candles"].as_array().unwrap().len(),
        31,
        "30 days of hourly ticks span 31 dates"
    );
    assert!(detail["holders"].as_i64().unwrap() > 0);

    let (status, quote) = get(
        &c,
        &format!("{base}/api/stocks/{}/price", symbol.to_lowercase()),
    )
    .await;
    assert_eq!(status, 200);
    assert!(quote["price"].as_f64().unwrap() > 0.0);
    let (status, depth) = get(&c, &format!("{base}/api/stocks/{symbol}/depth")).await;
    assert_eq!(status, 200);
    assert_eq!(depth["bids"].as_array().unwrap().len(), 10);

    let user7 = user_client(&base, 7).await;
    let (status, portfolio) = get(&user7, &format!("{base}/api/portfolios/7")).await;
    assert_eq!(status, 200);
    assert_eq!(portfolio["holdings"].as_array().unwrap().len(), 15);
    let (status, watchlist) = get(&user7, &format!("{base}/api/watchlists/7")).await;
    assert_eq!(status, 200);
    assert!(!watchlist["symbols"].as_array().unwrap().is_empty());
    let (status, profile) = get(&user7, &format!("{base}/api/users/7/profile")).await;
    assert_eq!((status, profile["username"].as_str()), (200, Some("user7")));
    assert!(profile["email"].is_string(), "the user's own: {profile}");

    let (status, trending) = get(&c, &format!("{base}/api/trending")).await;
    assert_eq!((status, trending.as_array().unwrap().len()), (200, 10));
    let (status, overview) = get(&c, &format!("{base}/api/market/overview")).await;
    assert_eq!(status, 200);
    assert!(!overview["sectors"].as_array().unwrap().is_empty());
    assert_eq!(overview["gainers"].as_array().unwrap().len(), 5);

    let (status, health) = get(&c, &format!("{base}/health")).await;
    assert_eq!(status, 200);
    assert_eq!(
        (health["postgres"].as_str(), health["redis"].as_str()),
        (Some("up"), Some("up"))
    );
    assert_eq!(health["breaker"], "closed");
    let metrics = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("market_http_requests_total"), "{metrics}");
    assert!(metrics.contains("market_cache_lookups_total"));
    let page = c
        .get(format!("{base}/dashboard"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<canvas") && page.contains("/dashboard/stats"));
    let (status, stats) = get(&c, &format!("{base}/dashboard/stats")).await;
    assert_eq!(status, 200);
    assert_eq!(
        (stats["users"].as_i64(), stats["instruments"].as_i64()),
        (Some(200), Some(20))
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn every_write_is_read_back_through_both_instances() {
    let db = TestDb::seeded().await;
    let namespace = unique("market-raw");
    let a = serve(&db, true, &namespace).await;
    let b = serve(&db, true, &namespace).await;
    let c = client();
    let (ua, ub) = (a.url(), b.url());
    let op = operator();
    let symbol = db.symbol(5).await;

    // Price (write-through): B has the old quote cached, A writes.
    get(&c, &format!("{ub}/api/stocks/{symbol}/price")).await;
    let (status, written) = send(
        &op,
        Method::PUT,
        &format!("{ua}/api/stocks/{symbol}/price"),
        json!({"price": 123.45, "volume": 7}),
    )
    .await;
    assert_eq!(status, 200, "{written}");
    let (_, on_a) = get(&c, &format!("{ua}/api/stocks/{symbol}/price")).await;
    assert_eq!(on_a["price"], 123.45);
    eventually(
        &c,
        &format!("{ub}/api/stocks/{symbol}/price"),
        L1_BOUND,
        |q| q["price"] == 123.45,
    )
    .await;

    // Depth (write-through).
    get(&c, &format!("{ub}/api/stocks/{symbol}/depth")).await;
    let book = json!({"bids": [{"price": 99.5, "quantity": 10}], "asks": [{"price": 100.5, "quantity": 20}]});
    let (status, _) = send(
        &op,
        Method::PUT,
        &format!("{ua}/api/stocks/{symbol}/depth"),
        book.clone(),
    )
    .await;
    assert_eq!(status, 200);
    let (_, on_a) = get(&c, &format!("{ua}/api/stocks/{symbol}/depth")).await;
    assert_eq!(
        (&on_a["bids"], &on_a["asks"]),
        (&book["bids"], &book["asks"])
    );
    eventually(
        &c,
        &format!("{ub}/api/stocks/{symbol}/depth"),
        L1_BOUND,
        |d| d["bids"] == book["bids"],
    )
    .await;

    // Orders invalidate the portfolio.
    let held = |p: &serde_json::Value| {
        p["holdings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["symbol"] == symbol.as_str())
            .map_or(0, |h| h["quantity"].as_i64().unwrap())
    };
    let user11 = user_client(&ua, 11).await;
    let (_, before) = get(&user11, &format!("{ub}/api/portfolios/11")).await;
    let before = held(&before);
    let (status, filled) = send(
        &user11,
        Method::POST,
        &format!("{ua}/api/orders"),
        json!({"user_id": 11, "symbol": symbol, "side": "buy", "quantity": 7}),
    )
    .await;
    assert_eq!(status, 201, "{filled}");
    assert_eq!(filled["price"], 123.45, "filled at the last price");
    let (_, on_a) = get(&user11, &format!("{ua}/api/portfolios/11")).await;
    assert_eq!(held(&on_a), before + 7);
    eventually(&user11, &format!("{ub}/api/portfolios/11"), L1_BOUND, |p| {
        held(p) == before + 7
    })
    .await;
    let (status, sold) = send(
        &user11,
        Method::POST,
        &format!("{ub}/api/orders"),
        json!({"user_id": 11, "symbol": symbol, "side": "sell", "quantity": 2}),
    )
    .await;
    assert_eq!(status, 201, "{sold}");
    eventually(&user11, &format!("{ua}/api/portfolios/11"), L1_BOUND, |p| {
        held(p) == before + 5
    })
    .await;

    // Watchlist.
    let user12 = user_client(&ua, 12).await;
    get(&user12, &format!("{ub}/api/watchlists/12")).await;
    let wanted = vec![db.symbol(1).await, db.symbol(2).await];
    let (status, _) = send(
        &user12,
        Method::PUT,
        &format!("{ua}/api/watchlists/12"),
        json!({"symbols": wanted}),
    )
    .await;
    assert_eq!(status, 200);
    let (_, on_a) = get(&user12, &format!("{ua}/api/watchlists/12")).await;
    assert_eq!(on_a["symbols"], json!(wanted));
    eventually(&user12, &format!("{ub}/api/watchlists/12"), L1_BOUND, |w| {
        w["symbols"] == json!(wanted)
    })
    .await;

    // Profile: the update invalidates every user:{id}:* key.
    get(&c, &format!("{ub}/api/users/12/profile")).await;
    let (status, _) = send(
        &user12,
        Method::PUT,
        &format!("{ua}/api/users/12/profile"),
        json!({"display_name": "Ada", "risk_level": "high"}),
    )
    .await;
    assert_eq!(status, 200);
    let (_, on_a) = get(&user12, &format!("{ua}/api/users/12/profile")).await;
    assert_eq!(
        (on_a["display_name"].as_str(), on_a["risk_level"].as_str()),
        (Some("Ada"), Some("high"))
    );
    eventually(&c, &format!("{ub}/api/users/12/profile"), L1_BOUND, |p| {
        p["display_name"] == "Ada"
    })
    .await;

    // Views reach the database; trending shows them once its entry is refreshed.
    let pool = db.pool().await;
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT v.views FROM view_counts v JOIN instruments i ON i.id = v.instrument_id WHERE i.symbol = $1")
            .bind(&symbol).fetch_one(&pool).await.unwrap()
    };
    let views_before = count().await;
    for i in 1..=3 {
        let (status, answer) = send(
            &c,
            Method::POST,
            &format!("{ua}/api/instruments/{symbol}/views"),
            json!(null),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["views"].as_i64(), Some(views_before + i), "{answer}");
    }
    // Write-behind: the answers count at once (Redis's running total), the
    // table follows within the worker's batch interval; poll, bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while count().await != views_before + 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "views did not reach PostgreSQL: {} of {}",
            count().await,
            views_before + 3
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sqlx::query("UPDATE view_counts SET views = 1000000 WHERE instrument_id = 5")
        .execute(&pool)
        .await
        .unwrap();
    get(&c, &format!("{ub}/api/trending")).await;
    let (status, _) = send(
        &op,
        Method::POST,
        &format!("{ua}/admin/invalidate"),
        json!({"key": "trending"}),
    )
    .await;
    assert_eq!(status, 200);
    eventually(&c, &format!("{ub}/api/trending"), L1_BOUND, |t| {
        t[0]["symbol"] == symbol.as_str()
    })
    .await;

    // Admin invalidation by tag reaches the listing on both instances.
    let sector = {
        let (_, d) = get(&c, &format!("{ua}/api/instruments/{symbol}")).await;
        d["sector"].as_str().unwrap().to_string()
    };
    get(&c, &format!("{ub}/api/instruments?sector={sector}")).await;
    sqlx::query("UPDATE fundamentals SET market_cap = 42 WHERE instrument_id = 5")
        .execute(&pool)
        .await
        .unwrap();
    let (status, _) = send(
        &op,
        Method::POST,
        &format!("{ua}/admin/invalidate"),
        json!({"tag": format!("sector:{sector}")}),
    )
    .await;
    assert_eq!(status, 200);
    eventually(
        &c,
        &format!("{ub}/api/instruments?sector={sector}"),
        L1_BOUND,
        |l| {
            l.as_array()
                .unwrap()
                .iter()
                .any(|i| i["symbol"] == symbol.as_str() && i["market_cap"] == 42.0)
        },
    )
    .await;
    pool.close().await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_symbols_and_users_are_404_and_cached_as_absent() {
    let db = TestDb::seeded().await;
    let namespace = unique("market-neg");
    let a = serve(&db, true, &namespace).await;
    let b = serve(&db, true, &namespace).await;
    let c = client();
    // Unknown users' portfolios and watchlists are their users' alone: no
    // session can name them (403 before any load).
    for path in [
        "/api/instruments/NOPE9",
        "/api/stocks/NOPE9/price",
        "/api/stocks/NOPE9/depth",
        "/api/users/999999/profile",
    ] {
        let before = loads(&a);
        let (status, body) = get(&c, &format!("{}{path}", a.url())).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("unknown"),
            "{body}"
        );
        assert_eq!(loads(&a), before + 1, "{path}: the first miss loads");
        let (status, _) = get(&c, &format!("{}{path}", a.url())).await;
        assert_eq!(status, 404);
        assert_eq!(
            loads(&a),
            before + 1,
            "{path}: the second is answered from the negative entry"
        );
        let before_b = loads(&b);
        let (status, _) = get(&c, &format!("{}{path}", b.url())).await;
        assert_eq!(status, 404);
        assert_eq!(
            loads(&b),
            before_b,
            "{path}: the other instance finds the negative entry in Redis"
        );
    }
    let (status, _) = get(
        &c,
        &format!("{}/api/instruments/{}", a.url(), "x".repeat(300)),
    )
    .await;
    assert_eq!(status, 404, "a symbol that cannot exist is not found");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
