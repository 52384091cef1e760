//! The server loop: HTTP/1.1 connections (hyper) served by the router, with
//! the limits a service on the internet needs below the router.
//!
//! | limit | default | what it stops |
//! |---|---|---|
//! | [`Limits::header_timeout`] | 10 s | a request head that never ends, an idle keep-alive connection (hyper's header read timeout) |
//! | [`Limits::max_connections`] | 1,024 | more connections than the service can hold: the rest wait in the kernel's backlog |
//! | [`Limits::body_bytes`] | 64 KiB | a large body: refused at once on its `Content-Length` (413), or as it arrives |
//! | [`Limits::body_timeout`] | 10 s | a body that stalls between two reads (408) |
//! | [`Limits::request_timeout`] | 30 s | a request, body included, still running (408): a body trickling in byte by byte |
//!
//! The body limits are tower-http layers ([`crate::middleware`]); the
//! connection limits are here. A request hyper cannot parse is answered by
//! hyper itself; [`parse_errors`] makes that answer the API's JSON too.

mod parse_errors;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use parse_errors::JsonParseErrors;

/// The limits of a server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body.
    pub body_bytes: usize,
    /// Longest wait for the next piece of a request body.
    pub body_timeout: Duration,
    /// Longest a request may take, body included.
    pub request_timeout: Duration,
    /// Longest wait for a complete request head (also an idle connection's
    /// lifetime between two requests).
    pub header_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 64 * 1024,
            body_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

/// Largest request head hyper reads (request line and headers); larger ones
/// are answered 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Serve `app` on `listener` until `shutdown` completes, then stop accepting
/// and give open connections until the request timeout to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        // One buffer per answer: see `parse_errors`.
        .writev(false)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        // A slot first: at the limit, new connections wait in the backlog.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) if is_connection_error(&err) => continue,
            Err(err) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::error!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(JsonParseErrors::new(stream));
        let connection = builder.serve_connection(io, TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    let grace = limits.request_timeout + Duration::from_secs(1);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(?grace, "connections still open at shutdown were dropped");
    }
    Ok(())
}

/// Errors of one connection that was being accepted, not of the listener.
fn is_connection_error(err: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        err.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    )
}
