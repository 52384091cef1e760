//! The stored form of a response, and answering a request from it.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::body::{self, CacheBody};
use crate::key::{digest_hex, VaryValues};

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
/// served for it, when it was produced, and what it was produced for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CachedResponse {
    pub status: u16,
    #[serde(with = "header_serde")]
    pub headers: HeaderMap,
    #[serde(with = "body_serde")]
    pub body: Bytes,
    pub etag: String,
    pub stored_at_ms: u64,
    /// The primary key text the response was produced for.
    pub primary: String,
    /// The varied request headers' values it was produced for.
    pub vary: VaryValues,
}

/// Headers that describe one connection or one transfer, not the resource
/// (RFC 9110 §7.6.1), plus the ones this layer sets itself on every serve.
const NOT_STORED: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
    "age",
    "x-cache",
];

impl CachedResponse {
    /// The stored form of a handler's response; the ETag is the handler's,
    /// or a digest of the body.
    pub fn new(
        status: StatusCode,
        mut headers: HeaderMap,
        body: Bytes,
        primary: String,
        vary: VaryValues,
    ) -> Self {
        for name in NOT_STORED {
            headers.remove(*name);
        }
        let etag = match headers.get(header::ETAG).and_then(|v| v.to_str().ok()) {
            Some(etag) => etag.to_string(),
            None => {
                let etag = format!("\"{}\"", digest_hex(&body, 32));
                if let Ok(value) = HeaderValue::from_str(&etag) {
                    headers.insert(header::ETAG, value);
                }
                etag
            }
        };
        Self {
            status: status.as_u16(),
            headers,
            body,
            etag,
            stored_at_ms: now_ms(),
            primary,
            vary,
        }
    }

    /// Whether this response was produced for a request like this one.
    pub fn serves(&self, primary: &str, vary: &VaryValues) -> bool {
        self.primary == primary && &self.vary == vary
    }

    /// The names of the headers this response varies on.
    pub fn vary_names(&self) -> Vec<String> {
        self.vary.iter().map(|(name, _)| name.clone()).collect()
    }

    /// The answer to a request: the stored response (with `Age` and
    /// `X-Cache`), or `304 Not Modified` when its `If-None-Match` names this ETag.
    pub fn answer(
        self,
        method: &Method,
        if_none_match: Option<&HeaderValue>,
        x_cache: &'static str,
    ) -> Response<CacheBody> {
        let not_modified = if_none_match.is_some_and(|inm| etag_matches(inm, &self.etag));
        let status = if not_modified {
            StatusCode::NOT_MODIFIED
        } else {
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK)
        };
        let body = if not_modified || method == Method::HEAD {
            body::empty()
        } else {
            body::full(self.body)
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        if not_modified {
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
        } else {
            *headers = self.headers;
        }
        let age = now_ms().saturating_sub(self.stored_at_ms) / 1000;
        headers.insert(header::AGE, HeaderValue::from(age));
        headers.insert(X_CACHE, HeaderValue::from_static(x_cache));
        response
    }
}

/// Weak comparison (RFC 9110 §13.1.2): `W/` prefixes are ignored; `*` matches.
fn etag_matches(if_none_match: &HeaderValue, etag: &str) -> bool {
    let Ok(list) = if_none_match.to_str() else {
        return false;
    };
    let ours = etag.trim_start_matches("W/");
    list.split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == ours)
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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

    fn sample() -> CachedResponse {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        CachedResponse::new(
            StatusCode::OK,
            headers,
            Bytes::from_static(b"hello \xff"),
            "GET\n/".into(),
            vec![],
        )
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
        assert!(
            stored.headers.get(header::CONNECTION).is_none(),
            "hop-by-hop headers are not stored"
        );
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
    fn if_none_match_gives_304_without_body() {
        let stored = sample();
        let inm = HeaderValue::from_str(&format!("W/{}, \"other\"", stored.etag)).unwrap();
        let response = stored.clone().answer(&Method::GET, Some(&inm), "HIT");
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            response.headers()[header::ETAG].to_str().unwrap(),
            stored.etag
        );
        assert!(response.headers().get(header::CONTENT_TYPE).is_none());
        let other = HeaderValue::from_static("\"nope\"");
        assert_eq!(
            stored.answer(&Method::GET, Some(&other), "HIT").status(),
            StatusCode::OK
        );
    }
}
