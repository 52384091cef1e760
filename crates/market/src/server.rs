//! A running `market serve`: the state built, the router around it, the
//! server loop on a tokio task — what the binary, the tests and the demo
//! start in-process.

use std::net::SocketAddr;

use crate::app::{self, ServeConfig, Shared};
use crate::serve;

/// A server running on a tokio task.
pub struct RunningServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state (for counters).
    pub state: Shared,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// `http://{addr}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop accepting, finish in-flight requests, stop the feed, flush the
    /// view counts read so far, close the pool.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await??;
        drop(self.state.feed.lock().unwrap().take());
        let worker = self.state.view_worker.lock().unwrap().take();
        if let Some(worker) = worker {
            worker.shutdown().await;
        }
        self.state.db.close().await;
        Ok(())
    }

    /// Wait until the server ends (it ends on its own only on an I/O error).
    pub async fn wait(self) -> anyhow::Result<()> {
        Ok(self.task.await??)
    }
}

/// Build the state and serve on `config.bind` (port 0 picks a free one).
pub async fn start(config: &ServeConfig) -> anyhow::Result<RunningServer> {
    let state = app::build_state(config).await?;
    let listener = tokio::net::TcpListener::bind(config.bind).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = crate::router::router(state.clone(), &config.limits);
    let limits = config.limits.clone();
    let task = tokio::spawn(serve::serve(listener, app, limits, async {
        let _ = rx.await;
    }));
    Ok(RunningServer {
        addr,
        state,
        shutdown: Some(tx),
        task,
    })
}
