//! Whether a handler's response may be stored at all: RFC 9111 §3 as a
//! shared cache, plus this layer's stricter rules against serving one
//! client's response to another.
//!
//! Stricter than the RFC, deliberately: a response with `Set-Cookie` is
//! never stored (the RFC allows it; one client's session must never reach
//! another, whatever a handler's `Cache-Control` says), and `private`
//! responses are stored only on routes keyed per user.

use http::header::{SET_COOKIE, VARY};
use http::{HeaderMap, StatusCode};

use crate::cache_control::ResponseDirectives;

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotStored {
    Status,
    SetCookie,
    NoStore,
    Private,
    VaryStar,
    /// No explicit freshness, and neither heuristics nor the route grant any.
    NoFreshness,
    /// Already stale, with no validator to revalidate it and no stale use allowed.
    Expired,
}

impl NotStored {
    pub fn as_str(self) -> &'static str {
        match self {
            NotStored::Status => "status",
            NotStored::SetCookie => "set-cookie",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::VaryStar => "vary-star",
            NotStored::NoFreshness => "no-freshness",
            NotStored::Expired => "expired",
        }
    }
}

/// The rules that do not depend on freshness. `per_user` says the entry is
/// keyed by user, which makes `private` responses storable: the stored copy
/// is only ever served to that user.
pub(crate) fn check(
    status: StatusCode,
    headers: &HeaderMap,
    directives: &ResponseDirectives,
    per_user: bool,
) -> Result<(), NotStored> {
    // Final statuses only; a partial or "not modified" answer is not a
    // whole response to store.
    if status.as_u16() < 200 || matches!(status.as_u16(), 206 | 304) {
        return Err(NotStored::Status);
    }
    if directives.must_understand && !understood(status) {
        return Err(NotStored::Status);
    }
    if headers.contains_key(SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    if headers.get_all(VARY).iter().any(|v| {
        v.to_str()
            .map_or(true, |s| s.split(',').any(|n| n.trim() == "*"))
    }) {
        return Err(NotStored::VaryStar);
    }
    // `must-understand` with a status the cache understands overrides
    // `no-store` (§5.2.2.3).
    if directives.no_store && !(directives.must_understand && understood(status)) {
        return Err(NotStored::NoStore);
    }
    if directives.private && !per_user {
        return Err(NotStored::Private);
    }
    Ok(())
}

/// The statuses whose caching semantics this cache knows (RFC 9110 §15).
fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=205 | 300..=305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::CACHE_CONTROL;
    use http::HeaderValue;

    fn verdict(status: u16, pairs: &[(&str, &str)], per_user: bool) -> Result<(), NotStored> {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let directives = ResponseDirectives::parse(&headers, &CACHE_CONTROL);
        check(
            StatusCode::from_u16(status).unwrap(),
            &headers,
            &directives,
            per_user,
        )
    }

    #[test]
    fn refusals() {
        let cases = [
            (206, vec![], NotStored::Status),
            (304, vec![], NotStored::Status),
            (200, vec![("set-cookie", "a=b")], NotStored::SetCookie),
            (
                200,
                vec![
                    ("set-cookie", "a=b"),
                    ("cache-control", "public, max-age=60"),
                ],
                NotStored::SetCookie,
            ),
            (200, vec![("cache-control", "no-store")], NotStored::NoStore),
            (200, vec![("cache-control", "private")], NotStored::Private),
            (200, vec![("vary", "accept, *")], NotStored::VaryStar),
            (
                599,
                vec![("cache-control", "max-age=60, no-store, must-understand")],
                NotStored::Status,
            ),
        ];
        for (status, pairs, why) in cases {
            assert_eq!(
                verdict(status, &pairs, false),
                Err(why),
                "{status} {pairs:?}"
            );
        }
    }

    #[test]
    fn private_per_user_and_must_understand_are_stored() {
        assert_eq!(
            verdict(200, &[("cache-control", "private, max-age=5")], true),
            Ok(())
        );
        assert_eq!(
            verdict(
                200,
                &[("cache-control", "no-store, must-understand, max-age=5")],
                false
            ),
            Ok(())
        );
        assert_eq!(
            verdict(503, &[("cache-control", "max-age=5")], false),
            Ok(())
        );
    }
}
