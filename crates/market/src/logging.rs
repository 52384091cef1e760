//! The log: `tracing` events of the service and of the libraries under it
//! (stratacache's breaker opening and closing, failed invalidations, the
//! backplane lost, the write-behind durability warning; tower-sessions;
//! hyper), written to stderr as text or as one JSON object per line.
//!
//! `RUST_LOG` chooses what is written (`RUST_LOG=debug`,
//! `RUST_LOG=market=debug,stratacache=trace`); without it, [`DEFAULT_FILTER`].
//! Every line written while a request is handled carries the request's id
//! (its span, [`crate::middleware`]).

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// What is logged without `RUST_LOG`: the service's and the cache's
/// warnings and state changes, one line per error answer, none per success.
pub const DEFAULT_FILTER: &str = "info";

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for a log collector).
    Json,
}

/// Install the process's subscriber. An invalid `RUST_LOG` is an error
/// (said at start rather than silently logging nothing).
pub fn init(format: LogFormat) -> anyhow::Result<()> {
    let filter = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(directives) => EnvFilter::try_new(&directives)
            .map_err(|err| anyhow::anyhow!("invalid RUST_LOG {directives:?}: {err}"))?,
        Err(_) => EnvFilter::new(DEFAULT_FILTER),
    };
    let registry = tracing_subscriber::registry().with(filter);
    let writer = std::io::stderr;
    match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(writer),
            )
            .try_init()?,
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    // Every span of the line, outermost first: the request's
                    // (with its id) is not always the innermost.
                    .with_current_span(false)
                    .with_span_list(true)
                    .with_writer(writer),
            )
            .try_init()?,
    }
    Ok(())
}
