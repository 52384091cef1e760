//! The writers: bump a random row's version, invalidate, record the
//! acknowledgement.

use std::time::{Duration, Instant};

use stratacache::Cache;

use super::{now_us, Ack, Error, Mode, NaiveCache, Plan, Postgres};

/// Run `writers` writers, each on a PostgreSQL connection of its own, from
/// the plan's start to its end, and return every acknowledged write.
///
/// The stratacache sides invalidate through `cache` (`delete` for
/// [`Mode::Lease`], `invalidate_version` for [`Mode::Version`]); the naive
/// side DELs through a [`NaiveCache`] of its own.
pub async fn run_writers(
    plan: &Plan,
    cache: &Cache,
    postgres: &Postgres,
    writers: usize,
) -> Result<Vec<Ack>, Error> {
    let naive = match plan.mode {
        Mode::Naive => Some(NaiveCache::connect(plan).await?),
        Mode::Lease | Mode::Version => None,
    };
    let mut dbs = Vec::with_capacity(writers);
    for _ in 0..writers {
        dbs.push(postgres.connect().await?);
    }
    let runs = dbs
        .iter()
        .map(|db| write_for(plan, db, cache, naive.as_ref()));
    let mut acks = Vec::new();
    for run in futures::future::join_all(runs).await {
        acks.extend(run?);
    }
    Ok(acks)
}

/// One writer, from the plan's start to its end, pausing 1–7 ms between
/// writes.
async fn write_for(
    plan: &Plan,
    db: &tokio_postgres::Client,
    cache: &Cache,
    naive: Option<&NaiveCache>,
) -> Result<Vec<Ack>, Error> {
    tokio::time::sleep(Duration::from_micros(
        plan.start_at_us.saturating_sub(now_us()),
    ))
    .await;
    let deadline = Instant::now() + Duration::from_millis(plan.run_for_ms);
    let mut acks = Vec::new();
    while Instant::now() < deadline {
        let id = rand::random_range(0..plan.rows);
        let row = db
            .query_one(
                &format!(
                    "UPDATE {} SET version = version + 1 WHERE id = $1 RETURNING version",
                    plan.table
                ),
                &[&id],
            )
            .await?;
        let version: i64 = row.get(0);
        let key = format!("row:{id}");
        match (naive, plan.mode) {
            (Some(naive), _) => naive.invalidate(&key).await?,
            (None, Mode::Version) => cache.invalidate_version(&key, version as u64).await?,
            (None, _) => cache.delete(&key).await?,
        }
        acks.push((id, now_us(), version));
        tokio::time::sleep(Duration::from_millis(rand::random_range(1..8))).await;
    }
    Ok(acks)
}
