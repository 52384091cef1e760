//! The service's own names, for the response cache's key.
//!
//! The HTTP response cache keys the `Host` header as sent, port included, so
//! that a response a handler built from one host is never served for
//! another. `market`'s handlers do not read the host; but two instances
//! addressed directly (`127.0.0.1:8081`, `127.0.0.1:8082`), or one reached
//! as `localhost` and as `127.0.0.1`, would each fill the cache for the same
//! listing — one database load per name and port instead of one.
//!
//! So requests for any of the configured names (`--server-name`; any port)
//! are rewritten to the first name, without a port, before the cache sees
//! them; an absolute-form request line naming one of them becomes
//! origin-form. A host that is not one of the names is left as sent: it is
//! keyed apart, and can neither read nor fill the entries of the names.

use axum::extract::{Request, State};
use axum::http::header::HOST;
use axum::http::uri::{PathAndQuery, Uri};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

/// The names a deployment is reached by, when none are configured.
pub const DEFAULT: &[&str] = &["localhost", "127.0.0.1", "[::1]"];

/// The configured names; the first is the one requests are rewritten to.
#[derive(Debug, Clone)]
pub struct ServerNames {
    canonical: HeaderValue,
    names: Vec<String>,
}

/// Why a list of names was refused.
#[derive(Debug, thiserror::Error)]
pub enum NamesError {
    /// No names.
    #[error("--server-name: at least one name is needed")]
    Empty,
    /// A name that cannot be a host.
    #[error("--server-name: {0:?} is not a host name")]
    Invalid(String),
}

impl ServerNames {
    /// `names` (lower-cased; a port given with a name is ignored).
    pub fn new<S: AsRef<str>>(names: &[S]) -> Result<Self, NamesError> {
        let names: Vec<String> = names
            .iter()
            .map(|n| host_of(n.as_ref().trim()).to_ascii_lowercase())
            .collect();
        let first = names.first().ok_or(NamesError::Empty)?;
        for name in &names {
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
            if !valid {
                return Err(NamesError::Invalid(name.clone()));
            }
        }
        let canonical =
            HeaderValue::from_str(first).map_err(|_| NamesError::Invalid(first.clone()))?;
        Ok(Self { canonical, names })
    }

    /// Whether `host` (a `Host` value or a URI authority) names this service.
    fn names(&self, host: &str) -> bool {
        let host = host_of(host);
        self.names.iter().any(|n| n.eq_ignore_ascii_case(host))
    }

    /// Rewrite a request for one of the names to the canonical name.
    pub fn normalise(&self, request: &mut Request) {
        if let Some(authority) = request.uri().authority() {
            if !self.names(authority.as_str()) {
                return;
            }
            let path = request
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            *request.uri_mut() = Uri::from(path);
        }
        let ours = {
            let mut hosts = request.headers().get_all(HOST).iter();
            match (hosts.next(), hosts.next()) {
                (Some(host), None) => host.to_str().is_ok_and(|h| self.names(h)),
                _ => false,
            }
        };
        if ours {
            request.headers_mut().insert(HOST, self.canonical.clone());
        }
    }
}

/// `host` without its port: `[::1]:8080` → `[::1]`, `a.example:80` → `a.example`.
fn host_of(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The middleware: in front of the response cache.
pub async fn normalise(
    State(names): State<ServerNames>,
    mut request: Request,
    next: Next,
) -> Response {
    names.normalise(&mut request);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_after(names: &ServerNames, uri: &str, hosts: &[&str]) -> (String, Vec<String>) {
        let mut builder = Request::get(uri);
        for h in hosts {
            builder = builder.header(HOST, *h);
        }
        let mut request = builder.body(axum::body::Body::empty()).unwrap();
        names.normalise(&mut request);
        let hosts = request
            .headers()
            .get_all(HOST)
            .iter()
            .map(|h| h.to_str().unwrap().to_string())
            .collect();
        (request.uri().to_string(), hosts)
    }

    #[test]
    fn the_names_and_any_port_become_the_first_name() {
        let names = ServerNames::new(&["market.example", "127.0.0.1", "[::1]"]).unwrap();
        for host in [
            "127.0.0.1:8081",
            "127.0.0.1:8082",
            "MARKET.example",
            "[::1]:80",
        ] {
            let (_, hosts) = host_after(&names, "/api/instruments", &[host]);
            assert_eq!(hosts, ["market.example"], "{host}");
        }
        let (uri, hosts) = host_after(
            &names,
            "http://127.0.0.1:8081/api/instruments?sector=TECH",
            &["127.0.0.1:8081"],
        );
        assert_eq!(
            (uri.as_str(), hosts.as_slice()),
            (
                "/api/instruments?sector=TECH",
                &["market.example".to_string()][..]
            )
        );
    }

    #[test]
    fn other_hosts_and_ambiguous_requests_are_left_as_sent() {
        let names = ServerNames::new(&["market.example"]).unwrap();
        let (_, hosts) = host_after(&names, "/a", &["evil.example:8080"]);
        assert_eq!(hosts, ["evil.example:8080"]);
        let (_, hosts) = host_after(&names, "/a", &["market.example", "evil.example"]);
        assert_eq!(hosts, ["market.example", "evil.example"]);
        let (uri, hosts) = host_after(&names, "http://evil.example/a", &["market.example"]);
        assert_eq!(
            (uri.as_str(), hosts.as_slice()),
            ("http://evil.example/a", &["market.example".to_string()][..])
        );
        assert!(ServerNames::new::<&str>(&[]).is_err());
        assert!(ServerNames::new(&["a b"]).is_err());
    }
}
