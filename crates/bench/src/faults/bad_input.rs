//! Bad input to the library: fuzzed entries and keys (generated here, and
//! cargo-fuzz when it is installed), odd keys, oversized values, corrupt
//! entries planted in Redis (malformed policy files: [`super::policy_files`]).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use stratacache::fuzzing::{decode_entry, normalize_key, sample_entries};
use stratacache::{Cache, EntryOptions, Error};
use stratacache_testkit::{net, RedisServer};

use super::{Group, Row};
use crate::report::{stored_key, unique_namespace, Rng};

fn opts() -> EntryOptions {
    EntryOptions::new().ttl(Duration::from_secs(300))
}

async fn two_caches(server: &RedisServer, namespace: &str) -> Result<(Cache, Cache)> {
    let build = || {
        crate::report::cache_builder()
            .namespace(namespace)
            .redis_url(&server.url())
            .redis_timeout(Duration::from_secs(1))
            .build()
    };
    Ok((build().await?, build().await?))
}

fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        let len = bytes.len() as u64;
        match rng.below(5) {
            0 if len > 0 => bytes[rng.below(len) as usize] ^= 1 << rng.below(8),
            1 if len > 0 => bytes[rng.below(len) as usize] = rng.next_u64() as u8,
            2 => bytes.truncate(rng.below(len + 1) as usize),
            3 => {
                let at = rng.below(len + 1) as usize;
                let extra: Vec<u8> = (0..1 + rng.below(16))
                    .map(|_| rng.next_u64() as u8)
                    .collect();
                bytes.splice(at..at, extra);
            }
            _ if len > 40 => {
                // Lengths and counts are little-endian: make one huge.
                let at = 5 + rng.below(len - 7) as usize;
                bytes[at] = 0xff;
                bytes[at + 1] = 0xff;
            }
            _ => {}
        }
    }
}

/// A short cargo-fuzz run of one target: the executions it reported, or why not.
fn cargo_fuzz(target: &str, secs: u64) -> Result<u64, String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .ok_or("no repository root")?
        .to_path_buf();
    let out = std::process::Command::new("cargo")
        .args([
            "fuzz",
            "run",
            target,
            "--",
            &format!("-max_total_time={secs}"),
        ])
        .env("RUSTC_BOOTSTRAP", "1")
        .current_dir(repo.join("fuzz"))
        .output()
        .map_err(|e| format!("cargo: {e}"))?;
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    if !out.status.success() {
        let tail: String = text.lines().rev().take(5).collect::<Vec<_>>().join(" / ");
        return Err(format!("cargo fuzz run {target} failed: {tail}"));
    }
    // libFuzzer ends with "Done 123456 runs in 60 second(s)".
    text.lines()
        .find_map(|l| {
            l.strip_prefix("Done ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .ok_or_else(|| "no run count in cargo-fuzz's output".into())
}

pub async fn fuzzed(cargo_fuzz_secs: u64, scale: f64) -> Result<Row> {
    let seeds = sample_entries();
    let mut rng = Rng::new(0x5eed);
    let (entries, keys) = ((300_000.0 * scale) as u64, (100_000.0 * scale) as u64);
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut panics = Vec::new();
    let started = Instant::now();
    for i in 0..entries {
        let mut bytes = if i % 10 == 9 {
            (0..rng.below(64)).map(|_| rng.next_u64() as u8).collect()
        } else {
            seeds[rng.below(seeds.len() as u64) as usize].clone()
        };
        mutate(&mut rng, &mut bytes);
        if catch_unwind(|| decode_entry(&bytes)).is_err() {
            panics.push(format!("entry {bytes:02x?}"));
        }
    }
    let pieces = [
        "{", "}", "{}", "}{", ":", "::", " ", "\t", "\n", "\0", "é", "日本", "🦀", "a", "Z", "9",
        "#sha256:", "lease", ":lease", ":ver", "*", "?", "[", "]", "\\", "\u{202e}", "\u{feff}",
    ];
    let text = |rng: &mut Rng, parts: u64| -> String {
        (0..parts)
            .map(|_| pieces[rng.below(pieces.len() as u64) as usize])
            .collect()
    };
    for _ in 0..keys {
        let namespace = if rng.below(4) == 0 {
            "shop".to_string()
        } else {
            let parts = rng.below(4);
            text(&mut rng, parts)
        };
        let parts = if rng.below(10) == 0 {
            50 + rng.below(350)
        } else {
            rng.below(12)
        };
        let key = text(&mut rng, parts);
        let max = [0, 64, 256, 1024][rng.below(4) as usize];
        if catch_unwind(AssertUnwindSafe(|| normalize_key(&namespace, &key, max))).is_err() {
            panics.push(format!("key {namespace:?} {key:?} {max}"));
        }
    }
    std::panic::set_hook(hook);
    let generated_took = started.elapsed();
    let mut fuzz_runs = Vec::new();
    let mut fuzz_failed = false;
    if cargo_fuzz_secs > 0 {
        for target in ["envelope_decode", "key_normalize"] {
            match tokio::task::spawn_blocking(move || cargo_fuzz(target, cargo_fuzz_secs)).await? {
                Ok(runs) => fuzz_runs.push(format!(
                    "cargo fuzz {target}: {runs} runs in {cargo_fuzz_secs} s, no crash"
                )),
                Err(why) => {
                    fuzz_failed = why.contains("failed");
                    fuzz_runs.push(why)
                }
            }
        }
    } else {
        fuzz_runs.push("cargo-fuzz not run (--cargo-fuzz-secs 0)".into());
    }
    let mut row = Row::new("fuzzed-input", Group::Input, "library");
    row.done = format!(
        "{entries} mutated and random entries decoded (bit flips, truncations, splices, huge lengths) and {keys} hostile namespace/key pairs normalized, in {:.1} s; {}",
        generated_took.as_secs_f64(),
        fuzz_runs.join("; ")
    );
    row.requests = entries + keys;
    row.errors = format!(
        "{} panics; undecodable entries are refused with an error (a miss for the reader)",
        panics.len()
    );
    row.lost = "nothing written (decoding and key checks only)".into();
    row.target =
        "no panic; what decodes re-encodes the same; keys keep their shape, bound and hash slot"
            .into();
    row.met = panics.is_empty() && !fuzz_failed;
    Ok(row)
}

/// Keys a caller might send: empty, whitespace, control characters and NUL,
/// every Latin-1 character, glob and hash-tag characters, internal-looking
/// suffixes, multi-byte text, and keys long enough to be hashed — some
/// sharing a 10,000-character prefix.
fn odd_key_set() -> Vec<String> {
    let mut keys: Vec<String> = [
        "",
        " ",
        "  ",
        "\t",
        "\n",
        "\r\n",
        "\0",
        "\0\0",
        "a\0b",
        "{",
        "}",
        "{}",
        "}{",
        "{a}b",
        "a{b}c",
        "{{}}",
        ":",
        "::",
        "a:b",
        "*",
        "?",
        "[",
        "]",
        "[a-z]*",
        "\\",
        "\"",
        "'",
        "%s",
        "%00",
        "../..",
        "lease",
        ":lease",
        "k:lease",
        ":ver",
        "#sha256:00",
        "é",
        "e\u{301}",
        "日本語",
        "🦀🦀",
        "\u{202e}abc",
        "\u{feff}",
        "\u{10ffff}",
        "A",
        "a",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    keys.extend((0u8..=255).map(|b| char::from(b).to_string()));
    let binary: String = (0u8..=255).map(char::from).collect();
    keys.push(binary.clone());
    keys.push(binary.chars().rev().collect());
    let prefix = "p".repeat(10_000);
    for n in 0..5 {
        keys.push(format!("{prefix}{n}"));
    }
    keys.push("k".repeat(256));
    keys.push("k".repeat(257));
    keys.push("🦀".repeat(100_000));
    keys.push("x".repeat(1 << 20));
    // Some Latin-1 characters are in the list above already.
    let mut seen = std::collections::HashSet::new();
    keys.retain(|k| seen.insert(k.clone()));
    keys
}

pub async fn odd_keys() -> Result<Row> {
    let server = tokio::task::spawn_blocking(RedisServer::start).await?;
    let (a, b) = two_caches(&server, &unique_namespace("odd-keys")).await?;
    let keys = odd_key_set();
    let mut refused = Vec::new();
    let mut other_errors = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        match a.set(key, &(i as u64), &opts()).await {
            Ok(()) => {}
            Err(Error::InvalidKey { reason, .. }) => refused.push(format!("{key:?}: {reason}")),
            Err(e) => other_errors.push(format!(
                "{:?}: {e}",
                key.chars().take(20).collect::<String>()
            )),
        }
    }
    // Read every key back through the other instance (Redis, not L1): each
    // must hold its own value, none another's.
    let mut wrong = 0;
    for (i, key) in keys.iter().enumerate() {
        let got = b.get::<u64>(key).await;
        let accepted = !key.is_empty();
        match got {
            Ok(Some(v)) if accepted && v == i as u64 => {}
            Err(Error::InvalidKey { .. }) if !accepted => {}
            _ => wrong += 1,
        }
    }
    let mut row = Row::new("odd-keys", Group::Input, "library");
    row.done = format!(
        "{} keys written through one instance and read back through another: empty, whitespace, NUL and control characters, all 256 Latin-1 characters alone and together, glob and hash-tag characters, internal-looking suffixes, RTL/BOM/combining text, 10,000-character keys differing only at the end, 400 KB and 1 MB keys",
        keys.len()
    );
    row.requests = 2 * keys.len() as u64;
    row.errors = format!(
        "{} refused with Error::InvalidKey ({}); {} other errors{}",
        refused.len(),
        refused.join(", "),
        other_errors.len(),
        if other_errors.is_empty() {
            String::new()
        } else {
            format!(": {}", other_errors.join("; "))
        }
    );
    row.lost = format!("{wrong} keys read back wrong (missing, or another key's value)");
    row.target = "only the empty key refused, with a typed error; every other key round-trips; no collisions".into();
    row.met = wrong == 0 && other_errors.is_empty() && refused.len() == 1;
    Ok(row)
}

pub async fn oversized_values() -> Result<Row> {
    let server = tokio::task::spawn_blocking(RedisServer::start).await?;
    let namespace = unique_namespace("oversized");
    let (a, b) = two_caches(&server, &namespace).await?;
    let mut rng = Rng::new(42);
    let noise = |rng: &mut Rng, n: usize| -> Vec<u64> { (0..n).map(|_| rng.next_u64()).collect() };
    let sizes = [(1usize << 20) / 8 + 1, 2 << 20 >> 3, 16 << 20 >> 3];
    let (mut attempts, mut typed, mut written, mut kept, mut returned) = (0, 0, 0, 0, 0);
    for (i, n) in sizes.iter().enumerate() {
        let key = format!("big:{i}");
        a.set(&key, &vec![i as u64; 4], &opts()).await?;
        attempts += 1;
        match a.set(&key, &noise(&mut rng, *n), &opts()).await {
            Err(Error::ValueTooLarge { .. }) => typed += 1,
            Ok(()) => written += 1,
            Err(_) => {}
        }
        // The earlier value is what every instance still reads.
        b.clear_l1();
        if b.get::<Vec<u64>>(&key).await? == Some(vec![i as u64; 4]) {
            kept += 1;
        }
        attempts += 1;
        let big = noise(&mut rng, *n);
        let len = big.len();
        let loaded: Vec<u64> = a
            .get_or_load(&format!("loaded:{i}"), &opts(), move || async move {
                Ok::<_, std::io::Error>(big)
            })
            .await?;
        if loaded.len() == len {
            returned += 1;
        }
        let stored = stored_key(&namespace, &format!("loaded:{i}"));
        let exists = net::call_text(server.port(), &["EXISTS", &stored], Duration::from_secs(1))?;
        if exists.trim() != "0" {
            written += 1;
        }
    }
    // Compressible data is bounded on its encoded size, before compression.
    attempts += 1;
    let zeros_refused = matches!(
        a.set("zeros", &vec![0u64; 4 << 20 >> 3], &opts()).await,
        Err(Error::ValueTooLarge { .. })
    );
    let mut row = Row::new("oversized-values", Group::Input, "library");
    row.done = "values of 1 MB + 8 B, 2 MB and 16 MB (incompressible) over the 1 MB bound: set over an existing small value, and returned by a loader; 4 MB of zeros (compressible)".into();
    row.requests = attempts;
    row.errors = format!(
        "{typed} of {} sets refused with Error::ValueTooLarge; loaders' oversized values returned to the caller, not cached: {returned} of {}; zeros refused: {zeros_refused}",
        sizes.len(),
        sizes.len()
    );
    row.lost = format!(
        "{written} oversized values written to Redis; earlier values still read by the other instance: {kept} of {}",
        sizes.len()
    );
    row.target = "a typed error for each set, nothing written, the earlier value intact; loaders' values reach the caller".into();
    row.met =
        typed == sizes.len() && written == 0 && kept == sizes.len() && returned == sizes.len();
    Ok(row)
}

pub async fn corrupt_entries() -> Result<Row> {
    let server = tokio::task::spawn_blocking(RedisServer::start).await?;
    let namespace = unique_namespace("corrupt");
    let (a, b) = two_caches(&server, &namespace).await?;
    a.set("valid", &"a valid entry".to_string(), &opts())
        .await?;
    let valid = raw_get(&server, &stored_key(&namespace, "valid"))?;
    let mut rng = Rng::new(7);
    let mut plants: Vec<(String, Vec<Vec<u8>>)> = vec![
        ("empty string".into(), vec![b"SET".to_vec(), Vec::new()]),
        ("text".into(), vec![b"SET".to_vec(), b"hello".to_vec()]),
        (
            "magic then garbage".into(),
            vec![b"SET".to_vec(), b"SC\x01garbage".to_vec()],
        ),
        (
            "another type's entry (a string read as a number)".into(),
            vec![b"SET".to_vec(), valid.clone()],
        ),
        (
            "a list (WRONGTYPE)".into(),
            vec![b"RPUSH".to_vec(), b"x".to_vec()],
        ),
        (
            "a hash (WRONGTYPE)".into(),
            vec![b"HSET".to_vec(), b"f".to_vec(), b"v".to_vec()],
        ),
        (
            "5 MB of random bytes".into(),
            vec![
                b"SET".to_vec(),
                (0..5 << 20).map(|_| rng.next_u64() as u8).collect(),
            ],
        ),
    ];
    for cut in [1, 4, valid.len() / 2, valid.len() - 1] {
        plants.push((
            format!("valid entry cut to {cut} bytes"),
            vec![b"SET".to_vec(), valid[..cut].to_vec()],
        ));
    }
    for _ in 0..5 {
        let mut flipped = valid.clone();
        let at = rng.below(flipped.len() as u64) as usize;
        flipped[at] ^= 1 << rng.below(8);
        plants.push((
            "a bit flipped in a valid entry".into(),
            vec![b"SET".to_vec(), flipped],
        ));
    }
    plants.push((
        "a lease key without TTL".into(),
        vec![b"SET".to_vec(), b"someone".to_vec()],
    ));
    plants.push((
        "a garbage version floor".into(),
        vec![b"SET".to_vec(), b"not-a-number".to_vec()],
    ));
    let (mut right, mut slow, mut repaired) = (0, 0, 0);
    let mut unrepaired = Vec::new();
    let mut errors = Vec::new();
    for (i, (what, command)) in plants.iter().enumerate() {
        let key = format!("k{i}");
        let stored = stored_key(&namespace, &key);
        let target = match what.as_str() {
            "a lease key without TTL" => format!("{stored}:lease"),
            "a garbage version floor" => format!("{stored}:ver"),
            _ => stored.clone(),
        };
        let mut args: Vec<&[u8]> = vec![&command[0], target.as_bytes()];
        args.extend(command[1..].iter().map(Vec::as_slice));
        raw_call(&server, &args)?;
        let started = Instant::now();
        let got = a
            .get_or_load(&key, &opts(), move || async move {
                Ok::<_, std::io::Error>(i as u64)
            })
            .await;
        if started.elapsed() > Duration::from_secs(5) {
            slow += 1;
        }
        match got {
            Ok(v) if v == i as u64 => right += 1,
            Ok(v) => errors.push(format!("{what}: read {v}")),
            Err(e) => errors.push(format!("{what}: {e}")),
        }
        b.clear_l1();
        match b.get::<u64>(&key).await {
            Ok(Some(v)) if v == i as u64 => repaired += 1,
            other => unrepaired.push(format!("{what} ({other:?})")),
        }
    }
    let mut row = Row::new("corrupt-entries", Group::Input, "library");
    row.done = format!(
        "{} corrupt entries planted in Redis under the cache's keys ({}), each then read with get_or_load",
        plants.len(),
        plants.iter().map(|p| p.0.as_str()).collect::<Vec<_>>().join(", ")
    );
    row.requests = plants.len() as u64;
    row.errors = format!(
        "{} reads failed{}; {slow} took over 5 s; corrupt entries are misses (counted in stratacache_corrupt_entries_total), not errors",
        errors.len(),
        if errors.is_empty() { String::new() } else { format!(": {}", errors.join("; ")) }
    );
    row.lost = format!(
        "{} of {} reads answered the loader's value; {repaired} entries repaired in Redis (read back by the other instance){}",
        right,
        plants.len(),
        if unrepaired.is_empty() { String::new() } else { format!("; not repaired: {}", unrepaired.join(", ")) }
    );
    row.target = "every read answers the right value (the loader's), none fails or hangs".into();
    // Repair is reported, not required: a key of another Redis type is not
    // the cache's to overwrite, and reads stay right without it.
    row.met = right == plants.len() && slow == 0;
    Ok(row)
}

fn raw_get(server: &RedisServer, key: &str) -> Result<Vec<u8>> {
    match net::call(server.port(), &["GET", key], Duration::from_secs(2))? {
        net::Reply::Bulk(Some(b)) => Ok(b),
        other => anyhow::bail!("GET {key}: {other:?}"),
    }
}

fn raw_call(server: &RedisServer, args: &[&[u8]]) -> Result<()> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port()))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    stream.write_all(&out)?;
    let mut reply = [0u8; 256];
    let n = stream.read(&mut reply)?;
    anyhow::ensure!(
        n > 0 && reply[0] != b'-',
        "{}",
        String::from_utf8_lossy(&reply[..n])
    );
    Ok(())
}
