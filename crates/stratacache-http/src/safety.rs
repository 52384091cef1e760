//! Which requests may touch the cache at all, and whose they are.
//!
//! A shared cache is poisoned when a response that depends on something the
//! key does not contain is served to a client that did not send it. The
//! rules here keep every such input either in the key or out of the cache:
//!
//! - **Credentials.** A request with `Authorization`, or with any cookie
//!   not declared harmless, bypasses the cache unless its route is keyed per
//!   user ([`crate::RouteRule::per_user`]); then the user's digest is in the key.
//! - **Where the request went.** The host (`Host`, or the authority of an
//!   absolute URI) is keyed; a request whose URI authority and `Host`
//!   disagree, or with several `Host` headers, bypasses. The forwarding
//!   headers proxies and frameworks read (`X-Forwarded-Host`,
//!   `X-Forwarded-Proto`, `Forwarded`, `X-Original-URL`, …) are keyed when
//!   present ([`DEFAULT_KEYED_HEADERS`]).
//! - **What the request asks for.** Method overrides (`X-HTTP-Method-Override`
//!   and kin) bypass. (`Range` is answered from a stored whole response, or
//!   passed to the handler unchanged and not stored.)
//! - **Anything else the handler reads** must be named in the response's
//!   `Vary` or in [`crate::RouteRule::key_header`]: the cache cannot see what
//!   a handler reads.

use http::header::{AUTHORIZATION, COOKIE, HOST};
use http::request::Parts;
use http::{HeaderMap, HeaderName};

use crate::policy::RouteRule;

/// Request headers keyed on every route when present: the ones reverse
/// proxies set and frameworks use to build absolute URLs.
pub const DEFAULT_KEYED_HEADERS: &[&str] = &[
    "forwarded",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-scheme",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-host",
    "x-original-url",
    "x-rewrite-url",
];

/// Request headers that make a request bypass the cache: they change what
/// the request means, not only what the response looks like.
pub const DEFAULT_BYPASS_HEADERS: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The request-side safety settings of a layer.
#[derive(Debug, Clone)]
pub(crate) struct Safety {
    pub keyed_headers: Vec<HeaderName>,
    pub bypass_headers: Vec<HeaderName>,
    /// Cookies that identify nobody (consent, analytics) and that handlers
    /// do not read: a request carrying only these is still cached.
    pub harmless_cookies: Vec<String>,
}

impl Default for Safety {
    fn default() -> Self {
        Self {
            keyed_headers: DEFAULT_KEYED_HEADERS
                .iter()
                .map(|h| HeaderName::from_static(h))
                .collect(),
            bypass_headers: DEFAULT_BYPASS_HEADERS
                .iter()
                .map(|h| HeaderName::from_static(h))
                .collect(),
            harmless_cookies: Vec::new(),
        }
    }
}

/// Whether a request may use the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Cacheable; `user` is the identity the key is scoped to, if any.
    Cache { user: Option<String> },
    /// Not cacheable; the reason goes to a trace event.
    Bypass(&'static str),
}

impl Safety {
    pub fn admit(&self, parts: &Parts, rule: &RouteRule) -> Admission {
        let headers = &parts.headers;
        if self.bypass_headers.iter().any(|h| headers.contains_key(h)) {
            return Admission::Bypass("method override header");
        }
        let mut hosts = headers.get_all(HOST).iter();
        let host = hosts.next();
        if hosts.next().is_some() {
            return Admission::Bypass("several Host headers");
        }
        if let (Some(authority), Some(host)) = (parts.uri.authority(), host) {
            if !authority
                .as_str()
                .eq_ignore_ascii_case(host.to_str().unwrap_or(""))
            {
                return Admission::Bypass("URI authority and Host disagree");
            }
        }
        let has_credentials =
            headers.contains_key(AUTHORIZATION) || self.has_identifying_cookie(headers);
        match &rule.user_scope {
            Some(scope) => match scope.identify(parts) {
                Some(user) => Admission::Cache { user: Some(user) },
                None if has_credentials => Admission::Bypass("credentials outside the user scope"),
                None => Admission::Cache { user: None },
            },
            None if has_credentials => Admission::Bypass("credentials on a shared route"),
            None => Admission::Cache { user: None },
        }
    }

    fn has_identifying_cookie(&self, headers: &HeaderMap) -> bool {
        cookie_pairs(headers).any(|(name, _)| !self.harmless_cookies.iter().any(|h| h == name))
    }
}

/// Every `name=value` pair of every `Cookie` header.
fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(COOKIE)
        .iter()
        // A cookie header that is not text still counts: as an unnamed cookie.
        .flat_map(|value| value.to_str().unwrap_or("\u{0}=").split(';'))
        .filter_map(|pair| {
            let pair = pair.trim();
            if pair.is_empty() {
                return None;
            }
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((name.trim(), value.trim()))
        })
}

/// The value of cookie `name`, if the request carries it.
pub(crate) fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    cookie_pairs(headers)
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UserScope;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::get(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn credentials_bypass_shared_routes() {
        let safety = Safety::default();
        let shared = RouteRule::new();
        for headers in [
            vec![("authorization", "Bearer x")],
            vec![("cookie", "id=abc")],
            vec![("cookie", "theme=dark; _ga=1")],
        ] {
            assert!(matches!(
                safety.admit(&parts("/a", &headers), &shared),
                Admission::Bypass(_)
            ));
        }
        assert_eq!(
            safety.admit(&parts("/a", &[("host", "example.com")]), &shared),
            Admission::Cache { user: None }
        );
    }

    #[test]
    fn harmless_cookies_do_not_bypass() {
        let safety = Safety {
            harmless_cookies: vec!["_ga".into()],
            ..Safety::default()
        };
        let p = parts("/a", &[("cookie", "_ga=GA1.2")]);
        assert_eq!(
            safety.admit(&p, &RouteRule::new()),
            Admission::Cache { user: None }
        );
    }

    #[test]
    fn per_user_routes_scope_by_the_identity() {
        let safety = Safety::default();
        let rule = RouteRule::new().per_user(UserScope::cookie("id"));
        let p = parts("/me", &[("cookie", "theme=x; id=s1")]);
        assert_eq!(
            safety.admit(&p, &rule),
            Admission::Cache {
                user: Some("s1".into())
            }
        );
        let anonymous_with_token = parts("/me", &[("authorization", "Basic x")]);
        assert!(matches!(
            safety.admit(&anonymous_with_token, &rule),
            Admission::Bypass(_)
        ));
        assert_eq!(
            safety.admit(&parts("/me", &[]), &rule),
            Admission::Cache { user: None }
        );
    }

    #[test]
    fn host_tricks_bypass() {
        let safety = Safety::default();
        let rule = RouteRule::new();
        let mismatch = parts("http://good.example/a", &[("host", "evil.example")]);
        assert!(matches!(
            safety.admit(&mismatch, &rule),
            Admission::Bypass(_)
        ));
        let two = parts("/a", &[("host", "a.example"), ("host", "b.example")]);
        assert!(matches!(safety.admit(&two, &rule), Admission::Bypass(_)));
        let override_ = parts("/a", &[("x-http-method-override", "DELETE")]);
        assert!(matches!(
            safety.admit(&override_, &rule),
            Admission::Bypass(_)
        ));
    }
}
