//! A PostgreSQL schema of its own for a write-behind test (in the `test`
//! database, or `STRATACACHE_TEST_PG_URL`), dropped at the end.
#![allow(dead_code)]

use std::collections::BTreeMap;

use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool};
use stratacache::write_behind::PostgresSink;

pub fn pg_url() -> String {
    std::env::var("STRATACACHE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub async fn pool() -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .connect(&pg_url())
        .await
        .expect("connect to PostgreSQL")
}

/// A fresh schema; the sink's tables are `<schema>.t_*`.
pub struct Scratch {
    pub pool: PgPool,
    pub schema: String,
}

impl Scratch {
    pub async fn new(test: &str) -> Scratch {
        let schema = format!(
            "wb_{test}_{}_{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let pool = pool().await;
        sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&pool)
            .await
            .unwrap();
        let scratch = Scratch { pool, schema };
        scratch.sink().create_tables().await.unwrap();
        scratch
    }

    pub fn prefix(&self) -> String {
        format!("{}.t", self.schema)
    }

    pub fn sink(&self) -> PostgresSink {
        PostgresSink::new(self.pool.clone(), &self.prefix()).unwrap()
    }

    pub async fn counters(&self) -> BTreeMap<String, i64> {
        sqlx::query_as::<_, (String, i64)>(AssertSqlSafe(format!(
            "SELECT key, total FROM {}_counters",
            self.prefix()
        )))
        .fetch_all(&self.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
    }

    /// Values as JSON text.
    pub async fn values(&self) -> BTreeMap<String, String> {
        sqlx::query_as::<_, (String, String)>(AssertSqlSafe(format!(
            "SELECT key, value::text FROM {}_values",
            self.prefix()
        )))
        .fetch_all(&self.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
    }

    pub async fn drop_schema(self) {
        sqlx::query(AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            self.schema
        )))
        .execute(&self.pool)
        .await
        .unwrap();
    }
}
