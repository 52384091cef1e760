//! The fault suite: the library and the `market` service under load while
//! Redis or PostgreSQL fails, hostile input, and the security settings —
//! one scenario after another, each measured and written to RELIABILITY.md.
//!
//! * [`library`]: two cache instances under load (32 readers, one writer)
//!   while Redis is killed, slowed, fails over (Cluster, Sentinel), loses
//!   its backplane, or PostgreSQL goes away.
//! * [`service`]: two `market serve` processes on a seeded database of
//!   their own, an AOF Redis and a cuttable link to PostgreSQL, under HTTP
//!   load with write-behind view counts; and cache-poisoning attempts.
//! * [`bad_input`] and [`security`]: hostile keys, values, entries, policy
//!   files and fuzzed input; AUTH, ACL users, TLS, namespaces and secrets.
//!
//! Every row says what was done, the load held, the errors seen, latency
//! during the fault, time to recover, data lost, its target, whether it was
//! met, and the command that reproduces it.

mod bad_input;
mod harness;
mod library;
mod poisoning;
mod policy_files;
mod raw_http;
mod report;
mod security;
mod service;

use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{progress, FaultsArgs};

/// How many Redis timeouts one request may pay before the cache stops
/// calling Redis for it: one — after a failed call a load makes no further
/// Redis calls (no lease, no fill). Every latency target of the suite follows.
pub const REDIS_TIMEOUTS_PER_REQUEST: u32 = 1;

/// What the loader (a PostgreSQL query) and scheduling on two shared cores
/// may add to a request beyond its Redis timeouts.
pub const LOADER_ALLOWANCE: Duration = Duration::from_millis(150);

/// The slowest a request may be while Redis misbehaves.
pub fn slowest_allowed(redis_timeout: Duration) -> Duration {
    redis_timeout * REDIS_TIMEOUTS_PER_REQUEST + LOADER_ALLOWANCE
}

/// The latency target in words, from the constants above.
pub fn latency_target(redis_timeout: Duration) -> String {
    format!(
        "no request slower than {} Redis timeout{} ({} ms each) + the loader ({} ms): {} ms",
        REDIS_TIMEOUTS_PER_REQUEST,
        if REDIS_TIMEOUTS_PER_REQUEST == 1 {
            ""
        } else {
            "s"
        },
        redis_timeout.as_millis(),
        LOADER_ALLOWANCE.as_millis(),
        slowest_allowed(redis_timeout).as_millis()
    )
}

/// Every scenario, in the order `bench faults` runs them.
pub const ALL: &[&str] = &[
    "redis-killed",
    "redis-slow",
    "postgres-down",
    "backplane-cut",
    "cluster-failover",
    "sentinel-failover",
    "market-redis-killed",
    "market-postgres-down",
    "market-poisoning",
    "market-bad-requests",
    "market-slow-clients",
    "market-authorization",
    "fuzzed-input",
    "odd-keys",
    "oversized-values",
    "corrupt-entries",
    "policy-files",
    "redis-auth",
    "acl-user",
    "tls",
    "namespaces",
    "secrets-in-logs",
];

/// Which table of RELIABILITY.md a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Group {
    /// A fault held under load.
    Load,
    /// Hostile or broken input.
    Input,
    /// Authentication, encryption, isolation, secrets.
    Security,
}

/// One row of a table: one scenario's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub scenario: String,
    pub group: Group,
    /// `library` or `market serve`.
    pub against: String,
    pub done: String,
    /// The load held during the fault (empty where there is none).
    pub load: String,
    /// Requests sent, or attempts made.
    pub requests: u64,
    pub errors: String,
    /// p99 / max during the fault (empty where not measured).
    pub latency: String,
    pub recovered: String,
    pub lost: String,
    pub target: String,
    pub met: bool,
    /// `uptime`'s 1-minute load average when the scenario started.
    pub load_average: String,
    pub quick: bool,
    /// Flags beyond `--only` and `--quick` the row was run with.
    #[serde(default)]
    pub flags: String,
}

impl Row {
    pub fn new(scenario: &str, group: Group, against: &str) -> Row {
        Row {
            scenario: scenario.to_string(),
            group,
            against: against.to_string(),
            done: String::new(),
            load: String::new(),
            requests: 0,
            errors: String::new(),
            latency: String::new(),
            recovered: String::new(),
            lost: String::new(),
            target: String::new(),
            met: false,
            load_average: load_average(),
            quick: false,
            flags: String::new(),
        }
    }

    /// The command that reproduces this row.
    pub fn command(&self) -> String {
        format!(
            "`./target/release/bench faults --only {}{}{}`",
            self.scenario,
            if self.quick { " --quick" } else { "" },
            self.flags
        )
    }
}

/// The 1-minute load average, as `/proc/loadavg` has it.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Milliseconds, two decimals.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

pub async fn run(args: &FaultsArgs) -> Result<Value> {
    let scale = if args.quick { 0.3 } else { 1.0 };
    let scenarios: Vec<String> = if args.only.is_empty() {
        ALL.iter().map(|s| s.to_string()).collect()
    } else {
        args.only.clone()
    };
    if let Some(unknown) = scenarios.iter().find(|s| !ALL.contains(&s.as_str())) {
        anyhow::bail!(
            "unknown scenario {unknown}; the scenarios are {}",
            ALL.join(", ")
        );
    }
    let mut rows = Vec::new();
    for scenario in &scenarios {
        progress!("faults: {scenario} (load average {})", load_average());
        let mut row = match scenario.as_str() {
            "redis-killed" => library::redis_killed(scale).await?,
            "redis-slow" => library::redis_slow(scale).await?,
            "postgres-down" => library::postgres_down(scale).await?,
            "backplane-cut" => library::backplane_cut(scale).await?,
            "cluster-failover" => library::cluster_failover().await?,
            "sentinel-failover" => library::sentinel_failover().await?,
            "market-redis-killed" => service::redis_killed(scale).await?,
            "market-postgres-down" => service::postgres_down(scale).await?,
            "market-poisoning" => poisoning::run().await?,
            "market-bad-requests" => service::bad_requests().await?,
            "market-slow-clients" => service::slow_clients().await?,
            "market-authorization" => service::authorization().await?,
            "fuzzed-input" => bad_input::fuzzed(args.cargo_fuzz_secs, scale).await?,
            "odd-keys" => bad_input::odd_keys().await?,
            "oversized-values" => bad_input::oversized_values().await?,
            "corrupt-entries" => bad_input::corrupt_entries().await?,
            "policy-files" => policy_files::run().await?,
            "redis-auth" => security::redis_auth().await?,
            "acl-user" => security::acl_user().await?,
            "tls" => security::tls().await?,
            "namespaces" => security::namespaces().await?,
            "secrets-in-logs" => security::secrets_in_logs().await?,
            other => unreachable!("checked above: {other}"),
        };
        row.quick = args.quick;
        if scenario == "fuzzed-input" && args.cargo_fuzz_secs > 0 {
            row.flags = format!(" --cargo-fuzz-secs {}", args.cargo_fuzz_secs);
        }
        progress!(
            "faults: {} — {} requests; errors: {}; latency {}; recovered {}; lost: {}; met: {}",
            row.scenario,
            row.requests,
            row.errors,
            row.latency,
            row.recovered,
            row.lost,
            row.met
        );
        rows.push(row);
    }
    if let Some(path) = &args.write {
        report::write(path, &rows)?;
    }
    Ok(json!({
        "scenario": "faults",
        "quick": args.quick,
        "redis_timeouts_per_request": REDIS_TIMEOUTS_PER_REQUEST,
        "results": rows,
        "all_met": rows.iter().all(|r| r.met),
    }))
}
