//! Concurrent identical requests: one handler call, in one instance and
//! across two; responses that may not be stored are never shared.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use common::{client, header, x_cache, Calls, Server};
use futures::future::join_all;
use stratacache::Cache;
use stratacache_http::{HttpCacheLayer, RouteRule};

/// The handlers here state no freshness: their routes give them a TTL.
const MINUTE: Duration = Duration::from_secs(60);

/// A server whose `/slow` takes 300 ms and whose `/session` sets a cookie.
async fn start(cache: Cache, calls: Calls) -> Server {
    let layer = HttpCacheLayer::builder(cache)
        .route("/slow", RouteRule::new().ttl(MINUTE).tag("slow"))
        .route("/session", RouteRule::new().ttl(MINUTE))
        .route("/greeting", RouteRule::new().ttl(MINUTE))
        .build()
        .unwrap();
    let c = calls.clone();
    let slow = move || {
        let n = c.hit("slow");
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            format!("slow v{n}")
        }
    };
    let c = calls.clone();
    let session = move || {
        let n = c.hit("session");
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            (
                [("set-cookie", format!("id=s{n}"))],
                format!("session v{n}"),
            )
        }
    };
    let c = calls.clone();
    let greeting = move |headers: axum::http::HeaderMap| {
        let n = c.hit("greeting");
        let lang = headers
            .get("accept-language")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            (
                [("vary", "Accept-Language")],
                format!("greeting {lang} v{n}"),
            )
        }
    };
    let app = Router::new()
        .route("/slow", get(slow).post(|| async { "posted" }))
        .route("/greeting", get(greeting))
        .route("/session", get(session))
        .layer(layer);
    Server::start(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_identical_requests_call_the_handler_once() {
    let calls = Calls::default();
    let server = start(
        common::cache(&common::unique("coalesce")).await,
        calls.clone(),
    )
    .await;
    let http = client();
    let responses = join_all((0..200).map(|_| {
        let request = http.get(server.url("/slow")).send();
        async move {
            let response = request.await.unwrap();
            let x = x_cache(&response);
            (x, response.text().await.unwrap())
        }
    }))
    .await;
    assert_eq!(calls.get("slow"), 1);
    for (x, body) in &responses {
        assert_eq!(body, "slow v1");
        assert!(x == "MISS" || x == "HIT", "{x}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_share_a_response_that_sets_a_cookie() {
    let calls = Calls::default();
    let server = start(
        common::cache(&common::unique("nosharing")).await,
        calls.clone(),
    )
    .await;
    let http = client();
    let responses = join_all((0..50).map(|_| {
        let request = http.get(server.url("/session")).send();
        async move {
            let response = request.await.unwrap();
            let cookie = header(&response, "set-cookie");
            (cookie, response.text().await.unwrap())
        }
    }))
    .await;
    // Each client got the handler's answer to its own request.
    let cookies: HashSet<&String> = responses.iter().map(|(cookie, _)| cookie).collect();
    assert_eq!(cookies.len(), 50);
    for (cookie, body) in &responses {
        assert_eq!(cookie.replace("id=s", "session v"), *body);
    }
    assert_eq!(calls.get("session"), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_responses_loads_and_invalidations() {
    let namespace = common::unique("instances");
    let calls = Calls::default();
    let a = start(common::cache(&namespace).await, calls.clone()).await;
    let b = start(common::cache(&namespace).await, calls.clone()).await;
    let http = client();
    // Behind one load balancer, both instances see the site's host.
    let get = |server: &Server| http.get(server.url("/slow")).header("host", "shop.example");
    let responses = join_all((0..200).map(|i| {
        let server = if i % 2 == 0 { &a } else { &b };
        let request = get(server).send();
        async move { request.await.unwrap().text().await.unwrap() }
    }))
    .await;
    let distinct: HashSet<&String> = responses.iter().collect();
    assert!(
        responses.iter().all(|body| body == "slow v1"),
        "{distinct:?}, calls {}",
        calls.get("slow")
    );
    assert_eq!(
        calls.get("slow"),
        1,
        "one handler call across both instances"
    );

    // A write through one instance invalidates the other's copy too.
    let posted = http.post(a.url("/slow")).send().await.unwrap();
    assert_eq!(posted.text().await.unwrap(), "posted");
    let after = get(&b).send().await.unwrap();
    assert_eq!(x_cache(&after), "MISS");
    assert_eq!(after.text().await.unwrap(), "slow v2");
    let hit = get(&a).send().await.unwrap();
    assert_eq!(x_cache(&hit), "HIT");
    assert_eq!(hit.text().await.unwrap(), "slow v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_requests_get_their_own_variant_while_vary_is_learnt() {
    let calls = Calls::default();
    let server = start(
        common::cache(&common::unique("varyrace")).await,
        calls.clone(),
    )
    .await;
    let http = client();
    let languages = ["de", "fr", "en"];
    // All arrive before the first response shows that the resource varies.
    let responses = join_all((0..90).map(|i| {
        let lang = languages[i % 3];
        let request = http
            .get(server.url("/greeting"))
            .header("accept-language", lang)
            .send();
        async move { (lang, request.await.unwrap().text().await.unwrap()) }
    }))
    .await;
    for (lang, body) in &responses {
        assert!(
            body.starts_with(&format!("greeting {lang} v")),
            "{lang} got {body}"
        );
    }
    // One load for the first wave, then at most one per remaining language.
    assert!(
        calls.get("greeting") <= 3,
        "{} handler calls",
        calls.get("greeting")
    );
}
