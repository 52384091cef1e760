//! Redis going away: the response cache keeps answering (Redis is an
//! accelerator), and the session store reports a typed error instead of
//! pretending the session is gone.

mod common;

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use common::{client, x_cache, Calls, Server};
use stratacache::Cache;
use stratacache_http::{HttpCacheLayer, RedisSessionStore, RouteRule};
use stratacache_testkit::RedisServer;
use tower_sessions::session::Id;
use tower_sessions::SessionStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_served_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let cache = Cache::builder()
        .namespace(common::unique("outage"))
        .redis_url(&redis.url())
        .redis_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let layer = HttpCacheLayer::builder(cache)
        .route(
            "/items/{id}",
            RouteRule::new()
                .ttl(Duration::from_secs(60))
                .tag("item:{id}"),
        )
        .build()
        .unwrap();
    let calls = Calls::default();
    let c = calls.clone();
    let app = Router::new()
        .route(
            "/items/{id}",
            get(move || {
                let n = c.hit("item");
                async move { format!("item v{n}") }
            })
            .put(|| async { "saved" }),
        )
        .layer(layer);
    let server = Server::start(app).await;
    let http = client();
    let get_item = |path: &'static str| {
        let request = http.get(server.url(path)).send();
        async move {
            let response = request.await.unwrap();
            (
                response.status(),
                x_cache(&response),
                response.text().await.unwrap(),
            )
        }
    };
    assert_eq!(get_item("/items/1").await.1, "MISS");
    redis.kill();
    // Cached in this instance's L1: still a hit.
    let (status, x, body) = get_item("/items/1").await;
    assert_eq!(
        (status.as_u16(), x.as_str(), body.as_str()),
        (200, "HIT", "item v1")
    );
    // Not cached anywhere: the handler answers.
    let (status, _, body) = get_item("/items/2").await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "item v2"));
    // A write still succeeds and still invalidates this instance.
    let put = http.put(server.url("/items/1")).send().await.unwrap();
    assert_eq!(put.status(), 200);
    let (status, _, body) = get_item("/items/1").await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "item v3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_store_reports_an_outage_as_a_backend_error() {
    let mut redis = RedisServer::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let connection = redis::aio::ConnectionManager::new(client).await.unwrap();
    let store = RedisSessionStore::new(connection);
    let id = Id::default();
    assert!(store.load(&id).await.unwrap().is_none());
    redis.kill();
    let outcome = tokio::time::timeout(Duration::from_secs(10), store.load(&id)).await;
    match outcome {
        Ok(Err(tower_sessions::session_store::Error::Backend(_))) => {}
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_fails_session_calls_within_the_timeout() {
    let redis = RedisServer::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let connection = redis::aio::ConnectionManager::new(client).await.unwrap();
    let store = RedisSessionStore::new(connection).with_timeout(Duration::from_millis(300));
    let id = Id::default();
    assert!(store.load(&id).await.unwrap().is_none());
    redis.pause();
    let outcome = tokio::time::timeout(Duration::from_secs(5), store.load(&id)).await;
    redis.resume();
    match outcome {
        Ok(Err(tower_sessions::session_store::Error::Backend(message))) => {
            assert!(message.contains("did not answer"), "{message}")
        }
        other => panic!("expected a timeout as a backend error, got {other:?}"),
    }
}
