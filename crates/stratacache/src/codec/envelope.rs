//! The byte layout of an L2 entry.
//!
//! ```text
//! offset size field
//!      0    2 magic "SC"
//!      2    1 format version (2)
//!      3    1 codec id (0 for a negative entry)
//!      4    1 flags: bit 0 compressed (lz4), bit 1 negative (value absent),
//!             bit 2 fail-safe (a stale value kept after a failed refresh)
//!      5    8 created_at      (a stamp: µs since the Unix epoch, little endian)
//!     13    8 fresh_until     (ms)
//!     21    8 stale_until     (ms; the Redis TTL ends here too)
//!     29    4 last load time  (µs, for probabilistic early refresh)
//!     33    4 schema version  (the writer's `EntryOptions::schema_version`)
//!     37    2 tag count, then per tag: u16 length + UTF-8 bytes
//!      …    2 ETag / row version length (0: none), then its UTF-8 bytes
//!      …      payload: the codec's bytes, lz4-compressed when flagged
//! ```
//!
//! A fixed binary header (rather than a serde struct) keeps the header readable
//! without touching the payload, so freshness can be checked before decoding,
//! and lets any codec sit inside. Decoding never panics and never allocates more
//! than the configured maximum value size, whatever the bytes claim.
//!
//! Format 1 (before stamps and schema versions) is still read: its
//! `created_at` is in milliseconds and it has no schema field.

use std::borrow::Cow;

use super::Codec;

const MAGIC: &[u8; 2] = b"SC";
/// The newest format this build writes and reads.
pub(crate) const FORMAT_VERSION: u8 = 2;
const HEADER_LEN: usize = 39;
const FLAG_COMPRESSED: u8 = 0b01;
const FLAG_NEGATIVE: u8 = 0b010;
const FLAG_FAIL_SAFE: u8 = 0b100;
/// Where the timestamps start: `created_at`, `fresh_until`, `stale_until` and
/// `load_micros` are [`TIMES_LEN`] contiguous bytes, rewritten in place when a
/// loader answers "not modified".
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const TIMES_OFFSET: usize = 5;
/// Length of the timestamp block.
pub(crate) const TIMES_LEN: usize = 28;

/// What is known about an entry besides its value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct EntryMeta {
    /// When the load that made the value began (a stamp, µs; see `clock`).
    pub(crate) created_at_us: u64,
    pub(crate) fresh_until_ms: u64,
    pub(crate) stale_until_ms: u64,
    pub(crate) load_micros: u32,
    pub(crate) tags: Vec<String>,
    /// The source's version of the value (ETag, row version), for conditional refresh.
    pub(crate) etag: Option<String>,
    /// A stale value kept after a failed refresh; `fresh_until` is then the
    /// moment the next refresh may be tried.
    pub(crate) fail_safe: bool,
    /// The writer's schema version of the value's type.
    pub(crate) schema: u32,
}

impl EntryMeta {
    pub(crate) fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms < self.fresh_until_ms
    }

    /// Still within its stale window (fresh or not).
    pub(crate) fn is_usable(&self, now_ms: u64) -> bool {
        now_ms < self.stale_until_ms
    }

    /// The timestamp block as stored, for in-place rewrites.
    pub(crate) fn times_bytes(&self) -> [u8; TIMES_LEN] {
        let mut out = [0u8; TIMES_LEN];
        out[0..8].copy_from_slice(&self.created_at_us.to_le_bytes());
        out[8..16].copy_from_slice(&self.fresh_until_ms.to_le_bytes());
        out[16..24].copy_from_slice(&self.stale_until_ms.to_le_bytes());
        out[24..28].copy_from_slice(&self.load_micros.to_le_bytes());
        out
    }
}

/// Why stored bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Not an envelope, truncated, or inconsistent: delete it.
    Corrupt(&'static str),
    /// Written by a newer version of this library: a miss, but leave it alone.
    NewerFormat(u8),
}

/// A decoded envelope whose payload borrows the stored bytes unless it had to
/// be decompressed.
#[derive(Debug)]
pub(crate) struct Decoded<'a> {
    pub(crate) meta: EntryMeta,
    /// `None` for a negative entry.
    pub(crate) value: Option<(Codec, Cow<'a, [u8]>)>,
}

/// Encode an entry; `value` is `None` for a negative entry.
pub(crate) fn encode(
    meta: &EntryMeta,
    value: Option<(Codec, &[u8])>,
    compress_above: Option<usize>,
) -> Vec<u8> {
    let tags_len: usize = meta.tags.iter().map(|t| 2 + t.len()).sum();
    let etag_len = 2 + meta.etag.as_ref().map_or(0, String::len);
    let payload_len = value.map_or(0, |(_, bytes)| bytes.len());
    let mut out = Vec::with_capacity(HEADER_LEN + tags_len + etag_len + payload_len);
    let mut flags = if meta.fail_safe { FLAG_FAIL_SAFE } else { 0 };
    let (codec_id, payload): (u8, Cow<'_, [u8]>) = match value {
        None => {
            flags |= FLAG_NEGATIVE;
            (0, Cow::Borrowed(&[]))
        }
        Some((codec, bytes)) => match compress_above {
            Some(threshold) if bytes.len() > threshold => {
                let compressed = lz4_flex::compress_prepend_size(bytes);
                if compressed.len() < bytes.len() {
                    flags |= FLAG_COMPRESSED;
                    (codec.id(), Cow::Owned(compressed))
                } else {
                    (codec.id(), Cow::Borrowed(bytes))
                }
            }
            _ => (codec.id(), Cow::Borrowed(bytes)),
        },
    };
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.push(codec_id);
    out.push(flags);
    out.extend_from_slice(&meta.created_at_us.to_le_bytes());
    out.extend_from_slice(&meta.fresh_until_ms.to_le_bytes());
    out.extend_from_slice(&meta.stale_until_ms.to_le_bytes());
    out.extend_from_slice(&meta.load_micros.to_le_bytes());
    out.extend_from_slice(&meta.schema.to_le_bytes());
    let tag_count = meta.tags.len().min(u16::MAX as usize);
    out.extend_from_slice(&(tag_count as u16).to_le_bytes());
    for tag in meta.tags.iter().take(tag_count) {
        put_str(&mut out, tag);
    }
    put_str(&mut out, meta.etag.as_deref().unwrap_or_default());
    out.extend_from_slice(&payload);
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = floor_char_boundary(s, s.len().min(u16::MAX as usize));
    out.extend_from_slice(&(len as u16).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..len]);
}

fn floor_char_boundary(s: &str, mut index: usize) -> usize {
    while !s.is_char_boundary(index) {
        index -= 1;
    }
    index
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(DecodeError::Corrupt("length overflow"))?;
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or(DecodeError::Corrupt("truncated envelope"))?;
        self.pos = end;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn string(&mut self) -> Result<&'a str, DecodeError> {
        let len = usize::from(self.u16()?);
        std::str::from_utf8(self.take(len)?).map_err(|_| DecodeError::Corrupt("text is not UTF-8"))
    }
}

/// Whether the flags read by [`decode_meta`] mark a negative entry.
pub(crate) fn is_negative(flags: u8) -> bool {
    flags & FLAG_NEGATIVE != 0
}

/// Read only the header and tags, without touching the payload.
pub(crate) fn decode_meta(bytes: &[u8]) -> Result<(EntryMeta, u8, u8, usize), DecodeError> {
    let mut r = Reader { bytes, pos: 0 };
    if r.take(2)? != MAGIC {
        return Err(DecodeError::Corrupt("bad magic"));
    }
    let version = r.u8()?;
    if version > FORMAT_VERSION {
        return Err(DecodeError::NewerFormat(version));
    }
    if version == 0 {
        return Err(DecodeError::Corrupt("format version 0"));
    }
    let codec_id = r.u8()?;
    let flags = r.u8()?;
    if flags & !(FLAG_COMPRESSED | FLAG_NEGATIVE | FLAG_FAIL_SAFE) != 0 {
        return Err(DecodeError::Corrupt("unknown flags"));
    }
    let created = r.u64()?;
    let fresh_until_ms = r.u64()?;
    let stale_until_ms = r.u64()?;
    let created_at_us = match version {
        1 if fresh_until_ms < created => {
            return Err(DecodeError::Corrupt("timestamps out of order"))
        }
        1 => created.saturating_mul(1_000),
        _ => created,
    };
    if stale_until_ms < fresh_until_ms {
        return Err(DecodeError::Corrupt("timestamps out of order"));
    }
    let load_micros = r.u32()?;
    let schema = if version >= 2 { r.u32()? } else { 0 };
    let tag_count = r.u16()?;
    let mut tags = Vec::with_capacity(usize::from(tag_count).min(64));
    for _ in 0..tag_count {
        let len = usize::from(r.u16()?);
        let tag = std::str::from_utf8(r.take(len)?)
            .map_err(|_| DecodeError::Corrupt("tag is not UTF-8"))?;
        tags.push(tag.to_owned());
    }
    let etag = Some(r.string()?)
        .filter(|e| !e.is_empty())
        .map(str::to_owned);
    let meta = EntryMeta {
        created_at_us,
        fresh_until_ms,
        stale_until_ms,
        load_micros,
        tags,
        etag,
        fail_safe: flags & FLAG_FAIL_SAFE != 0,
        schema,
    };
    Ok((meta, codec_id, flags, r.pos))
}

/// Decode a whole envelope. `max_value_bytes` bounds decompression.
pub(crate) fn decode(bytes: &[u8], max_value_bytes: usize) -> Result<Decoded<'_>, DecodeError> {
    let (meta, codec_id, flags, payload_at) = decode_meta(bytes)?;
    let payload = &bytes[payload_at..];
    if flags & FLAG_NEGATIVE != 0 {
        if codec_id != 0 || !payload.is_empty() || flags & FLAG_COMPRESSED != 0 {
            return Err(DecodeError::Corrupt("negative entry with a payload"));
        }
        return Ok(Decoded { meta, value: None });
    }
    let codec = Codec::from_id(codec_id).ok_or(DecodeError::Corrupt("unknown codec"))?;
    let payload = if flags & FLAG_COMPRESSED != 0 {
        let claimed = payload
            .get(..4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or(DecodeError::Corrupt("truncated compressed payload"))?;
        if claimed > max_value_bytes {
            return Err(DecodeError::Corrupt("decompressed size over the maximum"));
        }
        let plain = lz4_flex::decompress_size_prepended(payload)
            .map_err(|_| DecodeError::Corrupt("bad lz4 payload"))?;
        Cow::Owned(plain)
    } else {
        Cow::Borrowed(payload)
    };
    Ok(Decoded {
        meta,
        value: Some((codec, payload)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> EntryMeta {
        EntryMeta {
            created_at_us: 1_000_123,
            fresh_until_ms: 2_000,
            stale_until_ms: 3_000,
            load_micros: 1234,
            tags: vec!["user:1".into(), "sector:tech".into()],
            etag: Some("v42".into()),
            fail_safe: true,
            schema: 7,
        }
    }

    #[test]
    fn format_1_entries_are_still_read() {
        // Written by the previous format: created_at in ms, no schema field.
        let mut v1 = Vec::new();
        v1.extend_from_slice(b"SC");
        v1.push(1);
        v1.push(Codec::Json.id());
        v1.push(0);
        v1.extend_from_slice(&1_000u64.to_le_bytes());
        v1.extend_from_slice(&2_000u64.to_le_bytes());
        v1.extend_from_slice(&3_000u64.to_le_bytes());
        v1.extend_from_slice(&55u32.to_le_bytes());
        v1.extend_from_slice(&0u16.to_le_bytes());
        v1.extend_from_slice(&0u16.to_le_bytes());
        v1.extend_from_slice(b"42");
        let d = decode(&v1, 100).unwrap();
        assert_eq!(d.meta.created_at_us, 1_000_000);
        assert_eq!(d.meta.schema, 0);
        assert_eq!(&*d.value.unwrap().1, b"42");
    }

    #[test]
    fn round_trips_plain_compressed_and_negative() {
        let small = b"{\"a\":1}".to_vec();
        let big = b"abcdefgh".repeat(500);
        for (payload, threshold) in [(&small, None), (&big, Some(1024)), (&big, None)] {
            let bytes = encode(&meta(), Some((Codec::Json, payload)), threshold);
            let d = decode(&bytes, 1 << 20).unwrap();
            assert_eq!(d.meta, meta());
            let (codec, got) = d.value.unwrap();
            assert_eq!(codec, Codec::Json);
            assert_eq!(&*got, payload.as_slice());
        }
        let compressed = encode(&meta(), Some((Codec::Json, &big)), Some(1024));
        assert!(compressed.len() < big.len() / 4);

        let negative = encode(&meta(), None, Some(1));
        let d = decode(&negative, 1 << 20).unwrap();
        assert!(d.value.is_none());
    }

    #[test]
    fn timestamps_sit_where_the_in_place_rewrite_expects_them() {
        // The lease scripts rewrite flags at offset 4 and the timestamp block
        // right after it; this pins the layout they rely on.
        let bytes = encode(&meta(), Some((Codec::Json, b"1")), None);
        assert_eq!(TIMES_OFFSET, 5);
        assert_eq!(
            &bytes[TIMES_OFFSET..TIMES_OFFSET + TIMES_LEN],
            &meta().times_bytes()
        );
        assert_eq!(bytes[TIMES_OFFSET - 1] & FLAG_FAIL_SAFE, FLAG_FAIL_SAFE);
    }

    #[test]
    fn garbage_is_corrupt_and_newer_formats_are_told_apart() {
        assert!(matches!(decode(b"", 100), Err(DecodeError::Corrupt(_))));
        assert!(matches!(decode(b"null", 100), Err(DecodeError::Corrupt(_))));
        let mut bytes = encode(&meta(), Some((Codec::Json, b"1")), None);
        for cut in 0..HEADER_LEN {
            assert!(decode(&bytes[..cut], 100).is_err(), "cut at {cut}");
        }
        bytes[2] = FORMAT_VERSION + 1;
        assert_eq!(
            decode(&bytes, 100).unwrap_err(),
            DecodeError::NewerFormat(FORMAT_VERSION + 1)
        );
    }

    #[test]
    fn a_decompression_bomb_is_refused_before_allocating() {
        let big = vec![0u8; 100_000];
        let bytes = encode(&meta(), Some((Codec::Json, &big)), Some(10));
        assert!(matches!(
            decode(&bytes, 1_000),
            Err(DecodeError::Corrupt(_))
        ));
        assert!(decode(&bytes, 100_000).is_ok());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x2545F4914F6CDD1Du64;
        let valid = encode(&meta(), Some((Codec::Postcard, b"xyz")), None);
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut bytes = valid.clone();
            let pos = (seed as usize) % bytes.len();
            bytes[pos] = (seed >> 32) as u8;
            bytes.truncate(((seed >> 40) as usize) % (valid.len() + 1));
            let _ = decode(&bytes, 1 << 16);
        }
    }
}
