//! The deterministic race simulation.
//!
//! A run is a seed and [`Settings`]: several [`Cache`](stratacache::Cache)
//! instances on one simulated Redis (`stratacache::simulation::SimRedis`, a
//! connection-level stand-in that runs the library's own Lua scripts), a
//! "database" of versioned rows, and a plan drawn from the seed — reads
//! through `get_or_load` (loaders that read a row and return late, the
//! stale-set race), plain `get`s, writes (`set`, `delete`, `write_through`,
//! tag, prefix and namespace invalidations, an invalidation followed at once
//! by a write), and faults: Redis paused, refusing writes, killed and
//! restarted empty, subscriptions dropped, a new instance joining.
//!
//! Everything runs on one thread with tokio's clock paused, so the
//! interleaving is a function of the seed: a failing seed is a test forever.
//! [`run`] checks the history ([`history`]): no read returns a version older
//! than a write acknowledged more than [`STALENESS_BOUND`] before it began
//! (outside a fault and its recovery), no write is hidden from a later `get`,
//! and once Redis is healthy again every instance converges on the database.

mod history;
mod plan;
mod world;

use std::time::Duration;

pub use history::Violation;

/// A way Redis fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Frozen (SIGSTOP): connections open, nothing answered.
    Pause,
    /// `maxmemory` reached with `noeviction`: writes refused, reads, deletes
    /// and PUBLISH still served.
    RefuseWrites,
    /// Killed, then restarted without data.
    Restart,
    /// Every subscription's connection dropped.
    DropSubscriptions,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 4] = [
        FaultKind::Pause,
        FaultKind::RefuseWrites,
        FaultKind::Restart,
        FaultKind::DropSubscriptions,
    ];
}

/// How long after an acknowledged write an instance may still serve the old
/// value when nothing fails: the backplane's delivery.
pub const STALENESS_BOUND: Duration = Duration::from_millis(100);
/// How long after a fault ends reads are not held to the bound: the breaker's
/// probe, the replay of what failed, the backplane's resubscription.
pub const RECOVERY: Duration = Duration::from_millis(1_500);

/// The shape of a run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Cache instances at the start.
    pub instances: usize,
    /// Tag groups; each holds `keys_per_group` keys (`g{group}:k{i}`,
    /// tagged `g{group}`).
    pub groups: usize,
    /// Keys per group.
    pub keys_per_group: usize,
    /// Virtual time the workload runs for.
    pub run_for: Duration,
    /// Mean virtual time between two operations.
    pub mean_gap: Duration,
    /// The faults to inject into Redis, one per cycle, drawn among these.
    pub faults: Vec<FaultKind>,
    /// Tag, prefix and namespace invalidations besides key writes.
    pub group_invalidations: bool,
    /// Let a new instance join during the run.
    pub late_joiner: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            instances: 3,
            groups: 4,
            keys_per_group: 6,
            run_for: Duration::from_secs(24),
            mean_gap: Duration::from_millis(4),
            faults: FaultKind::ALL.to_vec(),
            group_invalidations: true,
            late_joiner: true,
        }
    }
}

impl Settings {
    /// The named shapes the test suite runs, each aimed at one way writes
    /// and invalidations have been lost (issue numbers in `ARCHITECTURE.md`):
    ///
    /// - `refused-writes`: Redis refuses writes while keys are written and read;
    /// - `invalidate-then-write`: tag invalidations followed at once by writes;
    /// - `frozen-redis`: Redis paused while every kind of invalidation runs;
    /// - `new-instance`: an instance joins while keys are being written;
    /// - `everything`: all of it, every fault.
    pub fn scenarios() -> Vec<(&'static str, Settings)> {
        let quiet = Settings {
            faults: Vec::new(),
            ..Settings::default()
        };
        vec![
            (
                "refused-writes",
                Settings {
                    faults: vec![FaultKind::RefuseWrites],
                    group_invalidations: false,
                    late_joiner: false,
                    ..Settings::default()
                },
            ),
            (
                "invalidate-then-write",
                Settings {
                    late_joiner: false,
                    ..quiet.clone()
                },
            ),
            (
                "frozen-redis",
                Settings {
                    faults: vec![FaultKind::Pause],
                    late_joiner: false,
                    ..Settings::default()
                },
            ),
            (
                "new-instance",
                Settings {
                    group_invalidations: false,
                    ..quiet
                },
            ),
            ("everything", Settings::default()),
        ]
    }
}

/// What a run did and what it found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The seed of the run.
    pub seed: u64,
    /// Operations completed (reads and writes).
    pub operations: usize,
    /// Faults injected, in order (`"pause 1.2s at 3.4s"` …).
    pub faults: Vec<String>,
    /// Everything the checks found (empty: the run passed).
    pub violations: Vec<Violation>,
    /// A digest of the whole history: the same seed gives the same digest.
    pub digest: u64,
}

impl Report {
    /// Whether no check failed.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Run one seed.
pub fn run(seed: u64, settings: &Settings) -> Report {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_time().start_paused(true);
    // tokio's own choices (a `select!`'s first branch, the order a watch
    // channel wakes its waiters) follow the seed too (see .cargo/config.toml).
    #[cfg(tokio_unstable)]
    builder.rng_seed(tokio::runtime::RngSeed::from_bytes(&seed.to_le_bytes()));
    let runtime = builder.build().expect("a current-thread runtime");
    runtime.block_on(world::run(seed, settings))
}
