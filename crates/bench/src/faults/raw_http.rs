//! HTTP/1.1 exchanges as raw bytes on a fresh connection, for requests a
//! client library will not send (any Host, any request line, duplicate
//! headers, bytes that are not UTF-8, a head that never ends) and for
//! watching how and when the server ends the connection.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What came back.
#[derive(Debug, Clone)]
pub struct Raw {
    /// 0 when no answer came.
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the server closed the connection within the wait.
    pub closed: bool,
    /// From sending to the close (or the end of the wait).
    pub took: Duration,
}

impl Raw {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        data = &data[end + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// Send `request` as written on a new connection and read until the server
/// closes it or `within` passes; the first answer in what came back (a
/// `HEAD` answer has no body).
pub async fn exchange(
    port: u16,
    request: &[u8],
    head: bool,
    within: Duration,
) -> anyhow::Result<Raw> {
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(request).await?;
    let mut data = Vec::new();
    let closed = tokio::time::timeout(within, stream.read_to_end(&mut data))
        .await
        .is_ok();
    let took = started.elapsed();
    let Some(split) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(Raw {
            status: 0,
            headers: Vec::new(),
            body: Vec::new(),
            closed,
            took,
        });
    };
    let head_text = String::from_utf8_lossy(&data[..split]).to_string();
    let mut lines = head_text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &data[split + 4..];
    let mut raw = Raw {
        status,
        headers,
        body: Vec::new(),
        closed,
        took,
    };
    if !head {
        raw.body = if raw
            .header("transfer-encoding")
            .is_some_and(|t| t.contains("chunked"))
        {
            dechunk(rest)
        } else {
            let len = raw
                .header("content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(rest.len());
            rest[..len.min(rest.len())].to_vec()
        };
    }
    Ok(raw)
}
