//! Just enough HTTP to read a Prometheus endpoint: one GET over plain HTTP/1.0.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The body of `GET url` (`http://host[:port][/path]`), bounded by `timeout`
/// and by `max_bytes`.
pub async fn get(url: &str, timeout: Duration, max_bytes: usize) -> Result<String> {
    tokio::time::timeout(timeout, fetch(url, max_bytes))
        .await
        .map_err(|_| anyhow!("{url}: no answer within {timeout:?}"))?
}

async fn fetch(url: &str, max_bytes: usize) -> Result<String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        anyhow!("{url}: only http:// URLs are read (put a TLS endpoint behind a local one)")
    })?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let mut stream = TcpStream::connect(&addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    // HTTP/1.0: the server answers without chunked encoding and closes.
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: text/plain\r\nUser-Agent: stratacache-doctor\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(max_bytes as u64 + 1)
        .read_to_end(&mut raw)
        .await?;
    if raw.len() > max_bytes {
        bail!("{url}: answer larger than {max_bytes} bytes");
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("{url}: not an HTTP answer"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = &raw[split + 4..];
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{url}: no status line"))?;
    if status != 200 {
        bail!("{url}: HTTP {status}");
    }
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    String::from_utf8(body).map_err(|_| anyhow!("{url}: the body is not UTF-8"))
}

/// A chunked body put back together (for servers that chunk even for 1.0).
fn dechunk(mut body: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunked body"))?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| anyhow!("bad chunk size"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = body.get(..size).ok_or_else(|| anyhow!("truncated chunk"))?;
        out.extend_from_slice(chunk);
        body = body.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_joined() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
    }
}
