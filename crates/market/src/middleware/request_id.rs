//! A request id per request: the one a proxy in front sent in `X-Request-Id`
//! when it is a short token, else a new UUID (tower-http's `SetRequestId`
//! and `PropagateRequestId`). It names the request's span, so every log line
//! of the request carries it; it goes back in the `X-Request-Id` header and
//! in every error body, so a client can quote it.

use axum::extract::Request;
use axum::http::HeaderName;
use axum::middleware::Next;
use axum::response::Response;

/// The header carrying the id, both ways.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id accepted from a client.
const MAX_LEN: usize = 64;

/// Whether a client's id is safe to log and echo: short, and only letters,
/// digits, `-`, `_`, `.`, `:` (no spaces, quotes or control characters that
/// could forge log lines).
fn usable(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Drop an `X-Request-Id` the service will not use, so that a new one is
/// made for the request (placed before `SetRequestId`).
pub async fn drop_unusable(mut request: Request, next: Next) -> Response {
    let keep = {
        let mut ids = request.headers().get_all(HEADER).iter();
        match (ids.next(), ids.next()) {
            (Some(id), None) => usable(id.as_bytes()),
            (None, _) => true,
            _ => false,
        }
    };
    if !keep {
        request.headers_mut().remove(HEADER);
    }
    next.run(request).await
}

/// The request's id, as set by `SetRequestId` ("-" if none).
pub fn of(request: &Request) -> String {
    request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_ids_are_kept() {
        assert!(usable(b"3f2a-9c:01.x_y"));
        assert!(!usable(b""));
        assert!(!usable(b"a b") && !usable(b"a\"b") && !usable(b"a\nb"));
        assert!(!usable(&[b'a'; MAX_LEN + 1]));
    }
}
