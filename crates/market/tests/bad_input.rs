//! Bad input everywhere: malformed JSON, wrong types, oversized bodies,
//! out-of-range values, unknown ids — each a clear status and message, and
//! nothing written.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let db = TestDb::seeded().await;
    let server = serve(&db, true, &unique("market-bad")).await;
    let (c, base) = (client(), server.url());
    let (op, user1) = (operator(), user_client(&base, 1).await);
    let symbol = db.symbol(4).await;
    let raw = |c: &reqwest::Client, method: Method, path: &str, body: &'static str| {
        c.request(method, format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let response = raw(&user1, Method::POST, "/api/orders", "{\"user_id\": 1, ")
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("invalid JSON"),
        "{body}"
    );
    let response = raw(
        &op,
        Method::PUT,
        &format!("/api/stocks/{symbol}/price"),
        "{\"price\": \"cheap\"}",
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 400);
    let response = op
        .put(format!("{base}/api/stocks/{symbol}/price"))
        .body("{\"price\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "no JSON content type");
    let huge = format!("{{\"symbols\": [\"{}\"]}}", "A".repeat(100 * 1024));
    let response = user1
        .put(format!("{base}/api/watchlists/1"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    // A path segment that is not UTF-8 (%FF) is a 400 with the API's JSON body.
    let response = c
        .get(format!("{base}/api/instruments/%FF%FE"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("invalid path"),
        "{body}"
    );

    let cases = [
        (
            &op,
            Method::PUT,
            format!("/api/stocks/{symbol}/price"),
            json!({"price": -1.0}),
            400,
        ),
        (
            &op,
            Method::PUT,
            format!("/api/stocks/{symbol}/price"),
            json!({"price": 1.0, "extra": 1}),
            400,
        ),
        (
            &op,
            Method::PUT,
            "/api/stocks/NOPE9/price".to_string(),
            json!({"price": 1.0}),
            404,
        ),
        (
            &op,
            Method::PUT,
            format!("/api/stocks/{symbol}/depth"),
            json!({"bids": [{"price": 0, "quantity": 1}], "asks": []}),
            400,
        ),
        (
            &user1,
            Method::POST,
            "/api/orders".to_string(),
            json!({"user_id": 1, "symbol": symbol, "side": "hold", "quantity": 1}),
            400,
        ),
        (
            &user1,
            Method::POST,
            "/api/orders".to_string(),
            json!({"user_id": 1, "symbol": symbol, "side": "buy", "quantity": 0}),
            400,
        ),
        (
            &user1,
            Method::POST,
            "/api/orders".to_string(),
            json!({"user_id": 999999, "symbol": symbol, "side": "buy", "quantity": 1}),
            403,
        ),
        (
            &user1,
            Method::POST,
            "/api/orders".to_string(),
            json!({"user_id": 1, "symbol": "NOPE9", "side": "buy", "quantity": 1}),
            404,
        ),
        (
            &user1,
            Method::POST,
            "/api/orders".to_string(),
            json!({"user_id": 1, "symbol": symbol, "side": "sell", "quantity": 1_000_000}),
            409,
        ),
        (
            &user1,
            Method::PUT,
            "/api/watchlists/1".to_string(),
            json!({"symbols": ["NOPE9"]}),
            400,
        ),
        (
            &user1,
            Method::PUT,
            "/api/watchlists/abc".to_string(),
            json!({"symbols": []}),
            400,
        ),
        (
            &user1,
            Method::PUT,
            "/api/users/1/profile".to_string(),
            json!({"email": "no-at-sign"}),
            400,
        ),
        (
            &user1,
            Method::PUT,
            "/api/users/1/profile".to_string(),
            json!({"risk_level": "yolo"}),
            400,
        ),
        (
            &user1,
            Method::PUT,
            "/api/users/999999/profile".to_string(),
            json!({"country": "FR"}),
            403,
        ),
        (
            &op,
            Method::POST,
            "/admin/invalidate".to_string(),
            json!({"key": "a", "tag": "b"}),
            400,
        ),
        (
            &op,
            Method::POST,
            "/admin/invalidate".to_string(),
            json!({}),
            400,
        ),
        (
            &c,
            Method::POST,
            "/login".to_string(),
            json!({"username": "user1"}),
            400,
        ),
    ];
    let pool = db.pool().await;
    let orders_before: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    for (who, method, path, body, expected) in cases {
        let (status, answer) =
            send(who, method.clone(), &format!("{base}{path}"), body.clone()).await;
        assert_eq!(status, expected, "{method} {path} {body}: {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path}: {answer}"
        );
    }
    let orders_after: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        orders_before, orders_after,
        "refused orders left nothing behind"
    );
    let (status, _) = get(&user1, &format!("{base}/api/portfolios/-3")).await;
    assert_eq!(status, 400);
    let (status, body) = get(&c, &format!("{base}/no/such/route")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("no such route"))
    );
    pool.close().await;
    server.stop().await.unwrap();
}
