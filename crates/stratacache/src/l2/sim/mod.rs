//! A simulated Redis for the deterministic race simulation (feature
//! `simulation`; see `crates/stratacache-check`).
//!
//! It stands where a connection stands ([`super::connection::Connection`]),
//! so everything above — timeouts, the breaker, scripts, the backplane — runs
//! unchanged. It keeps strings with expiries on a virtual clock, runs the
//! library's own Lua scripts (Lua 5.1, as Redis does) and delivers pub/sub
//! messages; and it fails the way the real one does:
//!
//! | fault | what callers see |
//! |---|---|
//! | [`pause`](SimRedis::pause) (SIGSTOP) | commands hang (and run, in order, on [`resume`](SimRedis::resume)); connections stay open |
//! | [`go_down`](SimRedis::go_down) (killed) | commands fail at once (connection refused); subscriptions end |
//! | [`restart_empty`](SimRedis::restart_empty) | up again without any key |
//! | [`refuse_writes`](SimRedis::refuse_writes) (`maxmemory` + `noeviction`) | SET and SETRANGE fail (also inside scripts); GET, DEL, UNLINK, PUBLISH work |
//! | [`drop_subscriptions`](SimRedis::drop_subscriptions) | every subscriber's connection ends |
//!
//! Each connection is a FIFO lane: a command reaches the server after a
//! seeded latency but never before the ones sent earlier on the lane, and
//! runs even if its caller gave up waiting — as on a real socket. All of it
//! runs on tokio's clock, so on a current-thread runtime with paused time the
//! same seed replays the same run.

mod glob;
mod lua;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::{ErrorKind, RedisError, RedisResult, ServerErrorKind, Value};
use tokio::sync::{mpsc, oneshot, watch};

use crate::clock::VirtualTime;

/// Whether the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Answering.
    Up,
    /// Frozen: connections open, nothing answered.
    Paused,
    /// Not running: connections refused.
    Down,
}

/// A simulated Redis server shared by the simulated instances. Cheap to clone.
#[derive(Clone)]
pub struct SimRedis {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SimRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimRedis")
            .field("health", &*self.shared.health.borrow())
            .finish_non_exhaustive()
    }
}

struct Shared {
    time: Arc<VirtualTime>,
    state: Mutex<State>,
    rng: Mutex<StdRng>,
    health: watch::Sender<Health>,
    max_latency: Duration,
}

#[derive(Default)]
pub(super) struct State {
    data: BTreeMap<Vec<u8>, Stored>,
    refuse_writes: bool,
    subscribers: Vec<Subscriber>,
    /// Where each SCAN cursor goes on: after this key.
    scans: BTreeMap<u64, Vec<u8>>,
    next_scan: u64,
}

struct Stored {
    value: Vec<u8>,
    /// Virtual milliseconds; `None`: no expiry.
    expires_at_ms: Option<u64>,
}

struct Subscriber {
    channels: BTreeSet<Vec<u8>>,
    messages: mpsc::UnboundedSender<Published>,
}

/// What a lane carries to the server.
enum Request {
    Command(Vec<Vec<u8>>),
    Pipeline(Vec<Vec<Vec<u8>>>),
    Eval {
        code: String,
        keys: Vec<Vec<u8>>,
        args: Vec<Vec<u8>>,
    },
}

struct Job {
    request: Request,
    due: tokio::time::Instant,
    reply: oneshot::Sender<RedisResult<Value>>,
}

impl SimRedis {
    /// A server whose clock starts now (tokio's clock) at `epoch_ms`, with
    /// latencies drawn from `seed`, each up to `max_latency`.
    pub fn new(seed: u64, epoch_ms: u64, max_latency: Duration) -> Self {
        let (health, _) = watch::channel(Health::Up);
        Self {
            shared: Arc::new(Shared {
                time: Arc::new(VirtualTime::starting_at(epoch_ms)),
                state: Mutex::default(),
                rng: Mutex::new(StdRng::seed_from_u64(seed)),
                health,
                max_latency,
            }),
        }
    }

    /// The virtual wall clock (ms since the Unix epoch).
    pub fn now_ms(&self) -> u64 {
        self.shared.time.peek_ms()
    }

    pub(crate) fn time(&self) -> Arc<VirtualTime> {
        Arc::clone(&self.shared.time)
    }

    /// Whether the server answers now.
    pub fn health(&self) -> Health {
        *self.shared.health.borrow()
    }

    /// Freeze the server (SIGSTOP): commands wait, connections stay open.
    pub fn pause(&self) {
        self.shared.health.send_replace(Health::Paused);
    }

    /// Let a paused or stopped server answer again (with its data).
    pub fn resume(&self) {
        self.shared.health.send_replace(Health::Up);
    }

    /// Kill the server: commands fail at once, subscriptions end. The data
    /// stays until [`restart_empty`](Self::restart_empty).
    pub fn go_down(&self) {
        self.shared.health.send_replace(Health::Down);
        self.drop_subscriptions();
    }

    /// Start again without any key (no persistence).
    pub fn restart_empty(&self) {
        {
            let mut state = self.shared.lock();
            state.data.clear();
            state.subscribers.clear();
        }
        self.shared.health.send_replace(Health::Up);
    }

    /// Refuse (or accept again) writes that need memory: `maxmemory`
    /// reached under `noeviction`.
    pub fn refuse_writes(&self, refuse: bool) {
        self.shared.lock().refuse_writes = refuse;
    }

    /// End every subscriber's connection.
    pub fn drop_subscriptions(&self) {
        self.shared.lock().subscribers.clear();
    }

    /// How many keys the server holds (expired ones included until touched).
    pub fn key_count(&self) -> usize {
        self.shared.lock().data.len()
    }

    /// A new connection: a FIFO lane to the server.
    pub(crate) fn connect(&self) -> SimConnection {
        let (lane, jobs) = mpsc::unbounded_channel();
        tokio::spawn(serve_lane(Arc::clone(&self.shared), jobs));
        SimConnection {
            shared: Arc::clone(&self.shared),
            lane,
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("simulated redis lock")
    }

    /// A one-way latency: most often none at all (loopback answers within
    /// the same millisecond, the clock's resolution), else up to
    /// `max_latency`, and now and then a hiccup of up to 25 times that (a
    /// slow network, a busy server), which widens every race window the way
    /// production does.
    fn latency(&self) -> Duration {
        let max = self.max_latency.as_micros() as u64;
        let mut rng = self.rng.lock().expect("rng lock");
        let micros = match rng.random_range(0..100) {
            0..60 => 0,
            60..97 => rng.random_range(0..=max),
            _ => rng.random_range(max..=25 * max),
        };
        Duration::from_micros(micros)
    }

    /// A few yields, so that tasks ready at the same instant interleave
    /// differently from seed to seed.
    async fn shuffle(&self) {
        let yields = self.rng.lock().expect("rng lock").random_range(0..3);
        for _ in 0..yields {
            tokio::task::yield_now().await;
        }
    }
}

async fn serve_lane(shared: Arc<Shared>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut health = shared.health.subscribe();
    while let Some(job) = jobs.recv().await {
        tokio::time::sleep_until(job.due).await;
        let reply = loop {
            let now = *health.borrow_and_update();
            match now {
                Health::Up => break Some(execute(&shared, job.request)),
                Health::Down => break Some(Err(refused())),
                Health::Paused => {
                    if health.changed().await.is_err() {
                        break None;
                    }
                }
            }
        };
        if let Some(reply) = reply {
            let _ = job.reply.send(reply);
        }
    }
}

fn execute(shared: &Shared, request: Request) -> RedisResult<Value> {
    let now_ms = shared.time.peek_ms();
    if std::env::var_os("SIM_REDIS_TRACE").is_some() {
        let show = |args: &[Vec<u8>]| {
            args.iter()
                .map(|a| String::from_utf8_lossy(&a[..a.len().min(40)]).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let text = match &request {
            Request::Command(args) => show(args),
            Request::Pipeline(cmds) => cmds.iter().map(|c| show(c)).collect::<Vec<_>>().join(" | "),
            Request::Eval { code, keys, args } => format!(
                "EVAL[{}] {} -- {}",
                code.trim().lines().next().unwrap_or(""),
                show(keys),
                show(args)
            ),
        };
        eprintln!("redis {now_ms}: {text}");
    }
    let mut state = shared.lock();
    match request {
        Request::Command(args) => state.command(&args, now_ms),
        Request::Pipeline(commands) => {
            let mut replies = Vec::with_capacity(commands.len());
            for args in commands {
                replies.push(state.command(&args, now_ms)?);
            }
            Ok(Value::Array(replies))
        }
        Request::Eval { code, keys, args } => lua::eval(&mut state, now_ms, &code, &keys, &args),
    }
}

fn refused() -> RedisError {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "simulated redis is down",
    )
    .into()
}

pub(super) fn server_error(detail: impl Into<String>) -> RedisError {
    RedisError::from((
        ErrorKind::Server(ServerErrorKind::ResponseError),
        "simulated redis",
        detail.into(),
    ))
}

/// One instance's connection to the simulated server.
#[derive(Clone)]
pub(crate) struct SimConnection {
    shared: Arc<Shared>,
    lane: mpsc::UnboundedSender<Job>,
}

impl SimConnection {
    async fn request(&self, request: Request) -> RedisResult<Value> {
        self.shared.shuffle().await;
        if *self.shared.health.borrow() == Health::Down {
            return Err(refused());
        }
        let (reply, answer) = oneshot::channel();
        let due = tokio::time::Instant::now() + self.shared.latency();
        self.lane
            .send(Job {
                request,
                due,
                reply,
            })
            .map_err(|_| refused())?;
        let answer = answer.await.map_err(|_| refused())?;
        tokio::time::sleep(self.shared.latency()).await;
        answer
    }

    pub(crate) async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> RedisResult<T> {
        let value = self.request(Request::Command(args_of(cmd))).await?;
        Ok(T::from_redis_value(value)?)
    }

    pub(crate) async fn query_pipeline<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> RedisResult<T> {
        let commands = pipe.cmd_iter().map(args_of).collect();
        let value = self.request(Request::Pipeline(commands)).await?;
        Ok(T::from_redis_value(value)?)
    }

    pub(crate) async fn eval<T: redis::FromRedisValue>(
        &self,
        code: &str,
        keys: &[&str],
        args: &[&[u8]],
    ) -> RedisResult<T> {
        let value = self
            .request(Request::Eval {
                code: code.to_string(),
                keys: keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
                args: args.iter().map(|a| a.to_vec()).collect(),
            })
            .await?;
        Ok(T::from_redis_value(value)?)
    }

    /// Subscribe to `channels` on a connection of its own.
    pub(crate) async fn subscribe(&self, channels: &[&str]) -> RedisResult<SimSubscription> {
        let connection = SimConnection {
            shared: Arc::clone(&self.shared),
            lane: {
                let (lane, jobs) = mpsc::unbounded_channel();
                tokio::spawn(serve_lane(Arc::clone(&self.shared), jobs));
                lane
            },
        };
        // The SUBSCRIBE itself goes through the lane: a paused server does
        // not answer it.
        connection
            .request(Request::Command(vec![b"PING".to_vec()]))
            .await?;
        let (tx, messages) = mpsc::unbounded_channel();
        self.shared.lock().subscribers.push(Subscriber {
            channels: channels.iter().map(|c| c.as_bytes().to_vec()).collect(),
            messages: tx,
        });
        Ok(SimSubscription {
            messages,
            next: None,
            last_due: tokio::time::Instant::now(),
            connection,
        })
    }
}

/// A published message: (channel, payload).
type Published = (Vec<u8>, Vec<u8>);

/// A subscriber's side: messages in the order they were published, each
/// after a seeded delivery latency.
pub(crate) struct SimSubscription {
    messages: mpsc::UnboundedReceiver<Published>,
    /// The message on its way, and when it arrives.
    next: Option<(tokio::time::Instant, Published)>,
    last_due: tokio::time::Instant,
    connection: SimConnection,
}

impl SimSubscription {
    /// The next message (channel, payload); `None` when the connection ended.
    /// Cancel-safe, as a socket is: a message taken off the channel waits
    /// here until it is delivered.
    pub(crate) async fn next(&mut self) -> Option<Published> {
        if self.next.is_none() {
            let message = self.messages.recv().await?;
            let due =
                (tokio::time::Instant::now() + self.connection.shared.latency()).max(self.last_due);
            self.last_due = due;
            self.next = Some((due, message));
        }
        let due = self.next.as_ref().map(|(due, _)| *due)?;
        tokio::time::sleep_until(due).await;
        self.next.take().map(|(_, message)| message)
    }

    /// A PING on the subscriber's connection (a paused server does not answer).
    pub(crate) async fn ping(&self) -> RedisResult<()> {
        self.connection
            .request(Request::Command(vec![b"PING".to_vec()]))
            .await
            .map(|_| ())
    }
}

fn args_of(cmd: &redis::Cmd) -> Vec<Vec<u8>> {
    cmd.args_iter()
        .map(|arg| match arg {
            redis::Arg::Simple(bytes) => bytes.to_vec(),
            _ => b"0".to_vec(),
        })
        .collect()
}

impl State {
    fn live(&mut self, key: &[u8], now_ms: u64) -> Option<&mut Stored> {
        let expired = self
            .data
            .get(key)
            .is_some_and(|s| s.expires_at_ms.is_some_and(|at| at <= now_ms));
        if expired {
            self.data.remove(key);
        }
        self.data.get_mut(key)
    }

    /// Run one command (also from scripts).
    pub(super) fn command(&mut self, args: &[Vec<u8>], now_ms: u64) -> RedisResult<Value> {
        let Some((name, rest)) = args.split_first() else {
            return Err(server_error("empty command"));
        };
        let name = String::from_utf8_lossy(name).to_ascii_uppercase();
        match (name.as_str(), rest) {
            ("PING", _) => Ok(Value::SimpleString("PONG".into())),
            ("GET", [key]) => Ok(self
                .live(key, now_ms)
                .map_or(Value::Nil, |s| Value::BulkString(s.value.clone()))),
            ("MGET", keys) => Ok(Value::Array(
                keys.iter()
                    .map(|k| {
                        self.live(k, now_ms)
                            .map_or(Value::Nil, |s| Value::BulkString(s.value.clone()))
                    })
                    .collect(),
            )),
            ("SET", [key, value, options @ ..]) => self.set(key, value, options, now_ms),
            ("DEL" | "UNLINK", keys) => {
                let mut removed = 0;
                for key in keys {
                    if self.live(key, now_ms).is_some() {
                        self.data.remove(key);
                        removed += 1;
                    }
                }
                Ok(Value::Int(removed))
            }
            ("EXISTS", keys) => Ok(Value::Int(
                keys.iter()
                    .filter(|k| self.live(k, now_ms).is_some())
                    .count() as i64,
            )),
            ("PEXPIRE", [key, ms]) => {
                let ms = parse_u64(ms)?;
                Ok(Value::Int(match self.live(key, now_ms) {
                    Some(stored) => {
                        stored.expires_at_ms = Some(now_ms + ms);
                        1
                    }
                    None => 0,
                }))
            }
            ("PTTL", [key]) => Ok(Value::Int(match self.live(key, now_ms) {
                None => -2,
                Some(Stored {
                    expires_at_ms: None,
                    ..
                }) => -1,
                Some(Stored {
                    expires_at_ms: Some(at),
                    ..
                }) => at.saturating_sub(now_ms) as i64,
            })),
            ("SETRANGE", [key, offset, value]) => {
                self.check_memory()?;
                let offset = parse_u64(offset)? as usize;
                let stored = match self.live(key, now_ms) {
                    Some(stored) => stored,
                    None => self.data.entry(key.clone()).or_insert(Stored {
                        value: Vec::new(),
                        expires_at_ms: None,
                    }),
                };
                if stored.value.len() < offset + value.len() {
                    stored.value.resize(offset + value.len(), 0);
                }
                stored.value[offset..offset + value.len()].copy_from_slice(value);
                Ok(Value::Int(stored.value.len() as i64))
            }
            ("PUBLISH" | "SPUBLISH", [channel, payload]) => {
                let mut delivered = 0;
                self.subscribers.retain(|s| !s.messages.is_closed());
                for subscriber in &self.subscribers {
                    if subscriber.channels.contains(channel)
                        && subscriber
                            .messages
                            .send((channel.clone(), payload.clone()))
                            .is_ok()
                    {
                        delivered += 1;
                    }
                }
                Ok(Value::Int(delivered))
            }
            ("SCAN", [cursor, options @ ..]) => self.scan(cursor, options, now_ms),
            _ => Err(server_error(format!(
                "unknown or malformed command {name} ({} arguments)",
                rest.len()
            ))),
        }
    }

    fn check_memory(&self) -> RedisResult<()> {
        if self.refuse_writes {
            return Err(server_error(
                "OOM command not allowed when used memory > 'maxmemory'.",
            ));
        }
        Ok(())
    }

    fn set(
        &mut self,
        key: &[u8],
        value: &[u8],
        options: &[Vec<u8>],
        now_ms: u64,
    ) -> RedisResult<Value> {
        self.check_memory()?;
        let (mut nx, mut xx, mut expires_at_ms) = (false, false, None);
        let mut options = options.iter();
        while let Some(option) = options.next() {
            match option.to_ascii_uppercase().as_slice() {
                b"NX" => nx = true,
                b"XX" => xx = true,
                b"PX" => {
                    let ms = parse_u64(options.next().ok_or_else(|| server_error("PX"))?)?;
                    expires_at_ms = Some(now_ms + ms);
                }
                b"EX" => {
                    let s = parse_u64(options.next().ok_or_else(|| server_error("EX"))?)?;
                    expires_at_ms = Some(now_ms + s * 1_000);
                }
                other => {
                    return Err(server_error(format!(
                        "SET option {}",
                        String::from_utf8_lossy(other)
                    )))
                }
            }
        }
        let exists = self.live(key, now_ms).is_some();
        if (nx && exists) || (xx && !exists) {
            return Ok(Value::Nil);
        }
        self.data.insert(
            key.to_vec(),
            Stored {
                value: value.to_vec(),
                expires_at_ms,
            },
        );
        Ok(Value::Okay)
    }

    /// SCAN over the sorted key space. A cursor remembers the last key it
    /// returned, so keys present for the whole scan are all returned, as
    /// Redis guarantees, however many are deleted meanwhile.
    fn scan(&mut self, cursor: &[u8], options: &[Vec<u8>], now_ms: u64) -> RedisResult<Value> {
        let cursor = parse_u64(cursor)?;
        let (mut pattern, mut count) = (None, 10usize);
        let mut options = options.iter();
        while let Some(option) = options.next() {
            match option.to_ascii_uppercase().as_slice() {
                b"MATCH" => pattern = options.next().cloned(),
                b"COUNT" => {
                    count = parse_u64(options.next().ok_or_else(|| server_error("COUNT"))?)?.max(1)
                        as usize
                }
                _ => return Err(server_error("SCAN option")),
            }
        }
        self.data
            .retain(|_, s| s.expires_at_ms.is_none_or(|at| at > now_ms));
        let after = match cursor {
            0 => None,
            n => Some(
                self.scans
                    .remove(&n)
                    .ok_or_else(|| server_error("invalid cursor"))?,
            ),
        };
        let range = match &after {
            None => self.data.range::<Vec<u8>, _>(..),
            Some(key) => self
                .data
                .range::<Vec<u8>, _>((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded)),
        };
        let visited: Vec<Vec<u8>> = range.take(count).map(|(k, _)| k.clone()).collect();
        let next = match visited.last() {
            Some(last) if visited.len() == count => {
                self.next_scan += 1;
                self.scans.insert(self.next_scan, last.clone());
                self.next_scan
            }
            _ => 0,
        };
        let keys = visited
            .into_iter()
            .filter(|k| pattern.as_ref().is_none_or(|p| glob::matches(p, k)))
            .map(Value::BulkString)
            .collect();
        Ok(Value::Array(vec![
            Value::BulkString(next.to_string().into_bytes()),
            Value::Array(keys),
        ]))
    }
}

fn parse_u64(bytes: &[u8]) -> RedisResult<u64> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| server_error("value is not an integer or out of range"))
}
