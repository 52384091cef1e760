//! The API's errors and how each becomes a response: a status and
//! `{"error": "...", "request_id": "..."}` (the request id is added by
//! [`crate::middleware::json_errors`], which also turns every other layer's
//! error answers into this shape). Nothing a client sends ends in a panic
//! or a 500, and no answer carries SQL, a driver's message or a stack: an
//! internal error answers a generic message, and its detail goes to the log
//! under the request's id.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;

/// Everything a route can answer besides success.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed or its values are out of range.
    #[error("{0}")]
    BadRequest(String),
    /// The body is over the limit.
    #[error("request body is too large")]
    TooLarge,
    /// The body did not arrive in time.
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// No valid session.
    #[error("{0}")]
    Unauthorized(String),
    /// No valid operator token (answered with a `Bearer` challenge).
    #[error("{0}")]
    TokenRequired(String),
    /// Valid credentials, but not for this (another user's data).
    #[error("{0}")]
    Forbidden(String),
    /// The request conflicts with the current state (e.g. selling more than held).
    #[error("{0}")]
    Conflict(String),
    /// A dependency (PostgreSQL, or Redis for sessions) does not answer; the
    /// message names which, the cause is logged where it was seen.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected database answer. The detail is logged, never
    /// sent: the client reads "internal error" and the request id.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// A dependency that does not answer: `what` is the client's message
    /// ("database unavailable"), the cause goes to the log.
    pub fn unavailable(what: &str, cause: impl std::fmt::Display) -> ApiError {
        tracing::warn!(error = %cause, "{what}");
        ApiError::Unavailable(what.to_string())
    }

    /// The status the error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unauthorized(_) | ApiError::TokenRequired(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            // Inside the request's span: the line carries its id.
            tracing::error!(error = %detail, "internal error");
        }
        let body = Json(serde_json::json!({ "error": self.to_string() }));
        let mut response = (self.status(), body).into_response();
        if matches!(self, ApiError::TokenRequired(_)) {
            // RFC 6750: a 401 names the scheme that would be accepted.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"market\""),
            );
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => ApiError::unavailable("database unavailable", &err),
            // Errors of reaching the database rather than of the query:
            // 08 connection exceptions, 57P shutting down or starting up, 53
            // insufficient resources (too many connections), 28 refused
            // authorization, 3D000 no such database, 55000 (the database
            // does not accept connections).
            sqlx::Error::Database(db)
                if db.code().is_some_and(|c| {
                    ["08", "57P", "53", "28"].iter().any(|p| c.starts_with(p))
                        || c == "3D000"
                        || c == "55000"
                }) =>
            {
                ApiError::unavailable("database unavailable", &err)
            }
            _ => ApiError::Internal(err.to_string()),
        }
    }
}

impl From<stratacache::Error> for ApiError {
    fn from(err: stratacache::Error) -> Self {
        match err {
            // A loader's own error comes back as it was raised.
            stratacache::Error::Loader(inner) => match inner.downcast_ref::<ApiError>() {
                Some(api) => api.clone(),
                None => ApiError::Internal(inner.to_string()),
            },
            stratacache::Error::LoaderTimeout(_) | stratacache::Error::WaitTimeout(_) => {
                ApiError::unavailable("the data source is slow", &err)
            }
            stratacache::Error::InvalidKey { .. } => ApiError::BadRequest(err.to_string()),
            stratacache::Error::Redis(_)
            | stratacache::Error::RedisTimeout(_)
            | stratacache::Error::RedisUnavailable => {
                ApiError::unavailable("cache unavailable", &err)
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Path parameters whose every rejection is an [`ApiError`]: a segment that
/// is not valid UTF-8 (or not of the expected type) is a 400 with the API's
/// JSON error body, like every other bad request.
pub struct PathParams<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for PathParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(PathParams(value)),
            Err(rejection) => Err(ApiError::BadRequest(format!(
                "invalid path: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// A JSON body whose every rejection is an [`ApiError`]: malformed or
/// mistyped JSON is a 400 with the parser's message, a body over the limit 413.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::TooLarge;
    }
    if body_timed_out(&rejection) {
        return ApiError::BodyTimeout;
    }
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::BadRequest("expected a JSON body (Content-Type: application/json)".into())
        }
        other => ApiError::BadRequest(format!("invalid JSON body: {}", other.body_text())),
    }
}

/// Whether the body could not be read because it stalled past the body
/// timeout ([`tower_http::timeout::RequestBodyTimeoutLayer`]).
fn body_timed_out(rejection: &JsonRejection) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(err) = source {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// A numeric id from a path segment: not a positive integer is a 400.
pub fn parse_id(text: &str, what: &str) -> Result<i64, ApiError> {
    match text.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(ApiError::BadRequest(format!(
            "{what} must be a positive integer, got {text:?}"
        ))),
    }
}

/// A symbol from a path segment, upper-cased. Anything that cannot be a
/// symbol (empty, too long, odd characters) is simply not found.
pub fn parse_symbol(text: &str) -> Result<String, ApiError> {
    let valid = !text.is_empty()
        && text.len() <= 12
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '.');
    if valid {
        Ok(text.to_ascii_uppercase())
    } else {
        Err(ApiError::NotFound(format!("unknown symbol {text:?}")))
    }
}
