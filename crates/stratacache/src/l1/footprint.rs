//! What a decoded value costs in memory, estimated from its shape.
//!
//! L1 keeps values decoded, and their encoded length says little about that
//! cost: a `Product` row of 335 encoded bytes holds nine heap blocks of about
//! 600 bytes, a `Vec<u64>` of 1,000 holds 8,000 bytes for 4,000 bytes of
//! JSON. Every `CacheValue` is `Serialize`, so a serializer that writes
//! nothing can walk the value and add up the blocks it implies: the root
//! (`Arc<V>`, as L1 stores it), then one block per non-empty string, byte
//! buffer, sequence and map, each rounded up as the allocator would.
//!
//! What serde cannot show is counted as if it were the common type: a
//! sequence as a `Vec` of exactly its length (a clone's capacity), a map as a
//! `HashMap` (hashbrown's buckets), a string as a `String`. So a `Box` or an
//! `Arc` field (serialized as its contents) is not counted as a block of its
//! own, a `BTreeMap` is counted at a `HashMap`'s size (within 5 % of a
//! cloned one's, 20 % under one decoded key by key), and a sequence decoded
//! from JSON, grown by doubling since serde_json announces no length, may
//! hold up to twice the buffer counted.
//!
//! The walk runs on every L1 insert, so it is bounded: in a collection whose
//! length is known, only the first [`SAMPLE`] elements are walked, and the
//! heap behind the rest is taken to be their average. A `Vec<u64>` of a
//! million costs as much as one of 32.

use std::mem::{align_of, size_of};

use serde::ser::{self, Serialize};

/// Elements of one collection walked before the rest is extrapolated.
pub(super) const SAMPLE: usize = 32;

/// `Arc`'s two counters, in front of the value in its block.
pub(super) const ARC_COUNTS: usize = 2 * size_of::<usize>();

/// Bytes the allocator takes for a request of `n` bytes, modelled on glibc's
/// malloc (the usual allocator of a Rust program on Linux): an 8-byte header,
/// rounded up to 16, at least 32; past the mmap threshold, whole pages.
/// jemalloc and mimalloc have no header but coarser size classes: the same
/// to within a few percent for most sizes.
#[inline]
pub(super) const fn block(n: usize) -> usize {
    const HEADER: usize = 8;
    const ALIGN: usize = 16;
    const MIN: usize = 32;
    const MMAP_THRESHOLD: usize = 128 * 1024;
    const PAGE: usize = 4096;
    if n == 0 {
        0
    } else if n >= MMAP_THRESHOLD {
        n.saturating_add(2 * HEADER)
            .div_ceil(PAGE)
            .saturating_mul(PAGE)
    } else {
        let rounded = (n + HEADER).div_ceil(ALIGN) * ALIGN;
        if rounded < MIN {
            MIN
        } else {
            rounded
        }
    }
}

/// Bytes of the value as L1 holds it: its `Arc` block and every heap block
/// it owns.
pub(crate) fn value_bytes<V: Serialize>(value: &V) -> usize {
    block(ARC_COUNTS + size_of::<V>()).saturating_add(heap_bytes(value))
}

/// Bytes of the heap blocks `value` owns, not counting its own inline size.
pub(crate) fn heap_bytes<T: Serialize + ?Sized>(value: &T) -> usize {
    let mut walk = Walk {
        heap: 0,
        stopped: None,
    };
    visit(&mut walk, value);
    walk.heap
}

/// The bytes of a `HashMap` table of `len` entries of `entry` bytes each
/// (hashbrown: a power of two of buckets at most 7/8 full, one control byte
/// per bucket plus a group of 16).
fn hash_table(len: usize, entry: usize) -> usize {
    const GROUP: usize = 16;
    if len == 0 {
        return 0;
    }
    let buckets = if len < 4 {
        4
    } else if len < 8 {
        8
    } else {
        (len.saturating_mul(8) / 7)
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX)
    };
    // Saturating: a hand-written `Serialize` may announce any length.
    entry
        .saturating_mul(buckets)
        .div_ceil(GROUP)
        .saturating_mul(GROUP)
        .saturating_add(buckets)
        .saturating_add(GROUP)
}

/// The inline layout of a part, as far as serde shows it: std's collections
/// hand their elements over by reference, so an element's `size_of` is not
/// at hand and is rebuilt from its shape instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shape {
    size: usize,
    align: usize,
    /// Has invalid bit patterns, so `Option` of it takes no tag.
    niche: bool,
}

impl Shape {
    #[inline]
    const fn new(size: usize, align: usize, niche: bool) -> Self {
        Self { size, align, niche }
    }

    const EMPTY: Shape = Shape::new(0, 1, false);
    /// `String`, `Vec<T>`: pointer, capacity, length.
    const VEC: Shape = Shape::new(24, 8, true);
    /// `HashMap<K, V>`: the table's four words and the hasher's two keys.
    const MAP: Shape = Shape::new(48, 8, true);
    /// What nothing more is known of (a `Display` type, a failed part).
    const WORD: Shape = Shape::new(8, 8, false);

    const fn of<T>() -> Self {
        Shape::new(size_of::<T>(), align_of::<T>(), false)
    }

    /// Place `next` after the fields so far (Rust reorders fields, so only
    /// the total is padded).
    #[inline]
    fn and(self, next: Shape) -> Shape {
        Shape::new(
            self.size + next.size,
            self.align.max(next.align),
            self.niche || next.niche,
        )
    }

    #[inline]
    fn padded(self) -> Shape {
        Shape {
            size: self.size.next_multiple_of(self.align),
            ..self
        }
    }

    /// A variant of an enum, or `Some`: a field with a niche holds the tag;
    /// otherwise a byte of tag goes in front, and the fields are reordered
    /// around it.
    #[inline]
    fn tagged(self) -> Shape {
        if self.niche {
            self.padded()
        } else {
            Shape::new(self.size + 1, self.align, true).padded()
        }
    }

    #[inline]
    fn max(self, other: Shape) -> Shape {
        Shape::new(
            self.size.max(other.size),
            self.align.max(other.align),
            self.niche && other.niche,
        )
    }
}

/// Accumulates the heap bytes of what it is shown; writes nothing.
struct Walk {
    heap: usize,
    /// The shape of a collection that stopped its own serialization.
    stopped: Option<Shape>,
}

// The walk's generic parts are compiled in the crate that stores a value,
// its non-generic helpers and serializer methods here: `#[inline]` lets them
// be inlined there. Without it, weighing a `Product` took 300 ns instead of
// 36, a `Vec<u64>` of 1,000 850 ns instead of 22 (the `l1-memory` bench).

/// Stops a collection's serialization once its sample is walked; any error
/// of the value's own `Serialize` also ends up here and just stops the walk
/// of that part. Never seen outside this module.
#[derive(Debug, thiserror::Error)]
#[error("size walk stopped")]
struct Stop;

impl ser::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

/// Walk one part; a `Stop` from inside it ends that part only.
fn visit<T: Serialize + ?Sized>(walk: &mut Walk, value: &T) -> Shape {
    match value.serialize(&mut *walk) {
        Ok(shape) => shape,
        Err(Stop) => walk.stopped.take().unwrap_or(Shape::WORD),
    }
}

/// serde passes an internally tagged enum's tag as a `&'static str`, the
/// only `str` a `DeserializeOwned` value can show: it is no part of it.
fn is_tag<T: ?Sized>() -> bool {
    std::any::type_name::<T>() == "str"
}

/// A sequence or a map: how many elements, the largest one's inline shape,
/// and the heap behind the ones walked so far.
struct Collection<'a> {
    walk: &'a mut Walk,
    /// The length announced up front, if any.
    len: Option<usize>,
    seen: usize,
    /// An element (a key and its value, for a map).
    element: Shape,
    key: Shape,
    /// Heap bytes behind the first `min(seen, SAMPLE)` elements.
    sampled: usize,
    map: bool,
}

impl<'a> Collection<'a> {
    #[inline]
    fn new(walk: &'a mut Walk, len: Option<usize>, map: bool) -> Self {
        Self {
            walk,
            len,
            seen: 0,
            element: Shape::EMPTY,
            key: Shape::EMPTY,
            sampled: 0,
            map,
        }
    }

    /// Before an element: `Ok(true)` to walk it, `Ok(false)` to only count it,
    /// `Err` to end the collection here (the sample is in and the length
    /// known, so the rest is extrapolated without being shown).
    #[inline]
    fn admit(&mut self) -> Result<bool, Stop> {
        if self.seen < SAMPLE {
            return Ok(true);
        }
        if self.len.is_some() {
            self.walk.stopped = Some(self.finish());
            return Err(Stop);
        }
        self.seen += 1;
        Ok(false)
    }

    /// Walk one part of the current element (its value, or a map's key).
    fn part<T: Serialize + ?Sized>(&mut self, value: &T) -> Shape {
        let before = self.walk.heap;
        let shape = visit(self.walk, value);
        self.sampled = self.sampled.saturating_add(self.walk.heap - before);
        self.walk.heap = before;
        shape
    }

    /// Add the collection's own block and its elements' heap.
    fn finish(&mut self) -> Shape {
        let len = self.len.unwrap_or(self.seen).max(self.seen);
        let walked = self.seen.min(SAMPLE);
        // The sample's average times the length; in u128, as a sampled
        // total times a length can overflow a usize.
        let elements = (self.sampled as u128 * len as u128)
            .checked_div(walked as u128)
            .map_or(0, |n| n.min(usize::MAX as u128) as usize);
        let slot = self.element.padded().size;
        let own = if self.map {
            block(hash_table(len, slot))
        } else {
            block(len.saturating_mul(slot))
        };
        self.walk.heap = self.walk.heap.saturating_add(own).saturating_add(elements);
        if self.map {
            Shape::MAP
        } else {
            Shape::VEC
        }
    }
}

impl ser::SerializeSeq for Collection<'_> {
    type Ok = Shape;
    type Error = Stop;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Stop> {
        if self.admit()? {
            let shape = self.part(value);
            self.element = self.element.max(shape);
            self.seen += 1;
        }
        Ok(())
    }

    fn end(mut self) -> Result<Shape, Stop> {
        Ok(self.finish())
    }
}

impl ser::SerializeMap for Collection<'_> {
    type Ok = Shape;
    type Error = Stop;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Stop> {
        if is_tag::<T>() {
            return Ok(());
        }
        if self.admit()? {
            self.key = self.part(key);
        }
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Stop> {
        // Past the sample of a map of unknown length, `admit` counted the key.
        if self.seen < SAMPLE && !is_tag::<T>() {
            let entry = self.key.and(self.part(value));
            self.element = self.element.max(entry);
            self.seen += 1;
        }
        Ok(())
    }

    fn end(mut self) -> Result<Shape, Stop> {
        Ok(self.finish())
    }
}

/// A struct, tuple or enum variant: its fields are inline in it, so only
/// their heap goes to the walk; their shapes add up to its own.
struct Fields<'a> {
    walk: &'a mut Walk,
    shape: Shape,
    variant: bool,
}

impl<'a> Fields<'a> {
    #[inline]
    fn new(walk: &'a mut Walk, variant: bool) -> Self {
        Self {
            walk,
            shape: Shape::EMPTY,
            variant,
        }
    }

    fn field<T: Serialize + ?Sized>(&mut self, value: &T) {
        if !is_tag::<T>() {
            self.shape = self.shape.and(visit(self.walk, value));
        }
    }

    #[inline]
    fn end(self) -> Shape {
        if self.variant {
            self.shape.tagged()
        } else {
            self.shape.padded()
        }
    }
}

macro_rules! fields {
    ($trait:ident, $method:ident $(, $key:ident)?) => {
        impl ser::$trait for Fields<'_> {
            type Ok = Shape;
            type Error = Stop;

            fn $method<T: Serialize + ?Sized>(
                &mut self,
                $($key: &'static str,)?
                value: &T,
            ) -> Result<(), Stop> {
                self.field(value);
                Ok(())
            }

            #[inline]
            fn end(self) -> Result<Shape, Stop> {
                Ok(Fields::end(self))
            }
        }
    };
}

fields!(SerializeTuple, serialize_element);
fields!(SerializeTupleStruct, serialize_field);
fields!(SerializeTupleVariant, serialize_field);
fields!(SerializeStruct, serialize_field, _key);
fields!(SerializeStructVariant, serialize_field, _key);

/// Scalars live inline in their parent: nothing for the heap.
macro_rules! scalars {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(#[inline]
        fn $method(self, _: $ty) -> Result<Shape, Stop> {
            Ok(Shape::of::<$ty>())
        })*
    };
}

impl<'a> ser::Serializer for &'a mut Walk {
    type Ok = Shape;
    type Error = Stop;
    type SerializeSeq = Collection<'a>;
    type SerializeTuple = Fields<'a>;
    type SerializeTupleStruct = Fields<'a>;
    type SerializeTupleVariant = Fields<'a>;
    type SerializeMap = Collection<'a>;
    type SerializeStruct = Fields<'a>;
    type SerializeStructVariant = Fields<'a>;

    scalars!(
        serialize_i8: i8,
        serialize_i16: i16,
        serialize_i32: i32,
        serialize_i64: i64,
        serialize_i128: i128,
        serialize_u8: u8,
        serialize_u16: u16,
        serialize_u32: u32,
        serialize_u64: u64,
        serialize_u128: u128,
        serialize_f32: f32,
        serialize_f64: f64,
    );

    #[inline]
    fn serialize_bool(self, _: bool) -> Result<Shape, Stop> {
        Ok(Shape::new(1, 1, true))
    }

    #[inline]
    fn serialize_char(self, _: char) -> Result<Shape, Stop> {
        Ok(Shape::new(4, 4, true))
    }

    #[inline]
    fn serialize_str(self, v: &str) -> Result<Shape, Stop> {
        self.heap += block(v.len());
        Ok(Shape::VEC)
    }

    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> Result<Shape, Stop> {
        self.heap += block(v.len());
        Ok(Shape::VEC)
    }

    // `None` shows nothing of what `Some` would hold; the other elements of
    // a collection do.
    #[inline]
    fn serialize_none(self) -> Result<Shape, Stop> {
        Ok(Shape::EMPTY)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Shape, Stop> {
        Ok(visit(self, value).tagged())
    }

    #[inline]
    fn serialize_unit(self) -> Result<Shape, Stop> {
        Ok(Shape::EMPTY)
    }

    #[inline]
    fn serialize_unit_struct(self, _: &'static str) -> Result<Shape, Stop> {
        Ok(Shape::EMPTY)
    }

    #[inline]
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<Shape, Stop> {
        Ok(Shape::new(1, 1, true))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Shape, Stop> {
        Ok(visit(self, value))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<Shape, Stop> {
        Ok(visit(self, value).tagged())
    }

    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Collection<'a>, Stop> {
        Ok(Collection::new(self, len, false))
    }

    #[inline]
    fn serialize_tuple(self, _: usize) -> Result<Fields<'a>, Stop> {
        Ok(Fields::new(self, false))
    }

    #[inline]
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Fields<'a>, Stop> {
        Ok(Fields::new(self, false))
    }

    #[inline]
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Fields<'a>, Stop> {
        Ok(Fields::new(self, true))
    }

    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<Collection<'a>, Stop> {
        Ok(Collection::new(self, len, true))
    }

    #[inline]
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Fields<'a>, Stop> {
        Ok(Fields::new(self, false))
    }

    #[inline]
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Fields<'a>, Stop> {
        Ok(Fields::new(self, true))
    }

    // Types with a compact form (`Uuid`'s 16 bytes, `IpAddr`'s octets) show
    // that one, closer to what they hold than their text.
    fn is_human_readable(&self) -> bool {
        false
    }

    // What serializes through `Display` (dates, times) is inline: no need to
    // format it.
    fn collect_str<T: std::fmt::Display + ?Sized>(self, _: &T) -> Result<Shape, Stop> {
        Ok(Shape::WORD)
    }
}

#[cfg(test)]
#[path = "footprint_tests.rs"]
mod tests;
