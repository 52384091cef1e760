//! Cache-poisoning attempts: inputs an attacker controls that change the
//! body must never let the attacker's variant reach another client.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::RawQuery;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use common::{client, x_cache, Calls, Server};
use stratacache_http::{HttpCacheLayer, RouteRule};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A page that reflects everything an attacker might try to inject: the
/// first `a` query parameter, the host, the forwarding headers and a cookie.
async fn start() -> (Server, Calls) {
    let calls = Calls::default();
    let cache = common::cache(&common::unique("poison")).await;
    let layer = HttpCacheLayer::builder(cache)
        // The page states no freshness: the route gives it a TTL.
        .default_rule(RouteRule::new().ttl(Duration::from_secs(60)))
        .build()
        .unwrap();
    let c = calls.clone();
    let page = move |RawQuery(query): RawQuery, headers: HeaderMap| {
        c.hit("page");
        let first_a = query
            .unwrap_or_default()
            .split('&')
            .find_map(|pair| pair.strip_prefix("a=").map(str::to_string))
            .unwrap_or_default();
        let value = |name: &str| {
            headers
                .get(name)
                .map(|v| v.to_str().unwrap_or("?").to_string())
                .unwrap_or_default()
        };
        let host = if value("x-forwarded-host").is_empty() {
            value("host")
        } else {
            value("x-forwarded-host")
        };
        let scheme = if value("x-forwarded-proto").is_empty() {
            "http".to_string()
        } else {
            value("x-forwarded-proto")
        };
        let theme = value("cookie");
        async move { format!("a={first_a} link={scheme}://{host}/next theme={theme}") }
    };
    let app = Router::new().route("/page", get(page)).layer(layer);
    (Server::start(app).await, calls)
}

/// Send `request` as written and return (status, X-Cache, body).
async fn raw(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).await.unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let x_cache = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("x-cache")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    (status, x_cache, body.to_string())
}

fn victim_request(addr: SocketAddr, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_query_parameters_share_one_entry_and_polluted_ones_do_not() {
    let (server, calls) = start().await;
    let http = client();
    let first = http.get(server.url("/page?a=1&b=2")).send().await.unwrap();
    assert_eq!(x_cache(&first), "MISS");
    let reordered = http.get(server.url("/page?b=2&a=1")).send().await.unwrap();
    assert_eq!(
        x_cache(&reordered),
        "HIT",
        "the same parameters in another order"
    );
    let encoded = http
        .get(server.url("/page?b=%32&%61=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        x_cache(&encoded),
        "HIT",
        "the same parameters percent-encoded"
    );
    assert_eq!(calls.get("page"), 1);

    // Repeated parameters keep their order in the key: a handler reading the
    // first one never sees the attacker's order in the victim's response.
    let attack = http
        .get(server.url("/page?a=evil&a=good"))
        .send()
        .await
        .unwrap();
    assert!(attack.text().await.unwrap().starts_with("a=evil "));
    let victim = http
        .get(server.url("/page?a=good&a=evil"))
        .send()
        .await
        .unwrap();
    assert_eq!(x_cache(&victim), "MISS");
    assert!(victim.text().await.unwrap().starts_with("a=good "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_host_never_reaches_other_clients() {
    let (server, _calls) = start().await;
    let addr = server.addr;
    let victim = victim_request(addr, "/page?h=1");

    // A Host of the attacker's choosing is another key.
    let evil_host = "GET /page?h=1 HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n";
    let (_, x, body) = raw(addr, evil_host).await;
    assert_eq!(x, "MISS");
    assert!(body.contains("evil.example"));
    let (_, x, body) = raw(addr, &victim).await;
    assert_eq!(x, "MISS");
    assert!(!body.contains("evil"), "{body}");

    // An absolute URI naming the site with a Host naming the attacker bypasses.
    let split = format!(
        "GET http://{addr}/page?h=2 HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
    );
    let (status, x, body) = raw(addr, &split).await;
    assert_eq!((status, x.as_str()), (200, "BYPASS"), "{body}");
    let (_, _, body) = raw(addr, &victim_request(addr, "/page?h=2")).await;
    assert!(!body.contains("evil"), "{body}");

    // Two Host headers: refused by the server or bypassed, never stored.
    let doubled = format!(
        "GET /page?h=3 HTTP/1.1\r\nHost: {addr}\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
    );
    let (status, x, _) = raw(addr, &doubled).await;
    assert!(
        status == 400 || x == "BYPASS",
        "status {status}, X-Cache {x}"
    );
    let (_, _, body) = raw(addr, &victim_request(addr, "/page?h=3")).await;
    assert!(!body.contains("evil"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_cookies_and_overrides_never_reach_other_clients() {
    let (server, _calls) = start().await;
    let http = client();
    for (i, (name, value)) in [
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "evil"),
        ("cookie", "theme=evil"),
        ("x-http-method-override", "evil"),
    ]
    .into_iter()
    .enumerate()
    {
        let path = format!("/page?case={i}");
        let attack = http
            .get(server.url(&path))
            .header(name, value)
            .send()
            .await
            .unwrap();
        let attack_x = x_cache(&attack);
        let attack_body = attack.text().await.unwrap();
        // Forwarding headers are keyed; cookies and method overrides bypass.
        assert!(
            attack_x == "MISS" || attack_x == "BYPASS",
            "{name}: {attack_x}"
        );
        if name != "x-http-method-override" {
            assert!(
                attack_body.contains("evil"),
                "{name}: the handler saw it: {attack_body}"
            );
        }
        for _ in 0..2 {
            let victim = http.get(server.url(&path)).send().await.unwrap();
            let body = victim.text().await.unwrap();
            assert!(!body.contains("evil"), "{name} leaked: {body}");
        }
        // And the attacker's own repeat gets its own variant, not the victim's.
        let again = http
            .get(server.url(&path))
            .header(name, value)
            .send()
            .await
            .unwrap();
        if name != "x-http-method-override" {
            assert!(again.text().await.unwrap().contains("evil"), "{name}");
        }
    }
}
