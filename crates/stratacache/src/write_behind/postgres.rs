//! The PostgreSQL [`Sink`]: idempotent upserts, with the ids of the applied
//! writes recorded in the same transaction.
//!
//! Three tables, named after a prefix (`<prefix>_values`, `<prefix>_counters`,
//! `<prefix>_applied`). A batch is one transaction of at most five statements
//! (`BEGIN`, the applied ids, the counters, the values, `COMMIT`), whatever
//! its size: the ids go first (`INSERT … ON CONFLICT DO NOTHING RETURNING`),
//! and only the writes whose id was new are applied. A batch redelivered after
//! a crash between the commit and the acknowledgement therefore changes
//! nothing, and one that overlaps an applied batch only partly applies only
//! the rest. Values carry their stream entry id as a version and only ever
//! replace an older one, so a batch reclaimed late cannot overwrite a newer
//! value a live worker has applied meanwhile.

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::{AssertSqlSafe, PgPool};

use super::coalesce::Batch;
use super::sink::Sink;
use crate::error::{BoxError, Error, Result};

/// A write-behind sink on PostgreSQL (sqlx), for JSON values and `bigint`
/// counters keyed by text.
///
/// ```no_run
/// # async fn demo(pool: sqlx::PgPool) -> Result<(), stratacache::Error> {
/// use stratacache::write_behind::PostgresSink;
/// let sink = PostgresSink::new(pool, "page_views")?;
/// sink.create_tables().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresSink {
    pool: PgPool,
    sql: Arc<Statements>,
    prefix: String,
}

struct Statements {
    record: String,
    counters: String,
    values: String,
    read_value: String,
    read_counter: String,
    prune: String,
    create: Vec<String>,
}

impl PostgresSink {
    /// A sink on `pool` using the tables `<prefix>_values`, `<prefix>_counters`
    /// and `<prefix>_applied`. The prefix may name a schema (`app.views`); it
    /// must be lower-case letters, digits and underscores.
    pub fn new(pool: PgPool, prefix: &str) -> Result<Self> {
        let valid = !prefix.is_empty()
            && prefix.split('.').count() <= 2
            && prefix.split('.').all(|part| {
                part.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            });
        if !valid {
            return Err(Error::config(format!(
                "write-behind table prefix {prefix:?} must be [a-z_][a-z0-9_]*, optionally schema-qualified"
            )));
        }
        let (v, c, a) = (
            format!("{prefix}_values"),
            format!("{prefix}_counters"),
            format!("{prefix}_applied"),
        );
        let sql = Statements {
            record: format!(
                "INSERT INTO {a} (write_id, entry_ms) SELECT * FROM UNNEST($1::text[], $2::bigint[]) \
                 ON CONFLICT (write_id) DO NOTHING RETURNING write_id"
            ),
            counters: format!(
                "INSERT INTO {c} AS t (key, total) SELECT * FROM UNNEST($1::text[], $2::bigint[]) \
                 ON CONFLICT (key) DO UPDATE SET total = t.total + EXCLUDED.total"
            ),
            values: format!(
                "INSERT INTO {v} AS t (key, value, version_ms, version_seq) \
                 SELECT k, j::jsonb, ms, seq FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS u(k, j, ms, seq) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version_ms = EXCLUDED.version_ms, \
                 version_seq = EXCLUDED.version_seq, updated_at = now() \
                 WHERE (t.version_ms, t.version_seq) < (EXCLUDED.version_ms, EXCLUDED.version_seq)"
            ),
            read_value: format!("SELECT value::text FROM {v} WHERE key = $1"),
            read_counter: format!("SELECT total FROM {c} WHERE key = $1"),
            prune: format!("DELETE FROM {a} WHERE entry_ms < $1"),
            create: vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {v} (key text PRIMARY KEY, value jsonb NOT NULL, \
                     version_ms bigint NOT NULL, version_seq bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())"
                ),
                format!("CREATE TABLE IF NOT EXISTS {c} (key text PRIMARY KEY, total bigint NOT NULL)"),
                format!(
                    "CREATE TABLE IF NOT EXISTS {a} (write_id text PRIMARY KEY, entry_ms bigint NOT NULL)"
                ),
            ],
        };
        Ok(Self {
            pool,
            sql: Arc::new(sql),
            prefix: prefix.to_string(),
        })
    }

    /// Create the three tables if they do not exist.
    pub async fn create_tables(&self) -> Result<()> {
        for statement in &self.sql.create {
            sqlx::query(AssertSqlSafe(statement.clone()))
                .execute(&self.pool)
                .await
                .map_err(|e| {
                    Error::config(format!("creating write-behind tables {}: {e}", self.prefix))
                })?;
        }
        Ok(())
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The table prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// Whether a sink error is PostgreSQL being unreachable — I/O, TLS, a pool
/// that timed out or closed, or a server refusing connections (SQLSTATE
/// class 08, `57P01`–`57P03`, `53300`) — rather than a statement failing.
/// For [`Sink::is_unavailable`] of sinks on sqlx.
pub fn is_connection_error(err: &BoxError) -> bool {
    let Some(err) = err.downcast_ref::<sqlx::Error>() else {
        return false;
    };
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

impl Sink for PostgresSink {
    fn is_unavailable(&self, err: &BoxError) -> bool {
        is_connection_error(err)
    }

    async fn apply(&self, batch: &Batch) -> Result<(), BoxError> {
        let ids = batch.write_ids();
        let mut tx = self.pool.begin().await?;
        let (write_ids, entry_ms): (Vec<String>, Vec<i64>) =
            ids.into_iter().map(|(w, id)| (w, id.ms as i64)).unzip();
        let new: Vec<String> = sqlx::query_scalar(AssertSqlSafe(self.sql.record.clone()))
            .bind(write_ids)
            .bind(entry_ms)
            .fetch_all(&mut *tx)
            .await?;
        let todo = batch.new_writes(&new.into_iter().collect::<HashSet<_>>());
        if !todo.counters.is_empty() {
            let (keys, totals): (Vec<String>, Vec<i64>) = todo
                .counters
                .iter()
                .map(|c| (c.key.clone(), c.total()))
                .unzip();
            sqlx::query(AssertSqlSafe(self.sql.counters.clone()))
                .bind(keys)
                .bind(totals)
                .execute(&mut *tx)
                .await?;
        }
        if !todo.values.is_empty() {
            let mut keys = Vec::with_capacity(todo.values.len());
            let mut json = Vec::with_capacity(todo.values.len());
            let mut ms = Vec::with_capacity(todo.values.len());
            let mut seq = Vec::with_capacity(todo.values.len());
            for v in &todo.values {
                keys.push(v.key.clone());
                json.push(String::from_utf8(v.json.clone())?);
                ms.push(v.version.ms as i64);
                seq.push(v.version.seq as i64);
            }
            sqlx::query(AssertSqlSafe(self.sql.values.clone()))
                .bind(keys)
                .bind(json)
                .bind(ms)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn read_value(&self, key: &str) -> Result<Option<Vec<u8>>, BoxError> {
        let found: Option<String> = sqlx::query_scalar(AssertSqlSafe(self.sql.read_value.clone()))
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.map(String::into_bytes))
    }

    async fn read_counter(&self, key: &str) -> Result<i64, BoxError> {
        let found: Option<i64> = sqlx::query_scalar(AssertSqlSafe(self.sql.read_counter.clone()))
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.unwrap_or(0))
    }

    async fn prune_applied(&self, before_ms: u64) -> Result<u64, BoxError> {
        let done = sqlx::query(AssertSqlSafe(self.sql.prune.clone()))
            .bind(before_ms as i64)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
