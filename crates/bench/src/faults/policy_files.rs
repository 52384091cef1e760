//! Malformed policy files: the library's parser and `market serve
//! --policies` (and its environment overlay).

use std::time::Duration;

use anyhow::Result;
use stratacache::{Error, Policies};
use stratacache_testkit::{ChildProcess, RedisServer};

use super::service::{drop_database, market_binary};
use super::{Group, Row};
use crate::report::unique_namespace;

/// One `market serve` attempt: what is wrong, extra arguments, environment.
type Case = (String, Vec<String>, Vec<(String, String)>);

/// Malformed policy files: refused by the library's parser with
/// `Error::Config`, and by `market serve --policies` at start (it exits
/// non-zero without serving).
const BAD_POLICIES: &[(&str, &str)] = &[
    ("a TOML syntax error", "[policies.instrument\nttl = \"1m\""),
    (
        "a strategy (no longer a policy field)",
        "[policies.instrument]\nstrategy = \"write-through\"\nttl = \"1m\"",
    ),
    (
        "a TTL that is not a duration",
        "[policies.instrument]\nttl = \"banana\"",
    ),
    ("a negative TTL", "[policies.instrument]\nttl = -5"),
    (
        "an overflowing TTL",
        "[policies.instrument]\nttl = \"99999999999999999999y\"",
    ),
    (
        "jitter out of range",
        "[policies.instrument]\nttl = \"1m\"\njitter = 5.0",
    ),
    (
        "eager refresh out of range",
        "[policies.instrument]\nttl = \"1m\"\neager_refresh = \"1.5\"",
    ),
    ("a misspelt field", "[policies.instrument]\ntll = \"1m\""),
    (
        "a value of the wrong type",
        "[policies.instrument]\nttl = [1, 2]",
    ),
    (
        "a duplicate key",
        "[policies.instrument]\nttl = \"1m\"\nttl = \"2m\"",
    ),
    ("a policy that is not a table", "policies = 7"),
    ("binary garbage", "\u{0}\u{1}\u{2}\u{fffd}SC\u{1}"),
];

pub async fn run() -> Result<Row> {
    let mut library_refused = Vec::new();
    let mut accepted = Vec::new();
    for (what, text) in BAD_POLICIES {
        match Policies::from_toml_str(text) {
            Err(Error::Config(msg)) => library_refused.push(format!("{what}: {msg}")),
            Err(other) => accepted.push(format!("{what}: another error {other}")),
            Ok(_) => accepted.push(format!("{what}: accepted")),
        }
    }
    // market serve: the same files, a file lacking a policy the routes
    // need, an empty one, one that cannot be read, and a bad environment overlay.
    let binary = market_binary()?;
    let dir = tempfile::tempdir()?;
    let mut cases: Vec<Case> = Vec::new();
    let mut with_file = |what: &str, text: &[u8]| -> Result<()> {
        let path = dir.path().join(format!("p{}.toml", cases.len()));
        std::fs::write(&path, text)?;
        cases.push((
            what.to_string(),
            vec!["--policies".into(), path.to_string_lossy().into()],
            vec![],
        ));
        Ok(())
    };
    for (what, text) in BAD_POLICIES {
        with_file(what, text.as_bytes())?;
    }
    with_file(
        "no policy the routes need",
        b"[policies.other]\nttl = \"1m\"",
    )?;
    with_file("an empty file", b"")?;
    with_file("invalid UTF-8", b"\xff\xfe\x00[policies]")?;
    cases.push((
        "a file that does not exist".into(),
        vec!["--policies".into(), "/nonexistent/p.toml".into()],
        vec![],
    ));
    cases.push((
        "MARKET__POLICIES__PORTFOLIO__TTL=banana".into(),
        vec![],
        vec![("MARKET__POLICIES__PORTFOLIO__TTL".into(), "banana".into())],
    ));
    let redis = tokio::task::spawn_blocking(RedisServer::start).await?;
    // market serve migrates its database before it reads the policies: a
    // database of this run's own, dropped at the end.
    let database = format!("market_faults_policies_{}", std::process::id());
    let mut market_refused = 0;
    let mut market_problems = Vec::new();
    let mut samples = Vec::new();
    for (what, extra, env) in &cases {
        let port = stratacache_testkit::free_port();
        let mut args: Vec<String> = [
            "serve",
            "--database-url",
            &format!("postgres://postgres@127.0.0.1:5432/{database}"),
            "--redis-url",
            &redis.url(),
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--namespace",
            &unique_namespace("policy-files"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().cloned());
        let mut process = ChildProcess::start_with_env(&binary, &args, env)?;
        let status = tokio::task::block_in_place(|| process.wait_exit(Duration::from_secs(20)));
        let log = process.log();
        // Clear: it exits non-zero, and its error (anyhow's "Error: …", up
        // to a backtrace) names the file, the policy, the field or the
        // variable at fault.
        let message: String = log
            .split("\nStack backtrace:")
            .next()
            .and_then(|head| head.rfind("Error: ").map(|at| head[at..].to_string()))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let lower = message.to_lowercase();
        let named = [
            "polic",
            "ttl",
            "configuration",
            "toml",
            "jitter",
            "eager",
            "strategy",
        ]
        .iter()
        .any(|w| lower.contains(w));
        let last = message.clone();
        match status {
            Some(s) if !s.success() && named => {
                market_refused += 1;
                samples.push(format!(
                    "{what}: {}",
                    last.chars().take(160).collect::<String>()
                ));
            }
            Some(s) => market_problems.push(format!("{what}: exited {s}, error {last:?}")),
            None => market_problems.push(format!("{what}: still running after 20 s")),
        }
    }
    drop_database(&database).await;
    let mut row = Row::new("policy-files", Group::Input, "library + market serve");
    row.done = format!(
        "{} malformed policy files through Policies::from_toml_str ({}); those and {} more cases (a required policy missing, empty, invalid UTF-8, missing file, a bad MARKET__POLICIES__… variable) through `market serve --policies`",
        BAD_POLICIES.len(),
        BAD_POLICIES.iter().map(|p| p.0).collect::<Vec<_>>().join(", "),
        cases.len() - BAD_POLICIES.len()
    );
    row.requests = (BAD_POLICIES.len() + cases.len()) as u64;
    row.errors = format!(
        "library: {} of {} refused with Error::Config (e.g. {}); market serve: {} of {} exited non-zero naming the problem (e.g. {}){}{}",
        library_refused.len(),
        BAD_POLICIES.len(),
        library_refused
            .first()
            .map_or(String::new(), |m| m.split_whitespace().collect::<Vec<_>>().join(" "))
            .chars()
            .take(140)
            .collect::<String>(),
        market_refused,
        cases.len(),
        samples.iter().take(3).cloned().collect::<Vec<_>>().join(" | "),
        if accepted.is_empty() { String::new() } else { format!("; accepted by the library: {}", accepted.join("; ")) },
        if market_problems.is_empty() { String::new() } else { format!("; market serve: {}", market_problems.join("; ")) }
    );
    row.lost = "nothing: a refused configuration never starts serving".into();
    row.target = "each refused at start with a clear error".into();
    row.met = accepted.is_empty() && market_problems.is_empty();
    Ok(row)
}
