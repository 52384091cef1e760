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

/// The body of a worker's entry-point test: if this process was started as a
/// worker (its plan in `env`), run `work` on a 2-thread runtime and print its
/// report for [`collect`]; otherwise do nothing.
pub fn serve<P, R, Fut>(env: &str, work: impl FnOnce(P) -> Fut)
where
    P: DeserializeOwned,
    R: Serialize,
    Fut: std::future::Future<Output = R>,
{
    let Ok(json) = std::env::var(env) else { return };
    let plan: P = serde_json::from_str(&json).expect("worker plan");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = runtime.block_on(work(plan));
    // On a line of its own: the harness prints "test … " before it.
    println!(
        "\n{RESULT_PREFIX}{}",
        serde_json::to_string(&report).unwrap()
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
