//! `Cache-Control` (RFC 9111 §5.2), read the way a shared cache must read
//! it: directive names are case-insensitive, arguments are tokens or quoted
//! strings (a comma inside quotes does not end a directive), and a
//! malformed argument is never read generously.

use std::borrow::Cow;

use http::header::{CACHE_CONTROL, PRAGMA};
use http::{HeaderMap, HeaderName};

/// The largest delta-seconds value a cache must handle (RFC 9111 §1.2.2);
/// larger values count as this one.
pub(crate) const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// The directives of a response that decide storing and reuse.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ResponseDirectives {
    pub no_store: bool,
    /// `no-cache`, with or without field names (the cautious reading).
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub must_understand: bool,
    /// Seconds; an invalid argument reads as 0 (stale), as §4.2.1 advises.
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    /// RFC 5861, seconds.
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
    /// Read from a targeted field (RFC 9213): `Expires` is then ignored too.
    pub targeted: bool,
}

/// The directives a request may send (RFC 9111 §5.2.1, §5.4).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RequestDirectives {
    pub no_cache: bool,
    pub no_store: bool,
    pub only_if_cached: bool,
    pub max_age: Option<u64>,
    pub min_fresh: Option<u64>,
    pub max_stale: Option<MaxStale>,
}

/// How stale a response the client accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MaxStale {
    /// `max-stale` without a value: any staleness.
    Any,
    Seconds(u64),
}

impl ResponseDirectives {
    /// The directives this cache follows: those of the first of the
    /// `targeted` fields (RFC 9213, e.g. `CDN-Cache-Control`) with a valid,
    /// non-empty value, else `Cache-Control`'s.
    pub fn select(headers: &HeaderMap, targeted: &[HeaderName]) -> Self {
        targeted
            .iter()
            .find_map(|field| Self::parse_targeted(headers, field))
            .unwrap_or_else(|| Self::parse(headers, &CACHE_CONTROL))
    }

    /// A targeted field: a Structured Fields dictionary (RFC 8941); `None`
    /// when absent, empty or not a valid dictionary (then it is ignored).
    /// A directive whose value has the wrong type is ignored.
    fn parse_targeted(headers: &HeaderMap, field: &HeaderName) -> Option<Self> {
        let lines = headers
            .get_all(field)
            .iter()
            .map(|v| v.to_str().ok())
            .collect::<Option<Vec<&str>>>()?;
        let dictionary: sfv::Dictionary = sfv::Parser::new(&lines.join(", ")).parse().ok()?;
        if dictionary.is_empty() {
            return None;
        }
        let mut out = Self {
            targeted: true,
            ..Self::default()
        };
        for (name, member) in &dictionary {
            let sfv::ListEntry::Item(item) = member else {
                continue;
            };
            let flag = item.bare_item.as_boolean() == Some(true);
            let seconds = item.bare_item.as_integer().map(|s| {
                u64::try_from(i64::from(s))
                    .unwrap_or(0)
                    .min(MAX_DELTA_SECONDS)
            });
            match name.as_str() {
                "no-store" => out.no_store = flag,
                "no-cache" => out.no_cache = flag,
                "private" => out.private = flag,
                "public" => out.public = flag,
                "must-revalidate" => out.must_revalidate = flag,
                "proxy-revalidate" => out.proxy_revalidate = flag,
                "must-understand" => out.must_understand = flag,
                "max-age" => out.max_age = seconds,
                "s-maxage" => out.s_maxage = seconds,
                "stale-while-revalidate" => out.stale_while_revalidate = seconds,
                "stale-if-error" => out.stale_if_error = seconds,
                _ => {}
            }
        }
        Some(out)
    }

    /// Every `field` header of `headers` (`Cache-Control`, or a targeted
    /// field such as `CDN-Cache-Control`).
    pub fn parse(headers: &HeaderMap, field: &HeaderName) -> Self {
        let mut out = Self::default();
        for directive in directives(headers, field) {
            let seconds = || directive.seconds();
            match directive.name.as_str() {
                "no-store" => out.no_store = true,
                "no-cache" => out.no_cache = true,
                "private" => out.private = true,
                "public" => out.public = true,
                "must-revalidate" => out.must_revalidate = true,
                "proxy-revalidate" => out.proxy_revalidate = true,
                "must-understand" => out.must_understand = true,
                // The first occurrence counts (§4.2.1 allows it).
                "max-age" => out.max_age = out.max_age.or(Some(seconds().unwrap_or(0))),
                "s-maxage" => out.s_maxage = out.s_maxage.or(Some(seconds().unwrap_or(0))),
                "stale-while-revalidate" => {
                    out.stale_while_revalidate = out.stale_while_revalidate.or(seconds())
                }
                "stale-if-error" => out.stale_if_error = out.stale_if_error.or(seconds()),
                _ => {}
            }
        }
        out
    }

    /// Whether the response may not be served stale by a shared cache
    /// (§4.2.4): `no-cache`, `must-revalidate`, `proxy-revalidate`, or
    /// `s-maxage`, which implies `proxy-revalidate` (§5.2.2.10).
    pub fn forbids_stale(&self) -> bool {
        self.no_cache || self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some()
    }
}

impl RequestDirectives {
    /// The request's `Cache-Control`, or `Pragma: no-cache` when it has none.
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut out = Self::default();
        if !headers.contains_key(CACHE_CONTROL) {
            out.no_cache = directives(headers, &PRAGMA).any(|d| d.name == "no-cache");
            return out;
        }
        for directive in directives(headers, &CACHE_CONTROL) {
            match directive.name.as_str() {
                "no-cache" => out.no_cache = true,
                "no-store" => out.no_store = true,
                "only-if-cached" => out.only_if_cached = true,
                // A value that cannot be read asks for the strictest reading.
                "max-age" => out.max_age = Some(directive.seconds().unwrap_or(0)),
                "min-fresh" => {
                    out.min_fresh = Some(directive.seconds().unwrap_or(MAX_DELTA_SECONDS))
                }
                "max-stale" => {
                    out.max_stale = match directive.value {
                        None => Some(MaxStale::Any),
                        Some(_) => directive.seconds().map(MaxStale::Seconds),
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// One directive: its lower-case name and its argument, unquoted.
#[derive(Debug, PartialEq, Eq)]
struct Directive<'a> {
    name: String,
    value: Option<Cow<'a, str>>,
}

impl Directive<'_> {
    /// The argument as delta-seconds: digits only, saturating at 2^31.
    fn seconds(&self) -> Option<u64> {
        let value = self.value.as_deref()?;
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(
            value
                .parse::<u64>()
                .map_or(MAX_DELTA_SECONDS, |s| s.min(MAX_DELTA_SECONDS)),
        )
    }
}

/// Every directive of every `field` header, in order. Malformed members
/// (a space around `=`, text after a closing quote) are skipped, except that
/// one naming `no-store`, `no-cache` or `private` still counts: a cache errs
/// towards not storing. A header that is not text reads as `no-store`.
fn directives<'a>(
    headers: &'a HeaderMap,
    field: &HeaderName,
) -> impl Iterator<Item = Directive<'a>> + 'a {
    headers
        .get_all(field)
        .iter()
        .flat_map(|value| match value.to_str() {
            Ok(text) => split_members(text),
            Err(_) => vec![Err("no-store".to_string())],
        })
        .filter_map(|member| match member {
            Ok(directive) => Some(directive),
            Err(name) => matches!(name.as_str(), "no-store" | "no-cache" | "private")
                .then_some(Directive { name, value: None }),
        })
}

/// Split one field value into directives; a malformed member is `Err` with
/// its (lower-cased, trimmed) name.
fn split_members(text: &str) -> Vec<Result<Directive<'_>, String>> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return out;
        }
        let name_end = rest.find(['=', ',']).unwrap_or(rest.len());
        let raw_name = &rest[..name_end];
        let name = raw_name.trim().to_ascii_lowercase();
        let well_formed_name = !name.is_empty() && raw_name.trim_end() == raw_name;
        if !rest[name_end..].starts_with('=') {
            out.push(if well_formed_name {
                Ok(Directive { name, value: None })
            } else {
                Err(name)
            });
            rest = &rest[name_end..];
            continue;
        }
        let after_equals = &rest[name_end + 1..];
        let (value, consumed) = if let Some(quoted) = after_equals.strip_prefix('"') {
            match read_quoted(quoted) {
                Some((value, used)) => (Some(value), used + 1),
                None => (None, after_equals.len()),
            }
        } else {
            let len = after_equals.bytes().take_while(|b| is_tchar(*b)).count();
            (
                (len > 0).then_some(Cow::Borrowed(&after_equals[..len])),
                len,
            )
        };
        rest = &after_equals[consumed..];
        // Only optional white space may follow the argument.
        let tail_end = rest.find(',').unwrap_or(rest.len());
        let clean_tail = rest[..tail_end].trim().is_empty();
        rest = &rest[tail_end..];
        match value {
            Some(value) if well_formed_name && clean_tail => out.push(Ok(Directive {
                name,
                value: Some(value),
            })),
            _ => out.push(Err(name)),
        }
    }
}

/// A quoted string's content (the opening quote already read) and how many
/// bytes it took, closing quote included; `None` if it never closes.
fn read_quoted(text: &str) -> Option<(Cow<'_, str>, usize)> {
    let mut unescaped: Option<String> = None;
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let value = match unescaped {
                    Some(owned) => Cow::Owned(owned),
                    None => Cow::Borrowed(&text[..i]),
                };
                return Some((value, i + 1));
            }
            '\\' => {
                let (_, escaped) = chars.next()?;
                unescaped
                    .get_or_insert_with(|| text[..i].to_string())
                    .push(escaped);
            }
            c => {
                if let Some(owned) = unescaped.as_mut() {
                    owned.push(c);
                }
            }
        }
    }
    None
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

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

    fn response(value: &str) -> ResponseDirectives {
        ResponseDirectives::parse(&headers(&[("cache-control", value)]), &CACHE_CONTROL)
    }

    #[test]
    fn names_are_case_insensitive_and_lines_combine() {
        let parsed = ResponseDirectives::parse(
            &headers(&[
                ("cache-control", "Public, No-CaChE"),
                ("cache-control", "MAX-AGE=7"),
            ]),
            &CACHE_CONTROL,
        );
        assert!(parsed.public && parsed.no_cache);
        assert_eq!(parsed.max_age, Some(7));
    }

    #[test]
    fn quoted_strings_hide_their_commas_and_directives() {
        assert_eq!(
            response("extension=\"max-age=3600\", max-age=1").max_age,
            Some(1)
        );
        assert_eq!(
            response("max-age=1, extension=\"max-age=3600\"").max_age,
            Some(1)
        );
        assert!(!response("a=\"x, no-store\"").no_store);
        assert_eq!(response("max-age=\"60\"").max_age, Some(60));
    }

    #[test]
    fn delta_seconds_are_strict_and_saturate() {
        assert_eq!(response("max-age=003600").max_age, Some(3600));
        assert_eq!(
            response("max-age=-3600").max_age,
            Some(0),
            "invalid is stale"
        );
        assert_eq!(response("max-age='3600'").max_age, Some(0));
        assert_eq!(response("max-age=3600.5").max_age, Some(0));
        assert_eq!(
            response("max-age=99999999999").max_age,
            Some(MAX_DELTA_SECONDS)
        );
        assert_eq!(response("s-maxage=1, max-age=3600").s_maxage, Some(1));
    }

    #[test]
    fn space_around_equals_makes_a_directive_malformed() {
        assert_eq!(response("max-age =3600").max_age, None);
        assert_eq!(response("max-age= 3600").max_age, None);
        // ... but never hides a reason not to store.
        assert!(response("no-store =1").no_store);
    }

    #[test]
    fn stale_is_forbidden_by_revalidation_directives_and_s_maxage() {
        assert!(!response("max-age=1, stale-while-revalidate=5").forbids_stale());
        for forbidding in [
            "no-cache",
            "must-revalidate",
            "proxy-revalidate",
            "s-maxage=5",
        ] {
            assert!(response(forbidding).forbids_stale(), "{forbidding}");
        }
        assert_eq!(response("stale-if-error=60").stale_if_error, Some(60));
    }

    #[test]
    fn a_valid_targeted_field_replaces_cache_control() {
        let cdn = HeaderName::from_static("cdn-cache-control");
        let select = |pairs: &[(&str, &str)]| {
            ResponseDirectives::select(&headers(pairs), std::slice::from_ref(&cdn))
        };
        let chosen = select(&[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=60"),
        ]);
        assert_eq!(
            (chosen.no_store, chosen.max_age, chosen.targeted),
            (false, Some(60), true)
        );
        assert!(
            select(&[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "private")
            ])
            .private
        );
        for invalid in ["max-age=10000, &&&&&", ""] {
            let fallback = select(&[
                ("cache-control", "no-store"),
                ("cdn-cache-control", invalid),
            ]);
            assert!(fallback.no_store && !fallback.targeted, "{invalid:?}");
        }
        let wrong_type = select(&[("cdn-cache-control", "max-age=\"10000\"")]);
        assert_eq!((wrong_type.max_age, wrong_type.targeted), (None, true));
    }

    #[test]
    fn request_directives_and_pragma() {
        let parsed = RequestDirectives::parse(&headers(&[(
            "cache-control",
            "max-age=10, min-fresh=5, max-stale, only-if-cached",
        )]));
        assert_eq!(parsed.max_age, Some(10));
        assert_eq!(parsed.min_fresh, Some(5));
        assert_eq!(parsed.max_stale, Some(MaxStale::Any));
        assert!(parsed.only_if_cached);
        assert!(RequestDirectives::parse(&headers(&[("pragma", "no-cache")])).no_cache);
        let with_cc = headers(&[("pragma", "no-cache"), ("cache-control", "max-stale=9")]);
        let parsed = RequestDirectives::parse(&with_cc);
        assert!(!parsed.no_cache, "Pragma only counts without Cache-Control");
        assert_eq!(parsed.max_stale, Some(MaxStale::Seconds(9)));
        assert_eq!(
            RequestDirectives::parse(&HeaderMap::new()),
            RequestDirectives::default()
        );
    }
}
