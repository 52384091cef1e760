//! Any namespace and key: no panic; accepted keys keep their shape, their
//! bound, and the hash slot shared with their lease and version keys.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: (&str, &str, u16)| {
    let (namespace, key, max_key_len) = input;
    stratacache::fuzzing::normalize_key(namespace, key, usize::from(max_key_len));
});
