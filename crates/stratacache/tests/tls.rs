//! `rediss://` to a throwaway TLS Redis signed by a private CA: the cache
//! and its backplane work with the CA given, and without it the server is
//! not trusted (reads fall back to the loader, nothing panics).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use stratacache::{Cache, EntryOptions, RedisTls};
use stratacache_testkit::{free_port, RedisServer};

/// A CA and a server certificate for `localhost` / 127.0.0.1, made with the
/// `openssl` command line.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl on PATH");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=stratacache test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

struct TlsRedis {
    _server: RedisServer,
    dir: PathBuf,
    tls_port: u16,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_tls_redis() -> TlsRedis {
    let dir = std::env::temp_dir().join(common::namespace("tls-certs"));
    std::fs::create_dir_all(&dir).unwrap();
    make_certificates(&dir);
    let tls_port = free_port();
    let file = |name: &str| dir.join(name).to_string_lossy().to_string();
    let server = RedisServer::start_with(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &file("server.crt"),
        "--tls-key-file",
        &file("server.key"),
        "--tls-ca-cert-file",
        &file("ca.crt"),
        "--tls-auth-clients",
        "no",
    ]);
    TlsRedis {
        _server: server,
        dir,
        tls_port,
    }
}

async fn cache(url: &str, namespace: &str, tls: Option<RedisTls>) -> Cache {
    let mut builder = Cache::builder()
        .namespace(namespace)
        .redis_url(url)
        .redis_timeout(Duration::from_secs(1));
    if let Some(tls) = tls {
        builder = builder.redis_tls(tls);
    }
    builder.build().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_carries_the_cache_and_its_backplane() {
    let redis = start_tls_redis();
    let url = format!("rediss://localhost:{}", redis.tls_port);
    let ca = std::fs::read(redis.dir.join("ca.crt")).unwrap();
    let tls = RedisTls::new().root_cert_pem(ca);
    let namespace = common::namespace("tls");
    let a = cache(&url, &namespace, Some(tls.clone())).await;
    let b = cache(&url, &namespace, Some(tls)).await;
    a.ping_redis().await.unwrap();
    for cache in [&a, &b] {
        assert!(
            common::eventually(Duration::from_secs(5), || async {
                cache.backplane_connected() == Some(true)
            })
            .await,
            "the backplane subscribes over TLS"
        );
    }
    let opts = EntryOptions::new().ttl(Duration::from_secs(60));
    a.set("k", &1u32, &opts).await.unwrap();
    assert_eq!(b.get::<u32>("k").await.unwrap(), Some(1), "read over TLS");
    a.set("k", &2u32, &opts).await.unwrap();
    assert!(
        common::eventually(Duration::from_secs(1), || async {
            b.get::<u32>("k").await.unwrap() == Some(2)
        })
        .await,
        "invalidated over the TLS backplane"
    );

    // Without the CA the server's certificate is not trusted: Redis is
    // unusable, reads still succeed from the loader.
    let untrusting = cache(&url, &namespace, None).await;
    assert!(untrusting.ping_redis().await.is_err());
    let value: u32 = untrusting
        .get_or_load("other", &opts, || async { Ok::<_, std::io::Error>(7) })
        .await
        .unwrap();
    assert_eq!(value, 7);
}
