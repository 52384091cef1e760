//! What happens when: the run's timeline, drawn from the seed before it starts.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;

use super::{FaultKind, Settings};

/// An instance chosen by a draw, resolved against the instances alive when
/// the operation runs.
pub(super) type Pick = u32;

#[derive(Debug, Clone, Copy)]
pub(super) enum Op {
    /// `get_or_load` with a loader that reads the row and returns late.
    Load { on: Pick, key: usize },
    /// A plain `get`.
    Get { on: Pick, key: usize },
    /// Write the row, then `set` its new value.
    Set { on: Pick, key: usize },
    /// Write the row, then `delete` the key.
    Delete { on: Pick, key: usize },
    /// `write_through`: the row is written inside the writer.
    WriteThrough { on: Pick, key: usize },
    /// Write every row of a group, then `invalidate_tag`.
    Tag { on: Pick, group: usize },
    /// Write a group, `invalidate_tag`, then at once `set` one of its keys.
    TagThenSet { on: Pick, group: usize, key: usize },
    /// Write every row of a group, then `invalidate_prefix`.
    Prefix { on: Pick, group: usize },
    /// Write every row, then `invalidate_all`.
    Clear { on: Pick },
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Fault {
    /// SIGSTOP for this long.
    Pause(Duration),
    /// `maxmemory` with `noeviction` for this long.
    RefuseWrites(Duration),
    /// Killed for this long, then restarted without data.
    Restart(Duration),
    /// Every subscription's connection ends.
    DropSubscriptions,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Event {
    Op(Op),
    Fault(Fault),
    /// A new instance starts.
    Join,
}

/// The timeline, in virtual time from the start of the run: cycles of a
/// busy phase (reads, writes, a fault) and a quiet one (reads only), so that
/// whatever a fault left stale is still there to be read once the fault and
/// its recovery are over.
pub(super) fn draw(rng: &mut StdRng, settings: &Settings) -> Vec<(Duration, Event)> {
    let keys = settings.groups * settings.keys_per_group;
    let mut events = Vec::new();
    let mut at = Duration::ZERO;
    loop {
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        at += settings.mean_gap.mul_f64(-u.ln());
        if at >= settings.run_for {
            break;
        }
        let busy = at.as_millis() % CYCLE.as_millis() < BUSY.as_millis();
        let on: Pick = rng.random();
        // Half the operations go to a few hot keys (one per group).
        let key = if rng.random_bool(0.5) {
            rng.random_range(0..settings.groups) * settings.keys_per_group
        } else {
            rng.random_range(0..keys)
        };
        let group = rng.random_range(0..settings.groups);
        let op = match rng.random_range(0..100) {
            0..50 => Op::Load { on, key },
            50..60 => Op::Get { on, key },
            _ if !busy => Op::Load { on, key },
            90.. if !settings.group_invalidations => Op::Set { on, key },
            60..74 => Op::Set { on, key },
            74..84 => Op::Delete { on, key },
            84..90 => Op::WriteThrough { on, key },
            90..94 => Op::Tag { on, group },
            94..97 => Op::TagThenSet {
                on,
                group,
                key: group * settings.keys_per_group + rng.random_range(0..settings.keys_per_group),
            },
            97..99 => Op::Prefix { on, group },
            _ => Op::Clear { on },
        };
        events.push((at, Event::Op(op)));
    }
    let cycles = (settings.run_for.as_millis() / CYCLE.as_millis()) as u32;
    for cycle in 0..cycles {
        let busy_from = CYCLE * cycle;
        if !settings.faults.is_empty() {
            // Ending near the end of the busy phase: what the fault left
            // stale is not written over before the quiet phase reads it.
            let lasts = Duration::from_millis(rng.random_range(200..1_000));
            let ends = busy_from + BUSY - Duration::from_millis(rng.random_range(0..300));
            let at = ends.saturating_sub(lasts);
            let fault = match settings.faults[rng.random_range(0..settings.faults.len())] {
                FaultKind::Pause => Fault::Pause(lasts),
                FaultKind::RefuseWrites => Fault::RefuseWrites(lasts),
                FaultKind::Restart => Fault::Restart(lasts),
                FaultKind::DropSubscriptions => Fault::DropSubscriptions,
            };
            events.push((at, Event::Fault(fault)));
        }
    }
    if settings.late_joiner && cycles > 1 {
        let cycle = rng.random_range(1..cycles);
        let at = CYCLE * cycle + BUSY - Duration::from_millis(rng.random_range(0..300));
        events.push((at, Event::Join));
    }
    events.sort_by_key(|(at, _)| *at);
    events
}

/// A cycle of the timeline, and its busy part.
const CYCLE: Duration = Duration::from_secs(6);
const BUSY: Duration = Duration::from_millis(2_500);
