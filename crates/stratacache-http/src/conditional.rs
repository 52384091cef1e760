//! The client's conditional and range headers. The layer answers them from
//! the stored response itself (RFC 9111 §4.3.2, RFC 9110 §13, §14), so they
//! are taken out of the request a load sends to the handler: the handler
//! must answer in full for its response to be storable.

use http::header::{IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, RANGE};
use http::{HeaderMap, HeaderValue, Method};

use crate::cached_response::CachedResponse;
use crate::freshness::{header_date_ms, parse_date_ms};

/// `If-None-Match`, `If-Modified-Since`, `Range` and `If-Range`, as the
/// client sent them.
#[derive(Debug, Default)]
pub(crate) struct ClientConditionals {
    pub if_none_match: Option<HeaderValue>,
    pub if_modified_since: Option<HeaderValue>,
    pub range: Option<HeaderValue>,
    pub if_range: Option<HeaderValue>,
}

impl ClientConditionals {
    /// Take them out of `headers`. `Range` means something for GET only.
    pub fn take(headers: &mut HeaderMap, method: &Method) -> Self {
        let ranged = *method == Method::GET;
        Self {
            if_none_match: headers.remove(IF_NONE_MATCH),
            if_modified_since: headers.remove(IF_MODIFIED_SINCE),
            range: if ranged { headers.remove(RANGE) } else { None },
            if_range: if ranged {
                headers.remove(IF_RANGE)
            } else {
                None
            },
        }
    }

    /// Put them back, for a request the handler answers itself.
    pub fn restore(self, headers: &mut HeaderMap) {
        for (name, value) in [
            (IF_NONE_MATCH, self.if_none_match),
            (IF_MODIFIED_SINCE, self.if_modified_since),
            (RANGE, self.range),
            (IF_RANGE, self.if_range),
        ] {
            if let Some(value) = value {
                headers.insert(name, value);
            }
        }
    }

    /// Whether `stored` is what the client already has: its ETag matches
    /// `If-None-Match` (weakly), or, without `If-None-Match`, it was not
    /// modified since `If-Modified-Since` (its `Last-Modified`, else its
    /// `Date`, else when it was received).
    pub fn not_modified(&self, stored: &CachedResponse) -> bool {
        if let Some(if_none_match) = &self.if_none_match {
            return etag_matches(if_none_match, &stored.etag);
        }
        let Some(since) = self.if_modified_since.as_ref().and_then(parse_date_ms) else {
            return false;
        };
        let headers = stored.headers();
        let modified = header_date_ms(headers, &http::header::LAST_MODIFIED)
            .or_else(|| header_date_ms(headers, &http::header::DATE))
            .unwrap_or(stored.timing.response_time_ms);
        modified <= since
    }

    /// The `Range` to answer from `stored`: a whole `200` whose validator
    /// still matches the client's `If-Range`.
    pub fn range_for(&self, stored: &CachedResponse) -> Option<&HeaderValue> {
        let range = self.range.as_ref()?;
        if stored.status != 200 {
            return None;
        }
        match &self.if_range {
            None => Some(range),
            Some(if_range) => if_range_matches(if_range, stored).then_some(range),
        }
    }
}

/// `If-Range` (RFC 9110 §13.1.5): a strong match of the ETag, or exactly
/// the `Last-Modified` date.
fn if_range_matches(if_range: &HeaderValue, stored: &CachedResponse) -> bool {
    let Ok(value) = if_range.to_str() else {
        return false;
    };
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        return !value.starts_with("W/") && !stored.etag.starts_with("W/") && value == stored.etag;
    }
    stored
        .headers()
        .get(http::header::LAST_MODIFIED)
        .is_some_and(|modified| modified.as_bytes() == value.as_bytes())
}

/// Weak comparison (RFC 9110 §13.1.2): `W/` prefixes are ignored; `*` matches.
pub(crate) fn etag_matches(if_none_match: &HeaderValue, etag: &str) -> bool {
    let Ok(list) = if_none_match.to_str() else {
        return false;
    };
    let ours = etag.trim_start_matches("W/");
    list.split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == ours)
}
