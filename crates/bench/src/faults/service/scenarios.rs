//! `market serve` under faults: Redis killed, PostgreSQL taken away.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::load::{self, check_views, population, slowest_by_route, Answer, Load, Sent, ViewCheck};
use super::{Fleet, MARKET_REDIS_TIMEOUT};
use crate::faults::{latency_target, ms, slowest_allowed, Group, Row};
use crate::progress;

const USERS: usize = 32;

/// Wait until the write-behind stream is empty and the database's totals
/// have not moved for a second (at most a minute); the totals then.
async fn drained(fleet: &Fleet) -> Result<HashMap<String, i64>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = fleet.view_totals().await?;
    let mut stable_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = fleet.view_totals().await?;
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
        let (queued, _) = fleet.queue_depth();
        if (queued == 0 && stable_since.elapsed() >= Duration::from_secs(1))
            || Instant::now() > deadline
        {
            return Ok(last);
        }
    }
}

fn failures(sent: &[Sent], expected_503: impl Fn(&Sent) -> bool) -> (usize, String) {
    let mut examples: BTreeMap<String, usize> = BTreeMap::new();
    for s in sent {
        let failed = match &s.answer {
            Answer::Failed(why) => Some(why.clone()),
            Answer::Clear503 if !expected_503(s) => Some("503 outside the outage".into()),
            _ => None,
        };
        if let Some(why) = failed {
            *examples
                .entry(format!(
                    "{}: {}",
                    s.kind.route(),
                    why.chars().take(120).collect::<String>()
                ))
                .or_default() += 1;
        }
    }
    let total = examples.values().sum();
    let shown: Vec<String> = examples
        .iter()
        .take(3)
        .map(|(why, n)| format!("{n}× {why}"))
        .collect();
    (total, shown.join("; "))
}

fn views_text(v: &ViewCheck, dead: u64) -> String {
    let missing = if v.lost == 0 {
        String::new()
    } else {
        format!(
            " ({} of them in the dead-letter stream, which market serve never replays; {} not even there)",
            v.lost - v.gone,
            v.gone
        )
    };
    format!(
        "view counts (write-behind): {} acknowledged, {} in doubt; in the database after the workers drained: {} lost{missing}, {} applied twice; dead-letter stream: {dead} entries",
        v.acknowledged, v.in_doubt, v.lost, v.applied_twice
    )
}

fn latency_text(sent: &[Sent], from: Duration, to: Duration) -> (String, Duration) {
    let h = load::window(sent, from, to);
    let before = load::window(sent, Duration::ZERO, from);
    let slowest = slowest_by_route(sent, from, to);
    let max = Duration::from_nanos(h.max());
    let text = format!(
        "{:.2} / {:.2} ms (slowest routes: {}; before the fault: p99 {:.2}, max {:.2} ms)",
        h.value_at_quantile(0.99) as f64 / 1e6,
        ms(max),
        slowest
            .iter()
            .take(2)
            .map(|(k, d)| format!("{} {:.0} ms", k.route(), ms(*d)))
            .collect::<Vec<_>>()
            .join(", "),
        before.value_at_quantile(0.99) as f64 / 1e6,
        before.max() as f64 / 1e6,
    );
    (text, max)
}

pub async fn redis_killed(scale: f64) -> Result<Row> {
    let mut fleet = Fleet::start(2).await?;
    let bases: Vec<String> = fleet.instances.iter().map(|i| i.base.clone()).collect();
    let pop = Arc::new(population(&fleet.client, &bases, fleet.bearer()).await?);
    let before = fleet.view_totals().await?;
    let load = Load::start(&fleet.client, &bases, pop.clone(), USERS);
    let down_for = Duration::from_secs_f64(10.0 * scale);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from = load.t0.elapsed();
    fleet.redis.kill();
    tokio::time::sleep(down_for).await;
    tokio::task::block_in_place(|| fleet.redis.restart());
    let recovered = fleet
        .until_health(Duration::from_secs(15), |status, body| {
            status == 200 && body["status"] == "ok"
        })
        .await;
    let to = load.t0.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = load.stop().await;
    progress!(
        "faults: market-redis-killed: {} requests; draining the view counts",
        sent.len()
    );
    let after = drained(&fleet).await?;
    let (_, dead) = fleet.queue_depth();
    let dead_views = fleet.dead_letter_views().await?;
    let views = check_views(&sent, &pop.symbols, &before, &after, &dead_views);
    let (failed, examples) = failures(&sent, |_| false);
    let conflicts = sent.iter().filter(|s| s.answer == Answer::Conflict).count();
    let (latency, max) = latency_text(&sent, from, to);
    let bound = slowest_allowed(MARKET_REDIS_TIMEOUT);

    let mut row = Row::new("market-redis-killed", Group::Load, "market serve");
    row.done = format!(
        "the instances' Redis (AOF, appendfsync always) killed (SIGKILL) for {} s under HTTP load, then restarted",
        down_for.as_secs_f64()
    );
    row.load = load::LOAD.into();
    row.requests = sent.len() as u64;
    row.errors = format!(
        "{failed} failed{}; {conflicts} 409s (orders beyond a user's cash: business answers)",
        if examples.is_empty() {
            String::new()
        } else {
            format!(" ({examples})")
        }
    );
    row.latency = latency;
    row.recovered = match recovered {
        Some(d) => format!(
            "{} ms after Redis answered again (both instances' /health: ok, breaker closed)",
            ms(d)
        ),
        None => "not within 15 s".into(),
    };
    row.lost = views_text(&views, dead);
    row.target = format!(
        "0 failed; {}; recovered ≤ 2 s; view counts: 0 lost, 0 applied twice",
        latency_target(MARKET_REDIS_TIMEOUT)
    );
    row.met = failed == 0
        && max < bound
        && recovered.is_some_and(|r| r <= Duration::from_secs(2))
        && views.lost == 0
        && views.applied_twice == 0
        && dead == 0;
    Ok(row)
}

pub async fn postgres_down(scale: f64) -> Result<Row> {
    let fleet = Fleet::start(2).await?;
    let bases: Vec<String> = fleet.instances.iter().map(|i| i.base.clone()).collect();
    let pop = Arc::new(population(&fleet.client, &bases, fleet.bearer()).await?);
    let before = fleet.view_totals().await?;
    let load = Load::start(&fleet.client, &bases, pop.clone(), USERS);
    let down_for = Duration::from_secs_f64(10.0 * scale);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from = load.t0.elapsed();
    fleet.pg_proxy.set_cut(true);
    tokio::time::sleep(down_for).await;
    fleet.pg_proxy.set_cut(false);
    let restored = load.t0.elapsed();
    let recovered = fleet
        .until_health(Duration::from_secs(20), |status, body| {
            status == 200 && body["postgres"] == "up"
        })
        .await;
    let to = load.t0.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = load.stop().await;
    progress!(
        "faults: market-postgres-down: {} requests; draining the view counts",
        sent.len()
    );
    let after = drained(&fleet).await?;
    let (_, dead) = fleet.queue_depth();
    let dead_views = fleet.dead_letter_views().await?;
    let views = check_views(&sent, &pop.symbols, &before, &after, &dead_views);
    // A clear 503 is the expected answer of a request that overlapped the
    // outage (its connection attempts may outlast the cut by the pool's
    // acquire timeout) up to the instances' recovery.
    let overlapped =
        |s: &Sent| s.started < to + Duration::from_secs(3) && s.started + s.took > from;
    let (failed, examples) = failures(&sent, overlapped);
    let during: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.started >= from && s.started < restored)
        .collect();
    let served = during.iter().filter(|s| s.answer == Answer::Ok).count();
    let clear = during
        .iter()
        .filter(|s| s.answer == Answer::Clear503)
        .count();
    let mut served_by: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for s in &during {
        let e = served_by.entry(s.kind.route()).or_default();
        e.1 += 1;
        if s.answer == Answer::Ok {
            e.0 += 1;
        }
    }
    let (latency, _) = latency_text(&sent, from, restored);

    let mut row = Row::new("market-postgres-down", Group::Load, "market serve");
    row.done = format!(
        "PostgreSQL cut from both instances (a proxy closing their connections and refusing new ones) for {} s under HTTP load; of {} requests during the outage {served} were served and {clear} answered a clear 503 — served per route: {}",
        down_for.as_secs_f64(),
        during.len(),
        served_by
            .iter()
            .map(|(route, (ok, all))| format!("{route} {ok}/{all}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    row.load = load::LOAD.into();
    row.requests = sent.len() as u64;
    row.errors = format!(
        "{clear} clear 503s (`{{\"error\": \"database unavailable\", \"request_id\": …}}`; the cause in the log) during the outage, as expected; {failed} failed otherwise{}",
        if examples.is_empty() { String::new() } else { format!(" ({examples})") }
    );
    row.latency = latency;
    row.recovered = match recovered {
        Some(d) => format!("{} ms after PostgreSQL was reachable again (both instances' /health: 200, postgres up)", ms(d)),
        None => "not within 20 s".into(),
    };
    row.lost = views_text(&views, dead);
    row.target = "cached keys served (fail-safe); others a clear 503; recovery when it returns; view counts: 0 lost, 0 applied twice".into();
    row.met = failed == 0
        && served > 0
        && recovered.is_some()
        && views.lost == 0
        && views.applied_twice == 0
        && dead == 0;
    Ok(row)
}
