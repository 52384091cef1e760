//! Shared set-up of the HTTP tests: a real axum server on loopback in front
//! of a real Redis, with a namespace no other test uses.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use stratacache::Cache;
use tokio::task::JoinHandle;

/// The machine's Redis (`STRATACACHE_TEST_REDIS_URL`, default 127.0.0.1:6379).
pub fn redis_url() -> String {
    std::env::var("STRATACACHE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

/// A name nobody else uses: `http-test-<what>-<pid>-<n>-<ns>`.
pub fn unique(what: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "http-test-{what}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A cache on the test Redis in namespace `namespace`.
pub async fn cache(namespace: &str) -> Cache {
    Cache::builder()
        .namespace(namespace)
        .redis_url(&redis_url())
        // Generous: these tests check what is served, not timeouts.
        .redis_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("cache builds")
}

/// An axum server on 127.0.0.1 with an ephemeral port, stopped on drop.
pub struct Server {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    pub async fn start(app: Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How often each handler ran, by name.
#[derive(Clone, Default)]
pub struct Calls(Arc<Mutex<HashMap<String, Arc<AtomicUsize>>>>);

impl Calls {
    /// Count a call of `name`; returns the call's number (1 for the first).
    pub fn hit(&self, name: &str) -> usize {
        self.counter(name).fetch_add(1, Ordering::SeqCst) + 1
    }

    pub fn get(&self, name: &str) -> usize {
        self.counter(name).load(Ordering::SeqCst)
    }

    fn counter(&self, name: &str) -> Arc<AtomicUsize> {
        let mut map = self.0.lock().unwrap();
        Arc::clone(map.entry(name.to_string()).or_default())
    }
}

/// A plain client: no cookie store, no redirects, no proxies from the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(256)
        .build()
        .unwrap()
}

/// The `X-Cache` header of a response ("" when absent).
pub fn x_cache(response: &reqwest::Response) -> String {
    header(response, "x-cache")
}

pub fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// The reverse proxy of `examples/reverse_proxy.rs`, compiled into the tests
/// so that they exercise the example as published.
#[path = "../../examples/reverse_proxy.rs"]
pub mod reverse_proxy;

/// What an origin server saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
    /// 1 for the first request the origin received.
    pub number: usize,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// A real HTTP origin on loopback whose answers the test scripts, recording
/// every request it receives.
pub struct Origin {
    pub server: Server,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Origin {
    pub async fn start<F, Fut>(respond: F) -> Self
    where
        F: Fn(Seen) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = axum::response::Response> + Send + 'static,
    {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = Arc::clone(&seen);
        let app = Router::new().fallback(move |request: axum::extract::Request| {
            let (parts, _body) = request.into_parts();
            let request = {
                let mut log = log.lock().unwrap();
                let request = Seen {
                    method: parts.method,
                    uri: parts.uri,
                    headers: parts.headers,
                    number: log.len() + 1,
                };
                log.push(request.clone());
                request
            };
            respond.clone()(request)
        });
        Self {
            server: Server::start(app).await,
            seen,
        }
    }

    pub fn uri(&self) -> http::Uri {
        format!("http://{}", self.server.addr).parse().unwrap()
    }

    /// How many requests reached the origin.
    pub fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The requests for `path`, in order.
    pub fn requests_for(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|seen| seen.uri.path() == path)
            .cloned()
            .collect()
    }
}

/// A response with `status`, `headers` and `body`.
pub fn reply(status: u16, headers: &[(&str, String)], body: &str) -> axum::response::Response {
    let mut builder = http::Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, value.as_str());
    }
    builder
        .body(axum::body::Body::from(body.to_string()))
        .unwrap()
}

/// An HTTP date `offset_secs` from now.
pub fn http_date(offset_secs: i64) -> String {
    let now = std::time::SystemTime::now();
    let at = if offset_secs >= 0 {
        now + Duration::from_secs(offset_secs as u64)
    } else {
        now - Duration::from_secs(offset_secs.unsigned_abs())
    };
    httpdate::fmt_http_date(at)
}

/// The reverse proxy example in front of `origin`, on a loopback port.
pub async fn proxy(cache: Cache, origin: &Origin) -> Server {
    Server::start(reverse_proxy::app(cache, origin.uri())).await
}

/// A cache of this process only (no Redis).
pub async fn l1_only_cache(namespace: &str) -> Cache {
    Cache::builder()
        .namespace(namespace)
        .build()
        .await
        .expect("cache builds")
}

/// A response as a client saw it.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Got {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }

    pub fn x_cache(&self) -> &str {
        self.header("x-cache")
    }
}

/// Send `method path` with `headers` to `server`.
pub async fn send(server: &Server, method: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client().request(method, server.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    Got {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap(),
    }
}

/// `GET path` with `headers`.
pub async fn get(server: &Server, path: &str, headers: &[(&str, &str)]) -> Got {
    send(server, "GET", path, headers).await
}
