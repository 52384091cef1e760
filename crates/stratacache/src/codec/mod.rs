//! The stored form of an entry: a versioned envelope around a serialized value.
//!
//! [`envelope`] owns the byte layout (header, flags, compression); this module
//! owns how a value becomes bytes ([`Codec`]).

pub(crate) mod envelope;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Error;

/// How values are serialized inside the envelope.
///
/// The codec is recorded in every envelope, so entries written with one codec
/// stay readable after the configuration switches to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Codec {
    /// JSON via serde_json: readable with `redis-cli`, tolerant of added fields.
    #[default]
    Json,
    /// postcard: compact and fast, but not self-describing — changing the
    /// value's type makes old entries undecodable (they are then treated as
    /// misses, deleted and counted).
    Postcard,
}

impl Codec {
    pub(crate) fn id(self) -> u8 {
        match self {
            Codec::Json => 1,
            Codec::Postcard => 2,
        }
    }

    pub(crate) fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(Codec::Json),
            2 => Some(Codec::Postcard),
            _ => None,
        }
    }

    pub(crate) fn encode<V: Serialize>(self, value: &V) -> Result<Vec<u8>, Error> {
        match self {
            Codec::Json => {
                serde_json::to_vec(value).map_err(|e| Error::Encode(e.to_string().into()))
            }
            Codec::Postcard => {
                postcard::to_stdvec(value).map_err(|e| Error::Encode(e.to_string().into()))
            }
        }
    }

    pub(crate) fn decode<V: DeserializeOwned>(self, bytes: &[u8]) -> Result<V, String> {
        match self {
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
            Codec::Postcard => postcard::from_bytes(bytes).map_err(|e| e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Row {
        id: u64,
        name: String,
    }

    #[test]
    fn both_codecs_round_trip() {
        let row = Row {
            id: 7,
            name: "ACME".into(),
        };
        for codec in [Codec::Json, Codec::Postcard] {
            let bytes = codec.encode(&row).unwrap();
            assert_eq!(codec.decode::<Row>(&bytes).unwrap(), row);
            assert_eq!(Codec::from_id(codec.id()), Some(codec));
        }
        assert!(
            Codec::Postcard.encode(&row).unwrap().len() < Codec::Json.encode(&row).unwrap().len()
        );
    }

    #[test]
    fn a_changed_type_is_a_decode_error_not_a_panic() {
        let bytes = Codec::Json.encode(&"just a string").unwrap();
        assert!(Codec::Json.decode::<Row>(&bytes).is_err());
        let bytes = Codec::Postcard.encode(&1u8).unwrap();
        assert!(Codec::Postcard.decode::<Row>(&bytes).is_err());
    }
}
