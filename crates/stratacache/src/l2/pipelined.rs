//! A connection to one Redis node that writes the commands of concurrent
//! callers to the socket together (auto-pipelining, as rueidis does for Go).
//!
//! Why not redis-rs's multiplexed connection: there every command is
//! packed into a vector of its own, sent through a channel to a driver
//! task, written and flushed from there, and its reply parsed by a generic
//! stream parser; the cache's hit path is little more than that, so the
//! client's cost per command was the cost of a hit (see BENCHMARKS.md,
//! "the ceiling"). Here a caller appends its command to one shared buffer
//! and its reply slot to one queue, under one lock; a writer task writes
//! whatever has gathered in one system call, and a reader task parses the
//! replies in order and hands each to its slot. Commands are still encoded
//! by redis-rs, and everything above (`Cmd`, scripts, pipelines) uses this
//! connection through redis-rs's `ConnectionLike`.
//!
//! ```text
//! callers ── lock: append bytes to `unsent`, push reply slot ──► writer task: swap `unsent`, write_all
//! socket ──► reader task: parse replies ── lock: pop slots in order ── send each its reply
//! ```
//!
//! The connection is made by the first command (a cache can be built while
//! Redis is down) and made again by the first command after it broke. A
//! broken connection fails every command written to it or waiting to be,
//! with a "connection dropped" error the tier above may retry once. A
//! caller that gives up (its timeout) leaves its slot; the reply is read
//! and dropped in its turn, so the replies of the others stay in order.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{oneshot, Notify};
use tokio::task::AbortHandle;

use super::endpoint::{open, Endpoint};
use super::resp;

/// Past this many bytes not yet written (Redis stopped reading), commands
/// fail at once instead of queueing without bound.
const MAX_UNSENT: usize = 64 << 20;
/// The shortest silence after which a connection with commands waiting is
/// given up (twice the call timeout when that is longer).
const MIN_SILENCE: Duration = Duration::from_secs(1);
/// The read buffer grows by this much at a time.
const READ_CHUNK: usize = 64 << 10;

/// Cheap to clone: clones share the connection.
#[derive(Clone)]
pub(crate) struct PipelinedConnection {
    shared: Arc<Shared>,
}

struct Shared {
    endpoint: Endpoint,
    connect_timeout: Duration,
    /// A connection with commands waiting that has sent nothing for this
    /// long is given up (see [`PipelinedConnection::on_timeout`]).
    silent_after: Duration,
    state: Mutex<State>,
}

struct State {
    link: Link,
    /// Commands not yet written, in order.
    unsent: Vec<u8>,
    /// A reply slot per command written or about to be, in order.
    slots: VecDeque<Slot>,
    /// Connections made so far: tasks of an older one change nothing.
    generation: u64,
    /// When the current connection last delivered a reply (or was made).
    last_reply: Instant,
}

enum Link {
    /// No connection: the next command makes one.
    Down,
    /// Being made: commands gather in `unsent` meanwhile.
    Connecting,
    Up {
        writer: Arc<Notify>,
        /// Both tasks, aborted when the connection is given up (a writer
        /// blocked on a peer that stopped reading would never wake).
        tasks: [AbortHandle; 2],
    },
}

/// Where a reply goes.
enum Slot {
    One(oneshot::Sender<RedisResult<Value>>),
    /// A pipeline's replies: `expect` in all, of which those from `skip` on
    /// are kept (a transaction's are its `EXEC`'s).
    Many {
        expect: usize,
        skip: usize,
        got: Vec<Value>,
        seen: usize,
        reply: oneshot::Sender<RedisResult<Vec<Value>>>,
    },
}

impl Slot {
    fn fail(self, err: &RedisError) {
        match self {
            Slot::One(reply) => drop(reply.send(Err(err.clone()))),
            Slot::Many { reply, .. } => drop(reply.send(Err(err.clone()))),
        }
    }
}

impl PipelinedConnection {
    /// A connection to `endpoint`, made when the first command needs it.
    pub(crate) fn new(
        endpoint: Endpoint,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                endpoint,
                connect_timeout,
                silent_after: (response_timeout * 2).max(MIN_SILENCE),
                state: Mutex::new(State {
                    link: Link::Down,
                    unsent: Vec::new(),
                    slots: VecDeque::new(),
                    generation: 0,
                    last_reply: Instant::now(),
                }),
            }),
        }
    }

    /// A call on this connection timed out. If the connection has had
    /// commands waiting and sent nothing back for `silent_after`, it is
    /// given up: a peer that vanished without closing (a host gone, a NAT
    /// or firewall that dropped the flow, a proxy holding a chunk) would
    /// otherwise swallow every command, the breaker's probes included,
    /// until the kernel gives up on the socket many minutes later. The
    /// next command connects again. A Redis that is merely slow still
    /// sends replies, and keeps its connection.
    pub(crate) fn on_timeout(&self) {
        let state = self.shared.lock();
        let silent = matches!(state.link, Link::Up { .. })
            && !state.slots.is_empty()
            && state.last_reply.elapsed() >= self.shared.silent_after;
        if !silent {
            return;
        }
        let generation = state.generation;
        drop(state);
        tracing::warn!(
            silent_for = ?self.shared.silent_after,
            "redis connection sent nothing while commands waited; connecting again"
        );
        self.shared.lost(
            generation,
            &io_error(
                io::ErrorKind::ConnectionAborted,
                "the redis connection went silent and was given up",
            ),
        );
    }

    /// Queue one command's bytes (written by `encode`) with its reply slot.
    fn submit(&self, encode: impl FnOnce(&mut Vec<u8>), slot: Slot) -> Result<(), RedisError> {
        let mut state = self.shared.lock();
        if state.unsent.len() > MAX_UNSENT {
            let err = io_error(io::ErrorKind::WouldBlock, "redis is not reading commands");
            slot.fail(&err);
            return Err(err);
        }
        let was_empty = state.unsent.is_empty();
        // Silence is counted from when something was first awaited: an idle
        // connection has not gone silent.
        if state.slots.is_empty() {
            state.last_reply = Instant::now();
        }
        encode(&mut state.unsent);
        state.slots.push_back(slot);
        match &state.link {
            // The writer is woken only by the first command of a batch: the
            // rest join the bytes it has not taken yet.
            Link::Up { writer, .. } if was_empty => writer.notify_one(),
            Link::Up { .. } | Link::Connecting => {}
            Link::Down => {
                state.link = Link::Connecting;
                state.generation += 1;
                let generation = state.generation;
                drop(state);
                // The guard is made before the task: dropped unpolled (its
                // runtime shutting down), the task still ends the attempt.
                let attempt = ConnectingOnDrop {
                    shared: Arc::downgrade(&self.shared),
                    generation,
                    armed: true,
                };
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => drop(runtime.spawn(connect(attempt))),
                    Err(_) => drop(attempt),
                }
            }
        }
        Ok(())
    }
}

impl PipelinedConnection {
    /// `EVALSHA digest keys args`, encoded straight into the shared buffer
    /// (redis-rs's `ScriptInvocation` copies every key and argument into
    /// vectors of its own first, then into a command: a fifth of a miss).
    /// A `NOSCRIPT` reply comes back as the server error it is.
    pub(crate) async fn evalsha(
        &self,
        digest: &str,
        keys: &[&str],
        args: &[&[u8]],
    ) -> RedisResult<Value> {
        let (reply, answer) = oneshot::channel();
        self.submit(
            |out| {
                let count = 3 + keys.len() + args.len();
                resp::write_array_len(out, count);
                resp::write_bulk(out, b"EVALSHA");
                resp::write_bulk(out, digest.as_bytes());
                resp::write_bulk(out, itoa::Buffer::new().format(keys.len()).as_bytes());
                for key in keys {
                    resp::write_bulk(out, key.as_bytes());
                }
                for arg in args {
                    resp::write_bulk(out, arg);
                }
            },
            Slot::One(reply),
        )?;
        answer.await.unwrap_or_else(|_| Err(dropped()))
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the buffers consistent
        // (appends and pops only), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection of `generation` broke: fail everything queued on it.
    fn lost(&self, generation: u64, err: &RedisError) {
        let mut state = self.lock();
        if state.generation != generation || !matches!(state.link, Link::Up { .. }) {
            return;
        }
        if let Link::Up { writer, tasks } = std::mem::replace(&mut state.link, Link::Down) {
            for task in tasks {
                task.abort();
            }
            writer.notify_one();
        }
        state.unsent = Vec::new();
        let slots = std::mem::take(&mut state.slots);
        drop(state);
        tracing::debug!(error = %err, "redis connection lost");
        for slot in slots {
            slot.fail(err);
        }
    }
}

impl Shared {
    /// Connection `generation` could not be made: fail what waited for it.
    fn not_connected(&self, generation: u64, err: &RedisError) {
        let mut state = self.lock();
        if state.generation != generation || !matches!(state.link, Link::Connecting) {
            return;
        }
        state.link = Link::Down;
        state.unsent.clear();
        let slots = std::mem::take(&mut state.slots);
        drop(state);
        tracing::debug!(error = %err, "could not connect to redis");
        for slot in slots {
            slot.fail(err);
        }
    }
}

struct ConnectingOnDrop {
    shared: Weak<Shared>,
    generation: u64,
    armed: bool,
}

impl Drop for ConnectingOnDrop {
    fn drop(&mut self) {
        if let (true, Some(shared)) = (self.armed, self.shared.upgrade()) {
            shared.not_connected(self.generation, &dropped());
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Link::Up { writer, tasks } = &state.link {
            for task in tasks {
                task.abort();
            }
            writer.notify_one();
        }
    }
}

/// Make connection `generation`, then start its writer and reader.
async fn connect(mut unfinished: ConnectingOnDrop) {
    // Dropped before it is done (its runtime shut down): the commands
    // waiting for it fail, and the next command tries again.
    let (shared, generation) = (unfinished.shared.clone(), unfinished.generation);
    let Some(strong) = shared.upgrade() else {
        return;
    };
    let endpoint = strong.endpoint.clone();
    let timeout = strong.connect_timeout;
    drop(strong);
    let made = match tokio::time::timeout(timeout, open(&endpoint)).await {
        Ok(made) => made,
        Err(_) => Err(io_error(
            io::ErrorKind::TimedOut,
            "connecting to redis timed out",
        )),
    };
    let Some(strong) = shared.upgrade() else {
        return;
    };
    let (read, write) = match made {
        Ok(halves) => halves,
        Err(err) => {
            unfinished.armed = false;
            strong.not_connected(generation, &err);
            return;
        }
    };
    unfinished.armed = false;
    let writer = Arc::new(Notify::new());
    let mut state = strong.lock();
    if state.generation != generation {
        return;
    }
    let end = |shared: &Weak<Shared>| EndOnDrop {
        shared: shared.clone(),
        generation,
    };
    let reader = tokio::spawn(read_replies(end(&shared), read)).abort_handle();
    let writing = tokio::spawn(write_commands(end(&shared), write, Arc::clone(&writer)));
    if !state.unsent.is_empty() {
        writer.notify_one();
    }
    state.last_reply = Instant::now();
    state.link = Link::Up {
        writer,
        tasks: [reader, writing.abort_handle()],
    };
}

/// Ends connection `generation` when its task ends for any reason — its
/// runtime shutting down included: commands then fail at once and the next
/// one connects again (from the runtime it runs on), rather than waiting
/// on a connection nobody reads.
struct EndOnDrop {
    shared: Weak<Shared>,
    generation: u64,
}

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.lost(self.generation, &dropped());
        }
    }
}

/// Write what callers queued, a batch per wake-up.
async fn write_commands(end: EndOnDrop, mut socket: OwnedWriteHalf, wake: Arc<Notify>) {
    let (shared, generation) = (end.shared.clone(), end.generation);
    let mut batch = Vec::new();
    loop {
        wake.notified().await;
        {
            let Some(strong) = shared.upgrade() else {
                return;
            };
            let mut state = strong.lock();
            if state.generation != generation || !matches!(state.link, Link::Up { .. }) {
                return;
            }
            std::mem::swap(&mut batch, &mut state.unsent);
        }
        if batch.is_empty() {
            continue;
        }
        if let Err(err) = socket.write_all(&batch).await {
            if let Some(strong) = shared.upgrade() {
                strong.lost(generation, &err.into());
            }
            return;
        }
        // Keep the allocation for the next swap, unless a burst made it huge.
        batch.clear();
        if batch.capacity() > 4 * READ_CHUNK {
            batch = Vec::new();
        }
    }
}

/// Read replies and hand each to its slot, in order.
async fn read_replies(end: EndOnDrop, mut socket: OwnedReadHalf) {
    let (shared, generation) = (end.shared.clone(), end.generation);
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut parsed = Vec::new();
    let mut done: Vec<(Slot, Option<Vec<Value>>, Option<Value>)> = Vec::new();
    loop {
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let failure = match socket.read_buf(&mut buf).await {
            Ok(0) => Some(io_error(
                io::ErrorKind::UnexpectedEof,
                "redis closed the connection",
            )),
            Ok(_) => None,
            Err(err) => Some(err.into()),
        };
        let Some(strong) = shared.upgrade() else {
            return;
        };
        if let Some(err) = failure {
            strong.lost(generation, &err);
            return;
        }
        let mut used = 0;
        loop {
            match resp::parse(&buf[used..]) {
                Ok(Some((value, len))) => {
                    parsed.push(value);
                    used += len;
                }
                Ok(None) => break,
                Err(err) => {
                    strong.lost(generation, &err);
                    return;
                }
            }
        }
        buf.drain(..used);
        // A burst of large replies is not kept for the connection's life.
        if buf.is_empty() && buf.capacity() > 4 * READ_CHUNK {
            buf = Vec::with_capacity(READ_CHUNK);
        }
        if parsed.is_empty() {
            continue;
        }
        {
            let mut state = strong.lock();
            if state.generation != generation {
                return;
            }
            state.last_reply = Instant::now();
            for value in parsed.drain(..) {
                let Some(front) = state.slots.front_mut() else {
                    drop(state);
                    let err = io_error(
                        io::ErrorKind::InvalidData,
                        "a redis reply no command asked for",
                    );
                    strong.lost(generation, &err);
                    return;
                };
                match front {
                    Slot::One(_) => {
                        let slot = state.slots.pop_front().expect("front exists");
                        done.push((slot, None, Some(value)));
                    }
                    Slot::Many {
                        expect,
                        skip,
                        got,
                        seen,
                        ..
                    } => {
                        if *seen >= *skip {
                            got.push(value);
                        }
                        *seen += 1;
                        if *seen == *expect {
                            let mut slot = state.slots.pop_front().expect("front exists");
                            let values = match &mut slot {
                                Slot::Many { got, .. } => std::mem::take(got),
                                Slot::One(_) => unreachable!("the front was a pipeline"),
                            };
                            done.push((slot, Some(values), None));
                        }
                    }
                }
            }
        }
        // Answer outside the lock: each send may wake a caller.
        for (slot, values, value) in done.drain(..) {
            match (slot, values, value) {
                (Slot::One(reply), _, Some(value)) => drop(reply.send(Ok(value))),
                (Slot::Many { reply, .. }, Some(values), _) => drop(reply.send(Ok(values))),
                _ => {}
            }
        }
    }
}

fn io_error(kind: io::ErrorKind, what: &'static str) -> RedisError {
    io::Error::new(kind, what).into()
}

/// A slot dropped unanswered: its connection went away.
fn dropped() -> RedisError {
    io_error(
        io::ErrorKind::ConnectionAborted,
        "the redis connection was closed",
    )
}

impl ConnectionLike for PipelinedConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let (reply, answer) = oneshot::channel();
        let submitted = self.submit(|out| cmd.write_packed_command(out), Slot::One(reply));
        Box::pin(async move {
            submitted?;
            answer.await.unwrap_or_else(|_| Err(dropped()))
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        if offset + count == 0 {
            return Box::pin(async { Ok(Vec::new()) });
        }
        let (reply, answer) = oneshot::channel();
        let slot = Slot::Many {
            expect: offset + count,
            skip: offset,
            got: Vec::with_capacity(count),
            seen: 0,
            reply,
        };
        let submitted = self.submit(
            |out| out.extend_from_slice(&pipeline.get_packed_pipeline()),
            slot,
        );
        Box::pin(async move {
            submitted?;
            answer.await.unwrap_or_else(|_| Err(dropped()))
        })
    }

    fn get_db(&self) -> i64 {
        self.shared.endpoint.db
    }
}
