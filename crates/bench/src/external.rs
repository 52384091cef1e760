//! `redis-benchmark` as an external ceiling: what the server gives a C client
//! with the same number of connections, unpipelined and pipelined.

use std::process::Command;

use anyhow::{bail, Context, Result};
use redis::ConnectionAddr;
use serde_json::{json, Value};

use crate::report::{median, ratio, round};

/// Where and how `redis-benchmark` reaches the Redis under test.
pub struct Target {
    addr: Vec<String>,
}

impl Target {
    pub fn from_url(url: &str) -> Result<Self> {
        let client = redis::Client::open(url).with_context(|| format!("redis URL {url}"))?;
        let info = client.get_connection_info();
        let mut addr = match info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                vec!["-h".into(), host.clone(), "-p".into(), port.to_string()]
            }
            ConnectionAddr::TcpTls { host, port, .. } => vec![
                "-h".into(),
                host.clone(),
                "-p".into(),
                port.to_string(),
                "--tls".into(),
            ],
            ConnectionAddr::Unix(path) => vec!["-s".into(), path.display().to_string()],
            _ => bail!("unsupported address in {url}"),
        };
        let settings = info.redis_settings();
        if let Some(user) = settings.username() {
            addr.extend(["--user".into(), user.to_string()]);
        }
        if let Some(password) = settings.password() {
            addr.extend(["-a".into(), password.to_string()]);
        }
        if settings.db() != 0 {
            addr.extend(["--dbnum".into(), settings.db().to_string()]);
        }
        Ok(Self { addr })
    }
}

/// The variants run: report name, pipeline depth (`-P`), and whether they
/// read the benchmark's own keys (`-r <keys> GET <pattern>`) rather than
/// `-t get` (its built-in test, which reads `key:__rand_int__`, normally absent).
const VARIANTS: [(&str, u32, bool); 4] = [
    ("redis_benchmark", 1, false),
    ("redis_benchmark_p16", 16, false),
    ("redis_benchmark_same_keys", 1, true),
    ("redis_benchmark_same_keys_p16", 16, true),
];

/// `redis-benchmark` ceilings, run a few times each, interleaved with the
/// Rust sides by the caller.
pub struct Ceilings {
    target: Target,
    concurrency: usize,
    requests: u64,
    keys: u64,
    /// `GET` pattern of the benchmark's own keys: `__rand_int__` becomes a
    /// twelve-digit number below `keys`, exactly like the harness's key names.
    pattern: String,
    runs: Vec<Vec<f64>>,
}

impl Ceilings {
    pub fn new(
        url: &str,
        concurrency: usize,
        requests: u64,
        keys: u64,
        pattern: String,
    ) -> Result<Self> {
        Ok(Self {
            target: Target::from_url(url)?,
            concurrency,
            requests,
            keys,
            pattern,
            runs: vec![Vec::new(); VARIANTS.len()],
        })
    }

    /// Run every variant once; returns `(name, requests/s)` for progress output.
    pub fn run_once(&mut self) -> Result<Vec<(&'static str, f64)>> {
        let mut out = Vec::new();
        for (i, (name, pipeline, same_keys)) in VARIANTS.iter().enumerate() {
            let rps = redis_benchmark(&self.target, &self.args(*pipeline, *same_keys))
                .with_context(|| format!("{name} (pass --no-external to skip)"))?;
            self.runs[i].push(rps);
            out.push((*name, rps));
        }
        Ok(out)
    }

    fn args(&self, pipeline: u32, same_keys: bool) -> Vec<String> {
        let mut args = vec![
            "-c".to_string(),
            self.concurrency.to_string(),
            "-n".to_string(),
            self.requests.to_string(),
        ];
        if pipeline > 1 {
            args.extend(["-P".to_string(), pipeline.to_string()]);
        }
        if same_keys {
            args.extend([
                "-r".into(),
                self.keys.to_string(),
                "GET".into(),
                self.pattern.clone(),
            ]);
        } else {
            args.extend(["-t".to_string(), "get".to_string()]);
        }
        args
    }

    /// Median requests/s of the variant named `name`.
    pub fn median(&self, name: &str) -> f64 {
        VARIANTS
            .iter()
            .position(|(n, _, _)| *n == name)
            .map_or(f64::NAN, |i| median(&self.runs[i]))
    }

    /// Add every variant and `ours / variant` to the report.
    pub fn report(&self, report: &mut Value, ours: f64) {
        for ((name, pipeline, same_keys), runs) in VARIANTS.iter().zip(&self.runs) {
            let rps = median(runs);
            let mut command = self.args(*pipeline, *same_keys);
            if let Some(last) = command.last_mut().filter(|_| *same_keys) {
                *last = format!("'{last}'");
            }
            report[*name] = json!({
                "requests_per_sec": round(rps, 0),
                "runs": runs.iter().map(|x| round(*x, 0)).collect::<Vec<_>>(),
                "command": format!("redis-benchmark {}", command.join(" ")),
            });
            report[format!("ratio_stratacache_{name}")] = json!(ratio(ours, rps));
        }
    }
}

/// Run `redis-benchmark` once with `args` (plus address and `--csv`);
/// returns requests per second.
fn redis_benchmark(target: &Target, args: &[String]) -> Result<f64> {
    let out = Command::new("redis-benchmark")
        .args(&target.addr)
        .arg("--csv")
        // Last: in the same-keys form they end with the command to run.
        .args(args)
        .output()
        .context("running redis-benchmark (is it installed? it ships with redis-tools)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "redis-benchmark failed ({}): {}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_csv_rps(&stdout)
        .with_context(|| format!("no GET figure in redis-benchmark output: {stdout}"))
}

/// The `rps` column of the first data row of `--csv` output:
/// `"GET","123456.79","0.25",…` (the header row starts with `"test"`).
fn parse_csv_rps(text: &str) -> Option<f64> {
    text.lines()
        .map(|line| {
            line.split(',')
                .map(|f| f.trim().trim_matches('"'))
                .collect::<Vec<_>>()
        })
        .find(|fields| fields.len() >= 2 && fields[0] != "test" && fields[0].starts_with("GET"))
        .and_then(|fields| fields[1].parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_csv_with_and_without_latency_columns() {
        let new = "\"test\",\"rps\",\"avg_latency_ms\"\n\"GET\",\"83333.34\",\"0.031\"\n";
        assert_eq!(parse_csv_rps(new), Some(83_333.34));
        assert_eq!(parse_csv_rps("\"GET\",\"1000.00\"\n"), Some(1_000.0));
        let custom = "\"test\",\"rps\"\n\"GET x:{k:__rand_int__}\",\"86956.52\",\"0.032\"\n";
        assert_eq!(parse_csv_rps(custom), Some(86_956.52));
        assert_eq!(parse_csv_rps("ERROR\n"), None);
    }
}
