//! The record of a run and the checks made on it.

use std::fmt;

use super::{RECOVERY, STALENESS_BOUND};

/// Something a run found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A read returned a version older than one acknowledged more than
    /// [`STALENESS_BOUND`] before it began.
    StaleRead {
        /// The instance that answered.
        instance: usize,
        /// The key read.
        key: String,
        /// `get_or_load` or `get`.
        via: &'static str,
        /// When the read began (virtual ms from the start of the run).
        at_ms: u64,
        /// The version it returned.
        returned: u64,
        /// The newer version acknowledged before.
        acknowledged: u64,
        /// When that version was acknowledged.
        acknowledged_at_ms: u64,
    },
    /// A `get` found nothing although the last write of the key, well before
    /// it and with no write since, stored a value.
    HiddenWrite {
        /// The instance that answered.
        instance: usize,
        /// The key read.
        key: String,
        /// When the read began.
        at_ms: u64,
        /// The version the write stored.
        written: u64,
        /// When the write was acknowledged.
        written_at_ms: u64,
    },
    /// Once Redis was healthy again, an instance did not answer with the
    /// database's version.
    NotConverged {
        /// The instance that answered.
        instance: usize,
        /// The key read.
        key: String,
        /// `get_or_load` or `get`.
        via: &'static str,
        /// What it answered.
        returned: Option<u64>,
        /// The database's version.
        expected: u64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::StaleRead {
                instance,
                key,
                via,
                at_ms,
                returned,
                acknowledged,
                acknowledged_at_ms,
            } => write!(
                f,
                "stale read: instance {instance} {via}({key}) at {at_ms} ms returned v{returned}, \
                 but v{acknowledged} was acknowledged at {acknowledged_at_ms} ms"
            ),
            Violation::HiddenWrite {
                instance,
                key,
                at_ms,
                written,
                written_at_ms,
            } => write!(
                f,
                "hidden write: instance {instance} get({key}) at {at_ms} ms found nothing, \
                 but v{written} was set at {written_at_ms} ms and nothing changed it since"
            ),
            Violation::NotConverged {
                instance,
                key,
                via,
                returned,
                expected,
            } => write!(
                f,
                "not converged: instance {instance} {via}({key}) returned {returned:?} \
                 after recovery, the database has v{expected}"
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadVia {
    Load,
    Get,
}

impl ReadVia {
    fn name(self) -> &'static str {
        match self {
            ReadVia::Load => "get_or_load",
            ReadVia::Get => "get",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WriteKind {
    /// The value was stored (`set`, `write_through`).
    Put,
    /// The key was invalidated (delete, tag, prefix, clear).
    Invalidate,
}

struct Read {
    instance: usize,
    key: usize,
    via: ReadVia,
    start_ms: u64,
    end_ms: u64,
    /// Position in the order of events (finer than milliseconds).
    end_seq: u64,
    value: Option<u64>,
}

struct Write {
    key: usize,
    version: u64,
    kind: WriteKind,
    start_ms: u64,
    acked_ms: u64,
    start_seq: u64,
    acked_seq: u64,
}

/// Everything that happened, in the order it completed.
#[derive(Default)]
pub(super) struct History {
    reads: Vec<Read>,
    writes: Vec<Write>,
    /// Faults: (start, end) in virtual ms.
    faults: Vec<(u64, u64)>,
    /// When Redis came back empty.
    restarts: Vec<u64>,
    /// When an instance did not hear the backplane: (instance, start, end).
    deaf: Vec<(usize, u64, u64)>,
    digest: u64,
    seq: u64,
}

impl History {
    fn mix(&mut self, text: &str) {
        if std::env::var_os("SIM_TRACE").is_some() {
            eprintln!("{text}");
        }
        // FNV-1a: stable across runs and platforms, unlike the std hasher.
        let mut hash = if self.digest == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.digest
        };
        for byte in text.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x100_0000_01b3);
        }
        self.digest = hash;
    }

    /// A position in the order of events, for an operation that begins.
    pub(super) fn begin(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub(super) fn read(
        &mut self,
        instance: usize,
        key: usize,
        via: ReadVia,
        (start_ms, end_ms): (u64, u64),
        value: Option<u64>,
    ) {
        self.mix(&format!(
            "r{instance}:{key}:{via:?}:{start_ms}:{end_ms}:{value:?}"
        ));
        let end_seq = self.begin();
        self.reads.push(Read {
            instance,
            key,
            via,
            start_ms,
            end_ms,
            end_seq,
            value,
        });
    }

    pub(super) fn write(
        &mut self,
        key: usize,
        version: u64,
        (kind, how): (WriteKind, &str),
        (start_ms, acked_ms): (u64, u64),
        start_seq: u64,
    ) {
        let acked_seq = self.begin();
        self.mix(&format!(
            "w{key}:{version}:{kind:?}:{start_ms}:{acked_ms}:{how}"
        ));
        self.writes.push(Write {
            key,
            version,
            kind,
            start_ms,
            acked_ms,
            start_seq,
            acked_seq,
        });
    }

    pub(super) fn fault(&mut self, start_ms: u64, end_ms: u64, restarted: bool) {
        self.mix(&format!("f{start_ms}:{end_ms}:{restarted}"));
        self.faults.push((start_ms, end_ms));
        if restarted {
            self.restarts.push(end_ms);
        }
    }

    pub(super) fn backplane_down(&mut self, instance: usize, start_ms: u64, end_ms: u64) {
        self.mix(&format!("b{instance}:{start_ms}:{end_ms}"));
        self.deaf.push((instance, start_ms, end_ms));
    }

    pub(super) fn operations(&self) -> usize {
        self.reads.len() + self.writes.len()
    }

    pub(super) fn digest(&self) -> u64 {
        self.digest
    }

    /// Within a fault or the recovery after it, staleness is allowed; `span`
    /// is an operation's (start, end).
    fn excused(&self, (from, to): (u64, u64)) -> bool {
        let recovery = RECOVERY.as_millis() as u64;
        self.faults
            .iter()
            .any(|&(start, end)| to >= start && from <= end + recovery)
    }

    /// While an instance does not hear the backplane (and until the bound
    /// after), its L1 may serve what it could not hear was replaced.
    fn deaf(&self, instance: usize, at_ms: u64) -> bool {
        let bound = STALENESS_BOUND.as_millis() as u64;
        self.deaf
            .iter()
            .any(|&(i, start, end)| i == instance && at_ms >= start && at_ms <= end + bound)
    }

    /// Stale reads and hidden writes; `name` turns a key index into its name.
    pub(super) fn check(&self, name: impl Fn(usize) -> String) -> Vec<Violation> {
        let bound = STALENESS_BOUND.as_millis() as u64;
        let mut found = Vec::new();
        for read in &self.reads {
            if self.excused((read.start_ms, read.end_ms)) || self.deaf(read.instance, read.start_ms)
            {
                continue;
            }
            let before = |w: &&Write| w.key == read.key && w.acked_ms + bound < read.start_ms;
            if let Some(value) = read.value {
                if let Some(newest) = self
                    .writes
                    .iter()
                    .filter(before)
                    .max_by_key(|w| w.version)
                    .filter(|w| w.version > value)
                {
                    found.push(Violation::StaleRead {
                        instance: read.instance,
                        key: name(read.key),
                        via: read.via.name(),
                        at_ms: read.start_ms,
                        returned: value,
                        acknowledged: newest.version,
                        acknowledged_at_ms: newest.acked_ms,
                    });
                }
                continue;
            }
            if read.via != ReadVia::Get {
                continue;
            }
            let Some(last) = self.writes.iter().filter(before).max_by_key(|w| w.acked_ms) else {
                continue;
            };
            let undisturbed = last.kind == WriteKind::Put
                && !self.excused((last.start_ms, last.acked_ms))
                && !self
                    .restarts
                    .iter()
                    .any(|&at| at >= last.start_ms && at <= read.end_ms)
                && !self.writes.iter().any(|w| {
                    w.key == read.key
                        && !std::ptr::eq(w, last)
                        && w.acked_seq > last.start_seq
                        && w.start_seq < read.end_seq
                });
            if undisturbed {
                found.push(Violation::HiddenWrite {
                    instance: read.instance,
                    key: name(read.key),
                    at_ms: read.start_ms,
                    written: last.version,
                    written_at_ms: last.acked_ms,
                });
            }
        }
        found
    }
}
