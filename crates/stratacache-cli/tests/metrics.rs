//! `doctor --metrics-url`: a tiny HTTP server serves Prometheus text with
//! one policy that earns its keep, one whose loads fail, one whose entries
//! are gone before they are read again, and one with too few reads.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;

use common::{doctor, expect, findings};
use stratacache_testkit::RedisServer;

const METRICS: &str = r#"# HELP stratacache_hits_total Cache hits.
# TYPE stratacache_hits_total counter
stratacache_hits_total{cache="shop",policy="catalog",tier="l1"} 9000
stratacache_hits_total{cache="shop",policy="catalog",tier="l2"} 500
stratacache_misses_total{cache="shop",policy="catalog",tier="l1"} 1000
stratacache_misses_total{cache="shop",policy="catalog",tier="l2"} 500
stratacache_loads_total{cache="shop",policy="catalog"} 500
stratacache_load_errors_total{cache="shop",policy="catalog"} 0
stratacache_hits_total{cache="shop",policy="prices",tier="l1"} 50
stratacache_misses_total{cache="shop",policy="prices",tier="l1"} 950
stratacache_misses_total{cache="shop",policy="prices",tier="l2"} 950
stratacache_loads_total{cache="shop",policy="prices"} 950
stratacache_load_errors_total{cache="shop",policy="prices"} 600
stratacache_hits_total{cache="shop",policy="sessions",tier="l1"} 20
stratacache_misses_total{cache="shop",policy="sessions",tier="l1"} 2000
stratacache_misses_total{cache="shop",policy="sessions",tier="l2"} 2000
stratacache_loads_total{cache="shop",policy="sessions"} 2000
stratacache_hits_total{cache="shop",policy="rare",tier="l1"} 1
stratacache_misses_total{cache="shop",policy="rare",tier="l1"} 2
stratacache_l1_evictions_total{cache="shop",cause="size"} 3
stratacache_l1_evictions_total{cache="shop",cause="expired"} 4000
stratacache_breaker_opened_total{cache="shop"} 2
stratacache_redis_errors_total{cache="shop",kind="timeout"} 40
stratacache_hits_total{cache="other",policy="x",tier="l1"} 1
stratacache_get_duration_seconds_bucket{cache="shop",policy="catalog",le="+Inf"} 10000
"#;

/// Serves `body` to every request on a free loopback port, from a thread.
fn serve(body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    url
}

#[test]
fn policies_that_do_not_earn_their_keep_are_named_with_a_cause() {
    let server =
        RedisServer::start_with(&["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]);
    let url = serve(METRICS);
    let (code, report) = doctor(&[
        "--redis-url",
        &server.url(),
        "--redis-timeout",
        "10s",
        "--namespace",
        "shop",
        "--metrics-url",
        &url,
    ]);
    // catalog: 95% hit rate.
    let ok = findings(&report, "metrics.policy");
    assert!(
        ok.iter().any(|f| f["severity"] == "ok"
            && f["what"]
                .as_str()
                .unwrap()
                .contains("shop/catalog: hit rate 95%")),
        "{report:#}"
    );
    // prices: loads fail.
    let errors = expect(&report, "metrics.load-errors", "error");
    assert!(
        errors["what"]
            .as_str()
            .unwrap()
            .contains("shop/prices: 63% of loads fail"),
        "{errors}"
    );
    let low = findings(&report, "metrics.low-hit-rate");
    let prices = low
        .iter()
        .find(|f| f["what"].as_str().unwrap().contains("shop/prices"))
        .expect("prices is low");
    assert!(
        prices["why"].as_str().unwrap().contains("failing loads"),
        "{prices}"
    );
    // sessions: no errors, no evictions for size: the TTL.
    let sessions = low
        .iter()
        .find(|f| f["what"].as_str().unwrap().contains("shop/sessions"))
        .expect("sessions is low");
    assert!(
        sessions["why"]
            .as_str()
            .unwrap()
            .contains("TTL is likely shorter than the interval between reads"),
        "{sessions}"
    );
    assert_eq!(sessions["severity"], "warning");
    // rare: too few reads to judge.
    assert!(ok
        .iter()
        .any(|f| f["severity"] == "info" && f["what"].as_str().unwrap().contains("shop/rare")));
    // The breaker opened; another cache's counters are left out.
    expect(&report, "metrics.breaker", "warning");
    assert!(!report.to_string().contains("other/x"));
    assert_eq!(code, 2);
}

#[test]
fn an_endpoint_without_the_namespace_or_unreachable_is_reported() {
    let server =
        RedisServer::start_with(&["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]);
    let url = serve(METRICS);
    let (code, report) = doctor(&[
        "--redis-url",
        &server.url(),
        "--redis-timeout",
        "10s",
        "--namespace",
        "nobody",
        "--metrics-url",
        &url,
    ]);
    expect(&report, "metrics.none", "warning");
    assert_eq!(code, 1);

    let port = stratacache_testkit::free_port();
    let (code, report) = doctor(&[
        "--redis-url",
        &server.url(),
        "--redis-timeout",
        "10s",
        "--metrics-url",
        &format!("http://127.0.0.1:{port}/metrics"),
    ]);
    expect(&report, "metrics.fetch", "error");
    assert_eq!(code, 2);
}
