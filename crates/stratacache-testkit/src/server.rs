//! A single throwaway `redis-server` process.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::net;
use crate::process;

/// How long a start or restart may take before it is reported as failed.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a start is retried on a fresh port when the port was taken.
const PORT_ATTEMPTS: usize = 5;
/// Name of the log file (stdout + stderr) inside the server's directory.
pub const LOG_FILE: &str = "redis.log";

/// A `redis-server` process started by this crate, listening on
/// `127.0.0.1:PORT`, with its own temporary working directory.
///
/// The process is started from the testkit's spawner thread with a
/// parent-death signal, so it never outlives the process that started it.
/// Dropping the value kills the process and removes the directory.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// Arguments after the program name; the port is part of them.
    args: Vec<String>,
    dir: Option<TempDir>,
    dir_path: PathBuf,
    paused: AtomicBool,
}

impl RedisServer {
    /// Starts a server with `--save "" --appendonly no` on a free port,
    /// bound to 127.0.0.1, and waits until it answers `PING`. It also gets
    /// `--enable-debug-command local` (so tests may use `DEBUG SLEEP` and
    /// the like) and `--repl-diskless-sync-delay 0` (replicas sync at once
    /// instead of after Redis' default 5 s delay).
    ///
    /// Panics (with the server log) if it does not come up.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Like [`RedisServer::start`], with extra `redis-server` arguments
    /// appended to the defaults (later arguments win), e.g.
    /// `["--appendonly", "yes", "--appendfsync", "always"]`.
    pub fn start_with(extra_args: &[&str]) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("stratacache-redis-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let extra: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        Self::launch(dir, |port, dir| {
            let mut args = base_args(port, dir);
            args.extend(extra.iter().cloned());
            args
        })
    }

    /// Starts a server in `dir` with arguments built by `make_args(port,
    /// dir)`, retrying on a fresh port if the chosen one turned out busy.
    pub(crate) fn launch(dir: TempDir, make_args: impl Fn(u16, &Path) -> Vec<String>) -> Self {
        let dir_path = dir.path().to_path_buf();
        process::register_dir(&dir_path);
        let mut server = RedisServer {
            child: None,
            port: 0,
            args: Vec::new(),
            dir: Some(dir),
            dir_path,
            paused: AtomicBool::new(false),
        };
        for attempt in 1..=PORT_ATTEMPTS {
            server.port = process::free_port();
            server.args = make_args(server.port, &server.dir_path);
            match server.spawn_and_wait(true) {
                Ok(()) => return server,
                Err(log) if attempt < PORT_ATTEMPTS && log.contains("Address already in use") => {
                    continue
                }
                Err(log) => panic!(
                    "redis-server on port {} failed to start (args {:?}):\n{}",
                    server.port, server.args, log
                ),
            }
        }
        unreachable!()
    }

    /// Spawns the process and waits for `PING`; on failure returns the log.
    fn spawn_and_wait(&mut self, truncate_log: bool) -> Result<(), String> {
        let log = self.log_path();
        let mut child = process::spawn(
            "redis-server",
            &self.args,
            &self.dir_path,
            &log,
            truncate_log,
        )
        .unwrap_or_else(|e| panic!("cannot run redis-server (is it on PATH?): {e}"));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                process::unregister_pid(child.id());
                return Err(format!("exited with {status}\n{}", self.log()));
            }
            if net::ping(self.port, Duration::from_millis(500)) {
                self.child = Some(child);
                self.paused.store(false, Ordering::SeqCst);
                return Ok(());
            }
            if Instant::now() > deadline {
                process::kill_and_reap(&mut child);
                return Err(format!("no PONG within {START_TIMEOUT:?}\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its working directory (RDB/AOF files, `nodes.conf`, the log).
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// Path of the log file receiving the server's stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir_path.join(LOG_FILE)
    }

    /// The log file's current content (empty if unreadable).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The arguments the server was started with (after the program name).
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The process id while it has a process (running or paused).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process with SIGKILL and reaps it. Idempotent. The
    /// directory is kept, so [`RedisServer::restart`] can reuse it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::kill_and_reap(&mut child);
        }
        self.paused.store(false, Ordering::SeqCst);
    }

    /// Starts the server again on the same port with the same arguments and
    /// directory (so an AOF or RDB file survives), killing it first if it
    /// still runs, and waits until it answers `PING`.
    ///
    /// Panics with the log if it does not come back.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(log) = self.spawn_and_wait(false) {
            panic!(
                "redis-server restart on port {} failed (args {:?}):\n{}",
                self.port, self.args, log
            );
        }
    }

    /// Stops the process with SIGSTOP: it keeps its port and connections
    /// but answers nothing until [`RedisServer::resume`].
    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            process::signal(pid, libc::SIGSTOP);
            self.paused.store(true, Ordering::SeqCst);
        }
    }

    /// Continues a paused process with SIGCONT.
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            process::signal(pid, libc::SIGCONT);
        }
        self.paused.store(false, Ordering::SeqCst);
    }

    /// Whether [`RedisServer::pause`] was called without a later resume.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Whether the process exists (paused counts as running). Reaps it if
    /// it has exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.kill();
                false
            }
            None => false,
        }
    }

    /// Like [`RedisServer::is_running`] but through a shared reference and
    /// without reaping an exited process.
    pub fn is_alive(&self) -> bool {
        self.pid().is_some_and(process::child_alive)
    }

    /// Sends `PING`; true on `PONG` within `timeout`.
    pub fn ping(&self, timeout: Duration) -> bool {
        net::ping(self.port, timeout)
    }

    /// Sends one command over a fresh connection with `timeout` on
    /// connect/read/write; error replies become `Err`, other replies text
    /// (see [`net::Reply::to_text`]). Unlike [`RedisServer::cli`] this
    /// never hangs on a paused server.
    pub fn query(&self, args: &[&str], timeout: Duration) -> io::Result<String> {
        net::call_text(self.port, args, timeout)
    }

    /// Runs `redis-cli -h 127.0.0.1 -p PORT args...` and returns its trimmed
    /// stdout. Error replies are returned as text (`ERR ...`); panics with
    /// stderr if redis-cli itself fails (e.g. cannot connect). Blocks while
    /// the server is paused.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }

    /// The value of `field` in `INFO section` (2 s timeout), if it answers
    /// and has that field.
    pub fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let info = self
            .query(&["INFO", section], Duration::from_secs(2))
            .ok()?;
        net::info_field(&info, field)
    }

    /// `ROLE`'s first element (`master`, `slave` or `sentinel`), if it
    /// answers within `timeout`.
    pub fn role(&self, timeout: Duration) -> Option<String> {
        let text = self.query(&["ROLE"], timeout).ok()?;
        text.lines().next().map(str::to_string)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        process::unregister_dir(&self.dir_path);
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

/// Arguments every testkit data node gets.
pub(crate) fn base_args(port: u16, dir: &Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--dir",
        &dir.to_string_lossy(),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--enable-debug-command",
        "local",
        "--repl-diskless-sync-delay",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Runs `redis-cli -h 127.0.0.1 -p PORT args...`, returning trimmed stdout;
/// panics with stderr if redis-cli exits non-zero or cannot run.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run redis-cli (is it on PATH?): {e}"));
    if !out.status.success() {
        panic!(
            "redis-cli -p {port} {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
