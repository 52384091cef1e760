//! A throwaway `redis-server` that also listens with TLS, on a certificate
//! signed by a private CA made for it with the `openssl` command line.

use std::io;
use std::path::Path;
use std::process::Command;

use tempfile::TempDir;

use crate::process;
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
