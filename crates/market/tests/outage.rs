//! Degraded behaviour: Redis down (answers from L1 and PostgreSQL, signed-in
//! users stay signed in, new sign-ins 503, health "degraded") and PostgreSQL
//! down (cached keys served, others a clear 503, health 503) — never a
//! panic, and recovery without a restart.

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::json;
use stratacache_testkit::RedisServer;

#[tokio::test]
async fn redis_down_the_service_answers_from_postgres_and_recovers() {
    let db = TestDb::seeded().await;
    let mut redis = RedisServer::start();
    let mut config = config(&db, true, &unique("market-redis-out"));
    config.redis_url = redis.url();
    config.redis_timeout = Duration::from_millis(100);
    let server = market::server::start(&config).await.unwrap();
    let (c, base) = (client(), server.url());
    let symbol = db.symbol(6).await;
    assert_eq!(
        get(&c, &format!("{base}/api/instruments/{symbol}")).await.0,
        200
    );
    let user4 = user_client(&base, 4).await;

    redis.kill();
    for path in [
        format!("/api/instruments/{symbol}"),
        "/api/portfolios/4".into(),
        format!("/api/stocks/{symbol}/price"),
        "/api/market/overview".into(),
        "/api/users/4/profile".into(),
    ] {
        for _ in 0..3 {
            let (status, body) = get(&user4, &format!("{base}{path}")).await;
            assert_eq!(status, 200, "{path} with Redis down: {body}");
        }
    }
    // The signed-in user is still signed in: the session's copy answers.
    let (status, me) = get(&user4, &format!("{base}/api/me")).await;
    assert_eq!((status, me["user_id"].as_i64()), (200, Some(4)), "{me}");
    let (status, body) = send(
        &user4,
        Method::POST,
        &format!("{base}/api/orders"),
        json!({"user_id": 4, "symbol": symbol, "side": "buy", "quantity": 1}),
    )
    .await;
    assert_eq!(status, 201, "writes reach PostgreSQL: {body}");
    let (status, body) = send(
        &c,
        Method::POST,
        &format!("{base}/login"),
        json!({"username": "user4", "password": "password4"}),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("session store unavailable"));
    let (status, health) = get(&c, &format!("{base}/health")).await;
    assert_eq!(
        (status, health["status"].as_str(), health["redis"].as_str()),
        (200, Some("degraded"), Some("down"))
    );

    redis.restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, health) = get(&c, &format!("{base}/health")).await;
        if health["status"] == "ok" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no recovery: {health}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = send(
        &c,
        Method::POST,
        &format!("{base}/login"),
        json!({"username": "user4", "password": "password4"}),
    )
    .await;
    assert_eq!(status, 200);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn postgres_down_cached_keys_are_served_and_the_rest_is_a_clear_503() {
    let db = TestDb::seeded().await;
    let server = serve(&db, true, &unique("market-pg-out")).await;
    let (c, base) = (client(), server.url());
    let (user5, user6) = (user_client(&base, 5).await, user_client(&base, 6).await);
    let symbol = db.symbol(8).await;
    let (status, cached) = get(&c, &format!("{base}/api/instruments/{symbol}")).await;
    assert_eq!(status, 200);
    let (status, _) = get(&user5, &format!("{base}/api/users/5/profile")).await;
    assert_eq!(status, 200);

    // Our database alone refuses connections, and its sessions are ended.
    let name = market::db::database_name(&db.url).unwrap();
    let admin = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"
    )))
    .execute(&admin)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&admin)
        .await
        .unwrap();

    let (status, body) = get(&c, &format!("{base}/api/instruments/{symbol}")).await;
    assert_eq!(
        (status, &body),
        (200, &cached),
        "a cached key is served while PostgreSQL is down"
    );
    assert_eq!(
        get(&user5, &format!("{base}/api/users/5/profile")).await.0,
        200
    );
    let (status, body) = get(&user6, &format!("{base}/api/portfolios/6")).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("database unavailable"),
        "{body}"
    );
    let (status, _) = send(
        &user6,
        Method::POST,
        &format!("{base}/api/orders"),
        json!({"user_id": 6, "symbol": symbol, "side": "buy", "quantity": 1}),
    )
    .await;
    assert_eq!(status, 503);
    let (status, health) = get(&c, &format!("{base}/health")).await;
    assert_eq!((status, health["postgres"].as_str()), (503, Some("down")));

    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"
    )))
    .execute(&admin)
    .await
    .unwrap();
    admin.close().await;
    let (status, body) = get(&user6, &format!("{base}/api/portfolios/6")).await;
    assert_eq!(status, 200, "recovered without a restart: {body}");
    server.stop().await.unwrap();
}
