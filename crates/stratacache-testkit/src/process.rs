//! Process plumbing shared by every server the testkit starts.
//!
//! * All `redis-server` processes are forked from one dedicated, never-ending
//!   spawner thread, with `prctl(PR_SET_PDEATHSIG, SIGKILL)` applied in the
//!   child before `exec`. The kernel delivers the parent-death signal when the
//!   *thread* that forked the child exits, so forking from short-lived test
//!   threads would kill servers early; a thread that lives as long as the
//!   process makes the signal fire exactly when the process dies, including
//!   on `kill -9`.
//! * Every live child pid and every live server directory is recorded in a
//!   registry. A `libc::atexit` handler kills the remaining children and
//!   removes the remaining directories when the process exits normally
//!   (statics such as [`crate::shared_cluster`] are never dropped).
//! * Port allocation ([`free_port`]) lives here as well.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Sender};
use std::sync::{Mutex, MutexGuard, Once, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Offset between a cluster node's client port and its cluster bus port.
pub(crate) const CLUSTER_BUS_OFFSET: u16 = 10000;

/// What the spawner thread needs to start one process.
struct SpawnRequest {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    log: PathBuf,
    truncate_log: bool,
    reply: Sender<io::Result<Child>>,
}

/// Pids and directories that the atexit handler must clean up.
#[derive(Default)]
struct Registry {
    pids: HashSet<i32>,
    dirs: HashMap<PathBuf, usize>,
}

static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Records a server directory so that it is removed at process exit if it
/// is still present then.
pub(crate) fn register_dir(dir: &Path) {
    install_atexit();
    *registry().dirs.entry(dir.to_path_buf()).or_default() += 1;
}

/// Forgets a directory recorded with [`register_dir`].
pub(crate) fn unregister_dir(dir: &Path) {
    let mut reg = registry();
    if let Some(count) = reg.dirs.get_mut(dir) {
        *count -= 1;
        if *count == 0 {
            reg.dirs.remove(dir);
        }
    }
}

/// Forgets a pid once its process has been reaped.
pub(crate) fn unregister_pid(pid: u32) {
    registry().pids.remove(&(pid as i32));
}

fn install_atexit() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registering a plain `extern "C"` function is always sound.
        let rc = unsafe { libc::atexit(cleanup_at_exit) };
        assert_eq!(rc, 0, "libc::atexit failed");
    });
}

extern "C" fn cleanup_at_exit() {
    // Another thread may still hold the lock while the process exits; never
    // block for long (and never deadlock) inside an exit handler.
    let mut guard = None;
    for _ in 0..50 {
        if let Some(reg) = REGISTRY.get() {
            match reg.try_lock() {
                Ok(g) => {
                    guard = Some(g);
                    break;
                }
                Err(std::sync::TryLockError::Poisoned(p)) => {
                    guard = Some(p.into_inner());
                    break;
                }
                Err(std::sync::TryLockError::WouldBlock) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        } else {
            return;
        }
    }
    let Some(mut reg) = guard else { return };
    let pids: Vec<i32> = reg.pids.drain().collect();
    for &pid in &pids {
        // SAFETY: these pids are children this process spawned and has not
        // reaped yet, so they cannot have been recycled for another process.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    for &pid in &pids {
        let mut status = 0;
        // SAFETY: waiting on our own child; ECHILD is harmless.
        unsafe {
            libc::waitpid(pid, &mut status, 0);
        }
    }
    for (dir, _) in reg.dirs.drain() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn spawner() -> &'static Mutex<Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        install_atexit();
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("stratacache-testkit-spawner".into())
            .spawn(move || {
                // The sender lives in a static, so `recv` only fails when the
                // process is going away; the thread otherwise never exits.
                while let Ok(req) = rx.recv() {
                    let result = spawn_here(&req);
                    let _ = req.reply.send(result);
                }
                loop {
                    std::thread::park();
                }
            })
            .expect("failed to start the testkit spawner thread");
        Mutex::new(tx)
    })
}

/// Runs on the spawner thread: forks and execs one process.
fn spawn_here(req: &SpawnRequest) -> io::Result<Child> {
    let log = if req.truncate_log {
        File::create(&req.log)?
    } else {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&req.log)?
    };
    let log_err = log.try_clone()?;
    let parent = std::process::id() as libc::pid_t;
    let mut cmd = Command::new(&req.program);
    cmd.args(&req.args)
        .envs(req.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&req.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err));
    // SAFETY: the closure only calls async-signal-safe functions (prctl,
    // getppid) and builds an io::Error from a raw errno, which does not
    // allocate.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    // Register under the lock so that the exit handler either sees the pid
    // or runs before the child exists.
    let mut reg = registry();
    let child = cmd.spawn()?;
    reg.pids.insert(child.id() as i32);
    Ok(child)
}

/// Starts `program args..` in `cwd` with stdout and stderr going to `log`,
/// from the spawner thread (see the module docs).
pub(crate) fn spawn(
    program: &str,
    args: &[String],
    cwd: &Path,
    log: &Path,
    truncate_log: bool,
) -> io::Result<Child> {
    spawn_with_env(program, args, &[], cwd, log, truncate_log)
}

/// [`spawn`] with extra environment variables for the child.
pub(crate) fn spawn_with_env(
    program: &str,
    args: &[String],
    env: &[(String, String)],
    cwd: &Path,
    log: &Path,
    truncate_log: bool,
) -> io::Result<Child> {
    let (reply, result) = mpsc::channel();
    let req = SpawnRequest {
        program: program.to_string(),
        args: args.to_vec(),
        env: env.to_vec(),
        cwd: cwd.to_path_buf(),
        log: log.to_path_buf(),
        truncate_log,
        reply,
    };
    spawner()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(req)
        .map_err(|_| io::Error::other("testkit spawner thread is gone"))?;
    result
        .recv()
        .map_err(|_| io::Error::other("testkit spawner thread dropped the request"))?
}

/// Kills (SIGKILL) and reaps a child, then forgets its pid.
pub(crate) fn kill_and_reap(child: &mut Child) {
    let pid = child.id();
    // If it already exited this fails harmlessly; `wait` reaps it either way.
    let _ = child.kill();
    let _ = child.wait();
    unregister_pid(pid);
}

/// Whether `pid` (our own child) is still alive, without reaping it.
pub(crate) fn child_alive(pid: u32) -> bool {
    // SAFETY: `siginfo_t` is plain data; WNOWAIT leaves the child waitable.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let rc = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        rc == 0 && info.si_pid() == 0
    }
}

/// Sends `sig` to our own child `pid`.
pub(crate) fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: the caller guarantees `pid` is an unreaped child of ours.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

fn handed_out() -> MutexGuard<'static, HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn can_bind(port: u16) -> bool {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Lower bound of the kernel's ephemeral (outgoing connection) port range.
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// Returns a free loopback TCP port whose cluster bus port (`port + 10000`)
/// is free too, and which this process has not handed out before (neither
/// as a client port nor as a bus port).
///
/// Ports are taken below the kernel's ephemeral range (both the port and its
/// bus port), so a port released by [`crate::RedisServer::kill`] cannot be
/// grabbed by an outgoing connection before [`crate::RedisServer::restart`]
/// binds it again. Availability is checked by binding `127.0.0.1:PORT`.
/// If that range is exhausted the kernel is asked for a port
/// (`127.0.0.1:0`) instead.
pub fn free_port() -> u16 {
    let mut used = handed_out();
    let take = |used: &mut HashSet<u16>, port: u16| -> bool {
        let bus = port + CLUSTER_BUS_OFFSET;
        if used.contains(&port) || used.contains(&bus) || !can_bind(port) || !can_bind(bus) {
            return false;
        }
        used.insert(port);
        used.insert(bus);
        true
    };

    let low: u16 = 10000;
    let high: u16 = ephemeral_low().saturating_sub(CLUSTER_BUS_OFFSET);
    if high > low {
        let span = u32::from(high - low);
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            ^ std::process::id().wrapping_mul(2_654_435_761);
        let start = seed % span;
        for i in 0..span {
            let port = low + ((start + i) % span) as u16;
            if take(&mut used, port) {
                return port;
            }
        }
    }
    for _ in 0..1000 {
        let port = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("cannot bind 127.0.0.1:0");
        if port <= u16::MAX - CLUSTER_BUS_OFFSET && take(&mut used, port) {
            return port;
        }
    }
    panic!("no free loopback port pair (port, port+10000) found");
}

/// Calls `check` every 100 ms until it returns true or `timeout` passes.
pub(crate) fn poll(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines[lines.len().saturating_sub(n)..].join("\n");
    out.push('\n');
    out
}
