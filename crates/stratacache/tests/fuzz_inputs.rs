//! The fuzz targets of `fuzz/` run on generated inputs: mutations of valid
//! entries (bit flips, truncations, splices, random bytes) and hostile keys
//! and namespaces (braces, colons, whitespace, NUL, multi-byte characters,
//! huge lengths). Deterministic seeds, a few seconds: the part of the fuzzing
//! that runs in CI. `cargo fuzz run envelope_decode` / `key_normalize` in
//! `fuzz/` go further.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stratacache::fuzzing::{decode_entry, normalize_key, sample_entries};

#[test]
fn mutated_entries_never_panic_and_round_trip_when_they_decode() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let seeds = sample_entries();
    for seed in &seeds {
        decode_entry(seed);
    }
    for _ in 0..200_000 {
        let mut bytes = seeds[rng.random_range(0..seeds.len())].clone();
        for _ in 0..rng.random_range(1..4) {
            match rng.random_range(0..5) {
                0 if !bytes.is_empty() => {
                    let i = rng.random_range(0..bytes.len());
                    bytes[i] ^= 1 << rng.random_range(0..8);
                }
                1 if !bytes.is_empty() => {
                    let i = rng.random_range(0..bytes.len());
                    bytes[i] = rng.random();
                }
                2 => bytes.truncate(rng.random_range(0..=bytes.len())),
                3 => {
                    let i = rng.random_range(0..=bytes.len());
                    let extra: Vec<u8> =
                        (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
                    bytes.splice(i..i, extra);
                }
                _ => {
                    // Lengths and counts are little-endian u16/u32: make one huge.
                    if bytes.len() > 40 {
                        let i = rng.random_range(5..bytes.len() - 2);
                        bytes[i] = 0xff;
                        bytes[i + 1] = 0xff;
                    }
                }
            }
        }
        decode_entry(&bytes);
    }
    for _ in 0..20_000 {
        let len = rng.random_range(0..64);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        decode_entry(&bytes);
    }
}

#[test]
fn hostile_keys_keep_their_shape_and_slot() {
    let pieces = [
        "{", "}", "{}", "}{", ":", "::", " ", "\t", "\n", "\0", "é", "日本", "🦀", "a", "Z", "9",
        "#sha256:", "lease", ":lease", "*", "?", "[", "]", "\\",
    ];
    let mut rng = StdRng::seed_from_u64(0xbeef);
    let random_text = |rng: &mut StdRng, parts: usize| -> String {
        (0..parts)
            .map(|_| pieces[rng.random_range(0..pieces.len())])
            .collect()
    };
    for _ in 0..50_000 {
        let namespace = match rng.random_range(0..4) {
            0 => "shop".to_string(),
            _ => {
                let parts = rng.random_range(0..4);
                random_text(&mut rng, parts)
            }
        };
        let parts = match rng.random_range(0..10) {
            0 => rng.random_range(50..400), // past the hashing bound
            _ => rng.random_range(0..12),
        };
        let key = random_text(&mut rng, parts);
        let max_key_len = [0, 64, 256, 1024][rng.random_range(0..4)];
        normalize_key(&namespace, &key, max_key_len);
    }
    // The cases that once put a lease in another slot than its entry.
    for key in ["}", "}x", "}{}", "}}}}", "}é"] {
        normalize_key("shop", key, 256);
    }
}
