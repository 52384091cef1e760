//! `market serve` refuses bad settings at start, naming them, before it
//! creates or serves anything.

use std::process::Command;

#[test]
fn a_zero_redis_timeout_is_refused_before_anything_starts() {
    let output = Command::new(env!("CARGO_BIN_EXE_market"))
        .args([
            "serve",
            "--redis-timeout",
            "0s",
            "--bind",
            "127.0.0.1:1",
            "--database-url",
            "postgres://postgres@127.0.0.1:5432/market_cli_never_created",
        ])
        .env("NO_COLOR", "1")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run market serve");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("--redis-timeout must be greater than zero"),
        "{stderr}"
    );
}

#[test]
fn a_redis_timeout_that_is_not_a_duration_is_a_usage_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_market"))
        .args(["serve", "--redis-timeout", "soon"])
        .output()
        .expect("run market serve");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--redis-timeout"), "{stderr}");
}
