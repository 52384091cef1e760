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

fn help(subcommand: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_market"))
        .args([subcommand, "--help"])
        .output()
        .expect("run market --help");
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn seed_offers_no_redis_url_and_serve_explains_bind() {
    let seed = help("seed");
    assert!(seed.contains("--database-url"), "{seed}");
    assert!(
        !seed.contains("--redis-url"),
        "seeding does not use Redis:\n{seed}"
    );
    let serve = help("serve");
    let bind = serve
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("--bind"))
        .nth(1)
        .unwrap_or_default();
    assert!(bind.contains("listen"), "--bind has help text:\n{serve}");
    for flag in [
        "--admin-token-file",
        "--server-name",
        "--header-timeout",
        "--body-timeout",
        "--request-timeout",
        "--max-connections",
        "--log-format",
    ] {
        assert!(serve.contains(flag), "{flag}:\n{serve}");
    }
}

#[test]
fn an_operator_token_that_is_short_or_an_empty_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    for (args, env, expected) in [
        (vec![], Some("short"), "at least 16 characters"),
        (
            vec!["--admin-token-file", empty.to_str().unwrap()],
            None,
            "is empty",
        ),
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_market"));
        command
            .args([
                "serve",
                "--bind",
                "127.0.0.1:1",
                "--database-url",
                "postgres://postgres@127.0.0.1:5432/market_cli_never_created",
            ])
            .args(&args)
            .env_remove("MARKET_ADMIN_TOKEN");
        if let Some(token) = env {
            command.env("MARKET_ADMIN_TOKEN", token);
        }
        let output = command.output().expect("run market serve");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(stderr.contains(expected), "{stderr}");
    }
}
