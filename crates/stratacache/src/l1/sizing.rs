//! L1's default byte bound, from the memory the process may use.
//!
//! A fixed default is wrong on most machines: too small to hold the hot set
//! of a service on a large host (every miss beyond it is a Redis round trip),
//! too large for a small container. A sixteenth of the memory the process
//! may use — its cgroup's limit in a container, else the machine's — fits
//! the hot set of most services while leaving the rest to the service.

/// The share of usable memory L1 takes by default: 1/16.
const SHARE_SHIFT: u32 = 4;
/// Never less than this by default…
const MIN_DEFAULT: u64 = 32 << 20;
/// …nor more: past it, size L1 for the workload on purpose.
const MAX_DEFAULT: u64 = 1 << 30;
/// Where the memory cannot be read.
const FALLBACK: u64 = 256 << 20;

/// The default byte bound of L1.
pub(super) fn default_max_bytes() -> u64 {
    usable_memory().map_or(FALLBACK, |bytes| {
        (bytes >> SHARE_SHIFT).clamp(MIN_DEFAULT, MAX_DEFAULT)
    })
}

/// The memory this process may use: the smaller of its cgroup's limit (v2,
/// then v1) and the machine's memory.
fn usable_memory() -> Option<u64> {
    let machine = machine_memory();
    let cgroup = cgroup_limit();
    match (machine, cgroup) {
        (Some(m), Some(c)) => Some(m.min(c)),
        (m, c) => m.or(c),
    }
}

fn machine_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo_total(&meminfo)
}

fn parse_meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

fn cgroup_limit() -> Option<u64> {
    [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| parse_limit(&std::fs::read_to_string(path).ok()?))
}

/// A cgroup limit: `max` or a number near `u64::MAX` means none.
fn parse_limit(text: &str) -> Option<u64> {
    let bytes: u64 = text.trim().parse().ok()?;
    (bytes < 1 << 60).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_meminfo_and_cgroup_limits() {
        let meminfo = "MemTotal:       24683772 kB\nMemFree:        1 kB\n";
        assert_eq!(parse_meminfo_total(meminfo), Some(24_683_772 * 1024));
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None, "v1 'no limit'");
        assert_eq!(parse_limit("536870912\n"), Some(512 << 20));
    }

    #[test]
    fn the_default_is_a_sixteenth_within_bounds() {
        let bound = default_max_bytes();
        assert!((MIN_DEFAULT..=MAX_DEFAULT).contains(&bound), "{bound}");
        if let Some(memory) = usable_memory() {
            assert_eq!(bound, (memory / 16).clamp(MIN_DEFAULT, MAX_DEFAULT));
        }
    }
}
