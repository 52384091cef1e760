//! Freshness as a shared cache computes it (RFC 9111 §4.2), checked through
//! the reverse proxy example in front of a real origin: `Expires` against
//! `Date`, the upstream `Age`, heuristic freshness, and the route TTL as an
//! explicit override.

mod common;

use std::time::Duration;

use common::{get, http_date, reply, Origin, Seen};
use stratacache_http::{HttpCacheLayer, RouteRule};

/// An origin answering every request with `headers` (and `Date: now` unless
/// they set one), and a proxy in front of it.
async fn proxied(headers: Vec<(&'static str, String)>) -> (Origin, common::Server) {
    let origin = Origin::start(move |_: Seen| {
        let mut headers = headers.clone();
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("date"))
        {
            headers.push(("date", http_date(0)));
        }
        async move { reply(200, &headers, "body") }
    })
    .await;
    let cache = common::cache(&common::unique("freshness")).await;
    let proxy = common::proxy(cache, &origin).await;
    (origin, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expires_in_the_past_is_not_served_from_the_cache() {
    let (origin, proxy) = proxied(vec![("expires", http_date(-60))]).await;
    for _ in 0..2 {
        assert_eq!(get(&proxy, "/page", &[]).await.body, "body");
    }
    assert_eq!(origin.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_expires_counts_as_already_expired() {
    for invalid in [
        "0",
        "Thu, 18 Aug 2050 02:01:18 UTC",
        "Thu, 18 Aug 50 02:01:18 GMT",
    ] {
        let (origin, proxy) = proxied(vec![("expires", invalid.to_string())]).await;
        get(&proxy, "/page", &[]).await;
        get(&proxy, "/page", &[]).await;
        assert_eq!(origin.requests(), 2, "Expires: {invalid}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_is_measured_against_date_not_the_local_clock() {
    // The origin's clock is 100 s ahead: by its own Date the response expired
    // 50 s before it was sent, although Expires is still ahead of ours.
    let (origin, proxy) = proxied(vec![("date", http_date(100)), ("expires", http_date(50))]).await;
    get(&proxy, "/page", &[]).await;
    get(&proxy, "/page", &[]).await;
    assert_eq!(origin.requests(), 2);

    // Sent 30 s ago, expiring an hour after it was sent: fresh, and 30 s old.
    let (origin, proxy) = proxied(vec![
        ("date", http_date(-30)),
        ("expires", http_date(3_570)),
    ])
    .await;
    get(&proxy, "/page", &[]).await;
    let second = get(&proxy, "/page", &[]).await;
    assert_eq!((origin.requests(), second.x_cache()), (1, "HIT"));
    assert!(
        second.header("age").parse::<u64>().unwrap() >= 30,
        "{second:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_age_counts_against_max_age() {
    let (origin, proxy) = proxied(vec![
        ("cache-control", "max-age=3600".to_string()),
        ("age", "7200".to_string()),
    ])
    .await;
    get(&proxy, "/page", &[]).await;
    get(&proxy, "/page", &[]).await;
    assert_eq!(origin.requests(), 2, "already an hour past its max-age");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_age_is_passed_on_and_keeps_growing() {
    let (origin, proxy) = proxied(vec![
        ("cache-control", "max-age=3600".to_string()),
        ("age", "30".to_string()),
    ])
    .await;
    let first = get(&proxy, "/page", &[]).await;
    assert!(
        first.header("age").parse::<u64>().unwrap() >= 30,
        "{first:?}"
    );
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let later = get(&proxy, "/page", &[]).await;
    assert_eq!(later.x_cache(), "HIT");
    assert!(
        later.header("age").parse::<u64>().unwrap() >= 32,
        "{later:?}"
    );
    assert_eq!(origin.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heuristic_freshness_is_a_tenth_of_the_time_since_last_modified() {
    // Modified 20 s before Date: fresh for 2 s, then validated.
    let (origin, proxy) = proxied(vec![("last-modified", http_date(-20))]).await;
    get(&proxy, "/page", &[]).await;
    assert_eq!(get(&proxy, "/page", &[]).await.x_cache(), "HIT");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    get(&proxy, "/page", &[]).await;
    let requests = origin.requests_for("/page");
    assert_eq!(requests.len(), 2, "expired after a tenth of 20 s");
    assert!(requests[1].header("if-modified-since").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_that_states_no_freshness_and_no_last_modified_is_not_reused() {
    let (origin, proxy) = proxied(vec![("content-type", "text/plain".to_string())]).await;
    get(&proxy, "/page", &[]).await;
    get(&proxy, "/page", &[]).await;
    assert_eq!(origin.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heuristic_freshness_is_not_given_to_statuses_that_do_not_allow_it() {
    for status in [201, 202, 403, 502, 503] {
        let origin = Origin::start(move |_: Seen| async move {
            reply(
                status,
                &[
                    ("last-modified", http_date(-86_400)),
                    ("date", http_date(0)),
                ],
                "body",
            )
        })
        .await;
        let proxy = common::proxy(common::cache(&common::unique("heuristic")).await, &origin).await;
        get(&proxy, "/page", &[]).await;
        get(&proxy, "/page", &[]).await;
        assert_eq!(origin.requests(), 2, "status {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explicit_only_mode_stores_nothing_without_explicit_freshness() {
    let origin = Origin::start(|seen: Seen| async move {
        let headers = if seen.uri.path() == "/explicit" {
            vec![("cache-control", "max-age=60".to_string())]
        } else {
            vec![
                ("last-modified", http_date(-86_400)),
                ("date", http_date(0)),
            ]
        };
        reply(200, &headers, "body")
    })
    .await;
    let cache = common::cache(&common::unique("explicit")).await;
    let layer = HttpCacheLayer::builder(cache)
        .default_rule(RouteRule::new().explicit_freshness_only())
        .build()
        .unwrap();
    let app = common::reverse_proxy::forwarder(origin.uri()).layer(layer);
    let proxy = common::Server::start(app).await;
    for _ in 0..2 {
        get(&proxy, "/heuristic", &[]).await;
        get(&proxy, "/explicit", &[]).await;
    }
    assert_eq!(origin.requests_for("/heuristic").len(), 2);
    assert_eq!(origin.requests_for("/explicit").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_ttl_is_an_explicit_override_for_responses_that_state_no_freshness() {
    let origin = Origin::start(|seen: Seen| async move {
        let headers = if seen.uri.path() == "/short" {
            vec![("cache-control", "max-age=1".to_string())]
        } else {
            vec![]
        };
        reply(200, &headers, &format!("v{}", seen.number))
    })
    .await;
    let cache = common::cache(&common::unique("route-ttl")).await;
    let layer = HttpCacheLayer::builder(cache)
        .default_rule(RouteRule::new().ttl(Duration::from_secs(60)))
        .build()
        .unwrap();
    let app = common::reverse_proxy::forwarder(origin.uri()).layer(layer);
    let proxy = common::Server::start(app).await;
    get(&proxy, "/silent", &[]).await;
    get(&proxy, "/short", &[]).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // The route's TTL for what says nothing; the response's own max-age wins.
    assert_eq!(get(&proxy, "/silent", &[]).await.x_cache(), "HIT");
    assert_ne!(get(&proxy, "/short", &[]).await.x_cache(), "HIT");
    assert_eq!(origin.requests_for("/short").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdn_cache_control_replaces_cache_control_and_expires_for_the_proxy() {
    let (origin, proxy) = proxied(vec![
        ("cache-control", "no-store".to_string()),
        ("cdn-cache-control", "max-age=60".to_string()),
    ])
    .await;
    get(&proxy, "/page", &[]).await;
    let second = get(&proxy, "/page", &[]).await;
    assert_eq!((origin.requests(), second.x_cache()), (1, "HIT"));
    assert_eq!(
        second.header("cache-control"),
        "no-store",
        "passed on as sent"
    );

    let (origin, proxy) = proxied(vec![
        ("cache-control", "max-age=60".to_string()),
        ("expires", http_date(60)),
        ("cdn-cache-control", "private".to_string()),
    ])
    .await;
    get(&proxy, "/page", &[]).await;
    get(&proxy, "/page", &[]).await;
    assert_eq!(origin.requests(), 2);
}
