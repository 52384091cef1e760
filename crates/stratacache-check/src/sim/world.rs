//! Running a plan: the simulated Redis, the database, the instances, and the
//! operations and faults of the timeline.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stratacache::simulation::SimRedis;
use stratacache::{BreakerConfig, Cache, EntryOptions};
use tokio::task::JoinSet;

use super::history::{History, ReadVia, Violation, WriteKind};
use super::plan::{self, Event, Fault, Op, Pick};
use super::{Report, Settings, RECOVERY};

/// The virtual wall clock starts here (2027-01-15), far from zero so that
/// "created at or before 0" never matches by accident.
const EPOCH_MS: u64 = 1_800_000_000_000;
/// The longest one-way latency of the simulated Redis.
const MAX_LATENCY: Duration = Duration::from_millis(2);
/// Entries outlive the run: whatever is stale is stale until it is fixed.
const TTL: Duration = Duration::from_secs(600);

struct World {
    settings: Settings,
    redis: SimRedis,
    start: tokio::time::Instant,
    db: Mutex<Db>,
    /// Writers of a row hold its lock from their database write until the
    /// cache has been told (a row lock held across the cache update), so the
    /// cache sees writes of a row in the order the database committed them.
    /// Without it two writers race in any cache-aside design; version
    /// compare-and-set is the answer when writers cannot be serialized.
    row_locks: Vec<tokio::sync::Mutex<()>>,
    instances: Mutex<Vec<Cache>>,
    history: Mutex<History>,
    /// Loader delays, drawn as the loads run.
    rng: Mutex<StdRng>,
    faults: Mutex<Vec<String>>,
}

/// The source of truth: a version per row, every write a new one.
struct Db {
    versions: Vec<u64>,
    next: u64,
}

impl Db {
    fn write(&mut self, key: usize) -> u64 {
        self.next += 1;
        self.versions[key] = self.next;
        self.next
    }
}

pub(super) async fn run(seed: u64, settings: &Settings) -> Report {
    let mut rng = StdRng::seed_from_u64(seed);
    let events = plan::draw(&mut rng, settings);
    let keys = settings.groups * settings.keys_per_group;
    let world = Arc::new(World {
        settings: settings.clone(),
        redis: SimRedis::new(seed, EPOCH_MS, MAX_LATENCY),
        start: tokio::time::Instant::now(),
        db: Mutex::new(Db {
            versions: vec![0; keys],
            next: 0,
        }),
        row_locks: (0..keys).map(|_| tokio::sync::Mutex::new(())).collect(),
        instances: Mutex::new(Vec::new()),
        history: Mutex::default(),
        rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0x5eed)),
        faults: Mutex::default(),
    });
    for _ in 0..settings.instances {
        world.join().await;
    }
    let mut tasks = JoinSet::new();
    let watching = Arc::clone(&world);
    let monitor = tokio::spawn(async move { watching.watch_backplanes().await });
    for (at, event) in events {
        tokio::time::sleep_until(world.start + at).await;
        match event {
            Event::Op(op) => {
                tasks.spawn(Arc::clone(&world).perform(op));
            }
            Event::Fault(fault) => {
                tasks.spawn(Arc::clone(&world).inject(fault));
            }
            Event::Join => {
                // A new instance takes traffic at once: it reads every key.
                world.join().await;
                let joined = world.instances.lock().expect("instances").len() - 1;
                for key in 0..keys {
                    let on = joined as Pick;
                    tasks.spawn(Arc::clone(&world).perform(Op::Load { on, key }));
                }
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    monitor.abort();

    // Heal, give recovery its time, then every instance must agree with
    // the database.
    world.redis.resume();
    world.redis.refuse_writes(false);
    tokio::time::sleep(RECOVERY + Duration::from_secs(2)).await;
    let mut violations = world
        .history
        .lock()
        .expect("history")
        .check(|k| world.key_name(k));
    violations.extend(world.converged().await);
    let (operations, digest) = {
        let history = world.history.lock().expect("history");
        (history.operations(), history.digest())
    };
    let faults = world.faults.lock().expect("faults").clone();
    Report {
        seed,
        operations,
        faults,
        violations,
        digest,
    }
}

impl World {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn key_name(&self, key: usize) -> String {
        let per = self.settings.keys_per_group;
        format!("g{}:k{}", key / per, key % per)
    }

    fn group_keys(&self, group: usize) -> std::ops::Range<usize> {
        let per = self.settings.keys_per_group;
        group * per..(group + 1) * per
    }

    fn options(&self, key: usize) -> EntryOptions {
        let group = key / self.settings.keys_per_group;
        EntryOptions::new().ttl(TTL).tags([format!("g{group}")])
    }

    fn instance(&self, pick: Pick) -> (usize, Cache) {
        let instances = self.instances.lock().expect("instances");
        let i = pick as usize % instances.len();
        (i, instances[i].clone())
    }

    /// A new instance starts and takes part from now on.
    async fn join(&self) {
        let cache = Cache::builder()
            .namespace("sim")
            .simulated_redis(&self.redis)
            .redis_timeout(Duration::from_millis(250))
            .breaker(BreakerConfig {
                failure_threshold: 3,
                probe_interval: Duration::from_millis(250),
            })
            .backplane_outage_l1_max_age(Duration::from_millis(500))
            .metrics(false)
            .build()
            .await
            .expect("a simulated cache builds");
        self.instances.lock().expect("instances").push(cache);
    }

    /// A loader's think time: mostly quick, now and then slow enough for a
    /// write to overtake it.
    fn delay(&self) -> Duration {
        let mut rng = self.rng.lock().expect("rng");
        match rng.random_range(0..10) {
            0..6 => Duration::ZERO,
            6..9 => Duration::from_millis(rng.random_range(1..5)),
            _ => Duration::from_millis(rng.random_range(5..40)),
        }
    }

    fn write_rows(&self, keys: impl IntoIterator<Item = usize>) -> Vec<(usize, u64)> {
        let mut db = self.db.lock().expect("db");
        keys.into_iter().map(|k| (k, db.write(k))).collect()
    }

    fn acknowledge(
        &self,
        writes: &[(usize, u64)],
        kind: (WriteKind, &str),
        (start_ms, start_seq): (u64, u64),
    ) {
        let acked = self.now_ms();
        let mut history = self.history.lock().expect("history");
        for &(key, version) in writes {
            history.write(key, version, kind, (start_ms, acked), start_seq);
        }
    }

    /// When an operation begins: virtual ms and position in the history.
    fn begin(&self) -> (u64, u64) {
        (self.now_ms(), self.history.lock().expect("history").begin())
    }

    async fn load(self: &Arc<Self>, cache: &Cache, key: usize) -> Option<u64> {
        let world = Arc::clone(self);
        cache
            .get_or_load(
                &self.key_name(key),
                &self.options(key),
                move || async move {
                    tokio::time::sleep(world.delay()).await;
                    let version = world.db.lock().expect("db").versions[key];
                    tokio::time::sleep(world.delay()).await;
                    Ok::<u64, Infallible>(version)
                },
            )
            .await
            .ok()
    }

    /// Lock the rows an operation writes, in key order.
    async fn lock_rows(&self, op: Op) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let keys = self.settings.groups * self.settings.keys_per_group;
        let rows = match op {
            Op::Load { .. } | Op::Get { .. } => 0..0,
            Op::Set { key, .. } | Op::Delete { key, .. } | Op::WriteThrough { key, .. } => {
                key..key + 1
            }
            Op::Tag { group, .. } | Op::TagThenSet { group, .. } | Op::Prefix { group, .. } => {
                self.group_keys(group)
            }
            Op::Clear { .. } => 0..keys,
        };
        let mut guards = Vec::with_capacity(rows.len());
        for row in rows {
            guards.push(self.row_locks[row].lock().await);
        }
        guards
    }

    async fn perform(self: Arc<Self>, op: Op) {
        let _rows = self.lock_rows(op).await;
        let start = self.begin();
        match op {
            Op::Load { on, key } => {
                let (i, cache) = self.instance(on);
                let value = self.load(&cache, key).await;
                if value.is_some() {
                    let span = (start.0, self.now_ms());
                    let mut history = self.history.lock().expect("history");
                    history.read(i, key, ReadVia::Load, span, value);
                }
            }
            Op::Get { on, key } => {
                let (i, cache) = self.instance(on);
                let value = cache.get::<u64>(&self.key_name(key)).await.ok().flatten();
                let span = (start.0, self.now_ms());
                let mut history = self.history.lock().expect("history");
                history.read(i, key, ReadVia::Get, span, value);
            }
            Op::Set { on, key } => {
                let (_, cache) = self.instance(on);
                let written = self.write_rows([key]);
                let _ = cache
                    .set(&self.key_name(key), &written[0].1, &self.options(key))
                    .await;
                self.acknowledge(&written, (WriteKind::Put, "set"), start);
            }
            Op::Delete { on, key } => {
                let (_, cache) = self.instance(on);
                let written = self.write_rows([key]);
                let _ = cache.delete(&self.key_name(key)).await;
                self.acknowledge(&written, (WriteKind::Invalidate, "delete"), start);
            }
            Op::WriteThrough { on, key } => {
                let (_, cache) = self.instance(on);
                let world = Arc::clone(&self);
                let written = cache
                    .write_through(
                        &self.key_name(key),
                        &self.options(key),
                        move || async move { Ok::<u64, Infallible>(world.write_rows([key])[0].1) },
                    )
                    .await;
                if let Ok(version) = written {
                    self.acknowledge(&[(key, version)], (WriteKind::Put, "write_through"), start);
                }
            }
            Op::Tag { on, group } => {
                let (_, cache) = self.instance(on);
                let written = self.write_rows(self.group_keys(group));
                let _ = cache.invalidate_tag(&format!("g{group}")).await;
                self.acknowledge(&written, (WriteKind::Invalidate, "tag"), start);
            }
            Op::TagThenSet { on, group, key } => {
                let (_, cache) = self.instance(on);
                let written = self.write_rows(self.group_keys(group));
                let _ = cache.invalidate_tag(&format!("g{group}")).await;
                self.acknowledge(&written, (WriteKind::Invalidate, "tag"), start);
                let start = self.begin();
                let written = self.write_rows([key]);
                let _ = cache
                    .set(&self.key_name(key), &written[0].1, &self.options(key))
                    .await;
                self.acknowledge(&written, (WriteKind::Put, "set after tag"), start);
            }
            Op::Prefix { on, group } => {
                let (_, cache) = self.instance(on);
                let written = self.write_rows(self.group_keys(group));
                let _ = cache.invalidate_prefix(&format!("g{group}:")).await;
                self.acknowledge(&written, (WriteKind::Invalidate, "prefix"), start);
            }
            Op::Clear { on } => {
                let (_, cache) = self.instance(on);
                let keys = self.settings.groups * self.settings.keys_per_group;
                let written = self.write_rows(0..keys);
                let _ = cache.invalidate_all().await;
                self.acknowledge(&written, (WriteKind::Invalidate, "clear"), start);
            }
        }
    }

    async fn inject(self: Arc<Self>, fault: Fault) {
        let start = self.now_ms();
        let restarted = matches!(fault, Fault::Restart(_));
        match fault {
            Fault::Pause(lasts) => {
                self.redis.pause();
                tokio::time::sleep(lasts).await;
                self.redis.resume();
            }
            Fault::RefuseWrites(lasts) => {
                self.redis.refuse_writes(true);
                tokio::time::sleep(lasts).await;
                self.redis.refuse_writes(false);
            }
            Fault::Restart(lasts) => {
                self.redis.go_down();
                tokio::time::sleep(lasts).await;
                self.redis.restart_empty();
            }
            Fault::DropSubscriptions => self.redis.drop_subscriptions(),
        }
        let end = self.now_ms();
        self.faults
            .lock()
            .expect("faults")
            .push(format!("{fault:?} at {start} ms"));
        self.history
            .lock()
            .expect("history")
            .fault(start, end, restarted);
    }

    /// Record when each instance does not hear the backplane: its L1 may
    /// then serve entries up to `backplane_outage_l1_max_age` old, by design.
    async fn watch_backplanes(self: Arc<Self>) {
        let mut down_since: Vec<Option<u64>> = Vec::new();
        loop {
            let instances = self.instances.lock().expect("instances").clone();
            down_since.resize(instances.len(), None);
            let now = self.now_ms();
            for (i, cache) in instances.iter().enumerate() {
                let up = cache.backplane_connected() == Some(true);
                match (up, down_since[i]) {
                    (false, None) => down_since[i] = Some(now),
                    (true, Some(since)) => {
                        down_since[i] = None;
                        self.history
                            .lock()
                            .expect("history")
                            .backplane_down(i, since, now);
                    }
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Every instance answers every key with the database's version.
    async fn converged(self: &Arc<Self>) -> Vec<Violation> {
        let instances = self.instances.lock().expect("instances").clone();
        let keys = self.settings.groups * self.settings.keys_per_group;
        let mut found = Vec::new();
        for (i, cache) in instances.iter().enumerate() {
            for key in 0..keys {
                let expected = self.db.lock().expect("db").versions[key];
                let got = cache.get::<u64>(&self.key_name(key)).await.ok().flatten();
                if got.is_some_and(|v| v != expected) {
                    found.push(Violation::NotConverged {
                        instance: i,
                        key: self.key_name(key),
                        via: "get",
                        returned: got,
                        expected,
                    });
                }
                let loaded = self.load(cache, key).await;
                if loaded != Some(expected) {
                    found.push(Violation::NotConverged {
                        instance: i,
                        key: self.key_name(key),
                        via: "get_or_load",
                        returned: loaded,
                        expected,
                    });
                }
            }
        }
        found
    }
}
