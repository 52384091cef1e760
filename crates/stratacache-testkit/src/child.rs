//! Any program as a throwaway process (a service under test such as
//! `market serve`), started and cleaned up like the testkit's servers.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process;

/// Name of the log file (stdout + stderr) inside the process's directory.
pub const CHILD_LOG_FILE: &str = "child.log";

/// A process started by this crate from its spawner thread, with a
/// parent-death signal, so it never outlives the process that started it.
/// It runs in a temporary directory of its own, which also holds its log.
/// Dropping the value kills the process and removes the directory.
#[derive(Debug)]
pub struct ChildProcess {
    child: Option<Child>,
    status: Option<ExitStatus>,
    dir: Option<TempDir>,
    dir_path: PathBuf,
}

impl ChildProcess {
    /// Starts `program args..` (a path, or a name looked up on `PATH`).
    pub fn start(program: impl AsRef<Path>, args: &[String]) -> io::Result<ChildProcess> {
        Self::start_with_env(program, args, &[])
    }

    /// Like [`ChildProcess::start`], with `env` added to the inherited environment.
    pub fn start_with_env(
        program: impl AsRef<Path>,
        args: &[String],
        env: &[(String, String)],
    ) -> io::Result<ChildProcess> {
        let dir = tempfile::Builder::new()
            .prefix("stratacache-child-")
            .tempdir()?;
        let dir_path = dir.path().to_path_buf();
        process::register_dir(&dir_path);
        let program = program.as_ref().to_string_lossy().to_string();
        let log = dir_path.join(CHILD_LOG_FILE);
        match process::spawn_with_env(&program, args, env, &dir_path, &log, true) {
            Ok(child) => Ok(ChildProcess {
                child: Some(child),
                status: None,
                dir: Some(dir),
                dir_path,
            }),
            Err(err) => {
                process::unregister_dir(&dir_path);
                Err(err)
            }
        }
    }

    /// The process id while it has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its working directory.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// What it wrote to stdout and stderr so far (empty if unreadable).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir_path.join(CHILD_LOG_FILE)).unwrap_or_default()
    }

    /// Its exit status if it has exited (reaped then), `None` while it runs.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    process::unregister_pid(child.id());
                    self.child = None;
                    self.status = Some(status);
                }
            }
        }
        self.status
    }

    /// Waits up to `timeout` for it to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGINT (a Ctrl-C: the program may shut down gracefully).
    pub fn interrupt(&self) {
        if let Some(pid) = self.pid() {
            process::signal(pid, libc::SIGINT);
        }
    }

    /// Kills it with SIGKILL and reaps it. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::kill_and_reap(&mut child);
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
        process::unregister_dir(&self.dir_path);
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}
