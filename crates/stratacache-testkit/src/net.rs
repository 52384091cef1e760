//! A tiny blocking RESP2 client with timeouts, used for readiness checks and
//! for queries that must not hang on a paused server (unlike `redis-cli`).

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::time::Duration;

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`-style status reply.
    Status(String),
    /// `-ERR ...` error reply.
    Error(String),
    /// `:123` integer reply.
    Int(i64),
    /// `$...` bulk string; `None` for the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `*...` array; `None` for the null array.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as text: status, bulk and integer replies as their value,
    /// errors as their message, arrays as one element per line (nested
    /// arrays flattened), nulls as the empty string.
    pub fn to_text(&self) -> String {
        match self {
            Reply::Status(s) | Reply::Error(s) => s.clone(),
            Reply::Int(i) => i.to_string(),
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Reply::Bulk(None) | Reply::Array(None) => String::new(),
            Reply::Array(Some(items)) => items
                .iter()
                .map(Reply::to_text)
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// Whether this is an error reply whose message starts with `prefix`
    /// (e.g. `"LOADING"`, `"MOVED"`, `"INPROG"`).
    pub fn is_error_with(&self, prefix: &str) -> bool {
        matches!(self, Reply::Error(e) if e.starts_with(prefix))
    }
}

/// Sends one command to `127.0.0.1:port` over a fresh connection and reads
/// the reply. `timeout` bounds the connect, each write and each read.
pub fn call(port: u16, args: &[&str], timeout: Duration) -> io::Result<Reply> {
    let mut replies = call_all(port, &[args], timeout)?;
    Ok(replies.remove(0))
}

/// Sends `commands` to `127.0.0.1:port` one after another over one fresh
/// connection and reads their replies, in order. For what must share a
/// connection: `WAIT` waits only for the writes of its own connection.
pub fn call_all(port: u16, commands: &[&[&str]], timeout: Duration) -> io::Result<Vec<Reply>> {
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    let mut req = Vec::new();
    for args in commands {
        req.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in *args {
            req.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            req.extend_from_slice(arg.as_bytes());
            req.extend_from_slice(b"\r\n");
        }
    }
    (&stream).write_all(&req)?;
    let mut reader = BufReader::new(stream);
    commands.iter().map(|_| read_reply(&mut reader)).collect()
}

/// Sends `PING` to `127.0.0.1:port`; true on a `+PONG` reply within
/// `timeout`, or on `-NOAUTH` (a password-protected server that is up); a
/// `-LOADING` reply counts as not ready.
pub fn ping(port: u16, timeout: Duration) -> bool {
    match call(port, &["PING"], timeout) {
        Ok(Reply::Status(s)) => s == "PONG",
        Ok(reply) => reply.is_error_with("NOAUTH"),
        Err(_) => false,
    }
}

/// Like [`call`], but turns error replies into `Err` and everything else
/// into text (see [`Reply::to_text`]).
pub fn call_text(port: u16, args: &[&str], timeout: Duration) -> io::Result<String> {
    match call(port, args, timeout)? {
        Reply::Error(e) => Err(io::Error::other(e)),
        other => Ok(other.to_text()),
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

fn read_line<R: BufRead>(r: &mut R) -> io::Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    if !line.ends_with("\r\n") {
        return Err(bad("RESP line without CRLF"));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn read_reply<R: BufRead>(r: &mut R) -> io::Result<Reply> {
    let line = read_line(r)?;
    let (kind, rest) = line.split_at(1.min(line.len()));
    let int = |s: &str| s.parse::<i64>().map_err(|_| bad("bad RESP integer"));
    match kind {
        "+" => Ok(Reply::Status(rest.to_string())),
        "-" => Ok(Reply::Error(rest.to_string())),
        ":" => Ok(Reply::Int(int(rest)?)),
        "$" => {
            let len = int(rest)?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let mut buf = vec![0u8; len as usize + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(len as usize);
            Ok(Reply::Bulk(Some(buf)))
        }
        "*" => {
            let len = int(rest)?;
            if len < 0 {
                return Ok(Reply::Array(None));
            }
            let items = (0..len)
                .map(|_| read_reply(r))
                .collect::<io::Result<Vec<_>>>()?;
            Ok(Reply::Array(Some(items)))
        }
        _ => Err(bad("unknown RESP type")),
    }
}

/// Extracts `field:value` from an `INFO` reply.
pub(crate) fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == field).then(|| v.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_replies() {
        let raw = b"*3\r\n+OK\r\n$5\r\nhello\r\n*2\r\n:7\r\n$-1\r\n".to_vec();
        let mut r = BufReader::new(&raw[..]);
        let reply = read_reply(&mut r).unwrap();
        assert_eq!(
            reply,
            Reply::Array(Some(vec![
                Reply::Status("OK".into()),
                Reply::Bulk(Some(b"hello".to_vec())),
                Reply::Array(Some(vec![Reply::Int(7), Reply::Bulk(None)])),
            ]))
        );
        assert_eq!(reply.to_text(), "OK\nhello\n7\n");
    }

    #[test]
    fn info_field_parses() {
        let info = "# Cluster\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\n";
        assert_eq!(info_field(info, "cluster_state").as_deref(), Some("ok"));
        assert_eq!(info_field(info, "missing"), None);
    }
}
