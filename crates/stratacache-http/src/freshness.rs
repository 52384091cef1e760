//! How long a response stays fresh and how old it is (RFC 9111 §4.2): plain
//! functions of its headers and of when it was requested and received.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{AGE, DATE, EXPIRES, LAST_MODIFIED};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use crate::cache_control::{ResponseDirectives, MAX_DELTA_SECONDS};

/// The fraction of the time since `Last-Modified` a response without
/// explicit freshness is heuristically fresh for (§4.2.2's "typical setting").
const HEURISTIC_FRACTION: u64 = 10;
/// The longest heuristic lifetime: past a day a heuristic is a guess about
/// the far future.
const HEURISTIC_CAP_MS: u64 = 24 * 3600 * 1000;

/// How a route treats responses that state no freshness lifetime (no
/// `s-maxage`, `max-age` or `Expires`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unstated {
    /// RFC 9111 §4.2.2: a tenth of the time since `Last-Modified`, for
    /// statuses that are heuristically cacheable (or `public` responses).
    Heuristic,
    /// Never stored.
    NotStored,
    /// The route's TTL: the application knows its handlers' data.
    Fixed(Duration),
}

/// The age arithmetic of §4.2.3, fixed when a response arrives. Times are
/// milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Timing {
    /// When the response was received.
    pub response_time_ms: u64,
    /// Its age on arrival: the larger of `Age` plus the request's round trip
    /// and the time since its `Date`.
    pub corrected_initial_age_ms: u64,
    /// How long it is fresh, counted from its origin.
    pub lifetime_ms: u64,
}

impl Timing {
    /// The timing of a response, or `None` if nothing makes it storable: no
    /// explicit freshness, and neither the route nor §4.2.2 grants any.
    pub fn of(
        status: StatusCode,
        headers: &HeaderMap,
        directives: &ResponseDirectives,
        unstated: Unstated,
        request_time_ms: u64,
        response_time_ms: u64,
    ) -> Option<Self> {
        let date_ms = header_date_ms(headers, &DATE).unwrap_or(response_time_ms);
        let lifetime_ms = lifetime_ms(status, headers, directives, unstated, date_ms)?;
        let apparent_age = response_time_ms.saturating_sub(date_ms);
        let response_delay = response_time_ms.saturating_sub(request_time_ms);
        let corrected_age_value = age_value_ms(headers).saturating_add(response_delay);
        Some(Self {
            response_time_ms,
            corrected_initial_age_ms: apparent_age.max(corrected_age_value),
            lifetime_ms,
        })
    }

    /// `current_age` of §4.2.3.
    pub fn age_ms(&self, now_ms: u64) -> u64 {
        self.corrected_initial_age_ms
            .saturating_add(now_ms.saturating_sub(self.response_time_ms))
    }

    /// How much longer it is fresh (0 when stale).
    pub fn fresh_for_ms(&self, now_ms: u64) -> u64 {
        self.lifetime_ms.saturating_sub(self.age_ms(now_ms))
    }

    /// How long it has been stale (0 when fresh).
    pub fn stale_for_ms(&self, now_ms: u64) -> u64 {
        self.age_ms(now_ms).saturating_sub(self.lifetime_ms)
    }

    pub fn is_fresh(&self, now_ms: u64) -> bool {
        self.age_ms(now_ms) < self.lifetime_ms
    }
}

/// The freshness lifetime of §4.2.1: `s-maxage`, `max-age`, `Expires`
/// against `Date` (several or invalid `Expires` mean already expired), then
/// what the route says of responses that state none.
fn lifetime_ms(
    status: StatusCode,
    headers: &HeaderMap,
    directives: &ResponseDirectives,
    unstated: Unstated,
    date_ms: u64,
) -> Option<u64> {
    if let Some(seconds) = directives.s_maxage.or(directives.max_age) {
        return Some(seconds * 1000);
    }
    // A targeted field (RFC 9213 §2.1) replaces `Expires` as well.
    let mut expires = headers.get_all(EXPIRES).iter();
    if let Some(first) = expires.next().filter(|_| !directives.targeted) {
        if expires.next().is_some() {
            return Some(0);
        }
        return Some(parse_date_ms(first).map_or(0, |at| at.saturating_sub(date_ms)));
    }
    // §3: without explicit freshness, only heuristically cacheable statuses
    // (or `public` responses) may be stored at all.
    if !(heuristically_cacheable(status) || directives.public) {
        return None;
    }
    match unstated {
        Unstated::NotStored => None,
        Unstated::Fixed(ttl) => Some(ttl.as_millis() as u64),
        Unstated::Heuristic => Some(
            header_date_ms(headers, &LAST_MODIFIED)
                .map_or(0, |modified| {
                    date_ms.saturating_sub(modified) / HEURISTIC_FRACTION
                })
                .min(HEURISTIC_CAP_MS),
        ),
    }
}

/// RFC 9110 §15.1's heuristically cacheable statuses, less 206: partial
/// responses are not stored.
pub(crate) fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// The `Age` a response arrived with: the first member of the first line,
/// if it is a non-negative integer (anything else is ignored, §5.1).
fn age_value_ms(headers: &HeaderMap) -> u64 {
    let Some(first) = headers.get(AGE).and_then(|v| v.to_str().ok()) else {
        return 0;
    };
    let member = first.split(',').next().unwrap_or("").trim();
    if member.is_empty() || !member.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    member
        .parse::<u64>()
        .map_or(MAX_DELTA_SECONDS, |s| s.min(MAX_DELTA_SECONDS))
        * 1000
}

/// The one value of a date header, in ms since the epoch.
pub(crate) fn header_date_ms(headers: &HeaderMap, name: &http::HeaderName) -> Option<u64> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    parse_date_ms(first)
}

/// An HTTP date (IMF-fixdate, or the obsolete RFC 850 and asctime forms) in
/// ms since the epoch; `None` if it is not one.
pub(crate) fn parse_date_ms(value: &HeaderValue) -> Option<u64> {
    let text = value.to_str().ok()?;
    let at = httpdate::parse_http_date(text.trim()).ok()?;
    Some(
        at.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    )
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::CACHE_CONTROL;
    use http::HeaderName;

    const NOW: u64 = 1_900_000_000_000;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn date(offset_secs: i64) -> String {
        let at = UNIX_EPOCH + Duration::from_millis((NOW as i64 + offset_secs * 1000) as u64);
        httpdate::fmt_http_date(at)
    }

    fn timing(status: u16, pairs: &[(&str, &str)], unstated: Unstated) -> Option<Timing> {
        let headers = headers(pairs);
        let directives = ResponseDirectives::parse(&headers, &CACHE_CONTROL);
        Timing::of(
            StatusCode::from_u16(status).unwrap(),
            &headers,
            &directives,
            unstated,
            NOW,
            NOW,
        )
    }

    fn lifetime(pairs: &[(&str, &str)]) -> Option<u64> {
        timing(200, pairs, Unstated::Heuristic).map(|t| t.lifetime_ms / 1000)
    }

    #[test]
    fn s_maxage_then_max_age_then_expires_against_date() {
        let now = date(0);
        assert_eq!(
            lifetime(&[("cache-control", "max-age=10, s-maxage=30")]),
            Some(30)
        );
        let in_a_minute = date(60);
        assert_eq!(
            lifetime(&[("cache-control", "max-age=5"), ("expires", &in_a_minute)]),
            Some(5)
        );
        assert_eq!(
            lifetime(&[("date", &now), ("expires", &in_a_minute)]),
            Some(60)
        );
        // Expires before Date: stale, whatever our clock says.
        let fast = date(100);
        let fifty = date(50);
        assert_eq!(lifetime(&[("date", &fast), ("expires", &fifty)]), Some(0));
    }

    #[test]
    fn invalid_or_repeated_expires_means_already_expired() {
        for invalid in [
            "0",
            "Thu, 18 Aug 2050 02:01:18 UTC",
            "Thu, 18 Aug 2050 02:01:18 AEST",
            "Thu, 18 Aug 50 02:01:18 GMT",
            "Thu 18 Aug 2050 02:01:18 GMT",
            "Thu, 18  Aug  2050 02:01:18 GMT",
            "Thu, 18-Aug-2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02.01.18 GMT",
            "Thu, 18 Aug 2050 2:01:18 GMT",
        ] {
            assert_eq!(lifetime(&[("expires", invalid)]), Some(0), "{invalid}");
        }
        let later = date(60);
        assert_eq!(
            lifetime(&[("expires", &later), ("expires", &later)]),
            Some(0)
        );
        for valid in [
            "Thursday, 18-Aug-50 02:01:18 GMT",
            "Thu Aug 18 02:01:18 2050",
        ] {
            assert!(lifetime(&[("expires", valid)]).unwrap() > 0, "{valid}");
        }
    }

    #[test]
    fn the_upstream_age_and_the_time_since_date_count() {
        let t = timing(
            200,
            &[("cache-control", "max-age=3600"), ("age", "7200")],
            Unstated::Heuristic,
        )
        .unwrap();
        assert!(!t.is_fresh(NOW));
        assert_eq!(t.age_ms(NOW + 1_000), 7_201_000);
        let old = date(-30);
        let t = timing(
            200,
            &[("cache-control", "max-age=60"), ("date", &old)],
            Unstated::Heuristic,
        )
        .unwrap();
        assert_eq!(t.age_ms(NOW), 30_000);
        for ignored in ["abc", "-7200", "7200.0"] {
            let t = timing(
                200,
                &[("cache-control", "max-age=3600"), ("age", ignored)],
                Unstated::Heuristic,
            )
            .unwrap();
            assert!(t.is_fresh(NOW), "{ignored}");
        }
        for stale in ["2147483648", "7200, 0"] {
            let t = timing(
                200,
                &[("cache-control", "max-age=3600"), ("age", stale)],
                Unstated::Heuristic,
            )
            .unwrap();
            assert!(!t.is_fresh(NOW), "{stale}");
        }
    }

    #[test]
    fn heuristics_only_for_heuristically_cacheable_statuses_or_public() {
        let modified = date(-1_000);
        let pairs = [("last-modified", modified.as_str())];
        assert_eq!(
            timing(200, &pairs, Unstated::Heuristic)
                .unwrap()
                .lifetime_ms,
            100_000
        );
        for status in [201, 202, 403, 500, 502, 503, 504, 599] {
            assert_eq!(
                timing(status, &pairs, Unstated::Heuristic),
                None,
                "{status}"
            );
        }
        let public = [
            ("last-modified", modified.as_str()),
            ("cache-control", "public"),
        ];
        assert!(timing(599, &public, Unstated::Heuristic).is_some());
        assert_eq!(timing(200, &pairs, Unstated::NotStored), None);
        assert_eq!(
            timing(200, &[], Unstated::Fixed(Duration::from_secs(5)))
                .unwrap()
                .lifetime_ms,
            5_000
        );
        // Explicit freshness makes any status storable.
        assert!(timing(503, &[("cache-control", "max-age=5")], Unstated::NotStored).is_some());
    }
}
