use std::collections::{BTreeMap, HashMap};
use std::mem::size_of;

use serde::ser::{Error as _, SerializeSeq, Serializer};
use serde::Serialize;

use super::*;

#[test]
fn blocks_follow_the_allocator_model() {
    assert_eq!(block(0), 0);
    assert_eq!(block(1), 32, "the smallest block");
    assert_eq!(block(24), 32, "24 bytes and the header fit in 32");
    assert_eq!(block(25), 48);
    assert_eq!(block(1_000), 1_008);
    assert_eq!(block(200_000), 49 * 4096, "mmapped: whole pages");
}

#[test]
fn scalars_hold_no_heap() {
    assert_eq!(heap_bytes(&7u64), 0);
    assert_eq!(heap_bytes(&'x'), 0);
    assert_eq!(heap_bytes(&(1u8, 2.5f64, true)), 0);
    assert_eq!(heap_bytes(&[0u32; 32]), 0, "an array is inline");
    assert_eq!(value_bytes(&7u64), block(ARC_COUNTS + 8));
}

#[test]
fn strings_and_buffers_are_one_block_each() {
    assert_eq!(
        heap_bytes(&String::new()),
        0,
        "an empty String allocates nothing"
    );
    assert_eq!(heap_bytes(&"x".repeat(1_000)), block(1_000));
    assert_eq!(
        value_bytes(&"x".repeat(10_000)),
        block(ARC_COUNTS + size_of::<String>()) + block(10_000)
    );
    assert_eq!(
        heap_bytes(&vec![0u8; 500]),
        block(500),
        "a Vec<u8> is a sequence"
    );
}

#[test]
fn sequences_count_their_buffer_and_their_elements() {
    assert_eq!(heap_bytes(&Vec::<String>::new()), 0);
    assert_eq!(heap_bytes(&vec![7u64; 1_000]), block(8_000));
    let strings = vec!["a".to_string(), "bb".to_string()];
    assert_eq!(heap_bytes(&strings), block(48) + 2 * block(2));
    let nested = vec![vec![1u16; 50]; 10];
    assert_eq!(heap_bytes(&nested), block(10 * 24) + 10 * block(100));
}

/// The element's inline size is rebuilt from its shape (serde hands
/// elements over by reference); it must match Rust's layout.
#[test]
fn element_layouts_match_size_of() {
    #[derive(Serialize)]
    struct Packed {
        a: u8,
        b: u32,
        c: u16,
    }
    fn buffer<T: Serialize>(v: Vec<T>) -> (usize, usize) {
        (heap_bytes(&v), block(v.len() * size_of::<T>()))
    }
    let (est, real) = buffer(vec![(1u8, 2u64); 10]);
    assert_eq!(est, real);
    let (est, real) = buffer(vec![Some(1u64); 10]);
    assert_eq!(est, real, "Option<u64> takes a tag");
    let (est, real) = buffer(vec![[1u32; 3]; 10]);
    assert_eq!(est, real);
    let (est, real) = buffer((0..10).map(|_| Packed { a: 1, b: 2, c: 3 }).collect());
    assert_eq!(est, real, "fields are reordered, only the total is padded");
    let none: Vec<Option<String>> = vec![None, None, Some(String::new())];
    assert_eq!(
        heap_bytes(&none),
        block(3 * size_of::<Option<String>>()),
        "Option<String> takes no tag; a None learns its size from a Some"
    );
}

#[test]
fn options_count_what_they_hold() {
    assert_eq!(heap_bytes(&None::<String>), 0);
    assert_eq!(heap_bytes(&Some("abc".to_string())), block(3));
    assert_eq!(heap_bytes(&Some(Some(vec![1u32; 4]))), block(16));
}

#[test]
fn nested_structs_add_up() {
    #[derive(Serialize)]
    struct Inner {
        tags: Vec<String>,
        note: Option<String>,
    }
    #[derive(Serialize)]
    struct Outer {
        id: u64,
        name: String,
        inner: Inner,
        rows: Vec<Inner>,
    }
    let inner = || Inner {
        tags: vec!["kitchen".into(), "tea".into()],
        note: Some("x".repeat(40)),
    };
    let one_inner = block(48) + 2 * block(7) + block(40);
    let value = Outer {
        id: 1,
        name: "teapot".into(),
        inner: inner(),
        rows: vec![inner(), inner(), inner()],
    };
    let expected = block(6) + one_inner + block(3 * size_of::<Inner>()) + 3 * one_inner;
    assert_eq!(heap_bytes(&value), expected);
    assert_eq!(
        value_bytes(&value),
        block(ARC_COUNTS + size_of::<Outer>()) + expected
    );
}

#[test]
fn enums_count_the_variant_they_hold() {
    #[derive(Serialize)]
    enum Event {
        Idle,
        Page(String),
        Click(u32, String),
        Scroll { by: i64, label: Option<String> },
    }
    assert_eq!(heap_bytes(&Event::Idle), 0);
    assert_eq!(heap_bytes(&Event::Page("/a".into())), block(2));
    assert_eq!(heap_bytes(&Event::Click(3, "buy".into())), block(3));
    let scroll = Event::Scroll {
        by: 4,
        label: Some("down".into()),
    };
    assert_eq!(heap_bytes(&scroll), block(4));
}

#[test]
fn an_enum_element_is_sized_by_its_largest_variant_seen() {
    #[derive(Serialize)]
    enum Tap {
        Idle,
        At(u32, u64),
    }
    #[derive(Serialize)]
    enum Named {
        Some(u8, String),
        Nothing,
    }
    let taps = vec![Tap::Idle, Tap::At(1, 2), Tap::Idle];
    assert_eq!(
        heap_bytes(&taps),
        block(3 * size_of::<Tap>()),
        "the tag shares the padding"
    );
    let named = vec![Named::Nothing, Named::Some(1, String::new())];
    assert_eq!(
        heap_bytes(&named),
        block(2 * size_of::<Named>()),
        "the String's niche holds the tag"
    );
}

#[test]
fn an_internally_tagged_enum_does_not_count_its_tag() {
    #[derive(Serialize)]
    #[serde(tag = "kind")]
    enum Shape {
        Circle { label: String },
        Dot,
    }
    assert_eq!(heap_bytes(&Shape::Dot), 0);
    assert_eq!(
        heap_bytes(&Shape::Circle {
            label: "abc".into()
        }),
        block(3)
    );
}

#[test]
fn maps_count_a_hash_table() {
    assert_eq!(heap_bytes(&HashMap::<String, String>::new()), 0);
    let small: HashMap<u64, u64> = (0..5).map(|i| (i, i)).collect();
    // 8 buckets of 16 bytes, 8 control bytes and a group of 16.
    assert_eq!(heap_bytes(&small), block(8 * 16 + 8 + 16));
    let rows: HashMap<String, String> = (0..20)
        .map(|i| (format!("k{i:02}"), format!("v{i:02}")))
        .collect();
    // 20 entries need 32 buckets of 48 bytes.
    assert_eq!(heap_bytes(&rows), block(32 * 48 + 32 + 16) + 40 * block(3));
    let sorted: BTreeMap<String, String> = rows.into_iter().collect();
    assert_eq!(
        heap_bytes(&sorted),
        block(32 * 48 + 32 + 16) + 40 * block(3),
        "a BTreeMap is counted as a HashMap"
    );
}

#[test]
fn a_long_collection_is_sampled_and_extrapolated() {
    let uniform: Vec<String> = (0..10_000).map(|i| format!("{i:08}")).collect();
    assert_eq!(
        heap_bytes(&uniform),
        block(10_000 * 24) + 10_000 * block(8),
        "uniform elements: the extrapolation is exact"
    );
    // The sample's average stands for the rest: here the first 32 are short.
    let mixed: Vec<String> = (0..1_000)
        .map(|i| "x".repeat(if i < SAMPLE { 10 } else { 100 }))
        .collect();
    assert_eq!(heap_bytes(&mixed), block(24_000) + 1_000 * block(10));
    let map: HashMap<u64, String> = (0..1_000).map(|i| (i, format!("{i:04}"))).collect();
    assert_eq!(
        heap_bytes(&map),
        block(hash_table(1_000, 32)) + 1_000 * block(4)
    );
}

/// A sequence of unknown length: every element is counted, only the sample
/// walked.
struct Unsized(usize);

impl Serialize for Unsized {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(None)?;
        for i in 0..self.0 {
            seq.serialize_element(&format!("{i:04}"))?;
        }
        seq.end()
    }
}

#[test]
fn a_sequence_of_unknown_length_is_counted_to_the_end() {
    assert_eq!(heap_bytes(&Unsized(100)), block(100 * 24) + 100 * block(4));
    assert_eq!(heap_bytes(&Unsized(0)), 0);
}

/// A value whose `Serialize` fails half-way.
struct Failing;

impl Serialize for Failing {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(3))?;
        seq.serialize_element("abc")?;
        Err(S::Error::custom("refused"))
    }
}

#[test]
fn a_failing_serialize_stops_only_its_own_part() {
    #[derive(Serialize)]
    struct Row {
        first: String,
        broken: Failing,
        last: String,
    }
    let row = Row {
        first: "a".into(),
        broken: Failing,
        last: "b".into(),
    };
    assert_eq!(heap_bytes(&row), 2 * block(1), "the fields around it count");
}

/// A `Serialize` that announces lengths it does not have.
struct Lying;

impl Serialize for Lying {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(usize::MAX))?;
        for _ in 0..SAMPLE + 1 {
            seq.serialize_element(&(u64::MAX, "x".repeat(100)))?;
        }
        seq.end()
    }
}

struct LyingMap;

impl Serialize for LyingMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(usize::MAX / 2))?;
        map.serialize_entry("k", &Lying)?;
        map.end()
    }
}

#[test]
fn absurd_lengths_saturate_instead_of_overflowing() {
    assert_eq!(heap_bytes(&Lying), usize::MAX);
    assert_eq!(heap_bytes(&LyingMap), usize::MAX);
    assert_eq!(value_bytes(&(Lying, 1u8)), usize::MAX);
}
