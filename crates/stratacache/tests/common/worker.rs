//! Worker processes for multi-process tests: the test binary re-executes
//! itself, running one ignored test as the worker's entry point. The plan
//! goes in through an environment variable, the report comes back as one
//! prefixed JSON line on stdout.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The line prefix a worker's report follows.
pub const RESULT_PREFIX: &str = "WORKER-RESULT ";

/// The plan handed to this process, if it runs as a worker.
pub fn plan<P: DeserializeOwned>(env: &str) -> Option<P> {
    std::env::var(env)
        .ok()
        .map(|json| serde_json::from_str(&json).expect("worker plan"))
}

/// Print a worker's report for [`collect`].
pub fn report<R: Serialize>(report: &R) {
    // On a line of its own: the harness prints "test … " before it.
    println!(
        "\n{RESULT_PREFIX}{}",
        serde_json::to_string(report).unwrap()
    );
}

/// Start this test binary again, running the ignored test `entry` with `plan`.
pub fn spawn<P: Serialize>(entry: &str, env: &str, plan: &P) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            entry,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(env, serde_json::to_string(plan).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn a worker process")
}

/// Wait for a worker and read its report.
pub fn collect<R: DeserializeOwned>(mut child: Child) -> R {
    let stdout = child.stdout.take().unwrap();
    let mut report = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(at) = line.find(RESULT_PREFIX) {
            report = Some(serde_json::from_str(&line[at + RESULT_PREFIX.len()..]).unwrap());
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "worker failed: {status}");
    report.expect("the worker reported")
}
