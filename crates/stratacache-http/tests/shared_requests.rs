//! What a request may ask of a shared cache (RFC 9111 §5.2.1) and range
//! requests (RFC 9110 §14), through the reverse proxy example in front of a
//! real origin.

mod common;

use std::time::Duration;

use common::{get, reply, Origin, Seen};

/// An origin whose `/doc` is fresh for an hour (with an ETag it validates)
/// and whose `/old` arrives already 100 s old.
async fn origin() -> Origin {
    Origin::start(|seen: Seen| async move {
        let mut headers = vec![
            ("cache-control", "max-age=3600".to_string()),
            ("etag", "\"d\"".to_string()),
        ];
        if seen.uri.path() == "/old" {
            headers.push(("age", "100".to_string()));
        }
        if seen.header("if-none-match") == Some("\"d\"") {
            return reply(304, &headers, "");
        }
        reply(200, &headers, "0123456789")
    })
    .await
}

async fn proxy(origin: &Origin) -> common::Server {
    common::proxy(common::cache(&common::unique("requests")).await, origin).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_no_cache_validates_a_fresh_response_with_the_origin() {
    let origin = origin().await;
    let proxy = proxy(&origin).await;
    get(&proxy, "/doc", &[]).await;
    for directive in [("cache-control", "no-cache"), ("pragma", "no-cache")] {
        let validated = get(&proxy, "/doc", &[directive]).await;
        assert_eq!(
            (validated.x_cache(), validated.body.as_str()),
            ("REVALIDATED", "0123456789"),
            "{directive:?}"
        );
    }
    let requests = origin.requests_for("/doc");
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[2].header("if-none-match"), Some("\"d\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_max_age_and_min_fresh_turn_away_responses_too_old_for_them() {
    let origin = origin().await;
    let proxy = proxy(&origin).await;
    get(&proxy, "/old", &[]).await;
    let young_enough = get(&proxy, "/old", &[("cache-control", "max-age=600")]).await;
    assert_eq!(young_enough.x_cache(), "HIT");
    let too_old = get(&proxy, "/old", &[("cache-control", "max-age=10")]).await;
    assert_eq!(too_old.x_cache(), "REVALIDATED");
    let not_fresh_enough = get(&proxy, "/old", &[("cache-control", "min-fresh=7200")]).await;
    assert_eq!(not_fresh_enough.x_cache(), "REVALIDATED");
    assert_eq!(origin.requests_for("/old").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_max_stale_accepts_a_stale_response() {
    let origin = Origin::start(|seen: Seen| async move {
        reply(
            200,
            &[("cache-control", "max-age=1".to_string())],
            &format!("v{}", seen.number),
        )
    })
    .await;
    let proxy = proxy(&origin).await;
    get(&proxy, "/doc", &[]).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let stale = get(&proxy, "/doc", &[("cache-control", "max-stale=60")]).await;
    assert_eq!((stale.x_cache(), stale.body.as_str()), ("STALE", "v1"));
    let too_stale = get(&proxy, "/doc", &[("cache-control", "max-stale=0")]).await;
    assert_eq!(too_stale.body, "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_if_cached_answers_504_unless_a_usable_response_is_stored() {
    let origin = origin().await;
    let proxy = proxy(&origin).await;
    let only_if_cached = [("cache-control", "only-if-cached")];
    let nothing = get(&proxy, "/doc", &only_if_cached).await;
    assert_eq!(nothing.status, 504);
    assert_eq!(origin.requests(), 0);
    get(&proxy, "/doc", &[]).await;
    let stored = get(&proxy, "/doc", &only_if_cached).await;
    assert_eq!((stored.status, stored.x_cache()), (200, "HIT"));
    assert_eq!(origin.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_request_is_answered_from_a_stored_full_response() {
    let origin = origin().await;
    let proxy = proxy(&origin).await;
    get(&proxy, "/doc", &[]).await;
    let part = get(&proxy, "/doc", &[("range", "bytes=2-4")]).await;
    assert_eq!((part.status, part.body.as_str()), (206, "234"));
    assert_eq!(part.header("content-range"), "bytes 2-4/10");
    assert_eq!(part.x_cache(), "HIT");
    let suffix = get(&proxy, "/doc", &[("range", "bytes=-3")]).await;
    assert_eq!((suffix.status, suffix.body.as_str()), (206, "789"));
    let unsatisfiable = get(&proxy, "/doc", &[("range", "bytes=20-")]).await;
    assert_eq!(unsatisfiable.status, 416);
    assert_eq!(unsatisfiable.header("content-range"), "bytes */10");
    // If-Range that no longer matches: the whole response.
    let changed = get(
        &proxy,
        "/doc",
        &[("range", "bytes=2-4"), ("if-range", "\"other\"")],
    )
    .await;
    assert_eq!((changed.status, changed.body.as_str()), (200, "0123456789"));
    assert_eq!(origin.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_request_that_misses_is_passed_to_the_origin_unchanged() {
    let origin = Origin::start(|seen: Seen| async move {
        match seen.header("range") {
            Some("bytes=0-1") => reply(
                206,
                &[
                    ("content-range", "bytes 0-1/10".to_string()),
                    ("cache-control", "max-age=3600".to_string()),
                ],
                "01",
            ),
            _ => reply(
                200,
                &[("cache-control", "max-age=3600".to_string())],
                "0123456789",
            ),
        }
    })
    .await;
    let proxy = proxy(&origin).await;
    let part = get(&proxy, "/doc", &[("range", "bytes=0-1")]).await;
    assert_eq!((part.status, part.body.as_str()), (206, "01"));
    assert_eq!(
        origin.requests_for("/doc")[0].header("range"),
        Some("bytes=0-1")
    );
    // The partial response was not stored as the whole.
    let whole = get(&proxy, "/doc", &[]).await;
    assert_eq!((whole.status, whole.body.as_str()), (200, "0123456789"));
    assert_eq!(origin.requests(), 2);
}
