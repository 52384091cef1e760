//! Unsafe methods invalidate what they may have changed (RFC 9111 §4.4):
//! the tags of the route their path matches and the path's own tag, once
//! the handler has answered with a success or a redirection.

use bytes::Bytes;
use http::{Method, Request, Response};
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
    let mut tags = vec![key::path_tag(path)];
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
    let response = inner.oneshot(request).await?;
    let status = response.status();
    if status.is_success() || status.is_redirection() {
        for tag in tags_for(config, &path) {
            if let Err(err) = config.cache.invalidate_tag(&tag).await {
                // This instance has already dropped the entries; other
                // instances keep theirs until their TTL.
                tracing::warn!(error = %err, tag = %tag, "could not invalidate a tag everywhere");
            }
        }
    }
    Ok(response.map(body::boxed))
}
