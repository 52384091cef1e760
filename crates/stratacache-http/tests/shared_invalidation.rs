//! Invalidation after unsafe methods (RFC 9111 §4.4) and a cache shared by
//! several proxies, through the reverse proxy example in front of a real
//! origin.

mod common;

use std::time::Duration;

use common::{get, reply, send, Origin, Seen};
use futures::future::join_all;

/// An origin whose GETs are fresh for an hour and numbered, whose `/slow`
/// takes 300 ms, and whose writes answer with the `Location` and
/// `Content-Location` the request names in `x-location` / `x-content-location`.
async fn origin() -> Origin {
    Origin::start(|seen: Seen| async move {
        if seen.method != http::Method::GET {
            let mut headers = Vec::new();
            if let Some(location) = seen.header("x-location") {
                headers.push(("location", location.to_string()));
            }
            if let Some(location) = seen.header("x-content-location") {
                headers.push(("content-location", location.to_string()));
            }
            let status = if seen.header("x-fail").is_some() {
                500
            } else {
                201
            };
            return reply(status, &headers, "written");
        }
        if seen.uri.path() == "/slow" {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        reply(
            200,
            &[("cache-control", "max-age=3600".to_string())],
            &format!("{} v{}", seen.uri.path(), seen.number),
        )
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_also_invalidates_its_location_and_content_location() {
    let origin = origin().await;
    let proxy = common::proxy(common::cache(&common::unique("location")).await, &origin).await;
    for path in ["/a", "/b", "/c"] {
        get(&proxy, path, &[]).await;
    }
    let content_location = proxy.url("/b");
    let posted = send(
        &proxy,
        "POST",
        "/items",
        &[
            ("x-location", "/a"),
            ("x-content-location", &content_location),
        ],
    )
    .await;
    assert_eq!(posted.status, 201);
    assert_eq!(get(&proxy, "/a", &[]).await.x_cache(), "MISS");
    assert_eq!(get(&proxy, "/b", &[]).await.x_cache(), "MISS");
    assert_eq!(get(&proxy, "/c", &[]).await.x_cache(), "HIT", "not named");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locations_on_another_origin_or_after_a_failed_write_are_left_alone() {
    let origin = origin().await;
    let proxy = common::proxy(common::cache(&common::unique("foreign")).await, &origin).await;
    get(&proxy, "/a", &[]).await;
    get(&proxy, "/b", &[]).await;
    send(
        &proxy,
        "PUT",
        "/items",
        &[("x-location", "http://elsewhere.example/a")],
    )
    .await;
    assert_eq!(get(&proxy, "/a", &[]).await.x_cache(), "HIT");
    let failed = send(&proxy, "DELETE", "/b", &[("x-fail", "1")]).await;
    assert_eq!(failed.status, 500);
    assert_eq!(get(&proxy, "/b", &[]).await.x_cache(), "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_many_distinct_paths_leave_a_bounded_number_of_tag_keys() {
    let origin = origin().await;
    let namespace = common::unique("tag-keys");
    let proxy = common::proxy(common::cache(&namespace).await, &origin).await;
    let writes = 2_000;
    let proxy = &proxy;
    for batch in (0..writes).collect::<Vec<_>>().chunks(50) {
        join_all(
            batch
                .iter()
                .map(|i| async move { send(proxy, "PUT", &format!("/things/{i}"), &[]).await }),
        )
        .await;
    }
    let redis = redis::Client::open(common::redis_url()).unwrap();
    let mut connection = redis.get_multiplexed_async_connection().await.unwrap();
    let mut keys = redis::AsyncCommands::scan_match::<_, String>(
        &mut connection,
        format!("{namespace}:__tag:*"),
    )
    .await
    .unwrap();
    let mut count = 0;
    while futures::StreamExt::next(&mut keys).await.is_some() {
        count += 1;
    }
    assert!(count > 0, "writes do invalidate");
    assert!(
        count <= 1_024,
        "{count} tag keys after {writes} writes to distinct paths"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_l1_only_a_write_to_one_path_keeps_the_loads_of_other_paths() {
    let origin = origin().await;
    let cache = common::l1_only_cache(&common::unique("l1-only")).await;
    let proxy = common::proxy(cache, &origin).await;
    let slow = get(&proxy, "/slow", &[]);
    let write = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        send(&proxy, "PUT", "/elsewhere", &[]).await
    };
    let (first, written) = tokio::join!(slow, write);
    assert_eq!((first.x_cache(), written.status), ("MISS", 201));
    let again = get(&proxy, "/slow", &[]).await;
    assert_eq!(again.x_cache(), "HIT", "{again:?}");
    assert_eq!(origin.requests_for("/slow").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_answer_concurrent_misses_with_one_origin_request() {
    let origin = origin().await;
    let namespace = common::unique("two-proxies");
    let a = common::proxy(common::cache(&namespace).await, &origin).await;
    let b = common::proxy(common::cache(&namespace).await, &origin).await;
    let answers = join_all((0..100).map(|i| {
        let proxy = if i % 2 == 0 { &a } else { &b };
        get(proxy, "/slow", &[("host", "shop.example")])
    }))
    .await;
    assert!(answers.iter().all(|got| got.body == "/slow v1"));
    assert_eq!(origin.requests_for("/slow").len(), 1);

    // A write through one proxy is seen by the other: at once in Redis, and
    // in the other's L1 as soon as the backplane delivers the invalidation
    // (the bound these tests allow is 1 s). Until then it may still answer
    // the old copy from L1, never anything else.
    let put = send(&a, "PUT", "/slow", &[("host", "shop.example")]).await;
    assert_eq!(put.status, 201);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let after = loop {
        let got = get(&b, "/slow", &[("host", "shop.example")]).await;
        if got.x_cache() != "HIT" || tokio::time::Instant::now() >= deadline {
            break got;
        }
        assert_eq!(got.body, "/slow v1", "{got:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!((after.x_cache(), after.body.as_str()), ("MISS", "/slow v3"));
    let gets = origin.requests_for("/slow");
    let gets = gets.iter().filter(|seen| seen.method == http::Method::GET);
    assert_eq!(gets.count(), 2, "one load before the write, one after");
}
