//! `peers --sweep-callers`: the peers workload at several caller counts,
//! from an empty cache and after a warm-up, and a plot of ops/s and p99
//! against callers for every side — where each side saturates, and whether
//! the library's tail stays below the hand-rolled code's as callers grow.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::{measure, PeersArgs, SIDES};
use crate::progress;
use crate::report::round;
use crate::scaling::svg::{self, Panel, Series};

/// One measured point: side, callers, ops/s, p99 in µs.
type Point = (String, usize, f64, f64);

pub(super) async fn sweep(
    url: &str,
    args: &PeersArgs,
    side_ns: &dyn Fn(&str) -> String,
) -> Result<Value> {
    let mut phases = Vec::new();
    for cold in [true, false] {
        let phase = if cold { "cold" } else { "warm" };
        let mut points: Vec<Point> = Vec::new();
        for &callers in &args.sweep_callers {
            let mut point_args = args.clone();
            point_args.callers = callers;
            point_args.cold = cold;
            progress!("peers sweep: {phase}, {callers} callers");
            let figures = measure(url, &point_args, side_ns).await?;
            for side in SIDES {
                let Some(s) = figures["sides"].get(side) else {
                    continue;
                };
                if let (Some(ops), Some(p99)) = (s["ops_per_sec"].as_f64(), s["p99_us"].as_f64()) {
                    points.push((side.to_owned(), callers, ops, p99));
                }
            }
        }
        phases.push((phase, points));
    }

    let mut panels = Vec::new();
    for (phase, points) in &phases {
        let start = if *phase == "cold" {
            "from an empty cache"
        } else {
            "after the warm-up"
        };
        panels.push(panel(&format!("ops/s, {start}"), "ops/s", points, |p| p.2));
        panels.push(panel(
            &format!("p99, {start}"),
            "p99 latency, µs",
            points,
            |p| p.3,
        ));
    }
    let plot = svg::render(
        &format!(
            "peers workload against callers ({} keys, Zipf {}, {} ms loader, one Redis on loopback)",
            args.keys, args.theta, args.loader_ms
        ),
        &panels,
        2,
    );
    let out = args.sweep_svg.clone().unwrap_or_else(default_svg_path);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&out, plot).with_context(|| format!("writing {}", out.display()))?;
    progress!("peers sweep: plot written to {}", out.display());

    let table: serde_json::Map<String, Value> = phases
        .iter()
        .map(|(phase, points)| {
            let rows: Vec<Value> = points
                .iter()
                .map(|(side, callers, ops, p99)| {
                    json!({ "side": side, "callers": callers,
                            "ops_per_sec": round(*ops, 0), "p99_us": round(*p99, 1) })
                })
                .collect();
            ((*phase).to_owned(), Value::Array(rows))
        })
        .collect();
    Ok(json!({
        "scenario": "peers-sweep",
        "keys": args.keys,
        "theta": args.theta,
        "loader_ms": args.loader_ms,
        "rounds": args.rounds,
        "secs_per_round": args.duration_secs as f64 / f64::from(args.rounds),
        "warmup_calls_per_side": args.warmup_calls,
        "points": table,
        "svg": out.display().to_string(),
    }))
}

/// One panel: a series per side, `y` of each point against its callers.
fn panel(title: &str, y_label: &str, points: &[Point], y: impl Fn(&Point) -> f64) -> Panel {
    let series = SIDES
        .iter()
        .filter_map(|side| {
            let pts: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| p.0 == *side)
                .map(|p| (p.1 as f64, y(p).max(f64::MIN_POSITIVE)))
                .collect();
            (!pts.is_empty()).then(|| Series {
                name: (*side).to_owned(),
                points: pts,
            })
        })
        .collect();
    Panel {
        title: title.to_owned(),
        x_label: "concurrent callers".to_owned(),
        y_label: y_label.to_owned(),
        series,
    }
}

fn default_svg_path() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repo = manifest.ancestors().nth(2).unwrap_or(manifest);
    repo.join("bench-results").join("peers-callers.svg")
}
