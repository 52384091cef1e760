//! The `market` service under faults, as a black box: its binary, its CLI
//! and its HTTP API.
//!
//! A [`Fleet`] is a database of its own (`market seed` into
//! `market_faults_<pid>_<ms>`, dropped afterwards), a throwaway Redis with
//! `appendonly yes` and `appendfsync always` (a kill loses nothing of the
//! write-behind stream), a cuttable TCP proxy in front of PostgreSQL, and two
//! `market serve` processes sharing one cache namespace (so one cache, one
//! backplane and one write-behind queue, each instance a worker of it) and
//! one operator token (`MARKET_ADMIN_TOKEN`), made by the fleet.

mod authorization;
mod load;
mod malformed;
mod scenarios;
mod slow_clients;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use stratacache_testkit::{free_port, net, ChildProcess, DelayProxy, RedisServer};

pub use authorization::authorization;
pub use malformed::bad_requests;
pub use scenarios::{postgres_down, redis_killed};
pub use slow_clients::slow_clients;

/// Size of the data set: 50 instruments, 1,000 users (seeded in ~4 s).
const SEED_SCALE: &str = "0.1";
/// The per-call Redis timeout the suite runs `market serve` with
/// (`--redis-timeout`; also its default).
pub const MARKET_REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// `market`, built beside this binary (`cargo build --release -p market`).
pub fn market_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name("market");
    if !path.exists() {
        bail!(
            "no market binary at {}: build it with `cargo build --release -p market`",
            path.display()
        );
    }
    Ok(path)
}

async fn postgres(dbname: &str) -> Result<tokio_postgres::Client> {
    let url = format!("host=127.0.0.1 port=5432 user=postgres dbname={dbname} connect_timeout=5");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .context("PostgreSQL on 127.0.0.1:5432")?;
    tokio::spawn(connection);
    Ok(client)
}

/// One `market serve` process.
pub struct Instance {
    pub process: ChildProcess,
    pub base: String,
}

pub struct Fleet {
    pub binary: PathBuf,
    /// The operator token every instance is started with.
    pub token: String,
    pub database: String,
    pub redis: RedisServer,
    pub pg_proxy: DelayProxy,
    pub namespace: String,
    pub instances: Vec<Instance>,
    pub client: reqwest::Client,
}

impl Fleet {
    /// Seed, start Redis, the proxy and `instances` cached `market serve`s,
    /// and wait until each answers `/health` with 200.
    pub async fn start(instances: usize) -> Result<Fleet> {
        let binary = market_binary()?;
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis();
        let database = format!("market_faults_{}_{ms}", std::process::id());
        let seeded = tokio::process::Command::new(&binary)
            .args(["seed", "--database-url"])
            .arg(format!("postgres://postgres@127.0.0.1:5432/{database}"))
            .args(["--scale", SEED_SCALE])
            .output()
            .await?;
        if !seeded.status.success() {
            bail!(
                "market seed failed: {}",
                String::from_utf8_lossy(&seeded.stderr)
            );
        }
        let redis = tokio::task::spawn_blocking(|| {
            RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"])
        })
        .await?;
        let mut fleet = Fleet {
            binary,
            token: format!("{:032x}", rand::random::<u128>()),
            pg_proxy: DelayProxy::start(5432)?,
            namespace: format!("market-faults-{}-{ms}", std::process::id()),
            database,
            redis,
            instances: Vec::new(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(64)
                // Below `market serve`'s idle-connection limit (its header
                // read timeout, 10 s): a pooled connection is never reused
                // just as the service closes it.
                .pool_idle_timeout(Duration::from_secs(5))
                .build()?,
        };
        for _ in 0..instances {
            let instance = fleet.spawn(true, &fleet.redis.url(), &[]).await?;
            fleet.instances.push(instance);
        }
        Ok(fleet)
    }

    /// The database URL the instances use: through the proxy.
    pub fn database_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}",
            self.pg_proxy.port(),
            self.database
        )
    }

    /// Start one more `market serve` on this fleet's database (through the
    /// proxy) and namespace, with `redis_url` and `extra` arguments.
    pub async fn spawn(&self, cache: bool, redis_url: &str, extra: &[&str]) -> Result<Instance> {
        let port = free_port();
        let mut args: Vec<String> = [
            "serve",
            "--database-url",
            &self.database_url(),
            "--redis-url",
            redis_url,
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--namespace",
            &self.namespace,
            "--db-connections",
            "8",
            "--redis-timeout",
            &format!("{}ms", MARKET_REDIS_TIMEOUT.as_millis()),
            "--cache",
            if cache { "on" } else { "off" },
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let env = [("MARKET_ADMIN_TOKEN".to_string(), self.token.clone())];
        let mut instance = Instance {
            process: ChildProcess::start_with_env(&self.binary, &args, &env)?,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = instance.process.exit_status() {
                bail!(
                    "market serve exited ({status}):\n{}",
                    instance.process.log()
                );
            }
            if self.health(&instance.base).await.0 == 200 {
                return Ok(instance);
            }
            if Instant::now() > deadline {
                bail!(
                    "market serve not healthy within 30 s:\n{}",
                    instance.process.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `Authorization` header value of the operator.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// `GET /health`: status code (0 when it did not answer) and body.
    pub async fn health(&self, base: &str) -> (u16, serde_json::Value) {
        let answer = self
            .client
            .get(format!("{base}/health"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        match answer {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.json().await.unwrap_or_default())
            }
            Err(_) => (0, serde_json::Value::Null),
        }
    }

    /// Poll every instance's `/health` every 20 ms until `check` holds for
    /// all; how long that took (`None`: not within `limit`).
    pub async fn until_health(
        &self,
        limit: Duration,
        check: impl Fn(u16, &serde_json::Value) -> bool,
    ) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < limit {
            let mut all = true;
            for instance in &self.instances {
                let (status, body) = self.health(&instance.base).await;
                all &= check(status, &body);
            }
            if all {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Views per symbol in the database (read directly, not through the proxy).
    pub async fn view_totals(&self) -> Result<HashMap<String, i64>> {
        let client = postgres(&self.database).await?;
        let rows = client
            .query(
                "SELECT i.symbol, v.views FROM view_counts v JOIN instruments i ON i.id = v.instrument_id",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Orders of `user` in the database (read directly, not through the proxy).
    pub async fn orders_of(&self, user: i64) -> Result<i64> {
        let client = postgres(&self.database).await?;
        let row = client
            .query_one("SELECT count(*) FROM orders WHERE user_id = $1", &[&user])
            .await?;
        Ok(row.get(0))
    }

    /// Entries in the write-behind stream and in its dead-letter stream.
    pub fn queue_depth(&self) -> (u64, u64) {
        let stream = format!("{}:write-behind:views", self.namespace);
        let len = |key: &str| {
            net::call_text(self.redis.port(), &["XLEN", key], Duration::from_secs(1))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(u64::MAX)
        };
        (len(&stream), len(&format!("{stream}:dead")))
    }
}

/// `<len>:<bytes>,` at the start of `data`: the bytes and the rest.
fn netstring(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = data.iter().position(|&b| b == b':')?;
    let len: usize = std::str::from_utf8(&data[..colon]).ok()?.parse().ok()?;
    let start = colon + 1;
    let item = data.get(start..start + len)?;
    let rest = data.get(start + len..)?;
    Some((item, rest))
}

impl Fleet {
    /// View increments per symbol held in the dead-letter stream, read in
    /// the library's documented entry format (`n` and `b`: writes of four
    /// netstrings each — kind, write id, key, payload — or single-write
    /// fields `k` and `c`).
    pub async fn dead_letter_views(&self) -> Result<HashMap<String, i64>> {
        let mut conn = redis::Client::open(self.redis.url())?
            .get_multiplexed_async_connection()
            .await?;
        let dead = format!("{}:write-behind:views:dead", self.namespace);
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(&dead)
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await?;
        let mut views: HashMap<String, i64> = HashMap::new();
        let mut add = |key: &[u8], delta: &[u8]| {
            let key = String::from_utf8_lossy(key);
            let delta: i64 = std::str::from_utf8(delta)
                .ok()
                .and_then(|d| d.parse().ok())
                .unwrap_or(0);
            let symbol = key.strip_prefix("views:").unwrap_or(&key).to_string();
            *views.entry(symbol).or_default() += delta;
        };
        for entry in reply.ids {
            let field = |name: &str| match entry.map.get(name) {
                Some(redis::Value::BulkString(b)) => Some(b.clone()),
                _ => None,
            };
            if let Some(blob) = field("b") {
                let mut rest = blob.as_slice();
                while !rest.is_empty() {
                    let mut parts = [&b""[..]; 4];
                    for part in &mut parts {
                        let Some((item, tail)) = netstring(rest) else {
                            return Ok(views);
                        };
                        *part = item;
                        rest = tail;
                    }
                    if parts[0] == b"c" {
                        add(parts[2], parts[3]);
                    }
                }
            } else if let (Some(key), Some(delta)) = (field("k"), field("c")) {
                add(&key, &delta);
            }
        }
        Ok(views)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for instance in &mut self.instances {
            instance.process.kill();
        }
        let database = self.database.clone();
        // Dropped inside the runtime; the statement needs a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(drop_database(&database))
        })
        .join();
    }
}

/// `DROP DATABASE … WITH (FORCE)` of a database this suite created.
pub async fn drop_database(name: &str) {
    if let Ok(client) = postgres("postgres").await {
        let _ = client
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await;
    }
}
