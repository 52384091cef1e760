//! Reading what the cache keeps in Redis, as an operator does: which Redis
//! keys belong to a key or a namespace, what kind of key a name is, and what
//! a stored entry's envelope says — without knowing the value's type.
//!
//! This is the library's own key layout (`keys`) and envelope decoding
//! (`codec::envelope`) made public for tools (the `stratacache` command
//! line, dashboards); the cache itself does not use this module.
//!
//! ```
//! use stratacache::inspect::{classify_key, entry_keys, KeyKind};
//!
//! let keys = entry_keys("shop", "product:42").unwrap();
//! assert_eq!(keys.entry, "shop:{product:42}");
//! assert_eq!(keys.lease, "shop:{product:42}:lease");
//! assert_eq!(classify_key("shop", &keys.lease), KeyKind::Lease);
//! assert_eq!(
//!     classify_key("shop", "shop:__tag:user:7"),
//!     KeyKind::TagStamp("user:7".into())
//! );
//! ```

use std::borrow::Cow;

use crate::codec::envelope::{self, DecodeError};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::keys::{self, KeySpace, DEFAULT_MAX_KEY_LEN};
pub use crate::write_behind::QueueState;
use crate::write_behind::{counter_key, StreamKeys};

/// The Redis keys that belong to one cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryKeys {
    /// The entry itself: `{namespace}:{<key>}` (the key's digest form when
    /// it is longer than the cache's `max_key_len`).
    pub entry: String,
    /// The lease of its load (`…:lease`): a random token, with a TTL.
    pub lease: String,
    /// The mark "a caller waits for its fill" (`…:waiting`).
    pub waiting: String,
    /// Its version floor (`…:ver`, `Consistency::Version` only).
    pub version_floor: String,
    /// A write-behind counter's running total (`…:total`).
    pub counter_total: String,
}

/// The Redis keys of `key` in `namespace`, for a cache with the default
/// `max_key_len` (256 bytes).
pub fn entry_keys(namespace: &str, key: &str) -> Result<EntryKeys> {
    entry_keys_with_max_len(namespace, key, DEFAULT_MAX_KEY_LEN)
}

/// The Redis keys of `key` in `namespace`, for a cache built with
/// `max_key_len(max_key_len)`.
pub fn entry_keys_with_max_len(
    namespace: &str,
    key: &str,
    max_key_len: usize,
) -> Result<EntryKeys> {
    let space = KeySpace::new(namespace, max_key_len)?;
    let entry = space.stored(key)?;
    Ok(EntryKeys {
        lease: keys::lease_key(&entry),
        waiting: keys::waiting_key(&entry),
        version_floor: keys::floor_key(&entry),
        counter_total: counter_key(&entry),
        entry,
    })
}

/// The SCAN pattern that matches every key of `namespace` (entries, their
/// derived keys, stamps, write-behind streams).
pub fn namespace_pattern(namespace: &str) -> String {
    format!("{}:*", keys::glob_escape(namespace))
}

/// The channel the cache's instances announce invalidations on (a sharded
/// channel on a Cluster).
pub fn backplane_channel(namespace: &str) -> Result<String> {
    Ok(KeySpace::new(namespace, DEFAULT_MAX_KEY_LEN)?.bus_channel())
}

/// The channel fills are announced on, for waiters of other instances.
pub fn fills_channel(namespace: &str) -> Result<String> {
    Ok(KeySpace::new(namespace, DEFAULT_MAX_KEY_LEN)?.fills_channel())
}

/// The keys of a write-behind queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKeys {
    /// The stream of writes not yet applied.
    pub stream: String,
    /// The dead-letter stream.
    pub dead_letters: String,
    /// The consumer group of the workers.
    pub group: String,
}

/// The keys of the write-behind queue `queue` of `namespace`.
pub fn write_behind_keys(namespace: &str, queue: &str) -> QueueKeys {
    let keys = StreamKeys::new(namespace, queue);
    QueueKeys {
        stream: keys.stream,
        dead_letters: keys.dead,
        group: keys.group,
    }
}

/// Read the state of the queue with keys `keys` in one round trip (`XLEN`,
/// `XRANGE … COUNT 1`, `XLEN` of the dead letters), on `conn`: a
/// connection of the tool's own to the node holding the queue. The workers
/// read their gauges with the same pipeline.
///
/// Unlike the rest of the library's API, this takes a connection of the
/// Redis client (`redis` 1.x): tools that inspect a namespace already talk
/// to each node themselves.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use stratacache::inspect::{queue_state, write_behind_keys};
///
/// let client = redis::Client::open("redis://127.0.0.1:6379")?;
/// let mut conn = client.get_multiplexed_async_connection().await?;
/// let state = queue_state(&mut conn, &write_behind_keys("shop", "views")).await?;
/// println!("{} to apply, {} dead letters", state.depth, state.dead_letters);
/// # Ok(()) }
/// ```
pub async fn queue_state(
    conn: &mut impl redis::aio::ConnectionLike,
    keys: &QueueKeys,
) -> Result<QueueState> {
    crate::write_behind::queue_state(conn, &keys.stream, &keys.dead_letters)
        .await
        .map_err(Error::redis)
}

/// What a key of the namespace is, judged by its name alone.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyKind {
    /// An entry (`{ns}:{<key>}`).
    Entry,
    /// The lease of an entry's load.
    Lease,
    /// The mark of an awaited fill.
    Waiting,
    /// A version floor.
    VersionFloor,
    /// A write-behind counter's running total.
    CounterTotal,
    /// When this tag was last invalidated (a stamp, µs).
    TagStamp(String),
    /// When the namespace was last cleared (a stamp, µs).
    ClearStamp,
    /// The stream of the write-behind queue of this name.
    WriteBehindStream(String),
    /// The dead-letter stream of the write-behind queue of this name.
    WriteBehindDeadLetters(String),
    /// Under the namespace's prefix, but nothing the cache writes.
    Unknown,
    /// Not in the namespace.
    Foreign,
}

/// What kind of key `key` is in `namespace`.
pub fn classify_key(namespace: &str, key: &str) -> KeyKind {
    let Some(rest) = key
        .strip_prefix(namespace)
        .and_then(|r| r.strip_prefix(':'))
    else {
        return KeyKind::Foreign;
    };
    if rest.starts_with('{') {
        // Entries end in `}`; derived keys append a suffix after it.
        return if rest.ends_with('}') {
            KeyKind::Entry
        } else if rest.ends_with("}:lease") {
            KeyKind::Lease
        } else if rest.ends_with("}:waiting") {
            KeyKind::Waiting
        } else if rest.ends_with("}:ver") {
            KeyKind::VersionFloor
        } else if rest.ends_with("}:total") {
            KeyKind::CounterTotal
        } else {
            KeyKind::Unknown
        };
    }
    if let Some(tag) = rest.strip_prefix("__tag:") {
        return KeyKind::TagStamp(tag.to_string());
    }
    if rest == "__clear" {
        return KeyKind::ClearStamp;
    }
    if let Some(queue) = rest.strip_prefix("write-behind:") {
        return match queue.strip_suffix(":dead") {
            Some(name) => KeyKind::WriteBehindDeadLetters(name.to_string()),
            None => KeyKind::WriteBehindStream(queue.to_string()),
        };
    }
    KeyKind::Unknown
}

/// A stamp (tag, clear) or version floor as stored: a decimal number.
pub fn parse_stamp(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// What a stored entry's envelope says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntryInfo {
    /// The envelope's format version (2 today; 1 is still read).
    pub format: u8,
    /// The codec of the value (`None` for a negative entry).
    pub codec: Option<Codec>,
    /// Whether the payload is lz4-compressed.
    pub compressed: bool,
    /// A negative entry: the source said "absent", and that is cached.
    pub negative: bool,
    /// A stale value kept after a failed refresh; `fresh_until_ms` is then
    /// when the next refresh may be tried.
    pub fail_safe: bool,
    /// When the load that made the value began (µs since the Unix epoch).
    pub created_at_us: u64,
    /// Served as fresh until then (ms since the Unix epoch).
    pub fresh_until_ms: u64,
    /// Usable as stale until then, and gone from Redis then (ms).
    pub stale_until_ms: u64,
    /// How long the load took (µs).
    pub load_micros: u32,
    /// The writer's schema version of the value's type.
    pub schema_version: u32,
    /// The entry's tags.
    pub tags: Vec<String>,
    /// The source's version (ETag, row version), if any.
    pub etag: Option<String>,
    /// Bytes stored in Redis (envelope included).
    pub stored_bytes: usize,
    /// Bytes of the payload as stored (compressed or not).
    pub payload_bytes: usize,
    /// Bytes of the value once decompressed.
    pub value_bytes: usize,
    /// The value as JSON text, for the JSON codec (possibly cut at the bound
    /// given to [`decode_entry`]); `None` otherwise.
    pub value_json: Option<String>,
}

/// Why an entry could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// Not an envelope, truncated or inconsistent (the cache deletes such
    /// bytes when it reads them).
    #[error("not a stratacache entry: {0}")]
    Corrupt(&'static str),
    /// Written by a newer version of the library.
    #[error("entry of format {0}, newer than this build reads")]
    NewerFormat(u8),
}

/// Decode a stored entry's envelope. `max_value_bytes` bounds decompression
/// (the cache's `max_value_bytes`); `preview_bytes` bounds
/// [`EntryInfo::value_json`].
pub fn decode_entry(
    bytes: &[u8],
    max_value_bytes: usize,
    preview_bytes: usize,
) -> std::result::Result<EntryInfo, InspectError> {
    let (_, _, flags, payload_at) = envelope::decode_meta(bytes).map_err(inspect_error)?;
    let decoded = envelope::decode(bytes, max_value_bytes).map_err(inspect_error)?;
    let meta = decoded.meta;
    // `decode` hands back owned bytes only when it had to decompress.
    let compressed = matches!(&decoded.value, Some((_, Cow::Owned(_))));
    let (codec, value_bytes, value_json) = match &decoded.value {
        None => (None, 0, None),
        Some((codec, value)) => {
            let json = (*codec == Codec::Json).then(|| {
                let cut = value.len().min(preview_bytes);
                String::from_utf8_lossy(&value[..cut]).into_owned()
            });
            (Some(*codec), value.len(), json)
        }
    };
    Ok(EntryInfo {
        format: bytes[2],
        codec,
        compressed,
        negative: envelope::is_negative(flags),
        fail_safe: meta.fail_safe,
        created_at_us: meta.created_at_us,
        fresh_until_ms: meta.fresh_until_ms,
        stale_until_ms: meta.stale_until_ms,
        load_micros: meta.load_micros,
        schema_version: meta.schema,
        tags: meta.tags,
        etag: meta.etag,
        stored_bytes: bytes.len(),
        payload_bytes: bytes.len() - payload_at,
        value_bytes,
        value_json,
    })
}

fn inspect_error(e: DecodeError) -> InspectError {
    match e {
        DecodeError::Corrupt(why) => InspectError::Corrupt(why),
        DecodeError::NewerFormat(v) => InspectError::NewerFormat(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::envelope::EntryMeta;

    #[test]
    fn an_entry_is_read_back_with_its_metadata() {
        let meta = EntryMeta {
            created_at_us: 1_000_000,
            fresh_until_ms: 2_000,
            stale_until_ms: 3_000,
            load_micros: 12,
            tags: vec!["user:1".into()],
            etag: Some("v9".into()),
            fail_safe: false,
            schema: 3,
        };
        let value = br#"{"name":"Ada"}"#.repeat(200);
        let bytes = envelope::encode(&meta, Some((Codec::Json, &value)), Some(1024));
        let info = decode_entry(&bytes, 1 << 20, 10).unwrap();
        assert!(info.compressed);
        assert_eq!(info.codec, Some(Codec::Json));
        assert_eq!(info.tags, ["user:1"]);
        assert_eq!(info.schema_version, 3);
        assert_eq!(info.value_bytes, value.len());
        assert_eq!(info.value_json.as_deref(), Some(r#"{"name":"A"#));
        assert!(info.payload_bytes < value.len());

        let negative = envelope::encode(&meta, None, None);
        let info = decode_entry(&negative, 1 << 20, 10).unwrap();
        assert!(info.negative && info.codec.is_none());
        assert!(matches!(
            decode_entry(b"hello", 100, 10),
            Err(InspectError::Corrupt(_))
        ));
    }

    #[test]
    fn keys_are_classified_by_name() {
        let k = entry_keys("ns", "a}b").unwrap();
        assert_eq!(classify_key("ns", &k.entry), KeyKind::Entry);
        assert_eq!(classify_key("ns", &k.version_floor), KeyKind::VersionFloor);
        assert_eq!(classify_key("ns", &k.waiting), KeyKind::Waiting);
        assert_eq!(classify_key("ns", &k.counter_total), KeyKind::CounterTotal);
        assert_eq!(classify_key("ns", "ns:__clear"), KeyKind::ClearStamp);
        let q = write_behind_keys("ns", "views");
        assert_eq!(
            classify_key("ns", &q.stream),
            KeyKind::WriteBehindStream("views".into())
        );
        assert_eq!(
            classify_key("ns", &q.dead_letters),
            KeyKind::WriteBehindDeadLetters("views".into())
        );
        assert_eq!(classify_key("ns", "other:{x}"), KeyKind::Foreign);
        assert_eq!(classify_key("ns", "ns:something"), KeyKind::Unknown);
        assert_eq!(namespace_pattern("a*b"), "a\\*b:*");
    }
}
