//! Throwaway `redis-server` processes for stratacache's integration tests,
//! examples and benchmarks.
//!
//! * [`RedisServer`]: one server on a free loopback port, in its own
//!   temporary directory; can be killed, restarted (same port, same
//!   directory, so an AOF survives), paused and resumed.
//! * [`RedisCluster`]: 3 masters + 3 replicas joined with
//!   `redis-cli --cluster create`; [`shared_cluster`] gives one lazily
//!   started cluster per test process.
//! * [`RedisSentinelGroup`]: 1 master + 1 replica + 3 sentinels watching
//!   `stratamaster`, with [`RedisSentinelGroup::failover`].
//! * [`TlsRedisServer`]: a server with a TLS port too, on a certificate
//!   signed by a private CA made for it.
//! * [`DelayProxy`]: a TCP proxy that can delay or cut a link (to Redis or
//!   PostgreSQL).
//! * [`ChildProcess`]: any other program (a service under test) started and
//!   cleaned up the same way.
//!
//! Every process is started by this crate and only those are ever
//! signalled. Processes are forked from one long-lived spawner thread with
//! `PR_SET_PDEATHSIG = SIGKILL`, so none survives the test process, even a
//! `kill -9` of it; an `atexit` handler also kills what is left and removes
//! the directories on a normal exit. Needs `redis-server` and `redis-cli`
//! on `PATH` (Linux only; `scripts/services.sh` installs them).
//!
//! The API is blocking (it sleeps while waiting for servers); from async
//! code, call it before entering the runtime or via `spawn_blocking`.
//! [`net`] is a tiny RESP client with timeouts for checks that must not
//! hang on a paused server.
//!
//! ```no_run
//! use stratacache_testkit::RedisServer;
//!
//! let mut server = RedisServer::start();
//! assert_eq!(server.cli(&["SET", "k", "v"]), "OK");
//! server.kill();
//! server.restart(); // same port; data is gone without persistence
//! println!("{}", server.url());
//! ```
#![deny(missing_docs)]

mod child;
mod cluster;
pub mod net;
mod process;
mod proxy;
mod sentinel;
mod server;
mod tls;

pub use child::{ChildProcess, CHILD_LOG_FILE};
pub use cluster::{
    key_slot, parse_cluster_nodes, shared_cluster, NodeInfo, RedisCluster, CLUSTER_NODES,
    DEFAULT_NODE_TIMEOUT_MS,
};
pub use process::free_port;
pub use proxy::DelayProxy;
pub use sentinel::{RedisSentinelGroup, DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS, MASTER_NAME, QUORUM};
pub use server::{cli, RedisServer, LOG_FILE};
pub use tls::{TlsRedisServer, TlsSentinelGroup};

#[cfg(test)]
mod tests;
