//! The read path of a load: cache-aside (`get_or_load*`) with every
//! protection.
//!
//! ```text
//! caller ([`caller`]) ── L1 ──► fresh: answer ─┐ (an early refresh may start in the background)
//!    │ miss / stale                            │
//!    ├─ a flight for the key runs: join it     │
//!    ├─ read L2 in the caller's task ─► fresh: answer
//!    └─ start a flight ([`flight`], a task) ── L2 ── lease (or wait for its holder's fill)
//!                                                      └─ loader ── fill both tiers ([`fill`])
//! ```
//!
//! 1. read L2 unless the caller just did — fresh: done; stale: offer it to
//!    callers that accept stale data. While most recent reads miss (a cold
//!    cache, churning keys: [`miss_rate`]), the flight reads instead of the
//!    caller, and its read takes the lease in the same round trip when it
//!    finds nothing: a miss then costs two round trips (read-or-lease,
//!    fill), like hand-written cache-aside, and callers of one instance
//!    share one read;
//! 2. take the key's lease in Redis (`lease`) — lost: wait for the holder's
//!    fill (woken by its notification), or take over when it dies;
//! 3. call the loader (bounded by `hard_timeout`: past it, callers get the
//!    stale value or a timeout at once, and the load goes on in the
//!    background for up to `lock_timeout` more, to fill the cache through
//!    its lease), fill both tiers through the lease, or — if the loader
//!    failed and a stale value exists — keep serving it for
//!    `fail_safe_throttle` (fail-safe).
//!
//! Once a Redis call of a load fails, the load makes no further Redis calls
//! (the lease and the L2 fill are skipped), and neither do the loader's own
//! cache calls ([`scope`]): a request pays one Redis timeout at most.
//! What to do with what is found is decided by plain functions ([`decide`]).

mod caller;
mod decide;
mod fill;
mod flight;
mod loaded;
mod miss_rate;
pub(crate) mod scope;

use std::sync::Arc;

pub use loaded::{Fetched, LoadContext, Loaded};

use crate::coalesce::Flights;
use crate::tiers::Tiers;
use crate::write::Pipeline;
use miss_rate::MissRate;

/// Loads: the tiers to read and fill, the writes to announce refreshes
/// through, the flights to share.
pub(crate) struct Loads {
    tiers: Arc<Tiers>,
    writes: Arc<Pipeline>,
    flights: Arc<Flights>,
    /// How often callers' L2 reads find nothing of late.
    l2_misses: MissRate,
}

impl Loads {
    pub(crate) fn new(tiers: Arc<Tiers>, writes: Arc<Pipeline>, flights: Arc<Flights>) -> Self {
        Self {
            tiers,
            writes,
            flights,
            l2_misses: MissRate::new(),
        }
    }
}

/// Why a flight runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Callers need a value.
    Miss,
    /// A fresh value is due for an early refresh; nobody waits for it.
    Refresh,
}

/// What the caller already learnt from L2 before starting a flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L2Seen {
    /// Nothing: the flight reads L2 first.
    NotRead,
    /// L2 had no usable fresh entry: go on to the lease.
    Missed,
    /// Redis failed to answer: do not call it again for this load.
    Failed,
}

/// How a flight begins.
#[derive(Debug, Clone)]
struct Start {
    accept_absent: bool,
    mode: Mode,
    seen: L2Seen,
    /// Read L2 with [`lease::read_or_acquire`](crate::lease::read_or_acquire):
    /// a miss takes the lease in the same round trip.
    read_or_lease: bool,
    /// L2 holds an entry of a newer schema: this load must not replace it.
    keep_out_of_l2: bool,
    /// The stale value at hand may be offered to callers at once.
    offer_known: bool,
    /// The loads this one runs within (a loader's own cache calls).
    scope: scope::LoadScope,
}
