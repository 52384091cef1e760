//! Correctness checks shared by stratacache's tests and benchmarks.
//!
//! [`sim`]: the deterministic race simulation — several cache instances on
//! one simulated Redis, readers, writers and invalidations interleaved by a
//! seeded scheduler while Redis pauses, refuses writes, drops subscriptions
//! and restarts empty; every read is checked against the writes
//! acknowledged before it began, and every instance must converge. The same
//! seed replays the same run.
//!
//! [`consistency`]: the consistency checker on real Redis and PostgreSQL —
//! writers and reader processes on a table of versioned rows, stale reads
//! counted for stratacache's two fill guards and for naive cache-aside.

pub mod consistency;
pub mod sim;
