//! A service's Prometheus endpoint, read for the cache's counters: which
//! policy earns its keep, which does not, and the likely why.
//!
//! Per `(cache, policy)`: reads = L1 hits + L1 misses (or L2 hits + L2
//! misses for a cache without L1); hit rate = (L1 hits + L2 hits) / reads;
//! load-error rate = load errors / loads. Cache-wide: L1 evictions for size,
//! fills refused, breaker openings, corrupt entries, deferred invalidations.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::json;

use super::{DoctorArgs, Finding};

/// One sample: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: HashMap<String, String>,
    pub value: f64,
}

/// Parse the Prometheus text format (comments and blank lines skipped;
/// unparsable lines ignored).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = HashMap::new();
    if rest.starts_with('{') {
        rest = &rest[1..];
        loop {
            rest = rest.trim_start_matches([',', ' ']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=')?;
            let key = rest[..eq].trim().to_string();
            rest = rest[eq + 1..].strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break i,
                    c => value.push(c),
                }
            };
            rest = &rest[end + 1..];
            labels.insert(key, value);
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The counters of one policy.
#[derive(Debug, Default, Clone)]
struct Policy {
    l1_hits: f64,
    l1_misses: f64,
    l2_hits: f64,
    l2_misses: f64,
    loads: f64,
    load_errors: f64,
    stale_served: f64,
    coalesced: f64,
}

/// Cache-wide counters.
#[derive(Debug, Default, Clone)]
struct CacheWide {
    l1_size_evictions: f64,
    fills_refused: f64,
    breaker_opened: f64,
    corrupt: f64,
    deferred: f64,
    redis_errors: f64,
}

pub async fn check(url: &str, args: &DoctorArgs, out: &mut Vec<Finding>) {
    let text = match crate::http::get(url, Duration::from_secs(5), 64 << 20).await {
        Ok(text) => text,
        Err(e) => {
            out.push(
                Finding::error("metrics.fetch", format!("cannot read {url}: {e:#}"))
                    .fix("give the URL of the service's Prometheus endpoint (e.g. http://host:port/metrics)"),
            );
            return;
        }
    };
    analyse(
        &parse(&text),
        args.namespace.as_deref(),
        args.min_hit_rate,
        args.min_reads,
        out,
    );
}

/// Findings from parsed samples (split out for tests).
pub fn analyse(
    samples: &[Sample],
    namespace: Option<&str>,
    min_hit_rate: f64,
    min_reads: u64,
    out: &mut Vec<Finding>,
) {
    let mut policies: BTreeMap<(String, String), Policy> = BTreeMap::new();
    let mut caches: BTreeMap<String, CacheWide> = BTreeMap::new();
    for s in samples {
        let Some(rest) = s.name.strip_prefix("stratacache_") else {
            continue;
        };
        let label = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
        let cache = label("cache");
        if namespace.is_some_and(|ns| ns != cache) {
            continue;
        }
        let tier = label("tier");
        let field: Option<fn(&mut Policy) -> &mut f64> = match rest {
            "hits_total" if tier == "l1" => Some(|p| &mut p.l1_hits),
            "hits_total" => Some(|p| &mut p.l2_hits),
            "misses_total" if tier == "l1" => Some(|p| &mut p.l1_misses),
            "misses_total" => Some(|p| &mut p.l2_misses),
            "loads_total" => Some(|p| &mut p.loads),
            "load_errors_total" => Some(|p| &mut p.load_errors),
            "stale_served_total" => Some(|p| &mut p.stale_served),
            "coalesced_total" => Some(|p| &mut p.coalesced),
            _ => None,
        };
        if let Some(field) = field {
            *field(policies.entry((cache, label("policy"))).or_default()) += s.value;
            continue;
        }
        let wide = caches.entry(cache).or_default();
        match rest {
            "l1_evictions_total" if label("cause") == "size" => wide.l1_size_evictions += s.value,
            "fills_refused_total" => wide.fills_refused += s.value,
            "breaker_opened_total" => wide.breaker_opened += s.value,
            "corrupt_entries_total" => wide.corrupt += s.value,
            "invalidations_deferred_total" => wide.deferred += s.value,
            "redis_errors_total" => wide.redis_errors += s.value,
            _ => {}
        }
    }
    if policies.is_empty() {
        out.push(
            Finding::warning(
                "metrics.none",
                match namespace {
                    Some(ns) => format!("no stratacache counters with cache=\"{ns}\" at the endpoint"),
                    None => "no stratacache counters at the endpoint".to_string(),
                },
            )
            .why("without them nothing can be said about the policies")
            .fix("install a Prometheus recorder in the service (CacheBuilder::metrics is on by default) and pass its namespace"),
        );
        return;
    }
    for ((cache, name), p) in &policies {
        let wide = caches.get(cache).cloned().unwrap_or_default();
        let with_l1 = p.l1_hits + p.l1_misses > 0.0;
        let reads = if with_l1 {
            p.l1_hits + p.l1_misses
        } else {
            p.l2_hits + p.l2_misses
        };
        let hits = p.l1_hits + p.l2_hits;
        let label = format!("{cache}/{name}");
        let data = json!({
            "cache": cache, "policy": name, "reads": reads, "hits": hits,
            "l1_hits": p.l1_hits, "l2_hits": p.l2_hits, "loads": p.loads,
            "load_errors": p.load_errors, "stale_served": p.stale_served,
            "coalesced": p.coalesced, "l1_size_evictions": wide.l1_size_evictions,
            "fills_refused": wide.fills_refused,
        });
        let error_rate = if p.loads > 0.0 {
            p.load_errors / p.loads
        } else {
            0.0
        };
        if p.load_errors >= 5.0 && error_rate >= 0.05 {
            let f = if error_rate >= 0.5 {
                Finding::error(
                    "metrics.load-errors",
                    format!(
                        "policy {label}: {:.0}% of loads fail ({} of {})",
                        error_rate * 100.0,
                        p.load_errors,
                        p.loads
                    ),
                )
            } else {
                Finding::warning(
                    "metrics.load-errors",
                    format!(
                        "policy {label}: {:.0}% of loads fail ({} of {})",
                        error_rate * 100.0,
                        p.load_errors,
                        p.loads
                    ),
                )
            };
            out.push(
                f.why("a failed load caches nothing (unless fail-safe serves the old value), so every read of the key tries the source again")
                    .fix("look at the loader's errors; a stale_for window with fail-safe keeps serving the last value meanwhile")
                    .data(data.clone()),
            );
        }
        if reads < min_reads as f64 {
            out.push(
                Finding::info(
                    "metrics.policy",
                    format!("policy {label}: {reads} reads, too few to judge"),
                )
                .data(data),
            );
            continue;
        }
        let hit_rate = hits / reads;
        if hit_rate >= min_hit_rate {
            out.push(
                Finding::ok(
                    "metrics.policy",
                    format!(
                        "policy {label}: hit rate {:.0}% over {reads} reads ({} loads)",
                        hit_rate * 100.0,
                        p.loads
                    ),
                )
                .data(data),
            );
            continue;
        }
        // Why: the likeliest causes first.
        let mut causes = Vec::new();
        if error_rate >= 0.05 {
            causes.push(format!(
                "failing loads ({:.0}% of loads fail; nothing is cached for them)",
                error_rate * 100.0
            ));
        }
        if wide.l1_size_evictions > 0.1 * p.loads.max(1.0) {
            causes.push(format!("L1 evicts for size ({} evictions in cache {cache}): the working set does not fit; raise l1_max_bytes", wide.l1_size_evictions));
        }
        if wide.fills_refused > 0.1 * p.loads.max(1.0) {
            causes.push(format!(
                "{} fills refused: invalidations or writes keep racing the loads of the same keys",
                wide.fills_refused
            ));
        }
        if causes.is_empty() {
            causes.push(
                "entries are gone before they are read again: the TTL is likely shorter than the interval between reads of a key (or most keys are read once); without per-key counters this is the remaining cause once evictions and failing loads are ruled out".to_string(),
            );
        }
        out.push(
            Finding::warning("metrics.low-hit-rate", format!("policy {label} is not earning its keep: hit rate {:.0}% over {reads} reads, {} loads", hit_rate * 100.0, p.loads))
                .why(format!("likely: {}", causes.join("; ")))
                .fix("lengthen its ttl (or add stale_for), give L1 more room, or stop caching what is read once")
                .data(data),
        );
    }
    for (cache, wide) in &caches {
        if wide.breaker_opened > 0.0 {
            out.push(
                Finding::warning("metrics.breaker", format!("cache {cache}: the Redis breaker opened {} time(s) ({} Redis errors)", wide.breaker_opened, wide.redis_errors))
                    .why("while open, Redis is not used: every miss goes to the source")
                    .fix("see latency and the Redis errors; raise redis_timeout if the calls are merely slow"),
            );
        }
        if wide.corrupt > 0.0 {
            out.push(
                Finding::warning("metrics.corrupt", format!("cache {cache}: {} damaged entries deleted", wide.corrupt))
                    .why("something else writes into the namespace, or values were cut (max_value_bytes differs between instances)")
                    .fix("find the writer (`stratacache doctor --namespace` lists unknown keys)"),
            );
        }
        if wide.deferred > 0.0 {
            out.push(
                Finding::info("metrics.deferred", format!("cache {cache}: {} invalidations were deferred (Redis or the backplane did not answer) and replayed", wide.deferred)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_parse_with_labels_and_escapes() {
        let s = parse(
            "# HELP x y\nstratacache_hits_total{cache=\"a\",policy=\"p\\\"q\",tier=\"l1\"} 12\nplain 3.5 1700000000\n\n",
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].labels["policy"], "p\"q");
        assert_eq!(s[0].value, 12.0);
        assert_eq!(s[1].name, "plain");
    }

    #[test]
    fn a_policy_with_few_hits_is_reported_with_a_cause() {
        let text = r#"
stratacache_hits_total{cache="ns",policy="good",tier="l1"} 900
stratacache_misses_total{cache="ns",policy="good",tier="l1"} 100
stratacache_loads_total{cache="ns",policy="good"} 100
stratacache_hits_total{cache="ns",policy="bad",tier="l1"} 10
stratacache_misses_total{cache="ns",policy="bad",tier="l1"} 990
stratacache_loads_total{cache="ns",policy="bad"} 990
stratacache_load_errors_total{cache="ns",policy="bad"} 400
stratacache_hits_total{cache="other",policy="x",tier="l1"} 1
"#;
        let mut out = Vec::new();
        analyse(&parse(text), Some("ns"), 0.5, 100, &mut out);
        let low: Vec<_> = out
            .iter()
            .filter(|f| f.id == "metrics.low-hit-rate")
            .collect();
        assert_eq!(low.len(), 1, "{out:#?}");
        assert!(low[0].what.contains("ns/bad"));
        assert!(low[0].why.contains("failing loads"));
        assert!(out.iter().any(|f| f.id == "metrics.load-errors"));
        assert!(out
            .iter()
            .any(|f| f.id == "metrics.policy" && f.what.contains("ns/good")));
        assert!(!out.iter().any(|f| f.what.contains("other/")));
    }
}
