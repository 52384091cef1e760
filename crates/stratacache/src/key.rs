//! Turning a caller's key into the key stored in each tier.
//!
//! The stored key is `{namespace}:{<key>}`. The braces are a Redis Cluster hash
//! tag: every key derived from the same caller key (value, lease, version) by
//! appending a suffix after the closing brace lands in the same hash slot, so
//! later multi-key scripts on one entry never cross slots. Keys longer than the
//! configured bound are replaced by a SHA-256 digest so that huge keys cannot
//! bloat Redis memory or the network.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The default bound above which keys are hashed.
pub const DEFAULT_MAX_KEY_LEN: usize = 256;

/// Builds stored keys for one namespace.
#[derive(Debug, Clone)]
pub(crate) struct KeySpace {
    namespace: String,
    prefix: String,
    max_key_len: usize,
}

impl KeySpace {
    pub(crate) fn new(namespace: &str, max_key_len: usize) -> Result<Self> {
        if namespace.is_empty() {
            return Err(Error::config("namespace must not be empty"));
        }
        if namespace.contains(['{', '}']) || namespace.chars().any(char::is_whitespace) {
            return Err(Error::config(format!(
                "namespace {namespace:?} must not contain braces or whitespace"
            )));
        }
        if max_key_len < 64 {
            return Err(Error::config("max_key_len must be at least 64 bytes"));
        }
        Ok(Self {
            namespace: namespace.to_string(),
            prefix: format!("{namespace}:{{"),
            max_key_len,
        })
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The key under which `key` is stored in L2: `{namespace}:{<inner key>}`.
    pub(crate) fn stored(&self, key: &str) -> Result<String> {
        let inner = self.inner_key(key)?;
        let mut out = String::with_capacity(self.prefix.len() + inner.len() + 1);
        out.push_str(&self.prefix);
        out.push_str(&inner);
        out.push('}');
        Ok(out)
    }

    /// The key within the namespace: `key` itself, or its digest form when it
    /// is over-long. L1 is keyed by it (L1 belongs to one namespace), so an L1
    /// hit on an ordinary key allocates nothing.
    pub(crate) fn inner_key<'k>(&self, key: &'k str) -> Result<Cow<'k, str>> {
        if key.is_empty() {
            return Err(Error::InvalidKey {
                key: String::new(),
                reason: "keys must not be empty",
            });
        }
        if key.starts_with('}') {
            // `{ns}:{}…}` would be an empty hash tag: Redis would hash the
            // whole key, and the entry's lease and version keys would land in
            // other slots. The digest form keeps the tag non-empty.
            return Ok(Cow::Owned(digest_form("", key)));
        }
        if key.len() <= self.max_key_len {
            return Ok(Cow::Borrowed(key));
        }
        // Keep a readable head so operators can still tell keys apart in Redis.
        Ok(Cow::Owned(digest_form(
            &key[..floor_char_boundary(key, 32)],
            key,
        )))
    }

    /// The stored key of a key within the namespace.
    pub(crate) fn stored_from_inner(&self, inner_key: &str) -> String {
        format!("{}{inner_key}}}", self.prefix)
    }

    /// The key within the namespace of a stored key.
    pub(crate) fn inner_of<'s>(&self, stored: &'s str) -> &'s str {
        &stored[self.prefix.len()..stored.len() - 1]
    }

    /// The length of the prefix every stored key starts with (`{namespace}:{`).
    pub(crate) fn prefix_len(&self) -> usize {
        self.prefix.len()
    }
}

/// `head` followed by the SHA-256 of the whole key.
fn digest_form(head: &str, key: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(head.len() + 8 + 64);
    out.push_str(head);
    out.push_str("#sha256:");
    for byte in Sha256::digest(key.as_bytes()) {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn floor_char_boundary(s: &str, mut index: usize) -> usize {
    index = index.min(s.len());
    while !s.is_char_boundary(index) {
        index -= 1;
    }
    index
}

/// The Redis Cluster hash slot of a stored key (CRC16/XMODEM of its hash tag, mod 16384).
pub(crate) fn hash_slot(key: &[u8]) -> u16 {
    let tagged = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16_xmodem(tagged) % 16384
}

fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= (byte as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_namespaced_and_hash_tagged() {
        let ks = KeySpace::new("app", DEFAULT_MAX_KEY_LEN).unwrap();
        assert_eq!(ks.stored("user:1").unwrap(), "app:{user:1}");
    }

    #[test]
    fn empty_keys_and_bad_namespaces_are_refused() {
        let ks = KeySpace::new("app", DEFAULT_MAX_KEY_LEN).unwrap();
        assert!(matches!(ks.stored(""), Err(Error::InvalidKey { .. })));
        assert!(KeySpace::new("", 256).is_err());
        assert!(KeySpace::new("a{b", 256).is_err());
        assert!(KeySpace::new("a b", 256).is_err());
    }

    #[test]
    fn long_keys_are_hashed_stably_and_distinctly() {
        let ks = KeySpace::new("app", 64).unwrap();
        let long_a = "é".repeat(100);
        let long_b = format!("{}x", "é".repeat(100));
        let a = ks.stored(&long_a).unwrap();
        assert_eq!(a, ks.stored(&long_a).unwrap());
        assert_ne!(a, ks.stored(&long_b).unwrap());
        assert!(a.len() < 140, "{a}");
        assert!(a.contains("#sha256:"));
    }

    #[test]
    fn slot_matches_redis_reference_values() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(hash_slot(b"123456789"), 12739);
        assert_eq!(hash_slot(b"foo"), 12182);
        assert_eq!(hash_slot(b"{user1000}.following"), hash_slot(b"user1000"));
        assert_eq!(hash_slot(b"foo{}{bar}"), hash_slot(b"foo{}{bar}"));
    }

    #[test]
    fn derived_keys_share_the_slot_of_their_entry() {
        let ks = KeySpace::new("app", DEFAULT_MAX_KEY_LEN).unwrap();
        for key in ["plain", "with}brace", "with{brace", "{x}", "ünï"] {
            let stored = ks.stored(key).unwrap();
            let lease = format!("{stored}:lease");
            assert_eq!(
                hash_slot(stored.as_bytes()),
                hash_slot(lease.as_bytes()),
                "{key}"
            );
        }
    }
}
