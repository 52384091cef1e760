//! Side (e): the seed articles' own Node.js code on ioredis, run as one
//! long-lived child process (`peers-node/driver.js` in serve mode) that
//! measures one phase per line sent on its stdin.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::progress;

/// Where the driver lives, next to this crate's manifest.
pub fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers-node")
}

/// What the driver reports for one phase.
#[derive(Debug, Deserialize)]
pub struct Phase {
    pub ops: u64,
    pub ops_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub loads: u64,
    pub errors: u64,
    pub node: String,
}

/// The workload, as the driver's plan.
pub struct Plan<'a> {
    pub url: &'a str,
    pub namespace: &'a str,
    pub keys: u64,
    pub theta: f64,
    pub callers: usize,
    pub loader_ms: u64,
    pub ttl_secs: u64,
}

pub struct NodeSide {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl NodeSide {
    /// Start the driver, installing its dependencies first if they are
    /// missing. `Ok(Err(reason))` when Node.js is not there to run it.
    pub async fn start(node: &str, dir: &Path, plan: &Plan<'_>) -> Result<Result<Self, String>> {
        match Command::new(node).arg("--version").output().await {
            Ok(out) if out.status.success() => progress!(
                "peers: node {} in {}",
                String::from_utf8_lossy(&out.stdout).trim(),
                dir.display()
            ),
            Ok(_) | Err(_) => {
                return Ok(Err(format!(
                    "skipped: `{node} --version` did not run; install Node.js to measure the seed articles' ioredis code"
                )))
            }
        }
        if !dir.join("node_modules").join("ioredis").is_dir() {
            progress!("peers: npm install in {}", dir.display());
            let status = Command::new("npm")
                .args(["install", "--no-audit", "--no-fund"])
                .current_dir(dir)
                .stdout(Stdio::null())
                .status()
                .await;
            match status {
                Ok(s) if s.success() => {}
                Ok(s) => return Ok(Err(format!("skipped: npm install failed ({s})"))),
                Err(e) => return Ok(Err(format!("skipped: npm did not run ({e})"))),
            }
        }
        let plan = json!({
            "url": plan.url,
            "namespace": plan.namespace,
            "keys": plan.keys,
            "theta": plan.theta,
            "callers": plan.callers,
            "loader_ms": plan.loader_ms,
            "ttl_secs": plan.ttl_secs,
            "serve": true,
        });
        let mut child = Command::new(node)
            .arg("driver.js")
            .arg(plan.to_string())
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the Node.js driver")?;
        let stdin = child.stdin.take().context("driver stdin")?;
        let stdout = child.stdout.take().context("driver stdout")?;
        Ok(Ok(Self {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        }))
    }

    /// Run one phase: `warmup_calls` unrecorded, then `duration_ms` recorded.
    pub async fn phase(&mut self, warmup_calls: u64, duration_ms: u64, seed: u64) -> Result<Phase> {
        let line = json!({"warmup_calls": warmup_calls, "duration_ms": duration_ms, "seed": seed});
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .context("writing to the Node.js driver")?;
        self.stdin.flush().await?;
        let Some(answer) = self.lines.next_line().await? else {
            bail!("the Node.js driver exited (see its stderr above)");
        };
        let phase: Phase = serde_json::from_str(&answer)
            .with_context(|| format!("the Node.js driver's answer: {answer}"))?;
        ensure!(phase.ops > 0, "the Node.js driver made no call");
        Ok(phase)
    }

    /// Close its stdin so it quits its Redis client and exits.
    pub async fn stop(self) -> Result<()> {
        let Self {
            mut child, stdin, ..
        } = self;
        drop(stdin);
        let status = child.wait().await?;
        ensure!(status.success(), "the Node.js driver exited with {status}");
        Ok(())
    }
}
