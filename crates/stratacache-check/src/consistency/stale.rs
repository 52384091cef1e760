//! Counting stale reads: a read is stale when it returns a version older
//! than one acknowledged more than the L1 bound before the read began.
//! Writes acknowledged later, or within the bound, may or may not be seen.

use std::collections::HashMap;
use std::fmt;

use super::{Ack, Read, L1_BOUND_US};

/// A read that returned an older version than it had to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleRead {
    /// The row read.
    pub row: i32,
    /// The version returned.
    pub version: i64,
    /// The newest version acknowledged more than the L1 bound before the
    /// read began.
    pub newest_acked: i64,
    /// How long after the first acknowledgement of a newer version the
    /// read began, in µs.
    pub after_ack_us: u64,
}

impl fmt::Display for StaleRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stale read of row {}: v{} < v{}, {} ms after the ack",
            self.row,
            self.version,
            self.newest_acked,
            self.after_ack_us / 1000
        )
    }
}

/// The reads that returned a version older than one acknowledged (plus
/// [`L1_BOUND_US`]) before they began.
pub fn stale_reads(reads: &[Read], acks: &[Ack]) -> Vec<StaleRead> {
    let mut by_row: HashMap<i32, Vec<(u64, i64)>> = HashMap::new();
    for &(id, at, version) in acks {
        by_row.entry(id).or_default().push((at, version));
    }
    let no_acks = Vec::new();
    reads
        .iter()
        .filter_map(|&(id, start, _, version)| {
            let row_acks = by_row.get(&id).unwrap_or(&no_acks);
            let newest_acked = row_acks
                .iter()
                .filter(|(at, _)| at + L1_BOUND_US <= start)
                .map(|(_, v)| *v)
                .max()
                .unwrap_or(0);
            if version >= newest_acked {
                return None;
            }
            let first_newer_ack = row_acks
                .iter()
                .filter(|(_, v)| *v > version)
                .map(|(at, _)| *at)
                .min()
                .unwrap_or(start);
            Some(StaleRead {
                row: id,
                version,
                newest_acked,
                after_ack_us: start.saturating_sub(first_newer_ack),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_is_stale_only_past_the_l1_bound() {
        let acks = [(1, 1_000_000, 1), (1, 2_000_000, 2)];
        let within_bound = (1, 2_000_000 + L1_BOUND_US - 1, 0, 1);
        let past_bound = (1, 2_000_000 + L1_BOUND_US, 0, 1);
        let current = (1, 3_000_000, 0, 2);
        let other_row = (2, 3_000_000, 0, 0);
        let stale = stale_reads(&[within_bound, past_bound, current, other_row], &acks);
        assert_eq!(
            stale,
            [StaleRead {
                row: 1,
                version: 1,
                newest_acked: 2,
                after_ack_us: L1_BOUND_US,
            }]
        );
    }
}
