//! Concurrent single-key reads sent together as one MGET.
//!
//! A multiplexed connection already pipelines concurrent commands on the
//! wire, but every command still pays its whole way through the client —
//! encoding, the connection's queue, reply parsing, a channel back — and
//! through Redis's command dispatch. Under load that per-command cost, not
//! the network, bounds how many reads a process gets through (BENCHMARKS.md,
//! "L2 hits, 64 tasks").
//!
//! So a read goes straight to Redis while fewer than [`DIRECT_READS`] reads
//! are in flight — one caller, or a few, wait for nobody — and beyond that
//! joins a queue. One task at a time sends what has queued as a single MGET
//! (at most [`MAX_BATCH`] keys) and hands each caller its value; while that
//! MGET is out, the next batch gathers. Every caller still waits at most one
//! Redis timeout from the moment it asked.
//!
//! ```text
//! reads in flight < DIRECT_READS ──► GET key ─────────────────────────► value
//! otherwise ──► queue ──► drain task: MGET k1 … kn (one call) ──► each caller its value
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::{L2Error, L2};

/// Reads in flight beyond which a read is queued for the next MGET.
pub(crate) const DIRECT_READS: usize = 4;
/// Keys per MGET.
pub(crate) const MAX_BATCH: usize = 128;

type Reply = Result<Option<Vec<u8>>, L2Error>;

/// The queue of reads waiting for an MGET, and the count of reads in flight.
#[derive(Default)]
pub(crate) struct ReadBatcher {
    in_flight: AtomicUsize,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<(String, oneshot::Sender<Reply>)>,
    /// Whether a drain task is running (it empties the queue before it ends).
    draining: bool,
}

/// One read (or one MGET) in flight, for as long as it lives.
pub(crate) struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ReadBatcher {
    /// Count a read that goes straight to Redis.
    pub(crate) fn direct(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(&self.in_flight)
    }

    /// Whether a read should be queued rather than sent now.
    pub(crate) fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) >= DIRECT_READS
    }

    /// Queue a read of `key`; `true` if the caller must start a drain task.
    fn enqueue(&self, key: &str, reply: oneshot::Sender<Reply>) -> bool {
        let mut queue = self.queue.lock().expect("read queue poisoned");
        queue.waiting.push((key.to_owned(), reply));
        !std::mem::replace(&mut queue.draining, true)
    }

    /// The next batch, or `None` (and the drain ends) when nothing waits.
    fn next_batch(&self) -> Option<Vec<(String, oneshot::Sender<Reply>)>> {
        let mut queue = self.queue.lock().expect("read queue poisoned");
        if queue.waiting.is_empty() {
            queue.draining = false;
            return None;
        }
        let n = queue.waiting.len().min(MAX_BATCH);
        Some(queue.waiting.drain(..n).collect())
    }
}

impl L2 {
    /// Read `key` as part of the next MGET.
    pub(super) async fn get_queued(&self, key: &str) -> Reply {
        let (reply, answer) = oneshot::channel();
        if self.reads.enqueue(key, reply) {
            tokio::spawn(self.clone().drain_reads());
        }
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(reply)) => reply,
            // The drain task is gone (the runtime is shutting down).
            Ok(Err(_)) => Err(L2Error::Unavailable),
            Err(_) => Err(L2Error::Timeout(self.timeout)),
        }
    }

    /// Send queued reads as MGETs until the queue is empty.
    async fn drain_reads(self) {
        let _in_flight = self.reads.direct();
        while let Some(batch) = self.reads.next_batch() {
            let (keys, replies): (Vec<String>, Vec<_>) = batch.into_iter().unzip();
            match self.get_many(&keys).await {
                Ok(values) => {
                    for (reply, value) in replies.into_iter().zip(values) {
                        let _ = reply.send(Ok(value));
                    }
                }
                Err(err) => {
                    for reply in replies {
                        let _ = reply.send(Err(err.clone()));
                    }
                }
            }
        }
    }
}
