//! Security settings: Redis AUTH and ACL users, TLS with a private CA,
//! namespaces keeping two applications apart, and secrets that never reach
//! a log, an error or a response. Each against throwaway servers.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Result;
use stratacache::{Cache, EntryOptions, RedisTls, RedisTopology};
use stratacache_testkit::{RedisServer, TlsRedisServer};

use super::service::Fleet;
use super::{Group, Row};
use crate::report::{stored_key, unique_namespace};

fn opts() -> EntryOptions {
    EntryOptions::new().ttl(Duration::from_secs(300))
}

async fn cache(url: &str, namespace: &str, tls: Option<RedisTls>) -> Result<Cache> {
    let mut builder = crate::report::cache_builder()
        .namespace(namespace)
        .redis_url(url)
        .redis_timeout(Duration::from_secs(1));
    if let Some(tls) = tls {
        builder = builder.redis_tls(tls);
    }
    Ok(builder.build().await?)
}

/// `EXISTS key` over a connection authenticated by `url`.
async fn exists(url: &str, key: &str) -> Result<bool> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    Ok(redis::cmd("EXISTS").arg(key).query_async(&mut conn).await?)
}

/// A loader's value comes back although Redis refuses the client.
async fn degrades(c: &Cache) -> bool {
    c.get_or_load("refused", &opts(), || async {
        Ok::<_, std::io::Error>(7u32)
    })
    .await
    .is_ok_and(|v| v == 7)
}

async fn round_trip(a: &Cache, b: &Cache, key: &str) -> Result<bool> {
    a.set(key, &key.to_string(), &opts()).await?;
    b.clear_l1();
    Ok(b.get::<String>(key).await?.as_deref() == Some(key))
}

const PASSWORD: &str = "Pw-faults-3141";

pub async fn redis_auth() -> Result<Row> {
    let server =
        tokio::task::spawn_blocking(|| RedisServer::start_with(&["--requirepass", PASSWORD]))
            .await?;
    let port = server.port();
    let good = format!("redis://:{PASSWORD}@127.0.0.1:{port}");
    let namespace = unique_namespace("auth");
    let (a, b) = (
        cache(&good, &namespace, None).await?,
        cache(&good, &namespace, None).await?,
    );
    let works =
        round_trip(&a, &b, "k").await? && exists(&good, &stored_key(&namespace, "k")).await?;
    let mut refused = Vec::new();
    let mut degraded = 0;
    for (what, url) in [
        (
            "a wrong password",
            format!("redis://:wrong-{PASSWORD}@127.0.0.1:{port}"),
        ),
        ("no password", format!("redis://127.0.0.1:{port}")),
    ] {
        let c = cache(&url, &namespace, None).await?;
        if degrades(&c).await {
            degraded += 1;
        }
        // Asked after the refusals opened the breaker: it still says why.
        match c.ping_redis().await {
            Err(e) => refused.push(format!("{what}: {e}")),
            Ok(()) => refused.push(format!("{what}: ACCEPTED")),
        }
    }
    let wrote_unauthenticated = exists(&good, &stored_key(&namespace, "refused")).await?;
    // market serve with the password in its Redis URL.
    let fleet = Fleet::start(0).await?;
    let instance = fleet.spawn(true, &good, &[]).await?;
    let (_, health) = fleet.health(&instance.base).await;
    let market_ok = health["redis"] == "up" && health["status"] == "ok";
    let mut row = Row::new("redis-auth", Group::Security, "library + market serve");
    row.done = "a Redis with requirepass: two cache instances with the password, and clients with a wrong one and none; `market serve --redis-url redis://:…@…`".into();
    row.requests = 4;
    row.errors = format!(
        "{}; both refused clients still answered reads from the loader: {}",
        refused.join("; "),
        degraded == 2
    );
    row.lost = format!(
        "with the password: entries round-trip between instances: {works}; market serve healthy on it: {market_ok}; anything written without it: {wrote_unauthenticated}"
    );
    row.target = "works with the password; refused without it (reads degrade to the loader); nothing written unauthenticated".into();
    row.met = works
        && market_ok
        && degraded == 2
        && !wrote_unauthenticated
        && refused.iter().all(|r| !r.contains("ACCEPTED"));
    Ok(row)
}

pub async fn acl_user() -> Result<Row> {
    let namespace = unique_namespace("acl");
    let (keys, channels) = (format!("~{namespace}:*"), format!("&{namespace}:*"));
    let server = {
        let (keys, channels) = (keys.clone(), channels.clone());
        tokio::task::spawn_blocking(move || {
            RedisServer::start_with(&[
                "--user",
                "app",
                "on",
                ">app-pw",
                &keys,
                &channels,
                "+@all",
                "-@dangerous",
            ])
        })
        .await?
    };
    let url = format!("redis://app:app-pw@127.0.0.1:{}", server.port());
    let (a, b) = (
        cache(&url, &namespace, None).await?,
        cache(&url, &namespace, None).await?,
    );
    let subscribed = super::harness::time_until(Duration::from_secs(5), || async {
        a.backplane_connected() == Some(true) && b.backplane_connected() == Some(true)
    })
    .await
    .is_some();
    let mut ops = Vec::new();
    let tagged = opts().tags(["t"]);
    ops.push(("round trip", round_trip(&a, &b, "k").await.unwrap_or(false)));
    ops.push(("tagged set", a.set("t1", &1u32, &tagged).await.is_ok()));
    ops.push(("invalidate_tag", a.invalidate_tag("t").await.is_ok()));
    ops.push(("invalidate_prefix", a.invalidate_prefix("k").await.is_ok()));
    ops.push((
        "invalidate_version",
        a.invalidate_version("v", 3).await.is_ok(),
    ));
    ops.push(("invalidate_all", a.invalidate_all().await.is_ok()));
    let failed: Vec<&str> = ops.iter().filter(|(_, ok)| !ok).map(|(n, _)| *n).collect();
    let outsider = cache(&url, &unique_namespace("other"), None).await?;
    let outsider_degrades = degrades(&outsider).await;
    let refusal = match outsider.delete("k").await {
        Err(e) => e.to_string(),
        Ok(()) => "ACCEPTED".into(),
    };
    let mut row = Row::new("acl-user", Group::Security, "library");
    row.done = "an ACL user limited to the namespace N's keys and channels (`~N:* &N:* +@all -@dangerous`, default user still on): two instances use it for values, tags, prefix and version invalidation, clear and the backplane; a cache of another namespace under the same user"
        .into();
    row.requests = ops.len() as u64 + 2;
    row.errors = format!(
        "namespace operations failed: {}; backplane subscribed: {subscribed}; the other namespace: {refusal:.120}",
        if failed.is_empty() { "none".to_string() } else { failed.join(", ") }
    );
    row.lost = format!("the other namespace's reads answered from the loader: {outsider_degrades}");
    row.target = "the scoped user is enough for every operation; other namespaces refused by Redis (NOPERM), reads degrade".into();
    row.met = failed.is_empty()
        && subscribed
        && outsider_degrades
        && (refusal.to_lowercase().contains("noperm") || refusal.contains("permission"));
    Ok(row)
}

pub async fn tls() -> Result<Row> {
    let server = tokio::task::spawn_blocking(TlsRedisServer::start).await?;
    let url = server.tls_url();
    let trust = RedisTls::new().root_cert_pem(server.ca_pem());
    let namespace = unique_namespace("tls");
    let a = cache(&url, &namespace, Some(trust.clone())).await?;
    let b = cache(&url, &namespace, Some(trust)).await?;
    let subscribed = super::harness::time_until(Duration::from_secs(5), || async {
        a.backplane_connected() == Some(true) && b.backplane_connected() == Some(true)
    })
    .await
    .is_some();
    let works = round_trip(&a, &b, "k").await?;
    a.set("k", &"changed".to_string(), &opts()).await?;
    let invalidated = super::harness::time_until(Duration::from_secs(2), || async {
        b.get::<String>("k").await.ok().flatten().as_deref() == Some("changed")
    })
    .await
    .is_some();
    let mut refused = Vec::new();
    let mut degraded = 0;
    for (what, url) in [
        ("rediss:// without the CA", url.clone()),
        (
            "redis:// (plain) to the TLS port",
            format!("redis://127.0.0.1:{}", server.tls_port()),
        ),
    ] {
        let c = cache(&url, &namespace, None).await?;
        if degrades(&c).await {
            degraded += 1;
        }
        match c.ping_redis().await {
            Err(e) => refused.push(format!(
                "{what}: {}",
                e.to_string().chars().take(100).collect::<String>()
            )),
            Ok(()) => refused.push(format!("{what}: ACCEPTED")),
        }
    }
    let mut row = Row::new("tls", Group::Security, "library");
    row.done = "`rediss://` to a throwaway TLS Redis whose certificate is signed by a private CA: two instances trusting the CA (values and backplane); a client without the CA, and a plain client on the TLS port".into();
    row.requests = 5;
    row.errors = format!(
        "{}; refused clients' reads answered from the loader: {}",
        refused.join("; "),
        degraded == 2
    );
    row.lost = format!("over TLS: entries round-trip: {works}; backplane subscribed: {subscribed}; an update invalidated the other instance's L1: {invalidated}");
    row.target = "the cache and its backplane work over TLS with the CA; an untrusted server is refused, reads degrade".into();
    row.met = works
        && subscribed
        && invalidated
        && degraded == 2
        && refused.iter().all(|r| !r.contains("ACCEPTED"));
    Ok(row)
}

pub async fn namespaces() -> Result<Row> {
    let server = tokio::task::spawn_blocking(RedisServer::start).await?;
    let url = server.url();
    let base = unique_namespace("ns");
    // A namespace, one that extends it, and one that only looks alike.
    let names = [
        base.clone(),
        format!("{base}2"),
        format!("{base}:x"),
        format!("{base}-x"),
    ];
    let mut caches = Vec::new();
    for n in &names {
        caches.push(cache(&url, n, None).await?);
    }
    let keys = ["user:1", "user:2", "{user:1}", "x", "k:lease"];
    for (i, c) in caches.iter().enumerate() {
        for k in keys {
            c.set(k, &format!("{i}:{k}"), &opts().tags(["t"])).await?;
        }
    }
    let mut cross = 0;
    for (i, c) in caches.iter().enumerate() {
        c.clear_l1();
        for k in keys {
            if c.get::<String>(k).await?.as_deref() != Some(&format!("{i}:{k}")) {
                cross += 1;
            }
        }
    }
    // The first application empties everything it has, four ways.
    let first = &caches[0];
    first.invalidate_tag("t").await?;
    let removed = first.invalidate_prefix("user:").await?;
    first.delete("x").await?;
    first.invalidate_all().await?;
    let mut lost = 0;
    for (i, n) in names.iter().enumerate().skip(1) {
        let fresh = cache(&url, n, None).await?;
        for k in keys {
            if fresh.get::<String>(k).await?.as_deref() != Some(&format!("{i}:{k}")) {
                lost += 1;
            }
        }
    }
    let mut emptied = 0;
    for k in keys {
        if first.get::<String>(k).await?.is_none() {
            emptied += 1;
        }
    }
    let mut row = Row::new("namespaces", Group::Security, "library");
    row.done = format!(
        "four applications on one Redis with the same keys: namespaces `N`, `N2`, `N:x`, `N-x`; each reads its own; then `N` invalidates its tag, its `user:` prefix ({removed} removed), deletes a key and clears"
    );
    row.requests = (names.len() * keys.len() * 3) as u64;
    row.errors = format!("{cross} reads of another application's value");
    row.lost = format!(
        "{lost} of the other applications' {} entries gone after N's invalidations; N's own entries emptied: {emptied} of {}",
        (names.len() - 1) * keys.len(),
        keys.len()
    );
    row.target = "no application reads or removes another's entries".into();
    row.met = cross == 0 && lost == 0 && emptied == keys.len();
    Ok(row)
}

/// Everything this process logs through `tracing`, from the first call on.
fn captured() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        logs
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub async fn secrets_in_logs() -> Result<Row> {
    let logs = captured();
    let secret = "Sekr1t-faults-pw";
    let wrong = "Wr0ng-faults-pw";
    let server = tokio::task::spawn_blocking(move || {
        RedisServer::start_with(&[
            "--requirepass",
            secret,
            "--user",
            "app",
            "on",
            ">app-Sekr1t",
            "~scoped:*",
            "+@all",
        ])
    })
    .await?;
    let port = server.port();
    let good = format!("redis://:{secret}@127.0.0.1:{port}");
    let mut shown = Vec::new();
    let ns = unique_namespace("secrets");
    // Library: a working client, refused ones, a parse error, Debug output.
    let ok = cache(&good, &ns, None).await?;
    ok.set("k", &1u32, &opts()).await?;
    for url in [
        format!("redis://:{wrong}@127.0.0.1:{port}"),
        format!("redis://app:{wrong}@127.0.0.1:{port}"),
        format!("redis://app:app-Sekr1t@127.0.0.1:{port}"),
    ] {
        let c = cache(&url, &ns, None).await?;
        let _ = degrades(&c).await;
        if let Err(e) = c.ping_redis().await {
            shown.push(format!("{e} {e:?}"));
        }
        if let Err(e) = c.delete("k").await {
            shown.push(format!("{e} {e:?}"));
        }
    }
    for url in [
        format!("redis://:{secret}@[not-a-host"),
        format!("redis+cluster://u:{secret}@127.0.0.1:{port},127.0.0.1:1"),
        format!("redis+sentinel://:{secret}@127.0.0.1:1/master"),
    ] {
        match RedisTopology::parse(&url) {
            Ok(t) => shown.push(format!("{t:?}")),
            Err(e) => shown.push(format!("{e} {e:?}")),
        }
        if let Err(e) = crate::report::cache_builder().redis_url(&url).build().await {
            shown.push(format!("{e} {e:?}"));
        }
    }
    // market serve: the password in --redis-url, right and wrong; its log,
    // health, figures and metrics.
    let fleet = Fleet::start(0).await?;
    let mut market_texts = Vec::new();
    let mut market_logs = Vec::new();
    for url in [good.clone(), format!("redis://:{wrong}@127.0.0.1:{port}")] {
        let instance = fleet.spawn(true, &url, &[]).await?;
        for path in [
            "/health",
            "/dashboard/stats",
            "/metrics",
            "/api/instruments",
            "/login",
        ] {
            let request = if path == "/login" {
                fleet
                    .client
                    .post(format!("{}{path}", instance.base))
                    .json(&serde_json::json!({"username": "user1", "password": "password1"}))
            } else {
                fleet.client.get(format!("{}{path}", instance.base))
            };
            if let Ok(r) = request.send().await {
                market_texts.push(r.text().await.unwrap_or_default());
            }
        }
        market_logs.push(instance.process.log());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logged = String::from_utf8_lossy(&logs.lock().expect("log buffer")).to_string();
    let leaks = |text: &str| {
        [secret, wrong, "app-Sekr1t"]
            .iter()
            .filter(|s| text.contains(*s))
            .count()
    };
    let (in_errors, in_logs, in_market) = (
        shown.iter().map(|t| leaks(t)).sum::<usize>(),
        leaks(&logged),
        market_texts
            .iter()
            .chain(&market_logs)
            .map(|t| leaks(t))
            .sum::<usize>(),
    );
    let mut row = Row::new("secrets-in-logs", Group::Security, "library + market serve");
    row.done = format!(
        "passwords in Redis URLs (right, wrong, an ACL user's; node, Cluster, Sentinel; a malformed URL): the library's log at TRACE ({} KB captured), {} error messages and Debug forms; market serve with a right and a wrong password: its output and {} responses (/health, /dashboard/stats, /metrics, the listing, /login)",
        logged.len() / 1024,
        shown.len(),
        market_texts.len()
    );
    row.requests = (shown.len() + market_texts.len()) as u64;
    row.errors = format!("passwords found: {in_logs} in the library's log, {in_errors} in errors/Debug, {in_market} in market serve's output and responses");
    row.lost = "—".into();
    row.target = "no password anywhere".into();
    // The searches can only fail if they saw the output: the library's log
    // and both instances' start lines were captured.
    let captured_all = logged.contains("stratacache")
        && market_logs.len() == 2
        && market_logs.iter().all(|l| l.contains("serving on"));
    row.met = in_logs + in_errors + in_market == 0 && captured_all;
    Ok(row)
}
