//! Running the built `stratacache` binary and reading its findings.
#![allow(dead_code)]

use std::process::{Command, Output};

use serde_json::Value;

/// Runs `stratacache ARGS…` to completion.
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stratacache"))
        .args(args)
        .env_remove("STRATACACHE_REDIS_URL")
        .output()
        .expect("the stratacache binary runs")
}

/// Exit code, stdout and stderr as text.
pub fn run_text(args: &[&str]) -> (i32, String, String) {
    let out = run(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `stratacache doctor --json ARGS…`: exit code and the report.
pub fn doctor(args: &[&str]) -> (i32, Value) {
    let mut all = vec!["doctor", "--json", "--pings", "20"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = run_text(&all);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("doctor printed no JSON ({e}):\n{stdout}\n{stderr}"));
    assert_eq!(
        report["exit_code"].as_i64(),
        Some(i64::from(code)),
        "{report:#}"
    );
    (code, report)
}

/// Every finding with this id.
pub fn findings<'a>(report: &'a Value, id: &str) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["id"] == id)
        .collect()
}

/// The one finding with this id, with its severity checked.
pub fn expect<'a>(report: &'a Value, id: &str, severity: &str) -> &'a Value {
    let found = findings(report, id);
    assert!(
        found.iter().any(|f| f["severity"] == severity),
        "no {severity} finding {id}: {report:#}"
    );
    found
        .into_iter()
        .find(|f| f["severity"] == severity)
        .unwrap()
}

/// No finding with this id.
pub fn absent(report: &Value, id: &str) {
    assert!(
        findings(report, id).is_empty(),
        "unexpected {id}: {report:#}"
    );
}

/// A namespace no other test run uses.
pub fn unique_namespace(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}
