//! Security: AUTH, ACL users scoped to a namespace, namespaces that keep two
//! applications apart on one Redis, and passwords that never reach a log,
//! an error message or a `{:?}`.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use stratacache::{Cache, EntryOptions, RedisTopology};
use stratacache_testkit::RedisServer;

/// Everything logged in this test process, at every level.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || LogWriter(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        logs
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn opts() -> EntryOptions {
    EntryOptions::new().ttl(Duration::from_secs(60))
}

async fn build(url: &str, namespace: &str) -> Cache {
    Cache::builder()
        .namespace(namespace)
        .redis_url(url)
        .redis_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_protected_redis_is_used_and_no_password_is_ever_shown() {
    let logs = captured_logs();
    let server = RedisServer::start_with(&["--requirepass", "s3cret-pw"]);
    let port = server.port();
    let good = format!("redis://:s3cret-pw@127.0.0.1:{port}");
    let bad = format!("redis://:wrong-pw@127.0.0.1:{port}");

    let cache = build(&good, "auth").await;
    cache.set("k", &1u32, &opts()).await.unwrap();
    cache.ping_redis().await.unwrap();
    let mut raw = redis::Client::open(good.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let exists: bool = redis::cmd("EXISTS")
        .arg(common::stored_key("auth", "k"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(exists, "written through the authenticated connection");

    // A wrong password: reads still succeed (L1 and the loader), Redis
    // reports a clear error, and neither password shows anywhere.
    let refused = build(&bad, "auth").await;
    let value: u32 = refused
        .get_or_load("other", &opts(), || async { Ok::<_, std::io::Error>(7) })
        .await
        .unwrap();
    assert_eq!(value, 7);
    let err = refused.ping_redis().await.unwrap_err();
    let shown = format!(
        "{err} {err:?} {:?} {:?}",
        RedisTopology::parse(&good).unwrap(),
        RedisTopology::parse(&format!(
            "redis+cluster://u:s3cret-pw@127.0.0.1:{port},127.0.0.1:1"
        ))
        .unwrap()
    );
    let bad_url = stratacache::Cache::builder()
        .redis_url("redis://:s3cret-pw@[not-a-host")
        .build()
        .await
        .err()
        .map(|e| format!("{e} {e:?}"))
        .unwrap_or_default();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logged = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    assert!(logged.contains("stratacache"), "the capture works");
    for text in [&shown, &bad_url, &logged] {
        assert!(!text.contains("s3cret-pw"), "password shown: {text}");
        assert!(!text.contains("wrong-pw"), "password shown: {text}");
    }
}

/// An ACL user limited to its namespace's keys and channels
/// (`~app:* &app:*`) is all the cache needs — values, leases, version
/// floors, tags, clear, prefix SCAN, the backplane. Another namespace under
/// the same user is refused by Redis and degrades to L1 and the loader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_scoped_to_the_namespace_is_enough() {
    let server = RedisServer::start_with(&[
        "--user",
        "app",
        "on",
        ">app-pw",
        "~app:*",
        "&app:*",
        "+@all",
        "-@dangerous",
    ]);
    let url = format!("redis://app:app-pw@127.0.0.1:{}", server.port());
    let (a, b) = (build(&url, "app").await, build(&url, "app").await);
    for cache in [&a, &b] {
        assert!(
            common::eventually(Duration::from_secs(3), || async {
                cache.backplane_connected() == Some(true)
            })
            .await,
            "the backplane subscribes to the namespace's channels"
        );
    }
    let tagged = opts().tags(["t"]);
    let loaded: u32 = a
        .get_or_load("k", &tagged, || async { Ok::<_, std::io::Error>(1) })
        .await
        .unwrap();
    assert_eq!(loaded, 1);
    assert_eq!(b.get::<u32>("k").await.unwrap(), Some(1), "through Redis");
    a.set("k", &2u32, &tagged).await.unwrap();
    assert!(
        common::eventually(Duration::from_secs(1), || async {
            b.get::<u32>("k").await.unwrap() == Some(2)
        })
        .await,
        "invalidation over the backplane"
    );
    a.invalidate_version("k", 3).await.unwrap();
    a.invalidate_tag("t").await.unwrap();
    a.set("p:1", &1u32, &opts()).await.unwrap();
    assert_eq!(a.invalidate_prefix("p:").await.unwrap(), 1);
    a.invalidate_all().await.unwrap();
    a.ping_redis().await.unwrap();

    let outsider = build(&url, "other").await;
    let value: u32 = outsider
        .get_or_load("k", &opts(), || async { Ok::<_, std::io::Error>(9) })
        .await
        .unwrap();
    assert_eq!(value, 9, "refused by Redis, served by the loader");
    let err = outsider.delete("k").await.unwrap_err().to_string();
    assert!(
        err.to_lowercase().contains("noperm") || err.contains("permission"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_keep_two_applications_apart() {
    let url = common::single_url();
    let (ns_a, ns_b) = (common::namespace("app-a"), common::namespace("app-b"));
    let a = build(&url, &ns_a).await;
    let b = build(&url, &ns_b).await;
    let tagged = opts().tags(["t"]);
    a.set("user:1", &"a's".to_string(), &tagged).await.unwrap();
    b.set("user:1", &"b's".to_string(), &tagged).await.unwrap();
    a.invalidate_tag("t").await.unwrap();
    a.invalidate_prefix("user:").await.unwrap();
    a.invalidate_all().await.unwrap();
    assert_eq!(a.get::<String>("user:1").await.unwrap(), None);
    // b, and a fresh instance of b reading Redis, still see b's value.
    let b2 = build(&url, &ns_b).await;
    for cache in [&b, &b2] {
        assert_eq!(
            cache.get::<String>("user:1").await.unwrap().as_deref(),
            Some("b's")
        );
    }
}
