//! Request → cache key.
//!
//! A response is stored under a digest of its *primary key* (method, host,
//! path, normalized query, the always-keyed and route-keyed headers, the
//! user's digest) and of the values of the request headers its `Vary`
//! names. Which headers a resource varies on is only known from a response,
//! so it is remembered per primary key (the *resource spec*) and looked up
//! first. The primary key's text is also stored in the entry and compared on
//! every serve, with the varied header values: a digest collision or a
//! changed `Vary` can cost a miss, never a wrong answer.

use std::fmt::Write as _;

use http::header::HOST;
use http::request::Parts;
use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};

use crate::policy::RouteRule;

/// The values of varied request headers, as recorded with a response:
/// `(lower-case name, value)`; `None` when the request did not send it.
pub(crate) type VaryValues = Vec<(String, Option<String>)>;

/// The primary key of a request, as text.
pub(crate) fn primary(
    parts: &Parts,
    rule: &RouteRule,
    keyed: &[HeaderName],
    user: Option<&str>,
) -> String {
    let mut key = String::with_capacity(128);
    key.push_str(parts.method.as_str());
    key.push('\n');
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            parts
                .headers
                .get(HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        })
        .unwrap_or_default();
    // Exact bytes, not lower-cased: a handler that reflects the host must
    // not hand an attacker's `SHOP.EXAMPLE` to clients that sent `shop.example`.
    key.push_str(&host);
    key.push('\n');
    key.push_str(parts.uri.path());
    key.push('\n');
    key.push_str(&normalize_query(parts.uri.query().unwrap_or("")));
    for name in keyed.iter().chain(&rule.key_headers) {
        let values = joined_values(&parts.headers, name.as_str());
        if let Some(values) = values {
            let _ = write!(key, "\n{name}: {values}");
        }
    }
    key.push('\n');
    if let Some(user) = user {
        // Only a digest of the identity: keys must not carry tokens.
        key.push_str("user ");
        key.push_str(&digest_hex(user.as_bytes(), 32));
    }
    key
}

/// The query with its parameters decoded and re-encoded canonically
/// (`%41` and `A`, `+` and `%20` are one), sorted by name. Values of one
/// name keep their order: handlers that read lists see it.
pub(crate) fn normalize_query(query: &str) -> String {
    if query.is_empty() {
        return String::new();
    }
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// The request's values of the headers a response varies on.
pub(crate) fn vary_values(headers: &HeaderMap, names: &[String]) -> VaryValues {
    names
        .iter()
        .map(|name| (name.clone(), joined_values(headers, name)))
        .collect()
}

/// Every value of header `name`, joined by ", " (how a list header is
/// equivalently written); `None` when absent.
fn joined_values(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let mut out = String::new();
    for (i, value) in values.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(String::from_utf8_lossy(value.as_bytes()).trim());
    }
    Some(out)
}

/// The header names a response's `Vary` lists, lower-case, sorted, deduplicated.
pub(crate) fn vary_names(headers: &HeaderMap) -> Vec<String> {
    let mut names: Vec<String> = headers
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The stored key of a response: a digest of the primary key and the varied values.
pub(crate) fn response_key(primary: &str, vary: &VaryValues) -> String {
    let mut text = String::from(primary);
    for (name, value) in vary {
        let _ = write!(
            text,
            "\nvary {name}: {}",
            value.as_deref().unwrap_or("\u{0}")
        );
    }
    format!("http:r:{}", digest_hex(text.as_bytes(), 40))
}

/// The stored key of a primary key's resource spec.
pub(crate) fn vary_spec_key(primary: &str) -> String {
    format!("http:v:{}", digest_hex(primary.as_bytes(), 40))
}

/// The first `hex_len` hex digits of the SHA-256 of `bytes`.
pub(crate) fn digest_hex(bytes: &[u8], hex_len: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push(HEX[usize::from(byte >> 4)] as char);
        out.push(HEX[usize::from(byte & 0xf)] as char);
    }
    out.truncate(hex_len);
    out
}

/// The percent-decoded path, for route matching and path tags.
pub(crate) fn decoded_path(path: &str) -> String {
    percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .into_owned()
}

/// The tag every response of a path carries, and that an unsafe request to
/// the path invalidates: one of `buckets` tags, chosen by a digest of the
/// path. Each invalidated tag leaves a timestamp in Redis for days; bucketing
/// bounds them, however many distinct paths are written, at the price of a
/// write also invalidating the paths that share its bucket (one in
/// `buckets`).
pub(crate) fn path_tag(path: &str, buckets: u32) -> String {
    let digest = Sha256::digest(path.as_bytes());
    let bucket = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % buckets.max(1);
    format!("http-path:{bucket}")
}

/// The key under which the revalidation of one stored version of a
/// response runs, so that every caller that found that version stale, in
/// every instance, waits for one conditional request.
pub(crate) fn revalidation_key(response_key: &str, version: u64) -> String {
    format!("{response_key}:rv:{version}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::get(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn query_order_and_encoding_do_not_split_the_key() {
        assert_eq!(normalize_query("b=2&a=1"), normalize_query("a=1&b=2"));
        assert_eq!(normalize_query("q=%41+b"), normalize_query("q=A%20b"));
        // Values of one name keep their order.
        assert_ne!(normalize_query("a=1&a=2"), normalize_query("a=2&a=1"));
    }

    #[test]
    fn host_user_and_keyed_headers_are_in_the_key() {
        let rule = RouteRule::new();
        let keyed = [HeaderName::from_static("x-forwarded-host")];
        let base = primary(
            &parts("/a?x=1", &[("host", "a.example")]),
            &rule,
            &keyed,
            None,
        );
        let other_host = primary(
            &parts("/a?x=1", &[("host", "b.example")]),
            &rule,
            &keyed,
            None,
        );
        let forwarded = primary(
            &parts(
                "/a?x=1",
                &[("host", "a.example"), ("x-forwarded-host", "evil")],
            ),
            &rule,
            &keyed,
            None,
        );
        let user = primary(
            &parts("/a?x=1", &[("host", "a.example")]),
            &rule,
            &keyed,
            Some("u1"),
        );
        // A host spelt otherwise is another key.
        let upper = primary(
            &parts("/a?x=1", &[("host", "A.EXAMPLE")]),
            &rule,
            &keyed,
            None,
        );
        let all = [&base, &other_host, &forwarded, &user, &upper];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert!(
            !user.contains("u1"),
            "identities enter keys only as digests"
        );
    }

    #[test]
    fn path_tags_are_bounded_and_stable() {
        let tags: std::collections::HashSet<String> = (0..1_000)
            .map(|i| path_tag(&format!("/things/{i}"), 16))
            .collect();
        assert_eq!(tags.len(), 16);
        assert_eq!(path_tag("/a", 1024), path_tag("/a", 1024));
    }

    #[test]
    fn vary_values_split_the_stored_key() {
        let p = parts("/a", &[("accept-language", "de")]);
        let names = vec!["accept-language".to_string()];
        let de = vary_values(&p.headers, &names);
        let none = vary_values(&parts("/a", &[]).headers, &names);
        assert_ne!(response_key("k", &de), response_key("k", &none));
        assert_eq!(
            vary_names(&{
                let mut h = HeaderMap::new();
                h.append("vary", "Accept-Language, accept".parse().unwrap());
                h.append("vary", "ACCEPT".parse().unwrap());
                h
            }),
            vec!["accept".to_string(), "accept-language".to_string()]
        );
    }
}
