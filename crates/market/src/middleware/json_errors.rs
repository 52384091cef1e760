//! Every error answer in the API's shape: `{"error": "...", "request_id": "..."}`
//! with the right status, whichever layer made it — a handler's
//! [`crate::error::ApiError`], axum's extractors (a query it cannot parse is
//! a `text/plain` 400) and router (a 405 with an empty body), tower-http's
//! limits and timeouts, the HTTP response cache (its 502), a caught panic.
//!
//! An answer that is already a JSON object (the API's error, the health
//! report's 503) keeps its fields and gets the request id, and an `error`
//! if it had none; any other is rewritten: a 4xx keeps the layer's own
//! words when it gave some (they describe the client's mistake), a 5xx gets
//! a generic message — whatever else it said is internal.

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{Map, Value};

use super::request_id;

/// The longest error body read back; error bodies are a line or two.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// The middleware (outermost but for the request id and the trace).
pub async fn json_errors(request: Request, next: Next) -> Response {
    let id = request_id::of(&request);
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = to_bytes(body, MAX_ERROR_BODY).await.unwrap_or_default();
    let mut object = json_object(&bytes).unwrap_or_default();
    if !object.get("error").is_some_and(Value::is_string) {
        object.insert("error".into(), message(status, &bytes).into());
    }
    object.insert("request_id".into(), id.into());
    let body = Value::Object(object).to_string();
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(body))
}

/// The body as a JSON object, if it is one.
fn json_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Value>(bytes).ok()? {
        Value::Object(object) => Some(object),
        _ => None,
    }
}

/// The message of an error answer that is not the API's.
fn message(status: StatusCode, body: &[u8]) -> String {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return "request body is too large".into();
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let plain = !text.starts_with('{');
    if status.is_client_error() && plain && !text.is_empty() && text.len() <= 512 {
        return text.to_string();
    }
    match status {
        StatusCode::INTERNAL_SERVER_ERROR => "internal error".into(),
        StatusCode::REQUEST_TIMEOUT => "the request did not complete in time".into(),
        other => other
            .canonical_reason()
            .map_or_else(|| format!("error {}", other.as_u16()), str::to_lowercase),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_keep_their_words_and_server_errors_lose_theirs() {
        assert_eq!(
            message(
                StatusCode::BAD_REQUEST,
                b"Failed to deserialize query string"
            ),
            "Failed to deserialize query string"
        );
        assert_eq!(
            message(StatusCode::METHOD_NOT_ALLOWED, b""),
            "method not allowed"
        );
        assert_eq!(
            message(
                StatusCode::INTERNAL_SERVER_ERROR,
                b"relation \"sectors\" does not exist"
            ),
            "internal error"
        );
        assert_eq!(message(StatusCode::BAD_GATEWAY, b""), "bad gateway");
        assert!(json_object(br#"{"error":"x"}"#).is_some());
        assert!(json_object(b"[1]").is_none() && json_object(b"x").is_none());
    }
}
