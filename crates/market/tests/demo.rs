//! `market demo --quick`, the README's main command in short: it finishes,
//! prints the before/after table, writes it, and the cache wins on median
//! latency and database load (the tail is the full run's, in BENCHMARKS.md).

mod common;

use std::process::Command;

use common::unique;
use market::demo::DemoResult;

#[test]
fn demo_quick_prints_the_table_and_the_cache_wins_on_median_latency_and_database_load() {
    let name = unique("market_demo");
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo.md");
    let output = Command::new(env!("CARGO_BIN_EXE_market"))
        .args(["demo", "--quick", "--scale", "0.05", "--database-url", &url])
        .arg("--out")
        .arg(&out)
        .env("NO_COLOR", "1")
        .output()
        .expect("run market demo");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(market::db::drop_database(&url)).unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("| | cache off | cache on | change |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("p99 latency (ms)") && stdout.contains("cache hit rate"),
        "{stdout}"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap().trim(), stdout.trim());
    let result: DemoResult =
        serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap())
            .unwrap();
    assert_eq!(
        result.off.load.server_errors + result.on.load.server_errors,
        0,
        "{stdout}"
    );
    // The load signs its users in and uses the demo's operator token: no
    // request is refused, and no other request is a client error either.
    assert_eq!(
        result.off.load.client_errors + result.on.load.client_errors,
        0,
        "{stdout}"
    );
    assert!(result.off.load.requests > 0 && result.on.load.requests > 0);
    assert!(result.cache_wins(), "the cache did not win:\n{stdout}");
}
