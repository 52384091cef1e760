//! Shared by the integration tests: a seeded PostgreSQL database of their
//! own (created, dropped at the end), and `market serve` instances on it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use market::app::ServeConfig;
use market::db::{self, seed};
use market::server::{self, RunningServer};

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
    server::start(&config(db, cache, namespace))
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

/// `market serve` as a child process (the binary, its flags, its log), on
/// `db` in `namespace`, its log as JSON lines.
pub struct ServeProcess {
    pub process: stratacache_testkit::ChildProcess,
    pub base: String,
    pub port: u16,
}

impl ServeProcess {
    /// Start it with `extra` arguments and `env`, and wait until it answers
    /// `/health` (any status: Redis may be meant to be down).
    pub async fn start(
        db: &TestDb,
        namespace: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> ServeProcess {
        let port = stratacache_testkit::free_port();
        let mut args: Vec<String> = [
            "--log-format",
            "json",
            "serve",
            "--database-url",
            &db.url,
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--namespace",
            namespace,
            "--db-connections",
            "4",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !extra.contains(&"--redis-url") {
            args.extend(["--redis-url".to_string(), REDIS_URL.to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !env.iter().any(|(k, _)| k == "RUST_LOG") {
            env.push(("RUST_LOG".into(), "info".into()));
        }
        if !env.iter().any(|(k, _)| k == "MARKET_ADMIN_TOKEN")
            && !extra.contains(&"--admin-token-file")
        {
            env.push(("MARKET_ADMIN_TOKEN".into(), TOKEN.into()));
        }
        let mut process = stratacache_testkit::ChildProcess::start_with_env(
            env!("CARGO_BIN_EXE_market"),
            &args,
            &env,
        )
        .expect("start market serve");
        let base = format!("http://127.0.0.1:{port}");
        let c = client();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = process.exit_status() {
                panic!("market serve exited ({status}):\n{}", process.log());
            }
            if c.get(format!("{base}/health")).send().await.is_ok() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "market serve did not answer within 30 s:\n{}",
                process.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ServeProcess {
            process,
            base,
            port,
        }
    }

    /// Its log so far, one JSON object per line (lines that are not JSON skipped).
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        self.process
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Wait up to `within` for a log line that `matches`.
    pub async fn logged(
        &self,
        within: Duration,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(line) = self.log_lines().into_iter().find(&matches) {
                return Some(line);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The message of a JSON log line.
pub fn message(line: &serde_json::Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or("")
}

/// Send `request` as raw bytes on a new connection; what came back before
/// the service closed the connection or `within` passed, and how long that took.
pub async fn raw_exchange(
    port: u16,
    request: &[u8],
    within: Duration,
) -> (Vec<u8>, Duration, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = tokio::time::Instant::now();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(within, stream.read_to_end(&mut answer))
        .await
        .is_ok();
    (answer, started.elapsed(), closed)
}

/// The status and JSON body of a raw HTTP/1.1 answer.
pub fn parse_raw(answer: &[u8]) -> (u16, serde_json::Value) {
    let text = String::from_utf8_lossy(answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(serde_json::Value::Null);
    (status, body)
}
