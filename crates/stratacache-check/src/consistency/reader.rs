//! A reader process: random rows read through the cache (or the naive
//! cache-aside) by several tasks until the plan's end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stratacache::{Cache, Consistency, EntryOptions, Loaded, RedisTopology};

use super::{now_us, Error, Mode, NaiveCache, Plan, Postgres, Report};

/// Run one reader process's share of `plan`: connect, wait for the plan's
/// start, then read with `plan.tasks` tasks until its end. Failed reads are
/// counted in the report, not returned.
pub async fn run_reader(plan: &Plan, postgres: &Postgres) -> Result<Report, Error> {
    let db = Arc::new(postgres.connect().await?);
    let topology = if plan.cluster {
        RedisTopology::Cluster(plan.topology.clone())
    } else {
        RedisTopology::parse(&plan.topology[0])?
    };
    let cache = Cache::builder()
        .namespace(plan.namespace.clone())
        .redis(topology)
        .redis_timeout(Duration::from_secs(1))
        .build()
        .await?;
    let naive = match plan.mode {
        Mode::Naive => Some(NaiveCache::connect(plan).await?),
        Mode::Lease | Mode::Version => None,
    };
    tokio::time::sleep(Duration::from_micros(
        plan.start_at_us.saturating_sub(now_us()),
    ))
    .await;
    let deadline = Instant::now() + Duration::from_millis(plan.run_for_ms);
    let consistency = match plan.mode {
        Mode::Version => Consistency::Version,
        Mode::Lease | Mode::Naive => Consistency::Lease,
    };
    let opts = EntryOptions::new()
        .ttl(Duration::from_secs(60))
        .consistency(consistency);
    let mut tasks = Vec::new();
    for _ in 0..plan.tasks {
        let (db, cache, naive, plan, opts) = (
            db.clone(),
            cache.clone(),
            naive.clone(),
            plan.clone(),
            opts.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut report = Report::default();
            while Instant::now() < deadline {
                let id = rand::random_range(0..plan.rows);
                let key = format!("row:{id}");
                let start = now_us();
                let result = match &naive {
                    Some(naive) => naive.read(&key, &db, &plan.table, id).await,
                    None => read_through(&cache, &opts, &key, &db, &plan.table, id).await,
                };
                match result {
                    Ok(version) => report.reads.push((id, start, now_us(), version)),
                    Err(e) => {
                        report.errors += 1;
                        report.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
                // Pace the readers like request handlers, which await I/O
                // between reads: a loop of nothing but L1 hits never yields,
                // and would starve this process's backplane subscriber and, on
                // 2 cores, the Redis servers relaying the invalidations.
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            report
        }));
    }
    let mut report = Report::default();
    for task in tasks {
        let task = task.await?;
        report.reads.extend(task.reads);
        report.errors += task.errors;
        report.first_error = report.first_error.or(task.first_error);
    }
    Ok(report)
}

/// Row `id` through stratacache, its loader returning the row's version as
/// the entry's version too (used by the version guard, ignored by leases).
async fn read_through(
    cache: &Cache,
    opts: &EntryOptions,
    key: &str,
    db: &Arc<tokio_postgres::Client>,
    table: &str,
    id: i32,
) -> Result<i64, Error> {
    let (db, table) = (db.clone(), table.to_string());
    let fetched = cache
        .get_or_load_with_context(key, opts, move |_| async move {
            let version = load_version(&db, &table, id).await?;
            Ok::<_, tokio_postgres::Error>(Loaded::value(version).version(version as u64))
        })
        .await?;
    fetched.into_value().ok_or(Error::Absent(id))
}

/// The "database read" of both sides, slowed at random before and after the
/// SELECT so that fills race with writes.
pub(super) async fn load_version(
    db: &tokio_postgres::Client,
    table: &str,
    id: i32,
) -> Result<i64, tokio_postgres::Error> {
    let (before, after) = (rand::random_range(0..10u64), rand::random_range(0..15u64));
    tokio::time::sleep(Duration::from_millis(before)).await;
    let row = db
        .query_one(
            &format!("SELECT version FROM {table} WHERE id = $1"),
            &[&id],
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(after)).await;
    Ok(row.get(0))
}
