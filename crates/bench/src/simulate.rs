//! `bench simulate`: the race simulation (`stratacache-check`) over many
//! seeds of every scenario — the soak of what CI checks on a fixed few.
//! Each failing seed is printed with what it found; `cargo run --release -p
//! stratacache-check --example sweep -- <seed>` replays one (`SIM_TRACE=1`
//! prints its history).

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use serde_json::{json, Value};
use stratacache_check::sim::{run as simulate, Settings};

#[derive(Args, Debug, Clone)]
pub struct SimulateArgs {
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Seeds per scenario.
    #[arg(long, default_value_t = 200)]
    seeds: u64,
    /// Only these scenarios (refused-writes, invalidate-then-write,
    /// frozen-redis, new-instance, everything); default: all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

pub async fn run(args: &SimulateArgs) -> Result<Value> {
    let args = args.clone();
    tokio::task::spawn_blocking(move || sweep(&args)).await?
}

fn sweep(args: &SimulateArgs) -> Result<Value> {
    let mut results = Vec::new();
    for (name, settings) in Settings::scenarios() {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == name) {
            continue;
        }
        let started = Instant::now();
        let (mut failed, mut operations) = (Vec::new(), 0usize);
        for seed in args.from..args.from + args.seeds {
            let report = simulate(seed, &settings);
            operations += report.operations;
            if !report.passed() {
                eprintln!("{name} seed {seed}: {} violations", report.violations.len());
                for violation in report.violations.iter().take(3) {
                    eprintln!("    {violation}");
                }
                failed.push(seed);
            }
        }
        eprintln!(
            "{name}: {} of {} seeds failed, {operations} operations, {:.1?}",
            failed.len(),
            args.seeds,
            started.elapsed()
        );
        results.push(json!({
            "scenario": name,
            "seeds": args.seeds,
            "from": args.from,
            "failed_seeds": failed,
            "operations": operations,
            "seconds": started.elapsed().as_secs_f64(),
        }));
    }
    Ok(json!({ "scenario": "simulate", "results": results }))
}
