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
