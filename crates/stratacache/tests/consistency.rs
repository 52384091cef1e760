//! The consistency checker (`stratacache_check::consistency`): writers
//! update rows in PostgreSQL and invalidate; readers in three other processes
//! read through the cache, with loaders slowed at random to provoke the
//! stale-set race; every operation is recorded with its start and end. A
//! read is stale when it returns a version older than one acknowledged
//! (committed and invalidated) before the read began, past the L1
//! propagation bound.
//!
//! The same scenario runs three times: with stratacache guarding fills by
//! lease revocation and by version compare-and-set (expected: 0 stale reads
//! each), and with the naive cache-aside of the seed articles — GET, on a
//! miss load and SET; on write DELETE — which must show stale reads, proving
//! that the checker can see them.

#[macro_use]
mod common;

use std::process::Child;
use std::time::Duration;

use common::Target;
use stratacache::{Cache, RedisTopology};
use stratacache_check::consistency::{
    create_table, drop_table, now_us, run_reader, run_writers, stale_reads, Mode, Plan, Postgres,
    Report,
};

const WORKER_ENV: &str = "STRATACACHE_CONSISTENCY_WORKER";
const ROWS: i32 = 20;
const READER_PROCESSES: usize = 3;
const TASKS_PER_READER: usize = 8;
const WRITERS: usize = 2;
const RUN_FOR: Duration = Duration::from_secs(3);

against_every_target!(stratacache_serves_no_stale_reads_where_naive_cache_aside_does);

fn postgres() -> Postgres {
    Postgres::from_env("STRATACACHE_TEST_PG")
}

#[test]
#[ignore = "entry point of the reader processes started by the consistency test"]
fn consistency_reader() {
    common::worker::serve(WORKER_ENV, |plan: Plan| async move {
        run_reader(&plan, &postgres()).await.unwrap()
    });
}

/// One side: (stale reads, reads, writes).
async fn run(target: Target, mode: Mode) -> (usize, usize, usize) {
    let namespace = common::namespace(&format!("consistency-{mode:?}").to_lowercase());
    let table = format!("consistency_{}", namespace.replace(['-', '.'], "_")).to_lowercase();
    let db = postgres().connect().await.expect("PostgreSQL on loopback");
    create_table(&db, &table, ROWS).await.unwrap();
    let (topology, cluster) = match target.topology() {
        RedisTopology::Single(url) => (vec![url], false),
        RedisTopology::Cluster(nodes) => (nodes, true),
        other => panic!("{other:?}"),
    };
    let plan = Plan {
        mode,
        topology,
        cluster,
        namespace: namespace.clone(),
        table: table.clone(),
        rows: ROWS,
        tasks: TASKS_PER_READER,
        start_at_us: now_us() + 2_500_000,
        run_for_ms: RUN_FOR.as_millis() as u64,
    };
    let readers: Vec<Child> = (0..READER_PROCESSES)
        .map(|_| common::worker::spawn("consistency_reader", WORKER_ENV, &plan))
        .collect();
    let cache = Cache::builder()
        .namespace(namespace)
        .redis(target.topology())
        .build()
        .await
        .unwrap();
    let acks = run_writers(&plan, &cache, &postgres(), WRITERS)
        .await
        .unwrap();
    let reports: Vec<Report> = tokio::task::spawn_blocking(move || {
        readers.into_iter().map(common::worker::collect).collect()
    })
    .await
    .unwrap();
    drop_table(&db, &table).await.unwrap();
    for report in &reports {
        assert_eq!(
            report.errors, 0,
            "failed reads, the first: {:?}",
            report.first_error
        );
    }
    let reads: Vec<_> = reports.into_iter().flat_map(|r| r.reads).collect();
    let stale = stale_reads(&reads, &acks);
    for read in &stale {
        eprintln!("{read}");
    }
    (stale.len(), reads.len(), acks.len())
}

async fn stratacache_serves_no_stale_reads_where_naive_cache_aside_does(target: Target) {
    let (naive_stale, naive_reads, naive_writes) = run(target, Mode::Naive).await;
    let (stale, reads, writes) = run(target, Mode::Lease).await;
    let (v_stale, v_reads, v_writes) = run(target, Mode::Version).await;
    eprintln!(
        "{target:?}: naive {naive_stale} stale of {naive_reads} reads ({naive_writes} writes); \
         stratacache (leases) {stale} stale of {reads} reads ({writes} writes); \
         stratacache (versions) {v_stale} stale of {v_reads} reads ({v_writes} writes)"
    );
    for (reads, writes) in [(reads, writes), (v_reads, v_writes)] {
        assert!(
            reads > 1_000 && writes > 100,
            "enough traffic to mean something"
        );
    }
    assert!(
        naive_stale > 0,
        "the checker sees the naive pattern's stale sets"
    );
    assert_eq!(stale, 0, "no stale read past the L1 bound (leases)");
    assert_eq!(v_stale, 0, "no stale read past the L1 bound (versions)");
}
