//! Entry points for the fuzz targets in `fuzz/` and for the test that runs
//! them on generated inputs in CI. Not part of the API: hidden, unstable.
//!
//! Each function panics when an invariant is broken, which is what a fuzzer
//! looks for; on well-behaved code it returns normally for every input.

use crate::codec::envelope;
use crate::keys::{hash_slot, KeySpace};

/// The largest value a decode may produce in these checks.
const MAX_VALUE_BYTES: usize = 1 << 20;

/// Decode `bytes` as an entry read from Redis. Must not panic whatever the
/// bytes; what decodes must re-encode to an entry that decodes the same.
pub fn decode_entry(bytes: &[u8]) {
    let Ok(decoded) = envelope::decode(bytes, MAX_VALUE_BYTES) else {
        return;
    };
    if let Some((_, payload)) = &decoded.value {
        assert!(payload.len() <= MAX_VALUE_BYTES, "decompression bound");
    }
    let value = decoded.value.as_ref().map(|(c, p)| (*c, p.as_ref()));
    let again = envelope::encode(&decoded.meta, value, None);
    let redecoded = envelope::decode(&again, MAX_VALUE_BYTES).expect("re-encoded entry decodes");
    assert_eq!(redecoded.meta, decoded.meta);
    assert_eq!(
        redecoded.value.as_ref().map(|(c, p)| (*c, p.as_ref())),
        value
    );
    let (meta, _, _, _) = envelope::decode_meta(bytes).expect("meta of a decodable entry");
    assert_eq!(meta, decoded.meta);
}

/// Turn `key` into its stored form under `namespace`. Must not panic; when
/// both are accepted, the stored key has the documented shape, is bounded,
/// maps back to its inner key, and every key derived from it (lease,
/// version floor) shares its Cluster hash slot.
pub fn normalize_key(namespace: &str, key: &str, max_key_len: usize) {
    let Ok(keys) = KeySpace::new(namespace, max_key_len) else {
        return;
    };
    let Ok(stored) = keys.stored(key) else {
        assert!(key.is_empty(), "only empty keys are refused");
        return;
    };
    let prefix = format!("{namespace}:{{");
    assert!(stored.starts_with(&prefix) && stored.ends_with('}'));
    let inner = keys.inner_key(key).expect("accepted above");
    assert_eq!(keys.inner_of(&stored), inner);
    assert_eq!(keys.stored_from_inner(&inner), stored);
    assert!(inner.len() <= max_key_len.max(32 + 8 + 64), "bounded");
    if inner.as_ref() == key {
        assert!(key.len() <= max_key_len);
    }
    let slot = hash_slot(stored.as_bytes());
    for suffix in [":lease", ":ver", ":waiting"] {
        assert_eq!(
            hash_slot(format!("{stored}{suffix}").as_bytes()),
            slot,
            "{suffix} key of {stored:?} in another slot"
        );
    }
}

/// Valid entries of every shape (plain, compressed, negative, tagged,
/// fail-safe), as seeds for mutation.
pub fn sample_entries() -> Vec<Vec<u8>> {
    use crate::codec::envelope::EntryMeta;
    use crate::codec::Codec;
    let meta = |tags: &[&str], etag: Option<&str>, fail_safe: bool| EntryMeta {
        created_at_us: 1_700_000_000_000_000,
        fresh_until_ms: 1_700_000_060_000,
        stale_until_ms: 1_700_000_360_000,
        load_micros: 1_234,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        etag: etag.map(str::to_string),
        fail_safe,
        schema: 3,
    };
    let json = br#"{"id":7,"name":"Stoneware teapot","price_cents":2990}"#.to_vec();
    let long = b"abcdefgh".repeat(300);
    vec![
        envelope::encode(&meta(&[], None, false), Some((Codec::Json, &json)), None),
        envelope::encode(
            &meta(&["sector:tech", "user:42"], Some("v18"), true),
            Some((Codec::Postcard, &[1, 2, 3, 4])),
            None,
        ),
        envelope::encode(
            &meta(&["t"], None, false),
            Some((Codec::Json, &long)),
            Some(64),
        ),
        envelope::encode(&meta(&[], Some("etag"), false), None, None),
    ]
}
