//! A shared caching reverse proxy in front of any HTTP origin.
//!
//! Every instance started with the same Redis and namespace shares one
//! cache: a response stored by one is served by all, a request that misses
//! in several instances at once reaches the origin once, and a `PUT`,
//! `POST` or `DELETE` through any of them invalidates the URL everywhere.
//!
//! ```text
//! cargo run -p stratacache-http --example reverse_proxy -- \
//!     --listen 127.0.0.1:8080 --origin http://127.0.0.1:8000 --redis redis://127.0.0.1:6379
//! ```
//!
//! `--redis none` keeps the cache in this process only.

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use stratacache::Cache;
use stratacache_http::{HttpCacheLayer, RouteRule};

/// The proxy: every request goes through the cache layer, then to the origin.
pub fn app(cache: Cache, origin: Uri) -> Router {
    let layer = HttpCacheLayer::builder(cache)
        // RFC 9111 for every path; while the origin is down, serve what is
        // stored for up to an hour past its freshness, unless the response
        // forbids it.
        .default_rule(RouteRule::new().stale_if_error(Duration::from_secs(3600)))
        // Standing where a CDN would, it follows `CDN-Cache-Control` (RFC 9213).
        .targeted_cache_control(HeaderName::from_static("cdn-cache-control"))
        .build()
        .expect("the configuration is valid");
    forwarder(origin).layer(layer)
}

/// Forward every request to `origin`, uncached.
pub fn forwarder(origin: Uri) -> Router {
    let client = Client::builder(TokioExecutor::new()).build_http();
    Router::new()
        .fallback(forward)
        .with_state(Origin { client, origin })
}

#[derive(Clone)]
struct Origin {
    client: Client<HttpConnector, Body>,
    origin: Uri,
}

/// Send the request on to the origin and its response back, without the
/// headers that belong to one connection; `502` when the origin cannot answer.
async fn forward(State(state): State<Origin>, mut request: Request) -> Response {
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut target = state.origin.clone().into_parts();
    target.path_and_query = Some(path.parse().expect("a path taken from a valid URI"));
    *request.uri_mut() = Uri::from_parts(target).expect("the origin's scheme and authority");
    remove_hop_by_hop(request.headers_mut());
    match state.client.request(request).await {
        Ok(response) => {
            let mut response = response.map(Body::new);
            remove_hop_by_hop(response.headers_mut());
            response
        }
        Err(err) => (
            StatusCode::BAD_GATEWAY,
            format!("origin unreachable: {err}\n"),
        )
            .into_response(),
    }
}

/// Connection-specific fields (RFC 9110 §7.6.1): `Connection`, the fields it
/// names, and the ones that are always hop-by-hop.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let always = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    for name in named.iter().map(HeaderName::as_str).chain(always) {
        headers.remove(name);
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut listen: SocketAddr = "127.0.0.1:8080".parse()?;
    let mut origin: Uri = "http://127.0.0.1:8000".parse()?;
    let mut redis = Some("redis://127.0.0.1:6379".to_string());
    let mut namespace = "reverse-proxy".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = value.parse()?,
            "--origin" => origin = value.parse()?,
            "--redis" => redis = (value != "none").then_some(value),
            "--namespace" => namespace = value,
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    let mut cache = Cache::builder().namespace(namespace);
    if let Some(url) = &redis {
        cache = cache.redis_url(url);
    }
    let cache = cache.build().await?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("proxying http://{listen} to {origin}");
    axum::serve(listener, app(cache, origin)).await?;
    Ok(())
}
