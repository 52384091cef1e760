//! The layers around every route, in the order [`super`] lists them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::Response;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

use super::json_errors::json_errors;
use super::request_id::{self, HEADER};
use super::server_names::{self, ServerNames};
use crate::patterns::sessions::Sessions;
use crate::serve::Limits;
use crate::telemetry::Telemetry;

/// The longest path written in a log line.
const LOGGED_PATH: usize = 200;

/// What the layers need of the service.
pub struct Around {
    /// The sessions layer.
    pub sessions: Sessions,
    /// The service's names.
    pub server_names: ServerNames,
    /// The dashboard's figures.
    pub telemetry: Arc<Telemetry>,
}

/// `router` with every layer of the service around it.
pub fn around<S>(router: Router<S>, with: Around, limits: &Limits) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let trace = TraceLayer::new_for_http()
        .make_span_with(|request: &Request| {
            let path: String = request.uri().path().chars().take(LOGGED_PATH).collect();
            tracing::info_span!(
                "request",
                id = %request_id::of(request),
                method = %request.method(),
                path = %path,
            )
        })
        .on_request(())
        .on_response(answered)
        .on_failure(());
    router
        .layer(with.sessions)
        .layer(from_fn_with_state(
            with.server_names,
            server_names::normalise,
        ))
        .layer(RequestBodyTimeoutLayer::new(limits.body_timeout))
        .layer(RequestBodyLimitLayer::new(limits.body_bytes))
        // The limit above replaces axum's own (2 MB, checked only as the
        // body is read): one limit, checked on `Content-Length` at once.
        .layer(DefaultBodyLimit::disable())
        .layer(CatchPanicLayer::new())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(from_fn_with_state(
            with.telemetry,
            crate::telemetry::record_request,
        ))
        .layer(from_fn(json_errors))
        .layer(trace)
        .layer(PropagateRequestIdLayer::new(HEADER))
        .layer(SetRequestIdLayer::new(HEADER, MakeRequestUuid))
        .layer(from_fn(request_id::drop_unusable))
}

/// One line per answer, at the level its status deserves.
fn answered(response: &Response, latency: Duration, _span: &Span) {
    let status = response.status().as_u16();
    let ms = latency.as_secs_f64() * 1000.0;
    match status {
        500 => tracing::error!(status, latency_ms = ms, "answered"),
        501.. => tracing::warn!(status, latency_ms = ms, "answered"),
        400..=499 => tracing::info!(status, latency_ms = ms, "answered"),
        _ => tracing::debug!(status, latency_ms = ms, "answered"),
    }
}
