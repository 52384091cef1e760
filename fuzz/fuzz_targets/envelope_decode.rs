//! Any bytes read from Redis as an entry: no panic, bounded decompression,
//! and what decodes round-trips.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    stratacache::fuzzing::decode_entry(bytes);
});
