//! Sweep seeds of the race simulation: `cargo run --release -p stratacache-check --example sweep -- 0 100`.

use stratacache_check::sim::{run, Settings};

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (from, to) = match args.as_slice() {
        [from, to, ..] => (*from, *to),
        [one] => (*one, *one + 1),
        [] => (0, 20),
    };
    let mut settings = Settings::default();
    if let Ok(faults) = std::env::var("SIM_FAULTS") {
        use stratacache_check::sim::FaultKind;
        settings.faults = faults
            .split(',')
            .filter_map(|f| match f {
                "pause" => Some(FaultKind::Pause),
                "refuse" => Some(FaultKind::RefuseWrites),
                "restart" => Some(FaultKind::Restart),
                "drop" => Some(FaultKind::DropSubscriptions),
                _ => None,
            })
            .collect();
    }
    settings.group_invalidations = std::env::var_os("SIM_NO_GROUPS").is_none();
    settings.late_joiner = std::env::var_os("SIM_NO_JOIN").is_none();
    let mut failed = 0;
    for seed in from..to {
        let started = std::time::Instant::now();
        if std::env::var_os("SIM_TWICE").is_some() {
            eprintln!("=== first");
            let _ = run(seed, &settings);
            eprintln!("=== second");
        }
        let report = run(seed, &settings);
        if !report.passed() {
            failed += 1;
        }
        println!(
            "seed {seed}: {} ops, {} violations, digest {:016x}, {:.1?}",
            report.operations,
            report.violations.len(),
            report.digest,
            started.elapsed()
        );
        for v in report.violations.iter().take(5) {
            println!("    {v}");
        }
        println!("    faults: {:?}", report.faults);
    }
    println!("{failed} of {} seeds failed", to - from);
}
