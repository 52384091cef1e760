//! Shared by the integration tests: a seeded PostgreSQL database of their
//! own (created, dropped at the end), and `market serve` instances on it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use market::app::{self, RunningServer, ServeConfig};
use market::db::{self, seed};

pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
/// The operator token of the tests' servers.
pub const TOKEN: &str = "test-operator-token-0123456789";
/// Small enough to seed in a few seconds: 20 instruments, 200 users.
pub const TEST_SCALE: f64 = 0.02;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test, process or run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A database created for one test and dropped when this goes away.
pub struct TestDb {
    pub url: String,
}

impl TestDb {
    /// Create, migrate and seed at [`TEST_SCALE`].
    pub async fn seeded() -> TestDb {
        let name = unique("market_test");
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        db::create_database_if_missing(&url)
            .await
            .expect("create the test database");
        let test_db = TestDb { url };
        let pool = sqlx::PgPool::connect(&test_db.url).await.unwrap();
        db::migrate(&pool).await.unwrap();
        seed::seed(&pool, seed::SeedPlan::at_scale(TEST_SCALE).unwrap(), false)
            .await
            .unwrap();
        pool.close().await;
        test_db
    }

    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.url).await.unwrap()
    }

    /// A symbol of the data set (instrument ids start at 1).
    pub async fn symbol(&self, id: i32) -> String {
        let pool = self.pool().await;
        let s = sqlx::query_scalar("SELECT symbol FROM instruments WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        s
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let url = self.url.clone();
        // Drop runs inside the test's runtime; the drop needs its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(db::drop_database(&url))
        })
        .join();
    }
}

/// A server configuration on `db` with the cache on or off, in `namespace`.
pub fn config(db: &TestDb, cache: bool, namespace: &str) -> ServeConfig {
    let mut config = ServeConfig::new(&db.url, REDIS_URL);
    config.cache = cache;
    config.namespace = namespace.to_string();
    config.bind = "127.0.0.1:0".parse().unwrap();
    config.db_connections = 4;
    config.admin_token = Some(TOKEN.to_string());
    config
}

pub async fn serve(db: &TestDb, cache: bool, namespace: &str) -> RunningServer {
    app::start(&config(db, cache, namespace))
        .await
        .expect("start the server")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A client sending the operator token with every request.
pub fn operator() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {TOKEN}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .default_headers(headers)
        .build()
        .unwrap()
}

/// A client signed in as `user` (`user{id}` / `password{id}`) on the
/// instance at `base`. Its cookie goes to every port of 127.0.0.1, so it
/// is signed in on every instance sharing that one's namespace.
pub async fn user_client(base: &str, user: i64) -> reqwest::Client {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .cookie_store(true)
        .build()
        .unwrap();
    let response = c
        .post(format!("{base}/login"))
        .json(&serde_json::json!({"username": format!("user{user}"), "password": format!("password{user}")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "sign in user{user}");
    c
}

/// The JSON body of `response` without its `request_id` (which differs on
/// every request): Null when the body is not JSON.
async fn body_of(response: reqwest::Response) -> serde_json::Value {
    let mut body: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
    if let Some(object) = body.as_object_mut() {
        object.remove("request_id");
    }
    body
}

/// GET `url`: status and JSON body (see [`body_of`]).
pub async fn get(client: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, body_of(response).await)
}

/// Send `method url` with a JSON body: status and JSON body.
pub async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let response = client
        .request(method, url)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, body_of(response).await)
}

/// The loads the instance has sent to the database so far.
pub fn loads(server: &RunningServer) -> u64 {
    server.state.caching.counters().loads()
}

/// Poll `url` until `check` holds on its JSON body, for at most `within`
/// (the bound other instances' L1 need to hear an invalidation).
pub async fn eventually(
    client: &reqwest::Client,
    url: &str,
    within: Duration,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (status, body) = get(client, url).await;
        if status == 200 && check(&body) {
            return body;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("{url} did not show the write within {within:?}: {status} {body}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
