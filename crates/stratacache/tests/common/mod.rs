//! Shared set-up of the integration tests: real Redis, unique namespaces,
//! metric readings.
#![allow(dead_code, unused_macros)]

/// Generate one test per target (single node, Cluster) for each async test
/// function named, each taking the `Target`.
macro_rules! against_every_target {
    ($($test:ident),* $(,)?) => {
        mod single_node {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Target::Single).await;
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Target::Cluster).await;
                }
            )*
        }
    };
}

pub mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use stratacache::{Cache, CacheBuilder, RedisTopology};

/// Which Redis deployment a suite test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The machine's Redis (`STRATACACHE_TEST_REDIS_URL`, default 127.0.0.1:6379).
    Single,
    /// The throwaway 3-master cluster of this test process.
    Cluster,
}

impl Target {
    pub fn topology(self) -> RedisTopology {
        match self {
            Target::Single => RedisTopology::parse(&single_url()).unwrap(),
            Target::Cluster => {
                RedisTopology::Cluster(stratacache_testkit::shared_cluster().seed_urls())
            }
        }
    }

    /// Run a redis-cli command against the node that owns `key` (or the single node).
    pub fn cli_for_key(self, key: &str, args: &[&str]) -> String {
        match self {
            Target::Single => {
                let url = single_url();
                let port = url
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .trim_end_matches(|c: char| !c.is_ascii_digit());
                stratacache_testkit::cli(port.parse().unwrap(), args)
            }
            Target::Cluster => {
                let cluster = stratacache_testkit::shared_cluster();
                let port = cluster
                    .master_port_for_key(key.as_bytes())
                    .expect("slot has a master");
                stratacache_testkit::cli(port, args)
            }
        }
    }
}

pub fn single_url() -> String {
    std::env::var("STRATACACHE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A namespace no other test (or earlier run) uses.
pub fn namespace(test: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "t-{test}-{}-{nanos}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A builder for `target` with a fresh namespace and test-friendly timeouts.
pub fn builder(target: Target, test: &str) -> CacheBuilder {
    Cache::builder()
        .namespace(namespace(test))
        .redis(target.topology())
        .redis_timeout(Duration::from_secs(2))
}

/// The stored Redis key of `key` in `namespace`.
pub fn stored_key(namespace: &str, key: &str) -> String {
    format!("{namespace}:{{{key}}}")
}

fn snapshotter() -> &'static Snapshotter {
    static SNAP: OnceLock<Snapshotter> = OnceLock::new();
    SNAP.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("install the debugging recorder once");
        snapshotter
    })
}

/// Install the test recorder (call before building a cache whose metrics are read).
pub fn record_metrics() {
    snapshotter();
}

type SeriesKey = (String, Vec<(String, String)>);

/// Every counter seen so far. The debugging recorder's snapshots drain its
/// counters, so readings from all tests accumulate here.
fn drain_counters() -> std::sync::MutexGuard<'static, HashMap<SeriesKey, u64>> {
    static TOTALS: OnceLock<std::sync::Mutex<HashMap<SeriesKey, u64>>> = OnceLock::new();
    let mut totals = TOTALS.get_or_init(Default::default).lock().unwrap();
    for (key, _, _, value) in snapshotter().snapshot().into_vec() {
        if let DebugValue::Counter(n) = value {
            let key = key.key();
            let labels = key
                .labels()
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect();
            *totals.entry((key.name().to_string(), labels)).or_default() += n;
        }
    }
    totals
}

/// Sum of the counter `name` over series whose labels include every `labels` pair.
pub fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    drain_counters()
        .iter()
        .filter(|((n, series), _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| series.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|(_, total)| *total)
        .sum()
}

/// Every counter of the cache `namespace` (for failure messages).
pub fn counters_of(namespace: &str) -> Vec<String> {
    drain_counters()
        .iter()
        .filter(|((_, series), _)| series.iter().any(|(k, v)| k == "cache" && v == namespace))
        .map(|((name, series), total)| format!("{name}{series:?} = {total}"))
        .collect()
}

/// A plain redis-rs connection to the target, to look behind the cache's back.
pub struct Raw {
    single: Option<redis::aio::MultiplexedConnection>,
    cluster: Option<redis::cluster_async::ClusterConnection>,
}

impl Raw {
    pub async fn connect(target: Target) -> Raw {
        match target.topology() {
            RedisTopology::Single(url) => Raw {
                single: Some(
                    redis::Client::open(url.as_str())
                        .unwrap()
                        .get_multiplexed_async_connection()
                        .await
                        .unwrap(),
                ),
                cluster: None,
            },
            RedisTopology::Cluster(nodes) => Raw {
                single: None,
                cluster: Some(
                    redis::cluster::ClusterClient::new(nodes)
                        .unwrap()
                        .get_async_connection()
                        .await
                        .unwrap(),
                ),
            },
            other => panic!("no raw access for {other:?}"),
        }
    }

    pub async fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> T {
        if let Some(c) = &mut self.single {
            cmd.query_async(c).await.unwrap()
        } else {
            cmd.query_async(self.cluster.as_mut().unwrap())
                .await
                .unwrap()
        }
    }

    pub async fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    pub async fn set(&mut self, key: &str, value: &[u8]) {
        self.query::<()>(redis::cmd("SET").arg(key).arg(value))
            .await
    }

    pub async fn exists(&mut self, key: &str) -> bool {
        self.query::<i64>(redis::cmd("EXISTS").arg(key)).await == 1
    }

    pub async fn pttl(&mut self, key: &str) -> i64 {
        self.query(redis::cmd("PTTL").arg(key)).await
    }
}

/// Poll `check` until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `n` caches on one fresh namespace, each with its backplane subscribed.
/// These tests are about what is served, not about timeouts: a generous
/// Redis timeout keeps a loaded CI machine from turning slow reads into
/// (correctly conservative) misses.
pub async fn instances(target: Target, test: &str, n: usize) -> Vec<Cache> {
    let ns = namespace(test);
    let mut caches = Vec::new();
    for _ in 0..n {
        let cache = Cache::builder()
            .namespace(ns.clone())
            .redis(target.topology())
            .redis_timeout(Duration::from_secs(2))
            .build()
            .await
            .unwrap();
        assert!(
            eventually(Duration::from_secs(3), || async {
                cache.backplane_connected() == Some(true)
            })
            .await
        );
        caches.push(cache);
    }
    caches
}

/// The silent-peer check shared by every kind of connection: `builder`
/// reaches Redis through `proxy`. A value is written and read; then the
/// connection in use goes silent (its next chunk held for a minute) while
/// new connections pass at once. The timeouts open the breaker, and Redis
/// must answer again within seconds — the silent connection given up and
/// made again — not when the kernel gives up the socket many minutes later.
pub async fn silent_connection_is_given_up(
    builder: CacheBuilder,
    proxy: &stratacache_testkit::DelayProxy,
) {
    use std::time::Instant;

    use stratacache::{BreakerConfig, BreakerState, EntryOptions};

    let cache = builder
        .breaker(BreakerConfig {
            failure_threshold: 3,
            probe_interval: Duration::from_millis(100),
        })
        .build()
        .await
        .unwrap();
    let opts = EntryOptions::new().ttl(Duration::from_secs(120));
    cache.set("k", &"v".to_string(), &opts).await.unwrap();
    assert_eq!(
        cache.get::<String>("k").await.unwrap().as_deref(),
        Some("v")
    );

    proxy.set_delay(Duration::from_secs(60));
    for _ in 0..4 {
        let _ = cache.get::<String>("k").await;
    }
    assert_eq!(
        cache.breaker_state(),
        Some(BreakerState::Open),
        "the timeouts opened the breaker"
    );
    proxy.set_delay(Duration::ZERO);
    let started = Instant::now();
    let mut answered = None;
    while started.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(value)) = cache.get::<String>("k").await {
            answered = Some(value);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        answered.as_deref(),
        Some("v"),
        "Redis answered again within {:?} of the link recovering",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}
