//! Every name the cache gives a thing in Redis: stored keys, the keys derived
//! from them, the namespace's own keys and channels.
//!
//! The stored key is `{namespace}:{<key>}`. The braces are a Redis Cluster hash
//! tag: every key derived from the same caller key (value, lease, version) by
//! appending a suffix after the closing brace lands in the same hash slot, so
//! later multi-key scripts on one entry never cross slots. Keys longer than the
//! configured bound are replaced by a SHA-256 digest so that huge keys cannot
//! bloat Redis memory or the network.
//!
//! | name | what |
//! |---|---|
//! | `{ns}:{<key>}` | an entry |
//! | `{ns}:{<key>}:lease` | the lease of its load ([`lease_key`]) |
//! | `{ns}:{<key>}:waiting` | "a caller waits for its fill" ([`waiting_key`]) |
//! | `{ns}:{<key>}:ver` | its version floor ([`floor_key`]) |
//! | `{ns}:__tag:<tag>` | when the tag was last invalidated |
//! | `{ns}:__clear` | when the namespace was last cleared |
//! | `{ns}:__stratacache:bus` | the invalidation channel |
//! | `{ns}:__stratacache:fills` | the fill-notification channel |

use std::borrow::Cow;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The default bound above which keys are hashed.
pub const DEFAULT_MAX_KEY_LEN: usize = 256;
/// How much of an over-long key its digest form keeps readable.
const HEAD_LEN: usize = 32;
/// What separates the readable head of a digest form from the digest.
const DIGEST_MARK: &str = "#sha256:";

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
            &key[..floor_char_boundary(key, HEAD_LEN)],
            key,
        )))
    }

    /// Whether `invalidate_prefix(prefix)` covers the key whose key within
    /// the namespace is `inner_key`. A digest form keeps only the head of its
    /// key, so a prefix longer than the head covers every digest form with
    /// that head: invalidating more than asked is safe, missing one is not.
    pub(crate) fn prefix_covers(inner_key: &str, prefix: &str) -> bool {
        if inner_key.starts_with(prefix) {
            return true;
        }
        match inner_key.find(DIGEST_MARK) {
            Some(head_len) => prefix.starts_with(&inner_key[..head_len]),
            None => false,
        }
    }

    /// The SCAN patterns of the stored keys `invalidate_prefix(prefix)`
    /// covers (see [`prefix_covers`](Self::prefix_covers)).
    pub(crate) fn prefix_patterns(&self, prefix: &str) -> Vec<String> {
        let stored_prefix = glob_escape(&self.prefix);
        let mut patterns = vec![format!("{stored_prefix}{}*", glob_escape(prefix))];
        if prefix.len() > HEAD_LEN || prefix.starts_with('}') {
            // Digest forms whose head is a prefix of `prefix`: the head is
            // the first HEAD_LEN bytes, or nothing for keys starting with `}`.
            let heads = [&prefix[..floor_char_boundary(prefix, HEAD_LEN)], ""];
            for head in heads {
                if prefix.starts_with(head) {
                    patterns.push(format!(
                        "{stored_prefix}{}{DIGEST_MARK}*",
                        glob_escape(head)
                    ));
                }
            }
        }
        patterns.dedup();
        patterns
    }

    /// When the tag `tag` was last invalidated.
    pub(crate) fn tag_key(&self, tag: &str) -> String {
        format!("{}:__tag:{tag}", self.namespace)
    }

    /// When the namespace was last cleared.
    pub(crate) fn clear_key(&self) -> String {
        format!("{}:__clear", self.namespace)
    }

    /// The invalidation channel (the backplane).
    pub(crate) fn bus_channel(&self) -> String {
        format!("{}:__stratacache:bus", self.namespace)
    }

    /// The channel fills are announced on, for waiters of other instances.
    pub(crate) fn fills_channel(&self) -> String {
        format!("{}:__stratacache:fills", self.namespace)
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

/// The lease of the load of the entry at `stored`.
pub(crate) fn lease_key(stored: &str) -> String {
    suffixed(stored, ":lease")
}

/// The mark of a key some caller waits for (see `lease`).
pub(crate) fn waiting_key(stored: &str) -> String {
    suffixed(stored, ":waiting")
}

/// The version floor of the entry at `stored` (see `versioned`).
pub(crate) fn floor_key(stored: &str) -> String {
    suffixed(stored, ":ver")
}

/// `stored` and `suffix` in one allocation. These keys are built on every
/// miss; `format!` costs ten times as many instructions for the same string.
fn suffixed(stored: &str, suffix: &str) -> String {
    let mut key = String::with_capacity(stored.len() + suffix.len());
    key.push_str(stored);
    key.push_str(suffix);
    key
}

/// Entries' stored keys end in `}`; only floors end in `}:ver`.
pub(crate) fn is_floor_key(key: &str) -> bool {
    key.ends_with("}:ver")
}

/// `text` with Redis's glob characters escaped.
pub(crate) fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `head` followed by the SHA-256 of the whole key.
fn digest_form(head: &str, key: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(head.len() + 8 + 64);
    out.push_str(head);
    out.push_str(DIGEST_MARK);
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
    fn a_prefix_longer_than_a_digest_head_covers_the_digest_form() {
        let ks = KeySpace::new("app", 64).unwrap();
        let long = format!("report:2026:{}", "x".repeat(300));
        let inner = ks.inner_key(&long).unwrap().into_owned();
        assert!(inner.contains(DIGEST_MARK));
        let prefix = &long[..52];
        assert!(KeySpace::prefix_covers(&inner, prefix));
        assert!(KeySpace::prefix_covers(&inner, "report:"));
        assert!(!KeySpace::prefix_covers(&inner, "other:"));
        let patterns = ks.prefix_patterns(prefix);
        let stored = ks.stored(&long).unwrap();
        assert!(
            patterns
                .iter()
                .any(|p| crate::keys::tests::glob_matches(p, &stored)),
            "{patterns:?} {stored}"
        );
    }

    /// A minimal glob for the test: `*` at the end, `\\` escapes.
    pub(super) fn glob_matches(pattern: &str, text: &str) -> bool {
        let literal: String = {
            let mut out = String::new();
            let mut chars = pattern.trim_end_matches('*').chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' {
                    chars.next().unwrap_or(c)
                } else {
                    c
                });
            }
            out
        };
        text.starts_with(&literal)
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
