//! The HTTP routes, one file per resource. Each handler names who may call
//! it ([`crate::auth`]), validates its input, calls the caching pattern of
//! its resource ([`crate::patterns`], [`crate::parts`]) and answers JSON or
//! an [`crate::error::ApiError`].

pub mod instruments;
pub mod market;
pub mod ops;
pub mod portfolios;
pub mod sessions;
pub mod stocks;
pub mod users;

use axum::http::header::CACHE_CONTROL;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};

/// An answer meant for one user: no shared cache (a proxy, a CDN) may keep it.
pub fn private(answer: impl IntoResponse) -> Response {
    let mut response = answer.into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("private"));
    response
}
