//! The response cache against a real axum server, a real HTTP client and
//! the machine's Redis: what is stored, what is served, with which headers.

mod common;

use std::time::Duration;

use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get as route_get;
use axum::Router;
use common::{client, header, x_cache, Calls, Server};
use http::HeaderName;
use stratacache_http::{HttpCacheLayer, RouteRule, UserScope};

/// The handlers here state no freshness: their routes give them a TTL.
const MINUTE: Duration = Duration::from_secs(60);

/// One server with a route for each behaviour under test.
async fn start(namespace: &str) -> (Server, Calls) {
    let calls = Calls::default();
    let cache = common::cache(namespace).await;
    let layer = HttpCacheLayer::builder(cache)
        .route(
            "/items/{id}",
            RouteRule::new().ttl(MINUTE).tag("items").tag("item:{id}"),
        )
        .route("/short", RouteRule::new().ttl(Duration::from_secs(1)))
        .route(
            "/stale",
            RouteRule::new()
                .ttl(Duration::from_secs(1))
                .stale_for(Duration::from_secs(60)),
        )
        .route(
            "/me",
            RouteRule::new()
                .ttl(MINUTE)
                .per_user(UserScope::cookie("id")),
        )
        .route(
            "/tenant",
            RouteRule::new()
                .ttl(MINUTE)
                .key_header(HeaderName::from_static("x-tenant")),
        )
        .max_body_bytes(64 * 1024)
        .default_rule(RouteRule::new().ttl(MINUTE))
        .build()
        .unwrap();
    let c = calls.clone();
    let item = move |Path(id): Path<String>| {
        let n = c.hit(&format!("item:{id}"));
        async move { format!("item {id} v{n}") }
    };
    let c = calls.clone();
    let update = move |Path(id): Path<String>| {
        c.hit("update");
        async move { format!("updated {id}") }
    };
    let c = calls.clone();
    let cache_control = move |RawQuery(query): RawQuery| {
        let n = c.hit(&format!("cc:{}", query.clone().unwrap_or_default()));
        let value = query
            .unwrap_or_default()
            .replace("cc=", "")
            .replace("%3D", "=");
        async move { ([("cache-control", value)], format!("cc v{n}")) }
    };
    let c = calls.clone();
    let cookie = move || {
        let n = c.hit("cookie");
        async move {
            (
                [("set-cookie", format!("id=session{n}"))],
                format!("cookie v{n}"),
            )
        }
    };
    let c = calls.clone();
    let error = move || {
        let n = c.hit("error");
        async move { (StatusCode::INTERNAL_SERVER_ERROR, format!("error v{n}")) }
    };
    let c = calls.clone();
    let lang = move |headers: HeaderMap| {
        let n = c.hit("lang");
        let lang = headers
            .get("accept-language")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_else(|| "none".into());
        async move { ([("vary", "Accept-Language")], format!("lang {lang} v{n}")) }
    };
    let c = calls.clone();
    let me = move |headers: HeaderMap| {
        let n = c.hit("me");
        let cookie = headers
            .get("cookie")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_else(|| "anonymous".into());
        async move { format!("me {cookie} v{n}") }
    };
    let c = calls.clone();
    let counted = move |name: &'static str| {
        let c = c.clone();
        move || {
            let n = c.hit(name);
            async move { format!("{name} v{n}") }
        }
    };
    let c = calls.clone();
    let big = move || {
        c.hit("big");
        async move { "x".repeat(200 * 1024) }
    };
    let c = calls.clone();
    let tenant = move |headers: HeaderMap| {
        let n = c.hit("tenant");
        let tenant = headers
            .get("x-tenant")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        async move { format!("tenant {tenant} v{n}") }
    };
    let c = calls.clone();
    let etag = move |headers: HeaderMap| {
        let n = c.hit("etag");
        let saw_conditional = headers.contains_key("if-none-match");
        async move {
            (
                [("etag", "\"handler-etag\"")],
                format!("etag v{n} conditional={saw_conditional}"),
            )
                .into_response()
        }
    };
    let app = Router::new()
        .route(
            "/items/{id}",
            route_get(item).put(update.clone()).delete(update),
        )
        .route("/cc", route_get(cache_control))
        .route("/cookie", route_get(cookie))
        .route("/error", route_get(error))
        .route("/lang", route_get(lang))
        .route("/me", route_get(me))
        .route("/short", route_get(counted("short")))
        .route("/stale", route_get(counted("stale")))
        .route("/shared", route_get(counted("shared")))
        .route("/big", route_get(big))
        .route("/tenant", route_get(tenant))
        .route("/etag", route_get(etag))
        .layer(layer);
    (Server::start(app).await, calls)
}

async fn get_once(server: &Server, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client().get(server.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// `(X-Cache, body)` of a GET.
async fn get(server: &Server, path: &str, headers: &[(&str, &str)]) -> (String, String) {
    let response = get_once(server, path, headers).await;
    let x = x_cache(&response);
    (x, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miss_then_hit_with_age() {
    let (server, calls) = start(&common::unique("hit")).await;
    assert_eq!(
        get(&server, "/items/1", &[]).await,
        ("MISS".into(), "item 1 v1".into())
    );
    let hit = get_once(&server, "/items/1", &[]).await;
    assert_eq!(x_cache(&hit), "HIT");
    assert_eq!(header(&hit, "age"), "0");
    assert_eq!(hit.text().await.unwrap(), "item 1 v1");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let later = get_once(&server, "/items/1", &[]).await;
    assert_eq!(x_cache(&later), "HIT");
    assert!(header(&later, "age").parse::<u64>().unwrap() >= 1);
    assert_eq!(calls.get("item:1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_response_is_loaded_again() {
    let (server, calls) = start(&common::unique("expiry")).await;
    assert_eq!(
        get(&server, "/short", &[]).await,
        ("MISS".into(), "short v1".into())
    );
    assert_eq!(get(&server, "/short", &[]).await.0, "HIT");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(
        get(&server, "/short", &[]).await,
        ("MISS".into(), "short v2".into())
    );
    assert_eq!(calls.get("short"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_response_is_served_while_one_refresh_runs() {
    let (server, calls) = start(&common::unique("stale")).await;
    assert_eq!(
        get(&server, "/stale", &[]).await,
        ("MISS".into(), "stale v1".into())
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(
        get(&server, "/stale", &[]).await,
        ("STALE".into(), "stale v1".into())
    );
    // The refresh runs in the background; the next requests see its result.
    let mut refreshed = None;
    for _ in 0..50 {
        let (x, body) = get(&server, "/stale", &[]).await;
        if body == "stale v2" {
            refreshed = Some(x);
            break;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert_eq!(refreshed.as_deref(), Some("HIT"));
    assert_eq!(calls.get("stale"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etag_and_if_none_match_give_304() {
    let (server, calls) = start(&common::unique("etag")).await;
    let first = get_once(&server, "/items/7", &[]).await;
    let etag = header(&first, "etag");
    assert!(
        etag.starts_with('"') && etag.len() > 2,
        "an ETag is generated: {etag:?}"
    );
    let not_modified = get_once(&server, "/items/7", &[("if-none-match", &etag)]).await;
    assert_eq!(not_modified.status(), 304);
    assert_eq!(header(&not_modified, "etag"), etag);
    assert_eq!(x_cache(&not_modified), "HIT");
    assert_eq!(not_modified.text().await.unwrap(), "");
    let other = get_once(&server, "/items/7", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(other.status(), 200);
    assert_eq!(calls.get("item:7"), 1);

    // A handler's own ETag is kept, and the handler never sees the client's
    // conditional header (it must answer in full to be stored).
    let first = get_once(&server, "/etag", &[("if-none-match", "\"handler-etag\"")]).await;
    assert_eq!(
        first.status(),
        304,
        "answered by the layer from the fresh response"
    );
    let full = get_once(&server, "/etag", &[]).await;
    assert_eq!(header(&full, "etag"), "\"handler-etag\"");
    assert_eq!(full.text().await.unwrap(), "etag v1 conditional=false");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_keeps_variants_apart() {
    let (server, calls) = start(&common::unique("vary")).await;
    let de = [("accept-language", "de")];
    let fr = [("accept-language", "fr")];
    assert_eq!(
        get(&server, "/lang", &de).await,
        ("MISS".into(), "lang de v1".into())
    );
    // Its Vary is now known: another language is another entry.
    assert_eq!(
        get(&server, "/lang", &fr).await,
        ("MISS".into(), "lang fr v2".into())
    );
    assert_eq!(
        get(&server, "/lang", &de).await,
        ("HIT".into(), "lang de v1".into())
    );
    assert_eq!(
        get(&server, "/lang", &fr).await,
        ("HIT".into(), "lang fr v2".into())
    );
    assert_eq!(
        get(&server, "/lang", &[]).await,
        ("MISS".into(), "lang none v3".into())
    );
    assert_eq!(calls.get("lang"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_control_decides_what_is_stored() {
    let (server, calls) = start(&common::unique("cc")).await;
    for (directive, stored) in [
        ("no-store", false),
        ("no-cache", false),
        ("private", false),
        ("max-age%3D0", false),
        ("s-maxage%3D0,max-age%3D60", false),
        ("public,max-age%3D60", true),
        ("s-maxage%3D60,max-age%3D0", true),
    ] {
        let path = format!("/cc?cc={directive}");
        let (x1, _) = get(&server, &path, &[]).await;
        let (x2, body) = get(&server, &path, &[]).await;
        assert_eq!(x1, "MISS", "{directive}");
        if stored {
            assert_eq!(
                (x2.as_str(), body.as_str()),
                ("HIT", "cc v1"),
                "{directive}"
            );
        } else {
            // Known not storable now: straight to the handler.
            assert_eq!(
                (x2.as_str(), body.as_str()),
                ("PASS", "cc v2"),
                "{directive}"
            );
        }
        assert_eq!(
            calls.get(&format!("cc:cc={directive}")),
            if stored { 1 } else { 2 }
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_shorter_than_the_route_ttl_wins() {
    let (server, calls) = start(&common::unique("maxage")).await;
    let path = "/cc?cc=max-age%3D1";
    assert_eq!(get(&server, path, &[]).await.0, "MISS");
    assert_eq!(get(&server, path, &[]).await.0, "HIT");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(
        get(&server, path, &[]).await,
        ("MISS".into(), "cc v2".into())
    );
    assert_eq!(calls.get("cc:cc=max-age%3D1"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_cookie_and_server_errors_are_never_stored() {
    let (server, calls) = start(&common::unique("cookie")).await;
    for n in 1..=3 {
        let response = get_once(&server, "/cookie", &[]).await;
        // The first answer shows the resource is not storable; later
        // requests go straight to the handler.
        assert_eq!(x_cache(&response), if n == 1 { "MISS" } else { "PASS" });
        assert_eq!(header(&response, "set-cookie"), format!("id=session{n}"));
        let error = get_once(&server, "/error", &[]).await;
        assert_eq!(error.status(), 500);
        // A server error says nothing lasting: each one is a miss.
        assert_eq!(x_cache(&error), "MISS");
        assert_eq!(error.text().await.unwrap(), format!("error v{n}"));
    }
    assert_eq!((calls.get("cookie"), calls.get("error")), (3, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_bypass_shared_routes() {
    let (server, calls) = start(&common::unique("bypass")).await;
    assert_eq!(get(&server, "/shared", &[]).await.0, "MISS");
    for headers in [
        [("authorization", "Bearer alice")],
        [("cookie", "id=alice")],
    ] {
        let (x, body) = get(&server, "/shared", &headers).await;
        assert_eq!(x, "BYPASS");
        assert_ne!(
            body, "shared v1",
            "an authenticated request never gets the shared copy"
        );
    }
    assert_eq!(
        get(&server, "/shared", &[]).await,
        ("HIT".into(), "shared v1".into())
    );
    assert_eq!(calls.get("shared"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_routes_never_serve_one_user_to_another() {
    let (server, calls) = start(&common::unique("peruser")).await;
    let alice = [("cookie", "id=alice")];
    let bob = [("cookie", "id=bob")];
    assert_eq!(
        get(&server, "/me", &alice).await,
        ("MISS".into(), "me id=alice v1".into())
    );
    assert_eq!(
        get(&server, "/me", &bob).await,
        ("MISS".into(), "me id=bob v2".into())
    );
    assert_eq!(
        get(&server, "/me", &alice).await,
        ("HIT".into(), "me id=alice v1".into())
    );
    assert_eq!(
        get(&server, "/me", &bob).await,
        ("HIT".into(), "me id=bob v2".into())
    );
    assert_eq!(
        get(&server, "/me", &[]).await,
        ("MISS".into(), "me anonymous v3".into())
    );
    // A token the scope does not name is a credential it cannot key: bypassed.
    let (x, _) = get(&server, "/me", &[("authorization", "Bearer mallory")]).await;
    assert_eq!(x, "BYPASS");
    assert_eq!(calls.get("me"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_invalidate_their_routes_tags() {
    let (server, calls) = start(&common::unique("invalidate")).await;
    assert_eq!(get(&server, "/items/1", &[]).await.0, "MISS");
    assert_eq!(get(&server, "/items/2", &[]).await.0, "MISS");
    assert_eq!(get(&server, "/items/1", &[]).await.0, "HIT");
    let put = client().put(server.url("/items/1")).send().await.unwrap();
    assert_eq!(put.text().await.unwrap(), "updated 1");
    // The write is visible to the next read at once; the tag `items` also
    // covers item 2.
    assert_eq!(
        get(&server, "/items/1", &[]).await,
        ("MISS".into(), "item 1 v2".into())
    );
    assert_eq!(
        get(&server, "/items/2", &[]).await,
        ("MISS".into(), "item 2 v2".into())
    );
    let delete = client()
        .delete(server.url("/items/2"))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 200);
    assert_eq!(get(&server, "/items/2", &[]).await.1, "item 2 v3");
    assert_eq!(
        get(&server, "/items/1", &[]).await,
        ("MISS".into(), "item 1 v3".into())
    );
    assert_eq!(calls.get("update"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_bound_are_streamed_not_stored() {
    let (server, calls) = start(&common::unique("big")).await;
    for expected in ["MISS", "PASS"] {
        let response = get_once(&server, "/big", &[]).await;
        assert_eq!(x_cache(&response), expected);
        assert_eq!(response.text().await.unwrap().len(), 200 * 1024);
    }
    assert_eq!(calls.get("big"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_is_answered_without_a_body() {
    let (server, _calls) = start(&common::unique("head")).await;
    for expected in ["MISS", "HIT"] {
        let response = client().head(server.url("/items/9")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(x_cache(&response), expected);
        assert_eq!(response.bytes().await.unwrap().len(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_key_headers_split_the_key() {
    let (server, calls) = start(&common::unique("keyhdr")).await;
    let a = [("x-tenant", "a")];
    let b = [("x-tenant", "b")];
    assert_eq!(
        get(&server, "/tenant", &a).await,
        ("MISS".into(), "tenant a v1".into())
    );
    assert_eq!(
        get(&server, "/tenant", &b).await,
        ("MISS".into(), "tenant b v2".into())
    );
    assert_eq!(
        get(&server, "/tenant", &a).await,
        ("HIT".into(), "tenant a v1".into())
    );
    assert_eq!(calls.get("tenant"), 2);
}
