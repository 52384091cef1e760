//! The consistency checker against real Redis and PostgreSQL, shared by
//! `crates/stratacache/tests/consistency.rs` and the bench's `consistency`
//! scenario.
//!
//! A table of rows with a version column; writers ([`run_writers`]) bump a
//! random row's version and invalidate it, recording each acknowledgement;
//! readers ([`run_reader`], each in a process of its own) read random rows
//! through the cache with loaders slowed at random, to provoke the
//! stale-set race, recording each read's start and end. A read is stale
//! ([`stale_reads`]) when it returns a version older than one acknowledged
//! more than [`L1_BOUND_US`] before the read began.
//!
//! The same scenario runs once per [`Mode`]: stratacache with fills guarded
//! by leases or by versions (expected: no stale read), and the seed
//! articles' naive cache-aside ([`NaiveCache`]), whose stale reads show that
//! the checker can see them.
//!
//! The caller owns the processes: it creates the table ([`create_table`]),
//! starts the readers with a [`Plan`] (serialized as JSON) and collects
//! their [`Report`]s, however it re-executes itself.

mod naive;
mod reader;
mod stale;
mod writer;

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use naive::NaiveCache;
pub use reader::run_reader;
pub use stale::{stale_reads, StaleRead};
pub use writer::run_writers;

/// How long after an acknowledged write an instance may still serve the old
/// value from L1 (SPEC §3: the backplane reaches every L1 within 50 ms).
pub const L1_BOUND_US: u64 = 50_000;

/// What the readers read through and how the writers invalidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// The seeds' cache-aside: GET; on a miss load and SET; DEL on write.
    Naive,
    /// stratacache, fills guarded by leases; writers `delete`.
    Lease,
    /// stratacache, fills guarded by versions: loaders return the row's
    /// version, writers `invalidate_version`.
    Version,
}

impl Mode {
    /// The name reports use for this side.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Naive => "naive",
            Mode::Lease => "stratacache_lease",
            Mode::Version => "stratacache_version",
        }
    }
}

/// One side of a run, as every reader process and the writers see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// The side.
    pub mode: Mode,
    /// Redis: one URL, or a Cluster's seed URLs.
    pub topology: Vec<String>,
    /// Whether `topology` is a Cluster's seeds.
    pub cluster: bool,
    /// The cache namespace (the naive side prefixes its keys with it too).
    pub namespace: String,
    /// The PostgreSQL table of rows ([`create_table`]).
    pub table: String,
    /// Rows in the table, ids `0..rows`.
    pub rows: i32,
    /// Reading tasks per reader process.
    pub tasks: usize,
    /// When readers and writers start (µs since the epoch), so that every
    /// process has connected by then.
    pub start_at_us: u64,
    /// How long they run.
    pub run_for_ms: u64,
}

/// One read: row, start, end (µs since the epoch), version returned.
pub type Read = (i32, u64, u64, i64);

/// One acknowledged write: row, when the invalidation returned (µs since the
/// epoch), version written.
pub type Ack = (i32, u64, i64);

/// What one reader process saw.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// Every successful read.
    pub reads: Vec<Read>,
    /// How many reads failed.
    pub errors: usize,
    /// The first failure's message, for the caller's diagnostics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// Microseconds since the Unix epoch: the one clock every process shares.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Where the checker's PostgreSQL is: a `tokio_postgres` connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Postgres {
    config: String,
}

impl Postgres {
    /// The PostgreSQL on loopback, as user `postgres`.
    pub const LOOPBACK: &str = "host=127.0.0.1 user=postgres dbname=postgres";

    /// The connection string in the environment variable `var`, or
    /// [`Postgres::LOOPBACK`]. Reader processes inherit the variable, so
    /// they find the same database as the writers.
    pub fn from_env(var: &str) -> Postgres {
        Postgres {
            config: std::env::var(var).unwrap_or_else(|_| Self::LOOPBACK.into()),
        }
    }

    /// A new connection, driven by a task of its own.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, Error> {
        let (client, connection) = tokio_postgres::connect(&self.config, tokio_postgres::NoTls)
            .await
            .map_err(|source| Error::PostgresConnect {
                config: self.config.clone(),
                source,
            })?;
        tokio::spawn(connection);
        Ok(client)
    }
}

/// Create `table` with `rows` rows, ids `0..rows`, all at version 0.
pub async fn create_table(
    db: &tokio_postgres::Client,
    table: &str,
    rows: i32,
) -> Result<(), Error> {
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id int PRIMARY KEY, version bigint NOT NULL);
         INSERT INTO {table} SELECT g, 0 FROM generate_series(0, {}) g;",
        rows - 1
    ))
    .await?;
    Ok(())
}

/// Drop a table made by [`create_table`].
pub async fn drop_table(db: &tokio_postgres::Client, table: &str) -> Result<(), Error> {
    db.batch_execute(&format!("DROP TABLE {table}")).await?;
    Ok(())
}

/// What stops a reader or a writer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// PostgreSQL could not be reached.
    #[error("connecting to PostgreSQL ({config}): {source}")]
    PostgresConnect {
        /// The connection string tried.
        config: String,
        /// Why it failed.
        source: tokio_postgres::Error,
    },
    /// A query failed.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// The naive side's Redis call failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A cache call failed.
    #[error("cache: {0}")]
    Cache(#[from] stratacache::Error),
    /// A read through the cache came back empty, though every row exists.
    #[error("row {0} read as absent")]
    Absent(i32),
    /// A reading task panicked.
    #[error("reading task: {0}")]
    Task(#[from] tokio::task::JoinError),
}
