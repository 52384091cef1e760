//! Turning a batch of stream entries into one write per key: the last value
//! wins (by stream order), counter deltas are summed.
//!
//! Every write keeps its id, because the sink decides per write whether it was
//! already applied: after a crash, a reclaimed batch can overlap an applied
//! one partly.

use std::collections::{BTreeMap, HashSet};

use super::stream::{EntryId, Op, StreamEntry};

/// A coalesced batch: at most one value write and one counter write per key,
/// keys in sorted order (so concurrent transactions lock rows in one order).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// The newest value per key.
    pub values: Vec<ValueWrite>,
    /// The deltas per counter.
    pub counters: Vec<CounterWrite>,
}

/// The newest value written to a key within a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueWrite {
    /// The key (as given by the writer).
    pub key: String,
    /// The value, JSON-encoded.
    pub json: Vec<u8>,
    /// Orders writes of one key across batches: the stream entry id, or the
    /// wall clock for a write that went to the sink directly.
    pub version: EntryId,
    /// The id of the write that produced this value.
    pub write_id: String,
    /// Older writes of the key in this batch that this one supersedes
    /// (recorded as applied with it).
    pub superseded: Vec<(String, EntryId)>,
}

/// The increments of one counter within a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct CounterWrite {
    /// The counter's key.
    pub key: String,
    /// Each increment: its write id, its stream entry id, its delta.
    pub parts: Vec<(String, EntryId, i64)>,
}

impl CounterWrite {
    /// The sum of the deltas.
    pub fn total(&self) -> i64 {
        self.parts.iter().map(|(_, _, d)| d).sum()
    }
}

impl Batch {
    /// Coalesce entries read from the stream (in stream order).
    pub(crate) fn from_entries(entries: &[StreamEntry]) -> Batch {
        let mut values: BTreeMap<&str, ValueWrite> = BTreeMap::new();
        let mut counters: BTreeMap<&str, CounterWrite> = BTreeMap::new();
        let mut sorted: Vec<&StreamEntry> = entries.iter().collect();
        sorted.sort_by_key(|e| e.id);
        // A write id seen twice (a replayed dead letter next to its
        // original) is one write.
        let mut seen = HashSet::new();
        sorted.retain(|e| seen.insert(e.write_id.as_str()));
        for entry in sorted {
            match &entry.op {
                Op::Set(json) => {
                    let write = ValueWrite {
                        key: entry.key.clone(),
                        json: json.clone(),
                        version: entry.id,
                        write_id: entry.write_id.clone(),
                        superseded: Vec::new(),
                    };
                    match values.get_mut(entry.key.as_str()) {
                        Some(older) => {
                            let mut superseded = std::mem::take(&mut older.superseded);
                            superseded.push((older.write_id.clone(), older.version));
                            *older = ValueWrite {
                                superseded,
                                ..write
                            };
                        }
                        None => {
                            values.insert(&entry.key, write);
                        }
                    }
                }
                Op::Add(delta) => {
                    counters
                        .entry(&entry.key)
                        .or_insert_with(|| CounterWrite {
                            key: entry.key.clone(),
                            parts: Vec::new(),
                        })
                        .parts
                        .push((entry.write_id.clone(), entry.id, *delta));
                }
            }
        }
        Batch {
            values: values.into_values().collect(),
            counters: counters.into_values().collect(),
        }
    }

    /// Every write in the batch: its id and its stream entry id (what a sink
    /// records as applied).
    pub fn write_ids(&self) -> Vec<(String, EntryId)> {
        let mut ids = Vec::new();
        for v in &self.values {
            ids.push((v.write_id.clone(), v.version));
            ids.extend(v.superseded.iter().cloned());
        }
        for c in &self.counters {
            ids.extend(c.parts.iter().map(|(w, id, _)| (w.clone(), *id)));
        }
        ids.sort();
        ids
    }

    /// The part of the batch not applied before, given the write ids that
    /// were new to the sink. A value whose newest write was applied before is
    /// dropped (what superseded it in the sink is at least as new); counters
    /// keep only their new increments.
    pub fn new_writes(&self, new_ids: &HashSet<String>) -> Batch {
        Batch {
            values: self
                .values
                .iter()
                .filter(|v| new_ids.contains(&v.write_id))
                .cloned()
                .collect(),
            counters: self
                .counters
                .iter()
                .filter_map(|c| {
                    let parts: Vec<_> = c
                        .parts
                        .iter()
                        .filter(|(w, _, _)| new_ids.contains(w))
                        .cloned()
                        .collect();
                    (!parts.is_empty()).then(|| CounterWrite {
                        key: c.key.clone(),
                        parts,
                    })
                })
                .collect(),
        }
    }

    /// Whether the batch holds no write.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && self.counters.is_empty()
    }

    /// How many writes (before coalescing) the batch carries.
    pub fn writes(&self) -> usize {
        self.values
            .iter()
            .map(|v| 1 + v.superseded.len())
            .sum::<usize>()
            + self.counters.iter().map(|c| c.parts.len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ms: u64, seq: u64, key: &str, op: Op) -> StreamEntry {
        StreamEntry {
            stream_id: format!("{ms}-{seq}"),
            id: EntryId { ms, seq },
            write_id: format!("w{ms}-{seq}"),
            key: key.into(),
            op,
        }
    }

    #[test]
    fn last_value_wins_and_counters_sum() {
        let batch = Batch::from_entries(&[
            entry(2, 0, "a", Op::Set(b"2".to_vec())),
            entry(1, 0, "a", Op::Set(b"1".to_vec())),
            entry(1, 1, "c", Op::Add(5)),
            entry(3, 0, "c", Op::Add(-2)),
        ]);
        assert_eq!(batch.values.len(), 1);
        assert_eq!(batch.values[0].json, b"2");
        assert_eq!(batch.values[0].superseded.len(), 1);
        assert_eq!(batch.counters[0].total(), 3);
        assert_eq!(batch.writes(), 4);
        assert_eq!(batch.write_ids().len(), 4);
    }

    #[test]
    fn already_applied_writes_are_filtered_per_write() {
        let batch = Batch::from_entries(&[
            entry(1, 0, "c", Op::Add(5)),
            entry(2, 0, "c", Op::Add(7)),
            entry(3, 0, "v", Op::Set(b"x".to_vec())),
        ]);
        let new: HashSet<String> = ["w2-0".to_string()].into();
        let left = batch.new_writes(&new);
        assert!(left.values.is_empty());
        assert_eq!(left.counters[0].total(), 7);
    }
}
