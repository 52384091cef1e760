//! Validation and stale responses (RFC 9111 §4.2.4, §4.3; RFC 5861), through
//! the reverse proxy example in front of a real origin.

mod common;

use std::time::Duration;

use common::{get, http_date, reply, Origin, Seen};
use stratacache_http::{HttpCacheLayer, RouteRule};

/// The proxy example's forwarding in front of `origin`, cached by `rule`.
async fn proxy_with(rule: RouteRule, origin: &Origin) -> common::Server {
    let cache = common::cache(&common::unique("validation")).await;
    let layer = HttpCacheLayer::builder(cache)
        .default_rule(rule)
        .build()
        .unwrap();
    common::Server::start(common::reverse_proxy::forwarder(origin.uri()).layer(layer)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_response_is_revalidated_and_a_304_refreshes_its_headers() {
    let origin = Origin::start(|seen: Seen| async move {
        if seen.header("if-none-match") == Some("\"v1\"") {
            let headers = [
                ("cache-control", "max-age=60".to_string()),
                ("etag", "\"v1\"".to_string()),
                ("x-version", "2".to_string()),
            ];
            return reply(304, &headers, "");
        }
        let headers = [
            ("cache-control", "max-age=1".to_string()),
            ("etag", "\"v1\"".to_string()),
            ("x-version", "1".to_string()),
        ];
        reply(200, &headers, "the body")
    })
    .await;
    let proxy = common::proxy(common::cache(&common::unique("304")).await, &origin).await;
    assert_eq!(get(&proxy, "/doc", &[]).await.header("x-version"), "1");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let revalidated = get(&proxy, "/doc", &[]).await;
    assert_eq!(
        (revalidated.status, revalidated.body.as_str()),
        (200, "the body")
    );
    assert_eq!(revalidated.x_cache(), "REVALIDATED");
    assert_eq!(revalidated.header("x-version"), "2", "headers from the 304");
    assert_eq!(revalidated.header("cache-control"), "max-age=60");
    // The refreshed entry is fresh for the 304's max-age.
    let hit = get(&proxy, "/doc", &[]).await;
    assert_eq!((hit.x_cache(), hit.header("x-version")), ("HIT", "2"));
    assert_eq!(origin.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_response_with_only_last_modified_is_revalidated_with_if_modified_since() {
    let modified = http_date(-86_400);
    let stored_modified = modified.clone();
    let origin = Origin::start(move |seen: Seen| {
        let modified = modified.clone();
        async move {
            let headers = [
                ("cache-control", "max-age=1".to_string()),
                ("last-modified", modified.clone()),
            ];
            if seen.header("if-modified-since") == Some(modified.as_str()) {
                return reply(304, &headers, "");
            }
            reply(200, &headers, "the body")
        }
    })
    .await;
    let proxy = common::proxy(common::cache(&common::unique("ims")).await, &origin).await;
    get(&proxy, "/doc", &[]).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let revalidated = get(&proxy, "/doc", &[]).await;
    assert_eq!(revalidated.body, "the body");
    let requests = origin.requests_for("/doc");
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].header("if-modified-since"),
        Some(stored_modified.as_str())
    );
}

/// An origin whose `/doc` answers 304 to its validator and counts full answers.
async fn validating_origin(cache_control: &'static str) -> Origin {
    Origin::start(move |seen: Seen| async move {
        let headers = [
            ("cache-control", cache_control.to_string()),
            ("etag", "\"e\"".to_string()),
        ];
        if seen.header("if-none-match") == Some("\"e\"") {
            return reply(304, &headers, "");
        }
        reply(200, &headers, &format!("full answer {}", seen.number))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_and_max_age_0_responses_are_stored_and_validated_on_every_use() {
    for cache_control in ["no-cache", "max-age=0"] {
        let origin = validating_origin(cache_control).await;
        let proxy = common::proxy(common::cache(&common::unique("nocache")).await, &origin).await;
        assert_eq!(get(&proxy, "/doc", &[]).await.body, "full answer 1");
        for _ in 0..3 {
            let again = get(&proxy, "/doc", &[]).await;
            assert_eq!(again.body, "full answer 1", "{cache_control}");
            assert_eq!(again.x_cache(), "REVALIDATED", "{cache_control}");
        }
        let requests = origin.requests_for("/doc");
        assert_eq!(requests.len(), 4, "{cache_control}: validated on every use");
        assert!(requests[1..]
            .iter()
            .all(|r| r.header("if-none-match") == Some("\"e\"")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn must_revalidate_is_validated_when_stale_and_never_served_stale_on_error() {
    let origin = Origin::start(|seen: Seen| async move {
        match seen.number {
            1 => reply(
                200,
                &[
                    ("cache-control", "max-age=1, must-revalidate".to_string()),
                    ("etag", "\"m\"".to_string()),
                ],
                "stored",
            ),
            _ => reply(503, &[], "origin down"),
        }
    })
    .await;
    let rule = RouteRule::new().stale_for(Duration::from_secs(60));
    let proxy = proxy_with(rule, &origin).await;
    get(&proxy, "/doc", &[]).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let after = get(&proxy, "/doc", &[]).await;
    assert_eq!((after.status, after.body.as_str()), (503, "origin down"));
    assert_ne!(after.x_cache(), "STALE");
    assert_eq!(
        origin.requests_for("/doc")[1].header("if-none-match"),
        Some("\"m\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_responses_stale_while_revalidate_serves_stale_while_one_refresh_runs() {
    let origin = Origin::start(|seen: Seen| async move {
        let headers = [(
            "cache-control",
            "max-age=1, stale-while-revalidate=30".to_string(),
        )];
        reply(200, &headers, &format!("v{}", seen.number))
    })
    .await;
    let proxy = proxy_with(RouteRule::new(), &origin).await;
    get(&proxy, "/doc", &[]).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let stale = get(&proxy, "/doc", &[]).await;
    assert_eq!((stale.x_cache(), stale.body.as_str()), ("STALE", "v1"));
    let mut refreshed = None;
    for _ in 0..50 {
        let next = get(&proxy, "/doc", &[]).await;
        if next.body == "v2" {
            refreshed = Some(next.x_cache().to_string());
            break;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert_eq!(refreshed.as_deref(), Some("HIT"));
    assert_eq!(origin.requests(), 2, "one background refresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_responses_stale_if_error_serves_stale_when_the_origin_fails() {
    let origin = Origin::start(|seen: Seen| async move {
        match seen.number {
            1 => reply(
                200,
                &[("cache-control", "max-age=1, stale-if-error=60".to_string())],
                "stored",
            ),
            _ => reply(500, &[], "origin error"),
        }
    })
    .await;
    let proxy = proxy_with(RouteRule::new(), &origin).await;
    get(&proxy, "/doc", &[]).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let stale = get(&proxy, "/doc", &[]).await;
    assert_eq!(
        (stale.status, stale.x_cache(), stale.body.as_str()),
        (200, "STALE", "stored")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_stale_window_never_overrides_must_revalidate_proxy_revalidate_or_s_maxage() {
    let origin = Origin::start(|seen: Seen| async move {
        let cache_control = match seen.uri.path() {
            "/must" => "max-age=1, must-revalidate",
            "/proxy" => "max-age=1, proxy-revalidate",
            _ => "s-maxage=1",
        };
        reply(
            200,
            &[("cache-control", cache_control.to_string())],
            &format!("v{}", seen.number),
        )
    })
    .await;
    let rule = RouteRule::new().stale_for(Duration::from_secs(60));
    let proxy = proxy_with(rule, &origin).await;
    let paths = ["/must", "/proxy", "/shared"];
    for path in paths {
        get(&proxy, path, &[]).await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for path in paths {
        let after = get(&proxy, path, &[]).await;
        assert_ne!(after.x_cache(), "STALE", "{path}");
        assert_eq!(origin.requests_for(path).len(), 2, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_is_not_served_past_the_responses_own_stale_while_revalidate() {
    let origin = Origin::start(|seen: Seen| async move {
        let headers = [(
            "cache-control",
            "max-age=1, stale-while-revalidate=1".to_string(),
        )];
        reply(200, &headers, &format!("v{}", seen.number))
    })
    .await;
    // The route would allow a minute; the response allows one second.
    let rule = RouteRule::new().stale_for(Duration::from_secs(60));
    let proxy = proxy_with(rule, &origin).await;
    get(&proxy, "/doc", &[]).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let after = get(&proxy, "/doc", &[]).await;
    assert_eq!((after.x_cache(), after.body.as_str()), ("MISS", "v2"));
}
