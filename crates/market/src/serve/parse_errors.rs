//! hyper's answers to requests it cannot parse, in the API's JSON.
//!
//! A request line or header hyper cannot parse (raw non-UTF-8 bytes in the
//! path, a control character, a header block over the limit) never reaches
//! the router: hyper answers it itself, 400 / 414 / 431 with an empty body,
//! and closes the connection. hyper has no hook for that answer, so this
//! wrapper of the connection's socket recognises it on its way out — a 4xx
//! head with `content-length: 0` and `connection: close`, which nothing
//! above hyper sends ([`crate::middleware::json_errors`] gives every error
//! answer of the router a body) — and writes the API's error instead, with
//! a request id that is also logged.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A socket whose parse-error answers from hyper become JSON.
#[derive(Debug)]
pub struct JsonParseErrors<T> {
    inner: T,
    /// A replacement answer, and how much of it is written.
    pending: Option<(Vec<u8>, usize)>,
}

impl<T> JsonParseErrors<T> {
    /// Wrap `inner`.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            pending: None,
        }
    }
}

/// The statuses hyper answers a request it cannot parse with.
const STATUSES: [(&str, &str); 3] = [
    (
        "400 Bad Request",
        "malformed request: the request line or a header cannot be parsed (a path or query must be ASCII, other bytes percent-encoded)",
    ),
    ("414 URI Too Long", "the request URI is too long"),
    (
        "431 Request Header Fields Too Large",
        "the request headers are too large",
    ),
];

/// The JSON answer that replaces `written`, if `written` is hyper's own
/// answer to an unparseable request.
fn replacement(written: &[u8]) -> Option<Vec<u8>> {
    let rest = written.strip_prefix(b"HTTP/1.1 ")?;
    let (status, message) = STATUSES
        .iter()
        .find(|(status, _)| rest.starts_with(status.as_bytes()))?;
    let head_end = written.windows(4).position(|w| w == b"\r\n\r\n")?;
    if head_end + 4 != written.len() {
        return None;
    }
    let head = String::from_utf8_lossy(&written[..head_end]);
    let lines: Vec<&str> = head.split("\r\n").collect();
    let has = |wanted: &str| lines.iter().any(|l| l.eq_ignore_ascii_case(wanted));
    if !has("content-length: 0") || !has("connection: close") {
        return None;
    }
    let date = lines.iter().find(|l| {
        l.get(..5)
            .is_some_and(|name| name.eq_ignore_ascii_case("date:"))
    });
    let id = format!("{:032x}", rand::random::<u128>());
    tracing::info!(
        id,
        status = &status[..3],
        "answered a request that could not be parsed"
    );
    let body = serde_json::json!({ "error": message, "request_id": id }).to_string();
    let mut answer = format!(
        "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-request-id: {id}\r\n",
        body.len()
    );
    if let Some(date) = date {
        answer.push_str(date);
        answer.push_str("\r\n");
    }
    answer.push_str("\r\n");
    answer.push_str(&body);
    Some(answer.into_bytes())
}

impl<T: AsyncWrite + Unpin> JsonParseErrors<T> {
    /// Write what is left of a replacement answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((answer, written)) = &mut self.pending {
            if *written == answer.len() {
                self.pending = None;
                break;
            }
            let n =
                std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &answer[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonParseErrors<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        std::task::ready!(this.poll_pending(cx))?;
        if let Some(answer) = replacement(buf) {
            // Taken whole: hyper closes the connection after it, and the
            // flush or shutdown that follows writes it out.
            this.pending = Some((answer, 0));
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }

    /// No vectored writes: hyper then hands each answer over in one buffer,
    /// where its head can be recognised.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_parse_error_answers_become_json_and_nothing_else_does() {
        let canned = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Sat, 05 Dec 2026 21:26:33 GMT\r\n\r\n";
        let answer = String::from_utf8(replacement(canned).unwrap()).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        assert!(answer.contains("content-type: application/json\r\n"));
        assert!(
            answer.contains("date: Sat, 05 Dec 2026 21:26:33 GMT\r\n"),
            "{answer}"
        );
        let body: serde_json::Value =
            serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert!(body["error"]
            .as_str()
            .unwrap()
            .contains("malformed request"));
        assert_eq!(body["request_id"].as_str().unwrap().len(), 32);
        let length: usize = answer
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, answer.split("\r\n\r\n").nth(1).unwrap().len());

        for other in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n{\"error\":\"invalid\"}"[..],
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"{\"error\": \"HTTP/1.1 400 Bad Request\"}",
        ] {
            assert!(replacement(other).is_none(), "{}", String::from_utf8_lossy(other));
        }
    }
}
