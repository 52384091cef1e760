//! Unsafe methods invalidate what they may have changed (RFC 9111 §4.4):
//! once the handler has answered with a success or a redirection, the
//! target path and the paths its `Location` and `Content-Location` name on
//! the same origin lose their stored responses (their path tags), and the
//! tags of their routes are invalidated too.

use bytes::Bytes;
use http::header::{CONTENT_LOCATION, HOST, LOCATION};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use http_body::Body;
use tower::{Service, ServiceExt};

use crate::body::{self, BoxError, CacheBody};
use crate::key;
use crate::layer::Config;
use crate::route::fill_template;

/// Methods that may change state: everything but the safe ones.
pub(crate) fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The tags an unsafe request to `path` invalidates.
pub(crate) fn tags_for(config: &Config, path: &str) -> Vec<String> {
    let mut tags = vec![config.path_tag(path)];
    if let Some((rule, params)) = config.rule_for(path) {
        tags.extend(rule.tags.iter().map(|t| fill_template(t, &params)));
    }
    tags
}

/// Run an unsafe request, then invalidate. The invalidation finishes before
/// the response is returned, so the client that wrote reads its write.
pub(crate) async fn after_unsafe<S, ReqBody, ResBody>(
    config: &Config,
    inner: S,
    request: Request<ReqBody>,
) -> Result<Response<CacheBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let path = key::decoded_path(request.uri().path());
    let host = request_host(request.uri(), request.headers());
    let response = inner.oneshot(request).await?;
    let status = response.status();
    if status.is_success() || status.is_redirection() {
        let named = [LOCATION, CONTENT_LOCATION].into_iter().filter_map(|name| {
            same_origin_path(response.headers().get(name)?, host.as_deref(), &path)
        });
        let mut tags: Vec<String> = std::iter::once(path.clone())
            .chain(named)
            .flat_map(|path| tags_for(config, &path))
            .collect();
        tags.sort();
        tags.dedup();
        for tag in tags {
            if let Err(err) = config.cache.invalidate_tag(&tag).await {
                // This instance has already dropped the entries; other
                // instances keep theirs until their TTL.
                tracing::warn!(error = %err, tag = %tag, "could not invalidate a tag everywhere");
            }
        }
    }
    Ok(response.map(body::boxed))
}

/// The authority a request was sent to.
fn request_host(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    uri.authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| headers.get(HOST)?.to_str().ok().map(str::to_string))
}

/// The decoded path a `Location` or `Content-Location` value names, if it
/// is on the request's own origin (§4.4 invalidates nothing elsewhere: a
/// response must not be able to evict another site's entries). Relative
/// references are resolved against the request's path.
fn same_origin_path(value: &HeaderValue, host: Option<&str>, request_path: &str) -> Option<String> {
    let text = value.to_str().ok()?.trim();
    let reference = text.split(['?', '#']).next().unwrap_or("");
    let path = if reference.contains("://") || reference.starts_with("//") {
        let absolute = if reference.starts_with("//") {
            format!("http:{reference}")
        } else {
            reference.to_string()
        };
        let uri: Uri = absolute.parse().ok()?;
        let authority = uri.authority()?.as_str();
        if !host.is_some_and(|host| host.eq_ignore_ascii_case(authority)) {
            return None;
        }
        uri.path().to_string()
    } else if reference.starts_with('/') {
        reference.to_string()
    } else if reference.is_empty() {
        return None;
    } else {
        let directory = request_path.rfind('/').map_or("/", |i| &request_path[..=i]);
        format!("{directory}{reference}")
    };
    Some(key::decoded_path(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(value: &str) -> Option<String> {
        same_origin_path(
            &HeaderValue::from_str(value).unwrap(),
            Some("shop.example:8080"),
            "/items/7",
        )
    }

    #[test]
    fn locations_on_the_same_origin_resolve_to_paths() {
        assert_eq!(resolve("/a?x=1").as_deref(), Some("/a"));
        assert_eq!(resolve("http://shop.example:8080/b").as_deref(), Some("/b"));
        assert_eq!(resolve("HTTP://SHOP.EXAMPLE:8080/c").as_deref(), Some("/c"));
        assert_eq!(resolve("//shop.example:8080/d").as_deref(), Some("/d"));
        assert_eq!(resolve("8").as_deref(), Some("/items/8"));
        assert_eq!(resolve("/caf%C3%A9").as_deref(), Some("/café"));
    }

    #[test]
    fn other_origins_are_left_alone() {
        assert_eq!(resolve("http://elsewhere.example/a"), None);
        assert_eq!(resolve("http://shop.example/a"), None, "another port");
        assert_eq!(resolve(""), None);
    }
}
