//! `stratacache`: the operator's command line for stratacache.
//!
//! - `doctor`: checks a Redis (node, Sentinel or Cluster) against what the
//!   library needs, the namespace's keyspace and, given a Prometheus
//!   endpoint, which policies earn their keep. Exit status 0 healthy,
//!   1 warnings, 2 errors.
//! - `inspect`: decodes a stored entry.
//! - `invalidate`: a key, a tag, a prefix or the whole namespace, through
//!   the library's own pipeline (every instance's L1 hears it).
//! - `queue`: write-behind queue state, and dead letters put back.

mod doctor;
mod entry;
mod http;
mod invalidate;
mod queue;
mod target;
mod time;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "stratacache", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where Redis is; shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis URL: redis://host:port[/db], rediss://…, redis+cluster://h1:p1,h2:p2,
    /// redis+sentinel://s1:p1,s2:p2/MASTER[/db].
    #[arg(
        long,
        env = "STRATACACHE_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
    /// How long one Redis call may take before it counts as failed.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// PEM file of the CA that signed Redis's certificate, for rediss:// URLs
    /// (default: the public roots). Needs the `tls` feature.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// PEM file of a client certificate, for mutual TLS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM file of the client certificate's key.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Certificates for TLS connections, read from the files given.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub ca: Option<Vec<u8>>,
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl RedisArgs {
    /// The certificates given, if any.
    pub fn tls(&self) -> anyhow::Result<Option<TlsFiles>> {
        use anyhow::Context;
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
        if self.tls_ca.is_none() && self.tls_cert.is_none() {
            return Ok(None);
        }
        if !cfg!(feature = "tls") {
            anyhow::bail!("this build has no TLS: install with `--features tls`");
        }
        Ok(Some(TlsFiles {
            ca: self.tls_ca.as_ref().map(read).transpose()?,
            client: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
                _ => None,
            },
        }))
    }

    /// The same as the library's `RedisTls`.
    pub fn redis_tls(&self) -> anyhow::Result<Option<stratacache::RedisTls>> {
        Ok(self.tls()?.map(|files| {
            let mut tls = stratacache::RedisTls::new();
            if let Some(ca) = files.ca {
                tls = tls.root_cert_pem(ca);
            }
            if let Some((cert, key)) = files.client {
                tls = tls.client_cert_pem(cert, key);
            }
            tls
        }))
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a Redis against what stratacache needs (exit 0 healthy, 1 warnings, 2 errors).
    Doctor(doctor::DoctorArgs),
    /// Decode the stored entry of a key: times, tags, codec, size, version floor, lease.
    Inspect(entry::InspectArgs),
    /// Invalidate a key, a tag, a prefix or the whole namespace on every instance.
    Invalidate(invalidate::InvalidateArgs),
    /// Write-behind queues: their state, and dead letters put back on the queue.
    Queue {
        #[command(subcommand)]
        action: queue::QueueCommand,
    },
}

/// Durations like `200ms`, `3s`, `1m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 200ms, 3s or 1m"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // rustls needs one process-wide crypto provider.
    #[cfg(feature = "tls")]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Doctor(args) => doctor::run(args).await,
            Command::Inspect(args) => entry::run(args).await,
            Command::Invalidate(args) => invalidate::run(args).await,
            Command::Queue { action } => queue::run(action).await,
        }
    });
    // Background tasks of the cache (its subscription, reconnects) are not
    // waited for.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("3 weeks").is_err());
    }
}
