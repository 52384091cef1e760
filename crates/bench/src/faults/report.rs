//! The tables of RELIABILITY.md, between the fault suite's markers.
//!
//! Rows are kept in `bench-results/faults.json` beside the file written, so
//! a run of some scenarios (`--only`) replaces their rows and keeps the
//! others' from earlier runs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{Group, Row, ALL, LOADER_ALLOWANCE, REDIS_TIMEOUTS_PER_REQUEST};

const BEGIN: &str =
    "<!-- fault suite: begin (written by `bench faults --write RELIABILITY.md`) -->";
const END: &str = "<!-- fault suite: end -->";

fn store_path(written: &Path) -> PathBuf {
    written
        .parent()
        .unwrap_or(Path::new("."))
        .join("bench-results")
        .join("faults.json")
}

fn merged(store: &Path, fresh: &[Row]) -> Vec<Row> {
    let mut rows: Vec<Row> = std::fs::read_to_string(store)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    rows.retain(|r| ALL.contains(&r.scenario.as_str()));
    for row in fresh {
        rows.retain(|r| r.scenario != row.scenario);
        rows.push(row.clone());
    }
    let rank = |r: &Row| {
        ALL.iter()
            .position(|s| *s == r.scenario)
            .unwrap_or(usize::MAX)
    };
    rows.sort_by_key(rank);
    rows
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn met(row: &Row) -> &'static str {
    if row.met {
        "**yes**"
    } else {
        "**no**"
    }
}

fn tables(rows: &[Row]) -> String {
    let mut out = format!(
        "{BEGIN}\n\n## Faults under load\n\n\
         Build first: `cargo build --release -p stratacache-bench -p market`; \
         `./target/release/bench faults --write RELIABILITY.md` runs every row and rewrites these \
         tables (`--only a,b` runs some and keeps the other rows; `--quick` holds faults 3 s \
         instead of 10 s). The rows are also in `bench-results/faults.json`. Latency targets \
         allow {REDIS_TIMEOUTS_PER_REQUEST} Redis timeout(s) per request plus {} ms for the \
         loader (`REDIS_TIMEOUTS_PER_REQUEST` in `crates/bench/src/faults/mod.rs`). \
         The machine has 2 cores shared with other work: the load average (1 min) at the start \
         of each row is given.\n\n\
         | scenario | against | what was done | load held | requests | errors seen | latency during the fault: p99 / max | recovered after | data lost | target | met | load avg | reproduce |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        LOADER_ALLOWANCE.as_millis()
    );
    for r in rows.iter().filter(|r| r.group == Group::Load) {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.scenario,
            r.against,
            cell(&r.done),
            cell(&r.load),
            r.requests,
            cell(&r.errors),
            cell(&r.latency),
            cell(&r.recovered),
            cell(&r.lost),
            cell(&r.target),
            met(r),
            r.load_average,
            r.command()
        ));
    }
    for (group, title) in [(Group::Input, "Bad input"), (Group::Security, "Security")] {
        out.push_str(&format!(
            "\n## {title}\n\n\
             | scenario | against | what was done | attempts | errors seen | data lost | target | met | reproduce |\n\
             |---|---|---|---|---|---|---|---|---|\n"
        ));
        for r in rows.iter().filter(|r| r.group == group) {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.scenario,
                r.against,
                cell(&r.done),
                r.requests,
                cell(&r.errors),
                cell(&r.lost),
                cell(&r.target),
                met(r),
                r.command()
            ));
        }
    }
    out.push('\n');
    out.push_str(END);
    out
}

/// Merge `fresh` into the stored rows and rewrite the tables in `path`.
pub fn write(path: &str, fresh: &[Row]) -> Result<()> {
    let path = Path::new(path);
    let store = store_path(path);
    let rows = merged(&store, fresh);
    if let Some(dir) = store.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&store, serde_json::to_string_pretty(&rows)? + "\n")
        .with_context(|| format!("writing {}", store.display()))?;
    let table = tables(&rows);
    let current = std::fs::read_to_string(path).unwrap_or_else(|_| "# Reliability\n".into());
    let updated = match (current.find(BEGIN), current.find(END)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{table}{}", &current[..b], &current[e + END.len()..])
        }
        _ => format!("{}\n\n{table}\n", current.trim_end()),
    };
    std::fs::write(path, updated).with_context(|| format!("writing {}", path.display()))
}
