//! Response bodies: the one body type the layer answers with, and reading a
//! handler's body into memory without ever holding more than the bound.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// A boxed error from a handler's body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The body of every response the layer returns: cached bytes, or the
/// handler's own body streamed through untouched.
pub type CacheBody = UnsyncBoxBody<Bytes, BoxError>;

pub(crate) fn full(bytes: Bytes) -> CacheBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(crate) fn empty() -> CacheBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub(crate) fn boxed<B>(body: B) -> CacheBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// What reading a body with a bound gave.
pub(crate) enum Collected<B> {
    /// The whole body, within the bound.
    Complete(Bytes),
    /// The body is larger than the bound: what was read so far and the rest,
    /// still to be streamed to the client.
    TooLarge(PrefixedBody<B>),
    /// The handler's body failed after `Bytes` were read.
    Failed(BoxError),
}

/// Read `body` into memory, stopping as soon as it exceeds `max_bytes`, so a
/// huge or endless response is streamed to its client rather than buffered.
pub(crate) async fn collect_bounded<B>(mut body: B, max_bytes: usize) -> Collected<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    if body.size_hint().lower() > max_bytes as u64 {
        return Collected::TooLarge(PrefixedBody::new(Bytes::new(), body));
    }
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(err) => return Collected::Failed(err.into()),
        };
        // Trailers cannot be replayed from the cache; such a body is passed on.
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(_) => {
                return Collected::TooLarge(PrefixedBody::new(buffer.freeze(), body));
            }
        };
        buffer.extend_from_slice(&data);
        if buffer.len() > max_bytes {
            return Collected::TooLarge(PrefixedBody::new(buffer.freeze(), body));
        }
    }
    Collected::Complete(buffer.freeze())
}

pin_project_lite::pin_project! {
    /// The bytes already read from a body, followed by the rest of it.
    pub(crate) struct PrefixedBody<B> {
        prefix: Option<Bytes>,
        #[pin]
        rest: B,
    }
}

impl<B> PrefixedBody<B> {
    fn new(prefix: Bytes, rest: B) -> Self {
        Self {
            prefix: (!prefix.is_empty()).then_some(prefix),
            rest,
        }
    }
}

impl<B> Body for PrefixedBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        this.rest.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + prefix);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + prefix);
        }
        hint
    }
}
