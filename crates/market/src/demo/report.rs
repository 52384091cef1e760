//! The demo's printed report: the before/after table, then where the cached
//! side's reads miss and load (per resource), then what each kind of request
//! costs and what the slowest 1 % is made of (per request kind).

use super::{DemoConfig, DemoResult, ModeResult};

fn ratio_down(off: f64, on: f64) -> String {
    if on <= 0.0 {
        "—".into()
    } else {
        format!("÷ {:.1}", off / on)
    }
}

/// The whole report in Markdown.
pub fn table(r: &DemoResult, config: &DemoConfig) -> String {
    let mut out = headline(r, config);
    out.push('\n');
    out.push_str(&by_resource(r));
    out.push('\n');
    out.push_str(&by_request(r));
    let stale = staleness(r);
    if !stale.is_empty() {
        out.push('\n');
        out.push_str(&stale);
    }
    out
}

fn headline(r: &DemoResult, config: &DemoConfig) -> String {
    let (off, on) = (&r.off, &r.on);
    let lat = |m: &ModeResult| m.load.latency_ms;
    let mut out = String::new();
    let offered = if config.rate > 0.0 {
        format!("offering {:.0} requests/s", config.rate)
    } else {
        "as fast as answered".to_string()
    };
    out.push_str(&format!(
        "market demo — {} instruments, {} users (scale {}), {} virtual users {offered}, Zipf {}, {:.0} % writes, {} s measured per side after {} s of warm-up as fast as answered\n\n",
        r.instruments, r.users, r.scale, config.virtual_users, off.load.zipf,
        off.load.write_ratio * 100.0, config.duration.as_secs(), config.warmup.as_secs()
    ));
    if config.warm_users {
        out.push_str("The cached side first warmed every user's profile, watchlist and positions (three set-based queries, as a deploy would; `--no-warm` skips it).\n\n");
    }
    if config.feed {
        out.push_str("The cached side pushes every quote, order book and price window into the cache each half TTL (the market-data feed; `--no-feed` turns it off); its queries are in its database figures.\n\n");
    }
    out.push_str("Hit rate and loads per cached read count one lookup per read of a route's resource; the parts details and portfolios are composed from, and the compositions writes start in the background, are listed apart below (their loads are counted, their lookups are not).\n\n");
    out.push_str("| | cache off | cache on | change |\n|---|---:|---:|---:|\n");
    let rows: [(&str, f64, f64); 5] = [
        ("mean latency (ms)", lat(off).mean, lat(on).mean),
        ("p50 latency (ms)", lat(off).p50, lat(on).p50),
        ("p95 latency (ms)", lat(off).p95, lat(on).p95),
        ("p99 latency (ms)", lat(off).p99, lat(on).p99),
        (
            "database queries/s (pg_stat_database)",
            off.db_queries_per_sec,
            on.db_queries_per_sec,
        ),
    ];
    for (name, a, b) in rows {
        let change = ratio_down(a, b);
        out.push_str(&format!("| {name} | {a:.2} | {b:.2} | {change} |\n"));
    }
    let rps_change = if off.load.requests_per_sec > 0.0 {
        format!(
            "× {:.1}",
            on.load.requests_per_sec / off.load.requests_per_sec
        )
    } else {
        "—".into()
    };
    out.push_str(&format!(
        "| requests/s | {:.0} | {:.0} | {rps_change} |\n",
        off.load.requests_per_sec, on.load.requests_per_sec
    ));
    out.push_str(&format!(
        "| cache hit rate (answered from L1 or Redis) | — | {:.1} % | |\n",
        on.hit_rate * 100.0
    ));
    out.push_str(&format!(
        "| database loads per cached read (refreshes and feed queries included) | {:.3} | {:.3} | {} |\n",
        off.loads_per_lookup,
        on.loads_per_lookup,
        ratio_down(off.loads_per_lookup, on.loads_per_lookup)
    ));
    out.push_str(&format!(
        "| failed requests (5xx or transport) | {} | {} | |\n",
        off.load.server_errors, on.load.server_errors
    ));
    out.push_str(&format!(
        "| refused requests (401, 403) | {} | {} | |\n",
        off.load.refused, on.load.refused
    ));
    out
}

/// The second instance's staleness, if the cached side measured it.
fn staleness(r: &DemoResult) -> String {
    let Some(s) = &r.on.staleness else {
        return String::new();
    };
    let row = |what: &str, x: &super::staleness::Stale| {
        format!(
            "| {what} | {} | {} | {:.2} | {:.2} | {:.2} |\n",
            x.rounds, x.stale_rounds, x.p50_ms, x.p99_ms, x.max_ms
        )
    };
    let mut out = format!(
        "Two instances, {:.0} s of the same load against the first: writes through the first, reads through the second (whose L1 held the old value). The writer read its own profile back through the second {} times: {} old (read-your-writes). Other readers, until the write showed (0 when the first read showed it):\n\n\
         | write | rounds | first read old | p50 (ms) | p99 (ms) | max (ms) |\n|---|---:|---:|---:|---:|---:|\n",
        s.seconds, s.writer_reads, s.writer_stale
    );
    out.push_str(&row("profile (tag invalidation), public part", &s.profile));
    out.push_str(&row("quote (versioned write-through)", &s.price));
    out
}

fn by_resource(r: &DemoResult) -> String {
    let (off, on) = (&r.off, &r.on);
    let mut out = String::from(
        "Reads by resource — lookups and database loads per second as the service counts them (loads include background refreshes; the feed's set-based queries are counted apart and in loads per read); hit rate as the cache counts it for the resource's policy:\n\n\
         | resource | reads/s | loads/s, cache off | loads/s, cache on | feed queries/s | hit rate, cache on | loads per read, cache on |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut names: Vec<&str> = on.resources.iter().map(|x| x.resource.as_str()).collect();
    for x in &off.resources {
        if !names.contains(&x.resource.as_str()) {
            names.push(&x.resource);
        }
    }
    for name in names {
        let find = |m: &ModeResult| m.resources.iter().find(|x| x.resource == name).cloned();
        let policy = crate::policy::Policy::from_name(name);
        let label = if policy.is_some_and(|p| p.is_part()) {
            format!("{name} (part)")
        } else if policy.is_some_and(|p| p.is_internal()) {
            format!("{name} (after writes)")
        } else {
            name.to_string()
        };
        let (a, b) = (find(off).unwrap_or_default(), find(on).unwrap_or_default());
        let hit = b
            .hit_rate
            .map_or("—".to_string(), |h| format!("{:.1} %", h * 100.0));
        let per_read = if b.lookups_per_sec > 0.0 {
            format!(
                "{:.3}",
                (b.loads_per_sec + b.feed_queries_per_sec) / b.lookups_per_sec
            )
        } else {
            "—".into()
        };
        out.push_str(&format!(
            "| {label} | {:.1} | {:.1} | {:.1} | {:.1} | {hit} | {per_read} |\n",
            b.lookups_per_sec.max(a.lookups_per_sec),
            a.loads_per_sec,
            b.loads_per_sec,
            b.feed_queries_per_sec
        ));
    }
    out
}

fn by_request(r: &DemoResult) -> String {
    let (off, on) = (&r.off, &r.on);
    let mut out = String::from(
        "Requests by kind — latency per kind (ms), and how many of each are among the side's slowest 1 % (above its p99):\n\n\
         | request | requests/s | p50 off | p99 off | p50 on | p99 on | in the slowest 1 %, off | in the slowest 1 %, on |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let (off_tail, on_tail) = (
        off.load.ops.iter().map(|o| o.above_p99).sum::<u64>().max(1),
        on.load.ops.iter().map(|o| o.above_p99).sum::<u64>().max(1),
    );
    for b in &on.load.ops {
        let a = off.load.ops.iter().find(|a| a.op == b.op);
        let (p50, p99, tail) = match a {
            Some(a) => (
                format!("{:.2}", a.latency_ms.p50),
                format!("{:.2}", a.latency_ms.p99),
                format!("{:.0} %", a.above_p99 as f64 * 100.0 / off_tail as f64),
            ),
            None => ("—".into(), "—".into(), "—".into()),
        };
        out.push_str(&format!(
            "| `{}` | {:.1} | {p50} | {p99} | {:.2} | {:.2} | {tail} | {:.0} % |\n",
            b.op,
            b.requests as f64 / on.load.duration_s.max(0.001),
            b.latency_ms.p50,
            b.latency_ms.p99,
            b.above_p99 as f64 * 100.0 / on_tail as f64,
        ));
    }
    out
}
