//! RESP2 replies read off a byte stream, for the pipelined connection.
//!
//! Commands are encoded by redis-rs (`Cmd::write_packed_command`); only the
//! replies need a parser of our own, because redis-rs parses from a reader
//! and cannot say where in a buffer one reply ends. A reply is parsed only
//! once it is complete: an incomplete one answers `None` and is parsed again
//! from its start when more bytes arrive (replies here are small; a large
//! bulk string is not copied until all of it is there).

use redis::{RedisError, RedisResult, Value};

/// Append a RESP array header of `len` elements.
pub(super) fn write_array_len(out: &mut Vec<u8>, len: usize) {
    out.push(b'*');
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Append one bulk string.
pub(super) fn write_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(itoa::Buffer::new().format(bytes.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Nesting deeper than this is not a reply of any command we send.
const MAX_DEPTH: usize = 16;

/// The reply at the start of `buf` and the number of bytes it took, or
/// `None` when `buf` does not hold all of it yet.
pub(super) fn parse(buf: &[u8]) -> RedisResult<Option<(Value, usize)>> {
    // Values are built only once the whole reply is there: an MGET of large
    // values arriving over many reads is walked (cheaply) on each read, but
    // copied once.
    if complete_len(buf, 0, 0)?.is_none() {
        return Ok(None);
    }
    reply(buf, 0, 0)
}

/// Where the reply starting at `at` ends, if all of it is in `buf`; no
/// allocation, bulk payloads skipped by their length.
fn complete_len(buf: &[u8], at: usize, depth: usize) -> RedisResult<Option<usize>> {
    let Some(&tag) = buf.get(at) else {
        return Ok(None);
    };
    let Some(line_end) = line_end(buf, at + 1) else {
        return Ok(None);
    };
    let next = line_end + 2;
    match tag {
        b'+' | b'-' | b':' => Ok(Some(next)),
        b'$' => {
            let len = integer(&buf[at + 1..line_end])?;
            if len < 0 {
                return Ok(Some(next));
            }
            let end = next.saturating_add(len as usize).saturating_add(2);
            Ok((buf.len() >= end).then_some(end))
        }
        b'*' => {
            let len = integer(&buf[at + 1..line_end])?;
            if depth >= MAX_DEPTH {
                return Err(protocol("a reply nested too deeply"));
            }
            let mut pos = next;
            for _ in 0..len.max(0) {
                match complete_len(buf, pos, depth + 1)? {
                    Some(after) => pos = after,
                    None => return Ok(None),
                }
            }
            Ok(Some(pos))
        }
        // Left to `reply`, which says what is wrong.
        _ => Ok(Some(next)),
    }
}

fn reply(buf: &[u8], at: usize, depth: usize) -> RedisResult<Option<(Value, usize)>> {
    let Some(&tag) = buf.get(at) else {
        return Ok(None);
    };
    let Some(line_end) = line_end(buf, at + 1) else {
        return Ok(None);
    };
    let line = &buf[at + 1..line_end];
    let next = line_end + 2;
    let value = match tag {
        b'+' if line == b"OK" => Value::Okay,
        b'+' => Value::SimpleString(String::from_utf8_lossy(line).into_owned()),
        // Errors are rare: redis-rs builds them (codes, kinds) as it always does.
        b'-' => redis::parse_redis_value(&buf[at..next])?,
        b':' => Value::Int(integer(line)?),
        b'$' => {
            let len = integer(line)?;
            if len < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            let end = next + len as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(protocol("a bulk string not ended by CRLF"));
            }
            return Ok(Some((Value::BulkString(buf[next..end].to_vec()), end + 2)));
        }
        b'*' => {
            let len = integer(line)?;
            if len < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            if depth >= MAX_DEPTH {
                return Err(protocol("a reply nested too deeply"));
            }
            // Not trusted for the allocation: each element takes 3 bytes at least.
            let mut items = Vec::with_capacity((len as usize).min((buf.len() - next) / 3));
            let mut pos = next;
            for _ in 0..len {
                let Some((item, after)) = reply(buf, pos, depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                pos = after;
            }
            return Ok(Some((Value::Array(items), pos)));
        }
        other => {
            return Err(protocol(&format!(
                "a reply starting with byte {other:#04x} (RESP2 expected)"
            )))
        }
    };
    Ok(Some((value, next)))
}

/// Where the line starting at `from` ends (the index of its `\r`).
fn line_end(buf: &[u8], from: usize) -> Option<usize> {
    let offset = buf.get(from..)?.iter().position(|&b| b == b'\r')?;
    let end = from + offset;
    match buf.get(end + 1) {
        Some(b'\n') => Some(end),
        // `\r` is the last byte read so far: the `\n` is still coming.
        None => None,
        // A `\r` inside a line: not in any reply Redis sends for our commands,
        // but harmless — look for the real end.
        Some(_) => line_end(buf, end + 1),
    }
}

fn integer(line: &[u8]) -> RedisResult<i64> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| protocol("an integer that does not parse"))
}

/// A reply that is not RESP2: the stream cannot be trusted any more, so it
/// is an I/O error (the connection is given up, the breaker counts it, an
/// idempotent call is retried on a new connection).
fn protocol(what: &str) -> RedisError {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("unexpected redis reply: {what}"),
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(bytes: &[u8]) -> Value {
        let (value, used) = parse(bytes).unwrap().expect("complete");
        assert_eq!(used, bytes.len(), "took the whole reply");
        value
    }

    #[test]
    fn reads_every_reply_our_commands_get() {
        assert_eq!(whole(b"+OK\r\n"), Value::Okay);
        assert_eq!(whole(b"+PONG\r\n"), Value::SimpleString("PONG".to_owned()));
        assert_eq!(whole(b":-42\r\n"), Value::Int(-42));
        assert_eq!(whole(b"$-1\r\n"), Value::Nil);
        assert_eq!(whole(b"$0\r\n\r\n"), Value::BulkString(Vec::new()));
        assert_eq!(
            whole(b"$4\r\na\r\nb\r\n"),
            Value::BulkString(b"a\r\nb".to_vec()),
            "binary-safe"
        );
        assert_eq!(
            whole(b"*3\r\n:2\r\n$1\r\nx\r\n*-1\r\n"),
            Value::Array(vec![
                Value::Int(2),
                Value::BulkString(b"x".to_vec()),
                Value::Nil
            ])
        );
        let err = whole(b"-NOSCRIPT No matching script.\r\n")
            .extract_error()
            .unwrap_err();
        assert_eq!(err.code(), Some("NOSCRIPT"));
    }

    #[test]
    fn an_incomplete_reply_waits_for_more_bytes() {
        let reply = b"*2\r\n$5\r\nhello\r\n:7\r\n";
        for cut in 0..reply.len() {
            assert_eq!(parse(&reply[..cut]).unwrap(), None, "cut at {cut}");
        }
        let mut two = reply.to_vec();
        two.extend_from_slice(b"+OK\r\n");
        let (_, used) = parse(&two).unwrap().unwrap();
        assert_eq!(used, reply.len(), "stops at the end of the first reply");
    }

    #[test]
    fn commands_are_written_as_redis_rs_writes_them() {
        let mut ours = Vec::new();
        write_array_len(&mut ours, 4);
        for part in [&b"EVALSHA"[..], b"abc", b"1", b"k\r\ney"] {
            write_bulk(&mut ours, part);
        }
        let theirs = redis::cmd("EVALSHA")
            .arg("abc")
            .arg(1)
            .arg("k\r\ney")
            .get_packed_command();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn garbage_is_an_error_not_a_hang() {
        assert!(parse(b"?what\r\n").is_err());
        assert!(parse(b":12x\r\n").is_err());
        assert!(parse(b"$3\r\nabcde\r\n").is_err());
    }
}
