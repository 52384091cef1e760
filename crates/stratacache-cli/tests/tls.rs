//! `rediss://` with a private CA (`--features tls`).
#![cfg(feature = "tls")]

mod common;

use common::{doctor, expect, run_text};
use stratacache_testkit::TlsRedisServer;

#[test]
fn doctor_and_invalidate_speak_tls_with_a_private_ca() {
    let server =
        TlsRedisServer::start_with(&["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, server.ca_pem()).unwrap();
    let ca = ca.to_str().unwrap();
    let url = server.tls_url();

    let (code, report) = doctor(&[
        "--redis-url",
        &url,
        "--tls-ca",
        ca,
        "--redis-timeout",
        "10s",
    ]);
    expect(&report, "version", "ok");
    expect(&report, "pubsub", "ok");
    assert_eq!(code, 0, "{report:#}");

    let (code, out, err) = run_text(&[
        "invalidate",
        "--redis-url",
        &url,
        "--tls-ca",
        ca,
        "--namespace",
        "tls",
        "--tag",
        "t",
    ]);
    assert_eq!(code, 0, "{out}{err}");

    // Without the CA the server's certificate is not trusted.
    let (code, report) = doctor(&["--redis-url", &url, "--timeout", "1s"]);
    expect(&report, "connect", "error");
    assert_eq!(code, 2);
}
