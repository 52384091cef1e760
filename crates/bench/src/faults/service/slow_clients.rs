//! Slow and oversized clients against one `market serve` with its default
//! limits, while the usual HTTP load runs: request heads that never end,
//! connections that send nothing, bodies announced over the limit, bodies
//! that stall, bodies trickled in a byte at a time. Each must be answered
//! or closed within its limit, and the load must not notice them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::load::{self, population, Answer, Load};
use super::Fleet;
use crate::faults::raw_http::{exchange, Raw};
use crate::faults::{ms, Group, Row};

/// `market serve`'s defaults (`--header-timeout`, `--body-timeout`,
/// `--request-timeout`).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// What a close or an answer may take beyond its limit on a loaded machine
/// (two cores shared with other work, 360 connections opening at once).
const SLACK: Duration = Duration::from_secs(2);

/// One kind of slow client: how many, what it sends, what must happen.
struct Kind {
    name: &'static str,
    count: usize,
    request: Vec<u8>,
    /// The status expected (0: closed without an answer).
    status: u16,
    /// By when.
    limit: Duration,
}

fn kinds() -> Vec<Kind> {
    let head =
        |extra: &str| format!("POST /login HTTP/1.1\r\nHost: localhost\r\n{extra}").into_bytes();
    vec![
        Kind {
            name: "a head that never ends",
            count: 200,
            request: b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ".to_vec(),
            status: 0,
            limit: HEADER_TIMEOUT,
        },
        Kind {
            name: "a connection that sends nothing",
            count: 50,
            request: Vec::new(),
            status: 0,
            limit: HEADER_TIMEOUT,
        },
        Kind {
            name: "10 MB announced, nothing sent",
            count: 50,
            request: head("Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n"),
            status: 413,
            limit: Duration::ZERO,
        },
        Kind {
            name: "a body that stalls after 10 bytes",
            count: 50,
            request: head(
                "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"username",
            ),
            status: 408,
            limit: BODY_TIMEOUT,
        },
    ]
}

/// A body sent a byte every `every`: never idle for the body timeout.
async fn trickle(port: u16, every: Duration, within: Duration) -> Result<Raw> {
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n")
        .await?;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let mut closed = false;
    while started.elapsed() < within {
        if stream.write_all(b" ").await.is_err() {
            closed = true;
            break;
        }
        match tokio::time::timeout(every, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => data.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let status = String::from_utf8_lossy(&data)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(Raw {
        status,
        headers: Vec::new(),
        body: Vec::new(),
        closed,
        took: started.elapsed(),
    })
}

pub async fn slow_clients() -> Result<Row> {
    let fleet = Fleet::start(1).await?;
    let base = fleet.instances[0].base.clone();
    let port: u16 = base.rsplit(':').next().unwrap_or("0").parse()?;
    let bases = vec![base.clone()];
    let pop = Arc::new(population(&fleet.client, &bases, fleet.bearer()).await?);
    let load = Load::start(&fleet.client, &bases, pop, 32);
    // A steady load first: its latency is the reference.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let from = load.t0.elapsed();

    let kinds = kinds();
    let wait = REQUEST_TIMEOUT + SLACK * 5;
    let mut tasks = Vec::new();
    for (k, kind) in kinds.iter().enumerate() {
        for _ in 0..kind.count {
            let request = kind.request.clone();
            tasks.push((
                k,
                tokio::spawn(async move { exchange(port, &request, false, wait).await }),
            ));
        }
    }
    const TRICKLED: usize = 10;
    let trickled: Vec<_> = (0..TRICKLED)
        .map(|_| tokio::spawn(trickle(port, BODY_TIMEOUT / 5, wait)))
        .collect();
    let mut outcomes: Vec<Vec<Raw>> = kinds.iter().map(|_| Vec::new()).collect();
    for (k, task) in tasks {
        outcomes[k].push(task.await??);
    }
    let mut trickle_outcomes = Vec::new();
    for task in trickled {
        trickle_outcomes.push(task.await??);
    }
    let to = load.t0.elapsed();
    let sent = load.stop().await;

    let mut parts = Vec::new();
    let mut all_in_time = true;
    let mut check = |name: &str, status: u16, limit: Duration, raws: &[Raw]| {
        let in_time = raws
            .iter()
            .filter(|r| r.status == status && r.closed && r.took <= limit + SLACK)
            .count();
        let slowest = raws.iter().map(|r| r.took).max().unwrap_or_default();
        let mut other: BTreeMap<String, usize> = BTreeMap::new();
        for r in raws.iter().filter(|r| r.status != status || !r.closed) {
            let what = match (r.status, r.closed) {
                (0, true) => "closed without an answer".to_string(),
                (0, false) => "still open".to_string(),
                (s, _) => format!("answered {s}"),
            };
            *other.entry(what).or_default() += 1;
        }
        all_in_time &= in_time == raws.len();
        parts.push(format!(
            "{} × {name}: {in_time} {} within {:.1} s (slowest {:.2} s){}",
            raws.len(),
            if status == 0 {
                "closed".to_string()
            } else {
                format!("answered {status} and closed")
            },
            (limit + SLACK).as_secs_f64(),
            slowest.as_secs_f64(),
            if other.is_empty() {
                String::new()
            } else {
                format!(
                    "; otherwise {}",
                    other
                        .iter()
                        .map(|(w, n)| format!("{n} {w}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ));
    };
    for (kind, raws) in kinds.iter().zip(&outcomes) {
        check(kind.name, kind.status, kind.limit, raws);
    }
    check(
        &format!(
            "a body trickled a byte every {} ms",
            (BODY_TIMEOUT / 5).as_millis()
        ),
        408,
        REQUEST_TIMEOUT,
        &trickle_outcomes,
    );
    let during: Vec<_> = sent
        .iter()
        .filter(|s| s.started >= from && s.started < to)
        .collect();
    let failed = during
        .iter()
        .filter(|s| matches!(s.answer, Answer::Failed(_) | Answer::Clear503))
        .count();
    let h = load::window(&sent, from, to);
    let before = load::window(&sent, Duration::from_secs(2), from);
    let (p99, p99_before) = (
        Duration::from_nanos(h.value_at_quantile(0.99)),
        Duration::from_nanos(before.value_at_quantile(0.99)),
    );
    let max = Duration::from_nanos(h.max());
    let slow_total: usize = kinds.iter().map(|k| k.count).sum::<usize>() + TRICKLED;

    let mut row = Row::new("market-slow-clients", Group::Load, "market serve");
    row.done = format!(
        "{slow_total} slow or oversized connections opened at once against one instance with its default limits (header read timeout {} s, body timeout {} s, request timeout {} s, 64 KiB bodies, 1,024 connections): {}",
        HEADER_TIMEOUT.as_secs(),
        BODY_TIMEOUT.as_secs(),
        REQUEST_TIMEOUT.as_secs(),
        parts.join("; ")
    );
    row.load = load::LOAD.replace("over 2 instances", "on the instance");
    row.requests = sent.len() as u64;
    row.errors = format!(
        "{failed} of the load's {} requests during the slow clients failed",
        during.len()
    );
    row.latency = format!(
        "{:.2} / {:.2} ms (the 3 s before the slow clients: p99 {:.2}, max {:.2} ms)",
        ms(p99),
        ms(max),
        ms(p99_before),
        before.max() as f64 / 1e6,
    );
    row.recovered = "nothing to recover from: every slow connection was closed by its limit".into();
    row.lost = "—".into();
    row.target = format!(
        "each slow connection answered or closed within its limit + {} s; the load: 0 failed, its p99 no worse than twice the p99 before + 20 ms",
        SLACK.as_secs()
    );
    row.met = all_in_time && failed == 0 && p99 <= p99_before * 2 + Duration::from_millis(20);
    Ok(row)
}
