//! The race simulation in CI: every named scenario over a fixed set of
//! seeds must show no stale read, no hidden write, and convergence; and a
//! seed must replay exactly. (`bench simulate` sweeps many more seeds.)

use stratacache_check::sim::{run, Settings};

/// Seeds per scenario in CI.
const SEEDS: u64 = 12;

#[test]
fn every_scenario_holds_for_the_ci_seeds() {
    let mut failures = Vec::new();
    for (name, settings) in Settings::scenarios() {
        for seed in 0..SEEDS {
            let report = run(seed, &settings);
            assert!(report.operations > 1_000, "{name} seed {seed} ran");
            if !report.passed() {
                failures.push(format!(
                    "{name} seed {seed} (faults {:?}):\n  {}",
                    report.faults,
                    report
                        .violations
                        .iter()
                        .take(5)
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n  ")
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_seed_replays_exactly() {
    let settings = Settings::default();
    let first = run(7, &settings);
    let second = run(7, &settings);
    assert_eq!(first.digest, second.digest);
    assert_eq!(first.operations, second.operations);
    assert_ne!(
        run(8, &settings).digest,
        first.digest,
        "another seed, another run"
    );
}
