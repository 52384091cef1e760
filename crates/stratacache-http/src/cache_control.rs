//! The `Cache-Control` directives a shared cache acts on, and whether a
//! handler's response may be stored at all.
//!
//! Only what a server-side shared cache needs is parsed: `no-store`,
//! `no-cache`, `private`, `max-age`, `s-maxage`. Heuristic freshness (from
//! `Last-Modified`) and revalidation against an origin, the parts of RFC 9111
//! that a crate like `http-cache-semantics` models, have no use here: the
//! handler is the origin and every route has an explicit TTL.

use std::time::Duration;

use http::header::{CACHE_CONTROL, SET_COOKIE, VARY};
use http::{HeaderMap, StatusCode};

/// The directives of a `Cache-Control` header that decide storing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Directives {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
}

impl Directives {
    /// Parse every `Cache-Control` header of `headers` (directives are
    /// case-insensitive; unknown ones are ignored; a malformed number makes
    /// the directive count as zero, the cautious reading).
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut out = Self::default();
        for value in headers.get_all(CACHE_CONTROL) {
            let Ok(text) = value.to_str() else {
                // Unreadable directives: assume the strictest.
                out.no_store = true;
                continue;
            };
            for directive in text.split(',') {
                let (name, arg) = match directive.split_once('=') {
                    Some((name, arg)) => (name.trim(), Some(arg.trim().trim_matches('"'))),
                    None => (directive.trim(), None),
                };
                let seconds = || arg.and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => out.no_store = true,
                    // `no-cache` with field names restricts only those fields;
                    // treating it as plain `no-cache` is the cautious reading.
                    "no-cache" => out.no_cache = true,
                    "private" => out.private = true,
                    "max-age" => out.max_age = Some(seconds()),
                    "s-maxage" => out.s_maxage = Some(seconds()),
                    _ => {}
                }
            }
        }
        out
    }

    /// The freshness lifetime the response asks a shared cache for, if any:
    /// `s-maxage` before `max-age`.
    pub fn shared_max_age(&self) -> Option<Duration> {
        self.s_maxage.or(self.max_age).map(Duration::from_secs)
    }
}

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotStored {
    Status,
    SetCookie,
    NoStore,
    NoCache,
    Private,
    ZeroMaxAge,
    VaryStar,
}

impl NotStored {
    pub fn as_str(self) -> &'static str {
        match self {
            NotStored::Status => "status",
            NotStored::SetCookie => "set-cookie",
            NotStored::NoStore => "no-store",
            NotStored::NoCache => "no-cache",
            NotStored::Private => "private",
            NotStored::ZeroMaxAge => "max-age=0",
            NotStored::VaryStar => "vary-star",
        }
    }
}

/// Statuses stored without explicit freshness (RFC 9110 §15.1 "heuristically
/// cacheable", less 405/414/501 which say more about the request than the
/// resource). Everything else, 5xx above all, is never stored.
fn status_is_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 410
    )
}

/// Whether a response may be stored, and for how long: the response's
/// `s-maxage`/`max-age`, else `route_ttl`.
///
/// `per_user` says the entry is keyed by user, which makes `private`
/// responses storable: the stored copy is only ever served to that user.
pub(crate) fn storable(
    status: StatusCode,
    headers: &HeaderMap,
    route_ttl: Duration,
    per_user: bool,
) -> Result<Duration, NotStored> {
    if !status_is_cacheable(status) {
        return Err(NotStored::Status);
    }
    // A response that sets a cookie is someone's response: never stored,
    // whatever the route says.
    if headers.contains_key(SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    if headers.get_all(VARY).iter().any(|v| {
        v.to_str()
            .map_or(true, |s| s.split(',').any(|n| n.trim() == "*"))
    }) {
        return Err(NotStored::VaryStar);
    }
    let directives = Directives::parse(headers);
    if directives.no_store {
        return Err(NotStored::NoStore);
    }
    // `no-cache` allows storing only with revalidation on every use, which
    // would call the handler every time: not stored.
    if directives.no_cache {
        return Err(NotStored::NoCache);
    }
    if directives.private && !per_user {
        return Err(NotStored::Private);
    }
    match directives.shared_max_age() {
        Some(ttl) if ttl.is_zero() => Err(NotStored::ZeroMaxAge),
        Some(ttl) => Ok(ttl),
        None => Ok(route_ttl),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn s_maxage_wins_over_max_age() {
        let h = headers(&[("cache-control", "public, max-age=10, s-maxage=30")]);
        assert_eq!(
            storable(StatusCode::OK, &h, TTL, false),
            Ok(Duration::from_secs(30))
        );
    }

    #[test]
    fn directives_are_case_insensitive_and_split_over_headers() {
        let h = headers(&[("cache-control", "Public"), ("cache-control", "MAX-AGE=7")]);
        assert_eq!(
            storable(StatusCode::OK, &h, TTL, false),
            Ok(Duration::from_secs(7))
        );
    }

    #[test]
    fn refusals() {
        let cases = [
            (StatusCode::INTERNAL_SERVER_ERROR, vec![], NotStored::Status),
            (
                StatusCode::OK,
                vec![("set-cookie", "a=b")],
                NotStored::SetCookie,
            ),
            (
                StatusCode::OK,
                vec![("cache-control", "no-store")],
                NotStored::NoStore,
            ),
            (
                StatusCode::OK,
                vec![("cache-control", "no-cache")],
                NotStored::NoCache,
            ),
            (
                StatusCode::OK,
                vec![("cache-control", "private")],
                NotStored::Private,
            ),
            (
                StatusCode::OK,
                vec![("cache-control", "max-age=0")],
                NotStored::ZeroMaxAge,
            ),
            (
                StatusCode::OK,
                vec![("vary", "accept, *")],
                NotStored::VaryStar,
            ),
            (
                StatusCode::OK,
                vec![("cache-control", "max-age=abc")],
                NotStored::ZeroMaxAge,
            ),
        ];
        for (status, pairs, why) in cases {
            assert_eq!(
                storable(status, &headers(&pairs), TTL, false),
                Err(why),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn private_is_stored_only_per_user() {
        let h = headers(&[("cache-control", "private, max-age=5")]);
        assert_eq!(
            storable(StatusCode::OK, &h, TTL, true),
            Ok(Duration::from_secs(5))
        );
    }
}
