//! `stratacache doctor`: a Redis checked against what the library needs.
//!
//! Every check adds findings; each finding has a severity, what is wrong,
//! why it matters to the cache, and what to set. The exit status is the
//! worst severity: 0 healthy (ok / info), 1 warnings, 2 errors.

mod keyspace;
mod memory;
mod metrics;
mod pubsub;
mod server;
mod topology;

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use crate::target::Target;
use crate::RedisArgs;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
    /// The cache's namespace: its keyspace is scanned (SCAN, never KEYS).
    #[arg(long)]
    pub namespace: Option<String>,
    /// A Prometheus text endpoint of a service using the cache: hit, miss
    /// and load-error counters per policy are read from it.
    #[arg(long)]
    pub metrics_url: Option<String>,
    /// Print the findings as JSON.
    #[arg(long)]
    pub json: bool,
    /// Treat this Redis as holding write-behind queues even if the scan
    /// found none (persistence and eviction rules get stricter).
    #[arg(long)]
    pub write_behind: bool,
    /// The cache's `redis_timeout`: latencies near it make calls time out.
    #[arg(long, default_value = "200ms", value_parser = crate::parse_duration)]
    pub redis_timeout: Duration,
    /// PINGs sent to each master to measure latency.
    #[arg(long, default_value_t = 50)]
    pub pings: usize,
    /// Most keys the keyspace scan looks at.
    #[arg(long, default_value_t = 1_000_000)]
    pub scan_limit: u64,
    /// Entries whose memory is measured (MEMORY USAGE), to estimate the total.
    #[arg(long, default_value_t = 200)]
    pub memory_samples: usize,
    /// A policy whose hit rate is below this is reported (0..1).
    #[arg(long, default_value_t = 0.5)]
    pub min_hit_rate: f64,
    /// Reads a policy needs before its hit rate is judged.
    #[arg(long, default_value_t = 100)]
    pub min_reads: u64,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Ok,
    Info,
    Warning,
    Error,
}

impl Severity {
    fn label(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Info => "info",
            Severity::Warning => "WARNING",
            Severity::Error => "ERROR",
        }
    }
}

/// One thing found.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// A stable name (`memory.noeviction`, `persistence.aof-off` …).
    pub id: String,
    pub severity: Severity,
    /// The server it is about, when it is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// What was found.
    pub what: String,
    /// Why it matters to the cache.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub why: String,
    /// What to set or do.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fix: String,
    /// Figures behind it.
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

impl Finding {
    pub fn new(id: &str, severity: Severity, what: impl Into<String>) -> Self {
        Finding {
            id: id.to_string(),
            severity,
            node: None,
            what: what.into(),
            why: String::new(),
            fix: String::new(),
            data: serde_json::Value::Null,
        }
    }
    pub fn ok(id: &str, what: impl Into<String>) -> Self {
        Self::new(id, Severity::Ok, what)
    }
    pub fn info(id: &str, what: impl Into<String>) -> Self {
        Self::new(id, Severity::Info, what)
    }
    pub fn warning(id: &str, what: impl Into<String>) -> Self {
        Self::new(id, Severity::Warning, what)
    }
    pub fn error(id: &str, what: impl Into<String>) -> Self {
        Self::new(id, Severity::Error, what)
    }
    pub fn why(mut self, why: impl Into<String>) -> Self {
        self.why = why.into();
        self
    }
    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = fix.into();
        self
    }
    pub fn node(mut self, node: &str) -> Self {
        self.node = Some(node.to_string());
        self
    }
    pub fn data(mut self, data: serde_json::Value) -> Self {
        self.data = data;
        self
    }
}

/// Everything the doctor found.
#[derive(Debug, Serialize)]
pub struct Report {
    pub redis: String,
    pub topology: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub status: Severity,
    pub exit_code: u8,
    pub findings: Vec<Finding>,
}

impl Report {
    fn push(&mut self, finding: Finding) {
        self.findings.push(finding);
    }

    fn finish(&mut self) {
        self.status = self
            .findings
            .iter()
            .map(|f| f.severity)
            .max()
            .unwrap_or(Severity::Ok);
        self.exit_code = match self.status {
            Severity::Ok | Severity::Info => 0,
            Severity::Warning => 1,
            Severity::Error => 2,
        };
    }

    fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "stratacache doctor: {} ({}){}",
            self.redis,
            self.topology,
            self.namespace
                .as_ref()
                .map(|ns| format!(", namespace {ns:?}"))
                .unwrap_or_default()
        );
        let _ = writeln!(out);
        for f in &self.findings {
            let node = f
                .node
                .as_ref()
                .map(|n| format!(" [{n}]"))
                .unwrap_or_default();
            let _ = writeln!(out, "{:<8} {}{node}: {}", f.severity.label(), f.id, f.what);
            if !f.why.is_empty() {
                let _ = writeln!(out, "         why: {}", f.why);
            }
            if !f.fix.is_empty() {
                let _ = writeln!(out, "         fix: {}", f.fix);
            }
        }
        let count = |s: Severity| self.findings.iter().filter(|f| f.severity == s).count();
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{} error(s), {} warning(s), {} note(s), {} check(s) passed: {}",
            count(Severity::Error),
            count(Severity::Warning),
            count(Severity::Info),
            count(Severity::Ok),
            match self.status {
                Severity::Ok | Severity::Info => "healthy",
                Severity::Warning => "warnings",
                Severity::Error => "errors",
            }
        );
        out
    }
}

pub async fn run(args: DoctorArgs) -> Result<u8> {
    let mut report = Report {
        redis: crate::target::redact(&args.redis.redis_url),
        topology: String::new(),
        namespace: args.namespace.clone(),
        status: Severity::Ok,
        exit_code: 0,
        findings: Vec::new(),
    };
    match Target::discover(&args.redis).await {
        Err(e) => {
            report.topology = "unknown".into();
            report.push(
                Finding::error("connect", format!("cannot reach Redis: {e:#}"))
                    .why("without Redis the cache runs on L1 and the loaders alone: every instance loads every key itself, and invalidations do not reach the other instances")
                    .fix("check the URL, the network path and the credentials; redis+cluster:// and redis+sentinel://…/MASTER select a Cluster or Sentinel"),
            );
        }
        Ok(mut target) => {
            report.topology = target.kind().to_string();
            report.redis = target.shown.clone();
            // The keyspace first: whether queues exist changes the rules.
            let mut space = None;
            if let Some(ns) = &args.namespace {
                match keyspace::scan(&target, ns, &args).await {
                    Ok(found) => space = Some(found),
                    Err(e) => report.push(Finding::error(
                        "keyspace.scan",
                        format!("could not scan namespace {ns:?}: {e:#}"),
                    )),
                }
            }
            let queues = space.as_ref().map_or(0, |s| s.queues.len());
            let write_behind = args.write_behind || queues > 0;
            server::check(&mut target, &args, write_behind, &mut report.findings).await;
            if let Some(space) = &space {
                keyspace::findings(space, &mut report.findings);
            }
        }
    }
    if let Some(url) = &args.metrics_url {
        metrics::check(url, &args, &mut report.findings).await;
    }
    report.finish();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(report.exit_code)
}

/// `1.5 MiB` for people.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_code_is_the_worst_severity() {
        let mut report = Report {
            redis: String::new(),
            topology: String::new(),
            namespace: None,
            status: Severity::Ok,
            exit_code: 0,
            findings: vec![Finding::ok("a", "fine"), Finding::info("b", "note")],
        };
        report.finish();
        assert_eq!(report.exit_code, 0);
        report.push(Finding::warning("c", "hm"));
        report.finish();
        assert_eq!(report.exit_code, 1);
        report.push(Finding::error("d", "bad"));
        report.finish();
        assert_eq!(report.exit_code, 2);
        assert!(report.text().contains("ERROR    d: bad"));
        assert_eq!(bytes(1536), "1.5 KiB");
    }
}
