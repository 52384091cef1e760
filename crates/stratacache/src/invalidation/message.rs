//! What the backplane carries: which keys, tags, prefixes or whole namespace
//! became invalid — never values. Every message names its format version and
//! its sender, so an instance skips its own messages, and one that receives a
//! version it does not know (a newer instance in a rolling deploy) drops its
//! whole L1 rather than guess.

use serde::{Deserialize, Serialize};

/// The message format this build writes.
pub(crate) const MESSAGE_VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Message {
    /// Format version.
    pub(crate) v: u8,
    /// The sending instance.
    pub(crate) from: String,
    #[serde(flatten)]
    pub(crate) what: Invalidation,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Invalidation {
    /// Keys (within the namespace) were written or deleted.
    Keys { keys: Vec<String> },
    /// Entries carrying `tag` created at or before the stamp are invalid.
    Tag {
        tag: String,
        /// The stamp in ms, for instances of an older version.
        at_ms: u64,
        /// The stamp (µs; see `clock`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at_us: Option<u64>,
    },
    /// Keys starting with `prefix` were deleted.
    Prefix { prefix: String },
    /// Every entry created at or before the stamp is invalid.
    Clear {
        at_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at_us: Option<u64>,
    },
}

impl Invalidation {
    pub(crate) fn tag(tag: &str, stamp: u64) -> Self {
        Invalidation::Tag {
            tag: tag.to_string(),
            at_ms: stamp / 1_000,
            at_us: Some(stamp),
        }
    }

    pub(crate) fn clear(stamp: u64) -> Self {
        Invalidation::Clear {
            at_ms: stamp / 1_000,
            at_us: Some(stamp),
        }
    }
}

/// The stamp of a tag or namespace invalidation, from either field.
pub(crate) fn stamp_of(at_ms: u64, at_us: Option<u64>) -> u64 {
    at_us.unwrap_or(at_ms.saturating_mul(1_000))
}

/// How an incoming message is to be treated.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    Apply(Invalidation),
    /// Sent by this instance: already applied locally.
    Own,
    /// Unreadable or from a newer format: trust nothing in L1.
    Unknown,
}

impl Message {
    pub(crate) fn encode(from: &str, what: Invalidation) -> String {
        serde_json::to_string(&Message {
            v: MESSAGE_VERSION,
            from: from.to_string(),
            what,
        })
        .expect("messages serialize")
    }

    pub(crate) fn decode(payload: &[u8], me: &str) -> Incoming {
        #[derive(Deserialize)]
        struct Header {
            v: u8,
            from: String,
        }
        match serde_json::from_slice::<Header>(payload) {
            Ok(h) if h.from == me => Incoming::Own,
            Ok(h) if h.v == MESSAGE_VERSION => match serde_json::from_slice::<Message>(payload) {
                Ok(m) => Incoming::Apply(m.what),
                Err(_) => Incoming::Unknown,
            },
            _ => Incoming::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_senders_skip_their_own() {
        let what = Invalidation::tag("sector:tech", 42_123);
        let encoded = Message::encode("a", what.clone());
        assert!(!encoded.contains("value"));
        assert_eq!(
            Message::decode(encoded.as_bytes(), "b"),
            Incoming::Apply(what)
        );
        assert_eq!(Message::decode(encoded.as_bytes(), "a"), Incoming::Own);
    }

    #[test]
    fn messages_of_the_previous_version_are_read() {
        let old = r#"{"v":1,"from":"x","kind":"tag","tag":"t","at_ms":42}"#;
        let Incoming::Apply(Invalidation::Tag { at_ms, at_us, .. }) =
            Message::decode(old.as_bytes(), "me")
        else {
            panic!("a tag message");
        };
        assert_eq!(stamp_of(at_ms, at_us), 42_000);
    }

    #[test]
    fn newer_or_garbled_messages_are_unknown() {
        let newer = r#"{"v":2,"from":"x","kind":"teleport"}"#;
        assert_eq!(Message::decode(newer.as_bytes(), "me"), Incoming::Unknown);
        assert_eq!(Message::decode(b"\xff\x00", "me"), Incoming::Unknown);
        let keys = Message::encode(
            "x",
            Invalidation::Keys {
                keys: vec!["a|b\n{c}".into()],
            },
        );
        assert!(matches!(
            Message::decode(keys.as_bytes(), "me"),
            Incoming::Apply(Invalidation::Keys { .. })
        ));
    }
}
