//! What `market serve` writes to its log (`--log-format json`, `RUST_LOG`),
//! read as an operator would: an error answer's request id leads to its log
//! line; a 500 answers a generic message and logs the database's detail;
//! Redis unreachable at start, going away and coming back, the breaker, a
//! failed invalidation and the write-behind durability warning are logged;
//! no password reaches the log.

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::json;
use stratacache_testkit::RedisServer;

/// The id of the request a JSON log line was written under.
fn request_id(line: &serde_json::Value) -> Option<&str> {
    line["spans"]
        .as_array()?
        .iter()
        .find(|span| span["name"] == "request")?["id"]
        .as_str()
}

#[tokio::test]
async fn an_error_answers_request_id_leads_to_its_log_line() {
    let db = TestDb::seeded().await;
    let server = ServeProcess::start(&db, &unique("market-log"), &[], &[]).await;
    let response = client()
        .get(format!("{}/api/instruments/NOPE9", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let header = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["request_id"], header.as_str());
    let line = server
        .logged(Duration::from_secs(5), |l| request_id(l) == Some(&header))
        .await
        .unwrap_or_else(|| panic!("no log line for {header}:\n{}", server.process.log()));
    assert_eq!(line["fields"]["status"], 404, "{line}");
    assert_eq!(line["level"], "INFO");
    // A usable id from a proxy in front is kept; a forged one is replaced.
    for (sent, kept) in [("proxy-7f3a", true), ("a b\" injected=1", false)] {
        let response = client()
            .get(format!("{}/api/instruments/NOPE9", server.base))
            .header("x-request-id", sent)
            .send()
            .await
            .unwrap();
        let got = response.headers()["x-request-id"].to_str().unwrap();
        assert_eq!(got == sent, kept, "{sent:?} → {got:?}");
    }
}

#[tokio::test]
async fn a_500_answers_a_generic_message_and_logs_the_detail_under_its_id() {
    let db = TestDb::seeded().await;
    let server = ServeProcess::start(&db, &unique("market-log500"), &["--cache", "off"], &[]).await;
    let pool = db.pool().await;
    sqlx::query("ALTER TABLE sectors RENAME TO sectors_gone")
        .execute(&pool)
        .await
        .unwrap();
    let response = client()
        .get(format!("{}/api/instruments?sector=TECH", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    let text = response.text().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"], "internal error", "{text}");
    for internal in ["sectors", "relation", "database", "sqlx", "SELECT"] {
        assert!(!text.contains(internal), "{internal:?} exposed: {text}");
    }
    let id = body["request_id"].as_str().unwrap().to_string();
    let detail = server
        .logged(Duration::from_secs(5), |l| {
            request_id(l) == Some(&id) && l["level"] == "ERROR" && l.to_string().contains("sectors")
        })
        .await;
    assert!(
        detail.is_some(),
        "no detail logged under {id}:\n{}",
        server.process.log()
    );
    sqlx::query("ALTER TABLE sectors_gone RENAME TO sectors")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

#[tokio::test]
async fn starting_without_redis_warns_and_serves_from_postgres() {
    let db = TestDb::seeded().await;
    let closed = format!(
        "redis://:a-secret-password@127.0.0.1:{}",
        stratacache_testkit::free_port()
    );
    let server = ServeProcess::start(
        &db,
        &unique("market-log-noredis"),
        &["--redis-url", &closed],
        &[],
    )
    .await;
    let warned = server
        .logged(Duration::from_secs(5), |l| {
            l["level"] == "WARN" && message(l).contains("Redis does not answer")
        })
        .await;
    assert!(warned.is_some(), "{}", server.process.log());
    let (status, health) = get(&client(), &format!("{}/health", server.base)).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("degraded")));
    let (status, _) = get(&client(), &format!("{}/api/market/overview", server.base)).await;
    assert_eq!(status, 200);
    assert!(!server.process.log().contains("a-secret-password"));
}

#[tokio::test]
async fn redis_going_away_and_coming_back_is_logged_with_what_it_broke() {
    let db = TestDb::seeded().await;
    let mut redis = RedisServer::start();
    let server = ServeProcess::start(
        &db,
        &unique("market-log-redis"),
        &["--redis-url", &redis.url(), "--redis-timeout", "100ms"],
        &[],
    )
    .await;
    let (c, base) = (client(), server.base.clone());
    // The throwaway Redis has no AOF: the write-behind queue says so at start.
    let aof = server
        .logged(Duration::from_secs(5), |l| {
            l["level"] == "WARN" && message(l).contains("no AOF")
        })
        .await;
    assert!(aof.is_some(), "{}", server.process.log());
    let user = user_client(&base, 3).await;
    let symbol = db.symbol(3).await;
    get(&user, &format!("{base}/api/portfolios/3")).await;

    redis.kill();
    // Traffic while Redis is down: reads (the breaker opens) and an order,
    // whose invalidations cannot reach Redis.
    for _ in 0..30 {
        get(&c, &format!("{base}/api/instruments/{symbol}")).await;
    }
    let (status, body) = send(
        &user,
        Method::POST,
        &format!("{base}/api/orders"),
        json!({"user_id": 3, "symbol": symbol, "side": "buy", "quantity": 1}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    for wanted in [
        "Redis stopped answering",
        "circuit breaker opened",
        "invalidation failed",
    ] {
        let line = server
            .logged(Duration::from_secs(5), |l| message(l).contains(wanted))
            .await;
        assert!(
            line.is_some(),
            "{wanted:?} not logged:\n{}",
            server.process.log()
        );
    }

    redis.restart();
    for wanted in ["Redis answers again", "circuit breaker closed"] {
        let line = server
            .logged(Duration::from_secs(15), |l| message(l).contains(wanted))
            .await;
        assert!(
            line.is_some(),
            "{wanted:?} not logged:\n{}",
            server.process.log()
        );
    }
}
