//! The stored form of a response, and answering a request from it.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::body::{self, CacheBody};
use crate::conditional::ClientConditionals;
use crate::freshness::Timing;
use crate::key::{digest_hex, VaryValues};
use crate::range::{self, Selected};
use crate::reuse::StalePolicy;

/// The response header saying where an answer came from.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// What a load of a cacheable request produced, as stored in the cache.
// Nearly every value is `Stored`; boxing it would add an allocation to
// every hit's clone out of L1.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Outcome {
    /// A response that may be served to every request with its key.
    Stored(CachedResponse),
    /// The handler's response was not storable (or the handler failed);
    /// never stored, only handed to the callers that coalesced on the load,
    /// who then call the handler themselves.
    Uncacheable,
}

/// What is known about a resource (one primary key), stored beside its
/// responses: the request headers its responses vary on, and whether its
/// responses are not storable (then requests go straight to the handler for
/// a while, instead of queueing behind one load to learn it again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ResourceSpec {
    pub vary: Vec<String>,
    pub pass: bool,
}

/// A response as stored: status, end-to-end headers, the body, the ETag
/// served for it, its age arithmetic and stale rules, and what it was
/// produced for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CachedResponse {
    pub status: u16,
    #[serde(with = "header_serde")]
    headers: HeaderMap,
    #[serde(with = "body_serde")]
    body: Bytes,
    /// The ETag served: the handler's, or a digest of the body made here.
    pub etag: String,
    /// Whether `etag` is the handler's, a validator it can be asked about.
    pub etag_from_origin: bool,
    pub timing: Timing,
    pub stale: StalePolicy,
    /// The primary key text the response was produced for.
    pub primary: String,
    /// The varied request headers' values it was produced for.
    pub vary: VaryValues,
}

/// Headers that describe one connection or one transfer, not the resource
/// (RFC 9110 §7.6.1, RFC 9111 §3.1), plus the ones this layer sets itself
/// on every answer (`Age` is kept in the response's [`Timing`]).
const NOT_STORED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
    "proxy-authentication-info",
    "proxy-authorization",
    "age",
    "x-cache",
];

/// Remove the fields [`NOT_STORED`] names and those its `Connection` names.
fn remove_unstored(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in NOT_STORED {
        headers.remove(*name);
    }
}

impl CachedResponse {
    /// The stored form of a handler's response, made for `made_for`
    /// (primary key, varied values); the ETag is the handler's, or a digest
    /// of the body.
    pub fn new(
        status: StatusCode,
        mut headers: HeaderMap,
        body: Bytes,
        made_for: (String, VaryValues),
        timing: Timing,
        stale: StalePolicy,
    ) -> Self {
        remove_unstored(&mut headers);
        let origin_etag = headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let etag_from_origin = origin_etag.is_some();
        let etag = origin_etag.unwrap_or_else(|| {
            let etag = format!("\"{}\"", digest_hex(&body, 32));
            if let Ok(value) = HeaderValue::from_str(&etag) {
                headers.insert(header::ETAG, value);
            }
            etag
        });
        let (primary, vary) = made_for;
        Self {
            status: status.as_u16(),
            headers,
            body,
            etag,
            etag_from_origin,
            timing,
            stale,
            primary,
            vary,
        }
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// When it was received: its version among the responses of its key.
    pub fn stored_at_ms(&self) -> u64 {
        self.timing.response_time_ms
    }

    /// Whether this response was produced for a request like this one.
    pub fn serves(&self, primary: &str, vary: &VaryValues) -> bool {
        self.primary == primary && &self.vary == vary
    }

    /// The names of the headers this response varies on.
    pub fn vary_names(&self) -> Vec<String> {
        self.vary.iter().map(|(name, _)| name.clone()).collect()
    }

    /// The handler's validators, as the headers of a conditional request
    /// (§4.3.1): `If-None-Match` with its ETag, `If-Modified-Since` with its
    /// `Last-Modified`. Empty: it can only be fetched again in full.
    pub fn validators(&self) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        if self.etag_from_origin {
            if let Some(etag) = self.headers.get(header::ETAG) {
                out.push((header::IF_NONE_MATCH, etag.clone()));
            }
        }
        if let Some(modified) = self.headers.get(header::LAST_MODIFIED) {
            out.push((header::IF_MODIFIED_SINCE, modified.clone()));
        }
        out
    }

    /// The stored response's fields updated by a `304 Not Modified` (§3.2,
    /// §4.3.4): every field the 304 carries replaces the stored one, except
    /// those never stored and `Content-Length`, which describes the stored
    /// body. Its timing is the caller's to recompute.
    pub fn updated_by(mut self, not_modified: &HeaderMap) -> Self {
        let mut update = not_modified.clone();
        remove_unstored(&mut update);
        update.remove(header::CONTENT_LENGTH);
        for name in update.keys() {
            self.headers.remove(name);
        }
        for (name, value) in &update {
            self.headers.append(name.clone(), value.clone());
        }
        if let Some(etag) = update.get(header::ETAG).and_then(|v| v.to_str().ok()) {
            self.etag = etag.to_string();
            self.etag_from_origin = true;
        }
        self
    }

    /// The answer to a request: `304 Not Modified` when the client's
    /// conditionals say it has this response, a `206` (or `416`) for a
    /// range it may have, else the stored response; with `Age` and `X-Cache`.
    pub fn answer(
        self,
        method: &Method,
        client: &ClientConditionals,
        x_cache: &'static str,
        now_ms: u64,
    ) -> Response<CacheBody> {
        let age = HeaderValue::from(self.timing.age_ms(now_ms) / 1000);
        let mut response = if client.not_modified(&self) {
            self.not_modified()
        } else {
            let range = client.range_for(&self);
            match range.map(|r| range::select(r, self.body.len())) {
                Some(Selected::Part { first, last }) => self.part(first, last),
                Some(Selected::Unsatisfiable) => self.unsatisfiable(),
                Some(Selected::Whole) | None => self.whole(method),
            }
        };
        let headers = response.headers_mut();
        headers.insert(header::AGE, age);
        headers.insert(X_CACHE, HeaderValue::from_static(x_cache));
        response
    }

    fn whole(self, method: &Method) -> Response<CacheBody> {
        let body = if method == Method::HEAD {
            body::empty()
        } else {
            body::full(self.body)
        };
        let mut response = Response::new(body);
        *response.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        *response.headers_mut() = self.headers;
        response
    }

    fn not_modified(self) -> Response<CacheBody> {
        let mut response = Response::new(body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        let headers = response.headers_mut();
        // RFC 9110 §15.4.5: the validators and caching headers, no content headers.
        for name in [
            header::CACHE_CONTROL,
            header::CONTENT_LOCATION,
            header::DATE,
            header::ETAG,
            header::EXPIRES,
            header::VARY,
        ] {
            for value in self.headers.get_all(&name) {
                headers.append(name.clone(), value.clone());
            }
        }
        response
    }

    fn part(self, first: usize, last: usize) -> Response<CacheBody> {
        let total = self.body.len();
        let mut response = Response::new(body::full(self.body.slice(first..=last)));
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let headers = response.headers_mut();
        *headers = self.headers;
        headers.remove(header::CONTENT_LENGTH);
        if let Ok(range) = HeaderValue::from_str(&format!("bytes {first}-{last}/{total}")) {
            headers.insert(header::CONTENT_RANGE, range);
        }
        response
    }

    fn unsatisfiable(self) -> Response<CacheBody> {
        let total = self.body.len();
        let mut response = Response::new(body::empty());
        *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
        let headers = response.headers_mut();
        for name in [header::DATE, header::ETAG, header::LAST_MODIFIED] {
            if let Some(value) = self.headers.get(&name) {
                headers.insert(name, value.clone());
            }
        }
        if let Ok(range) = HeaderValue::from_str(&format!("bytes */{total}")) {
            headers.insert(header::CONTENT_RANGE, range);
        }
        response
    }
}

/// Headers as a list of `(name, value)` byte strings.
mod header_serde {
    use http::{HeaderMap, HeaderName, HeaderValue};
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(headers: &HeaderMap, serializer: S) -> Result<S::Ok, S::Error> {
        let pairs: Vec<(&str, String)> = headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        pairs.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<HeaderMap, D::Error> {
        let pairs = Vec::<(String, String)>::deserialize(deserializer)?;
        let mut headers = HeaderMap::with_capacity(pairs.len());
        for (name, value) in pairs {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(D::Error::custom)?;
            let value = HeaderValue::from_str(&value).map_err(D::Error::custom)?;
            headers.append(name, value);
        }
        Ok(headers)
    }
}

/// The body as base64 text in human-readable formats (JSON), as raw bytes
/// in binary ones (postcard): compact either way.
mod body_serde {
    use base64::Engine as _;
    use bytes::Bytes;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(body: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(body))
        } else {
            serializer.serialize_bytes(body)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map(Bytes::from)
                .map_err(D::Error::custom)
        } else {
            let bytes: serde_bytes_buf::ByteBuf = Deserialize::deserialize(deserializer)?;
            Ok(Bytes::from(bytes.0))
        }
    }

    /// An owned byte buffer read with `deserialize_byte_buf`, so binary
    /// formats hand over bytes, not a sequence of numbers.
    mod serde_bytes_buf {
        use serde::de::{Deserialize, Deserializer, Error, SeqAccess, Visitor};
        use std::fmt;

        pub struct ByteBuf(pub Vec<u8>);

        impl<'de> Deserialize<'de> for ByteBuf {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct BufVisitor;
                impl<'de> Visitor<'de> for BufVisitor {
                    type Value = ByteBuf;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str("bytes")
                    }
                    fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                        Ok(ByteBuf(v.to_vec()))
                    }
                    fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                        Ok(ByteBuf(v))
                    }
                    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
                        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                        while let Some(byte) = seq.next_element()? {
                            out.push(byte);
                        }
                        Ok(ByteBuf(out))
                    }
                }
                deserializer.deserialize_byte_buf(BufVisitor)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_900_000_000_000;

    fn sample() -> CachedResponse {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("hop"));
        headers.insert(header::AGE, HeaderValue::from_static("5"));
        let timing = Timing {
            response_time_ms: NOW,
            corrected_initial_age_ms: 5_000,
            lifetime_ms: 60_000,
        };
        let stale = StalePolicy {
            validate_always: false,
            never_stale: false,
            while_revalidate_ms: 0,
            if_error_ms: 0,
        };
        CachedResponse::new(
            StatusCode::OK,
            headers,
            Bytes::from_static(b"hello \xff"),
            ("GET\n/".into(), vec![]),
            timing,
            stale,
        )
    }

    fn client(pairs: &[(header::HeaderName, &str)]) -> ClientConditionals {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        ClientConditionals::take(&mut headers, &Method::GET)
    }

    #[test]
    fn round_trips_in_json_and_postcard() {
        let stored = sample();
        let json = serde_json::to_vec(&Outcome::Stored(stored.clone())).unwrap();
        let Outcome::Stored(back) = serde_json::from_slice(&json).unwrap() else {
            panic!()
        };
        assert_eq!(back.body, stored.body);
        assert_eq!(back.headers, stored.headers);
        assert_eq!(back.timing, stored.timing);
        for hop_by_hop in ["connection", "x-secret", "age"] {
            assert!(
                stored.headers.get(hop_by_hop).is_none(),
                "{hop_by_hop} is not stored"
            );
        }
        let binary = postcard::to_stdvec(&Outcome::Stored(stored.clone())).unwrap();
        assert!(
            binary.len() < json.len(),
            "postcard stores the body as bytes"
        );
        let Outcome::Stored(back) = postcard::from_bytes(&binary).unwrap() else {
            panic!()
        };
        assert_eq!((back.body, back.headers), (stored.body, stored.headers));
    }

    #[test]
    fn if_none_match_gives_304_without_body_and_age_counts_on() {
        let stored = sample();
        let inm = format!("W/{}, \"other\"", stored.etag);
        let response = stored.clone().answer(
            &Method::GET,
            &client(&[(header::IF_NONE_MATCH, &inm)]),
            "HIT",
            NOW + 2_000,
        );
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            response.headers()[header::ETAG].to_str().unwrap(),
            stored.etag
        );
        assert_eq!(response.headers()[header::AGE], "7");
        assert!(response.headers().get(header::CONTENT_TYPE).is_none());
        let other = client(&[(header::IF_NONE_MATCH, "\"nope\"")]);
        assert_eq!(
            stored.answer(&Method::GET, &other, "HIT", NOW).status(),
            StatusCode::OK
        );
    }

    #[test]
    fn a_304_replaces_the_fields_it_carries_but_not_content_length() {
        let stored = sample();
        let mut update = HeaderMap::new();
        update.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        update.insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        update.insert(header::ETAG, HeaderValue::from_static("\"new\""));
        let updated = stored.updated_by(&update);
        assert_eq!(updated.headers[header::CONTENT_TYPE], "text/html");
        assert!(updated.headers.get(header::CONTENT_LENGTH).is_none());
        assert_eq!(
            (updated.etag.as_str(), updated.etag_from_origin),
            ("\"new\"", true)
        );
        assert_eq!(
            updated.validators(),
            vec![(header::IF_NONE_MATCH, HeaderValue::from_static("\"new\""))]
        );
    }

    #[test]
    fn a_range_of_a_stored_200_is_a_206() {
        let stored = sample();
        let part = stored.clone().answer(
            &Method::GET,
            &client(&[(header::RANGE, "bytes=1-3")]),
            "HIT",
            NOW,
        );
        assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(part.headers()[header::CONTENT_RANGE], "bytes 1-3/7");
        let etag = stored.etag.clone();
        let matching = client(&[(header::RANGE, "bytes=1-3"), (header::IF_RANGE, &etag)]);
        assert_eq!(
            stored
                .clone()
                .answer(&Method::GET, &matching, "HIT", NOW)
                .status(),
            StatusCode::PARTIAL_CONTENT
        );
        let changed = client(&[(header::RANGE, "bytes=1-3"), (header::IF_RANGE, "\"old\"")]);
        assert_eq!(
            stored.answer(&Method::GET, &changed, "HIT", NOW).status(),
            StatusCode::OK
        );
    }
}
