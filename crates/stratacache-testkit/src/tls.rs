//! A throwaway `redis-server` that also listens with TLS, on a certificate
//! signed by a private CA made for it with the `openssl` command line.

use std::io;
use std::path::Path;
use std::process::Command;

use tempfile::TempDir;

use std::time::Duration;

use crate::net;
use crate::process::{self, poll, tail};
use crate::sentinel::{DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS, MASTER_NAME, QUORUM};
use crate::server::RedisServer;

/// A [`RedisServer`] with a TLS port beside its plain one. The server
/// certificate is for `localhost` and `127.0.0.1`, signed by a CA that
/// exists only for this server (so no system trust store accepts it);
/// clients are not asked for certificates. Needs `openssl` on `PATH` and a
/// `redis-server` built with TLS.
#[derive(Debug)]
pub struct TlsRedisServer {
    server: RedisServer,
    tls_port: u16,
    certs: TempDir,
}

impl TlsRedisServer {
    /// Makes the CA and the certificate, starts the server, and returns once
    /// it answers `PING` on its plain port. Panics with the reason on failure.
    pub fn start() -> TlsRedisServer {
        Self::start_with(&[])
    }

    /// Like [`TlsRedisServer::start`], with extra `redis-server` arguments
    /// (e.g. `["--requirepass", "pw"]`).
    pub fn start_with(extra_args: &[&str]) -> TlsRedisServer {
        let certs = tempfile::Builder::new()
            .prefix("stratacache-tls-")
            .tempdir()
            .expect("cannot create a temporary directory");
        make_certificates(certs.path()).unwrap_or_else(|e| panic!("making certificates: {e}"));
        let tls_port = process::free_port();
        let file = |name: &str| certs.path().join(name).to_string_lossy().to_string();
        let (cert, key, ca, port) = (
            file("server.crt"),
            file("server.key"),
            file("ca.crt"),
            tls_port.to_string(),
        );
        let mut args = vec![
            "--tls-port",
            &port,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
        ];
        args.extend_from_slice(extra_args);
        TlsRedisServer {
            server: RedisServer::start_with(&args),
            tls_port,
            certs,
        }
    }

    /// The TLS port.
    pub fn tls_port(&self) -> u16 {
        self.tls_port
    }

    /// `rediss://localhost:TLS_PORT`.
    pub fn tls_url(&self) -> String {
        format!("rediss://localhost:{}", self.tls_port)
    }

    /// The private CA's certificate (PEM), what a client must trust.
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.certs.path().join("ca.crt")).expect("the CA certificate")
    }

    /// The server itself (plain port, log, kill and restart).
    pub fn server(&self) -> &RedisServer {
        &self.server
    }

    /// The server itself, mutably.
    pub fn server_mut(&mut self) -> &mut RedisServer {
        &mut self.server
    }
}

/// A Sentinel group served over TLS only, on the private CA of
/// [`TlsRedisServer`]: a master and a replica (replicating over TLS) and
/// three Sentinels that reach them, and each other, over TLS, and announce
/// TLS ports. Every process keeps a plain port too (the testkit's own
/// readiness checks use it); clients are given only the TLS ones.
#[derive(Debug)]
pub struct TlsSentinelGroup {
    data: Vec<(RedisServer, u16)>,
    sentinels: Vec<(RedisServer, u16)>,
    certs: TempDir,
}

impl TlsSentinelGroup {
    /// Makes the CA and a certificate, starts master, replica and three
    /// Sentinels (quorum 2, the down-after and failover timeouts of
    /// [`crate::RedisSentinelGroup`]), and returns once every Sentinel names
    /// the master's TLS port and knows the replica and its two peers.
    pub fn start() -> TlsSentinelGroup {
        let certs = tempfile::Builder::new()
            .prefix("stratacache-tls-sentinel-")
            .tempdir()
            .expect("cannot create a temporary directory");
        make_certificates(certs.path()).unwrap_or_else(|e| panic!("making certificates: {e}"));
        let file = |name: &str| certs.path().join(name).to_string_lossy().to_string();
        let tls_lines = |tls_port: u16| {
            vec![
                "--tls-port".to_string(),
                tls_port.to_string(),
                "--tls-cert-file".to_string(),
                file("server.crt"),
                "--tls-key-file".to_string(),
                file("server.key"),
                "--tls-ca-cert-file".to_string(),
                file("ca.crt"),
                "--tls-auth-clients".to_string(),
                "no".to_string(),
                "--tls-replication".to_string(),
                "yes".to_string(),
            ]
        };
        let start_data = |extra: Vec<String>| {
            let tls_port = process::free_port();
            let mut args = tls_lines(tls_port);
            args.extend(extra);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            (RedisServer::start_with(&refs), tls_port)
        };
        let master = start_data(Vec::new());
        let master_tls = master.1;
        let replica = start_data(vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            master_tls.to_string(),
        ]);
        let linked = poll(READY, || {
            replica
                .0
                .info_field("replication", "master_link_status")
                .as_deref()
                == Some("up")
        });
        assert!(
            linked,
            "replica never linked to the master over TLS:\n{}",
            tail(&replica.0.log(), 30)
        );
        let sentinels = (0..3)
            .map(|_| {
                let dir = tempfile::Builder::new()
                    .prefix("stratacache-tls-sentinel-")
                    .tempdir()
                    .expect("cannot create a temporary directory");
                let tls_port = process::free_port();
                let (cert, key, ca) = (file("server.crt"), file("server.key"), file("ca.crt"));
                let server = RedisServer::launch(dir, |port, dir| {
                    let conf = dir.join("sentinel.conf");
                    let text = format!(
                        "port {port}\n\
                         bind 127.0.0.1\n\
                         daemonize no\n\
                         dir \"{dir}\"\n\
                         tls-port {tls_port}\n\
                         tls-cert-file \"{cert}\"\n\
                         tls-key-file \"{key}\"\n\
                         tls-ca-cert-file \"{ca}\"\n\
                         tls-auth-clients no\n\
                         tls-replication yes\n\
                         sentinel resolve-hostnames no\n\
                         sentinel monitor {MASTER_NAME} 127.0.0.1 {master_tls} {QUORUM}\n\
                         sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n\
                         sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n\
                         sentinel parallel-syncs {MASTER_NAME} 1\n",
                        dir = dir.display()
                    );
                    std::fs::write(&conf, text).expect("cannot write sentinel.conf");
                    vec![conf.to_string_lossy().into_owned(), "--sentinel".into()]
                });
                (server, tls_port)
            })
            .collect();
        let group = TlsSentinelGroup {
            data: vec![master, replica],
            sentinels,
            certs,
        };
        if !poll(READY, || group.ready(master_tls)) {
            panic!(
                "TLS sentinels did not see master + replica + peers within {READY:?}\n{}",
                group.diagnostics()
            );
        }
        group
    }

    /// `rediss://localhost:TLS_PORT` of each Sentinel.
    pub fn sentinel_tls_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|(_, tls)| format!("rediss://localhost:{tls}"))
            .collect()
    }

    /// The private CA's certificate (PEM), what a client must trust.
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.certs.path().join("ca.crt")).expect("the CA certificate")
    }

    /// The TLS port the Sentinels name as the master's (the first one that answers).
    pub fn master_tls_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|(s, _)| master_of(s.port()))
    }

    /// The data node serving TLS on `tls_port`.
    pub fn data_node(&self, tls_port: u16) -> Option<&RedisServer> {
        self.data
            .iter()
            .find(|(_, t)| *t == tls_port)
            .map(|(s, _)| s)
    }

    /// `SENTINEL FAILOVER`, then wait until every Sentinel names the other
    /// data node and it answers `ROLE` master; returns its TLS port.
    pub fn failover(&self) -> u16 {
        let old = self.master_tls_port().expect("a master");
        let requested = poll(READY, || {
            self.sentinels.iter().any(|(s, _)| {
                net::call(
                    s.port(),
                    &["SENTINEL", "FAILOVER", MASTER_NAME],
                    Duration::from_secs(1),
                )
                .is_ok_and(|r| !r.is_error() || r.is_error_with("INPROG"))
            })
        });
        assert!(
            requested,
            "SENTINEL FAILOVER kept failing\n{}",
            self.diagnostics()
        );
        let new = self
            .data
            .iter()
            .map(|(_, t)| *t)
            .find(|t| *t != old)
            .expect("two data nodes");
        let done = poll(READY, || {
            self.sentinels
                .iter()
                .all(|(s, _)| master_of(s.port()) == Some(new))
                && self
                    .data_node(new)
                    .and_then(|n| n.role(Duration::from_secs(1)))
                    .as_deref()
                    == Some("master")
        });
        assert!(
            done,
            "failover to {new} did not complete\n{}",
            self.diagnostics()
        );
        new
    }

    fn ready(&self, master_tls: u16) -> bool {
        self.sentinels.iter().all(|(s, _)| {
            let port = s.port();
            let Ok(m) = net::call(
                port,
                &["SENTINEL", "MASTER", MASTER_NAME],
                Duration::from_secs(1),
            ) else {
                return false;
            };
            master_of(port) == Some(master_tls)
                && num_field(&m, "num-slaves") == Some(1)
                && num_field(&m, "num-other-sentinels") == Some(2)
        })
    }

    /// Every process's state and log tail, for panic messages.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for (kind, (n, tls)) in self
            .data
            .iter()
            .map(|n| ("data", n))
            .chain(self.sentinels.iter().map(|n| ("sentinel", n)))
        {
            out.push_str(&format!(
                "--- {kind} {} (tls {tls}, alive {}) ---\n",
                n.port(),
                n.is_alive()
            ));
            out.push_str(&tail(&n.log(), 20));
        }
        out
    }
}

const READY: Duration = Duration::from_secs(60);

/// The master's port a Sentinel names.
fn master_of(sentinel_port: u16) -> Option<u16> {
    let reply = net::call(
        sentinel_port,
        &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
        Duration::from_secs(1),
    )
    .ok()?;
    match reply {
        net::Reply::Array(Some(items)) if items.len() == 2 => items[1].to_text().parse().ok(),
        _ => None,
    }
}

/// A numeric field of a flat `[key, value, …]` reply.
fn num_field(reply: &net::Reply, name: &str) -> Option<u64> {
    match reply {
        net::Reply::Array(Some(items)) => items
            .chunks(2)
            .find(|c| c.len() == 2 && c[0].to_text() == name)
            .and_then(|c| c[1].to_text().parse().ok()),
        _ => None,
    }
}

fn make_certificates(dir: &Path) -> io::Result<()> {
    let run = |args: &[&str]| -> io::Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    };
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )?;
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
        "/CN=stratacache testkit CA",
    ])?;
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
    ])?;
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
    ])
}
