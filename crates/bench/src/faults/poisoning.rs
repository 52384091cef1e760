//! Cache-poisoning attempts against `market serve`'s HTTP response cache
//! (`GET /api/instruments?sector=&exchange=`, the route behind it).
//!
//! Each attack: the listing's cache is emptied (`POST /admin/invalidate` of
//! its tag), the attacker's request is sent as raw bytes (so Host, the
//! request line and duplicate headers can be anything), then a victim sends
//! the plain request. The victim's answer must equal what an instance with
//! `--cache off` on the same database answers for that URL: a different
//! status or body is a poisoned response.

use std::time::Duration;

use anyhow::{Context, Result};

use super::raw_http::{exchange, Raw};
use super::service::Fleet;
use super::{Group, Row};

/// Send `request` as written on a fresh connection; the first answer.
async fn send(port: u16, request: &[u8], head: bool) -> Result<Raw> {
    let raw = exchange(port, request, head, Duration::from_secs(5)).await?;
    anyhow::ensure!(raw.status != 0, "no HTTP head in the answer");
    Ok(raw)
}

fn plain(path: &str, port: u16) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

/// Attacks: a name, the victim's URL, and the attacker's request (`{H}`
/// stands for the real `Host` value).
fn attacks(exchange: &str) -> Vec<(&'static str, String, String)> {
    let tech = "/api/instruments?sector=TECH".to_string();
    let all = "/api/instruments".to_string();
    let both = format!("/api/instruments?sector=TECH&exchange={exchange}");
    let get = |path: &str, extra: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {{H}}\r\n{extra}Connection: close\r\n\r\n")
    };
    let pad = "a".repeat(20_000);
    vec![
        ("X-Forwarded-Host", tech.clone(), get(&tech, "X-Forwarded-Host: evil.example\r\n")),
        ("X-Forwarded-Proto/-Scheme/-Port", tech.clone(), get(&tech, "X-Forwarded-Proto: http\r\nX-Forwarded-Scheme: javascript\r\nX-Forwarded-Port: 1\r\n")),
        ("Forwarded / X-Forwarded-For", tech.clone(), get(&tech, "Forwarded: for=1.2.3.4;host=evil.example\r\nX-Forwarded-For: 1.2.3.4\r\n")),
        ("X-Original-URL", tech.clone(), get(&tech, "X-Original-URL: /api/instruments?sector=FIN\r\n")),
        ("X-Rewrite-URL", tech.clone(), get(&tech, "X-Rewrite-URL: /api/instruments?sector=FIN\r\n")),
        ("X-HTTP-Method-Override: DELETE", tech.clone(), get(&tech, "X-HTTP-Method-Override: DELETE\r\nX-Method-Override: PUT\r\n")),
        ("Host: evil.example", tech.clone(), format!("GET {tech} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")),
        ("two Host headers", tech.clone(), format!("GET {tech} HTTP/1.1\r\nHost: {{H}}\r\nHost: evil.example\r\nConnection: close\r\n\r\n")),
        ("absolute-form request line", tech.clone(), format!("GET http://evil.example{tech} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")),
        ("Cookie on a shared route", tech.clone(), get(&tech, "Cookie: id=attacker; market.sid=attacker\r\n")),
        ("Authorization on a shared route", tech.clone(), get(&tech, "Authorization: Bearer attacker-token\r\n")),
        ("query order", both.clone(), get(&format!("/api/instruments?exchange={exchange}&sector=TECH"), "")),
        ("duplicate parameter (FIN, TECH)", tech.clone(), get("/api/instruments?sector=FIN&sector=TECH", "")),
        ("duplicate parameter (TECH, FIN)", "/api/instruments?sector=FIN".into(), get("/api/instruments?sector=TECH&sector=FIN", "")),
        ("parameter cloaking (;)", tech.clone(), get("/api/instruments?sector=TECH;sector=FIN", "")),
        ("upper-case parameter name", all.clone(), get("/api/instruments?SECTOR=FIN", "")),
        ("percent-encoded value", tech.clone(), get("/api/instruments?sector=%46IN", "")),
        ("NUL in the value", tech.clone(), get("/api/instruments?sector=TECH%00FIN", "")),
        ("unkeyed parameters", tech.clone(), get("/api/instruments?sector=TECH&utm_source=x&callback=evil", "")),
        ("encoded ? in the path", all.clone(), get("/api/instruments%3Fsector=FIN", "")),
        ("trailing slash / double slash / dot segment", all.clone(), get("//api/./instruments/", "")),
        ("upper-case path", all.clone(), get("/API/INSTRUMENTS?sector=FIN", "")),
        ("Vary: Accept / -Encoding / -Language", tech.clone(), get(&tech, "Accept: text/html\r\nAccept-Encoding: gzip, br\r\nAccept-Language: xx\r\n")),
        ("Origin", tech.clone(), get(&tech, "Origin: https://evil.example\r\n")),
        ("HEAD, then GET", tech.clone(), format!("HEAD {tech} HTTP/1.1\r\nHost: {{H}}\r\nConnection: close\r\n\r\n")),
        ("Range", tech.clone(), get(&tech, "Range: bytes=0-10\r\n")),
        ("If-None-Match / If-Modified-Since", tech.clone(), get(&tech, "If-None-Match: *\r\nIf-Modified-Since: Mon, 01 Jan 2035 00:00:00 GMT\r\n")),
        ("Cache-Control: no-cache, max-age=0", tech.clone(), get(&tech, "Cache-Control: no-cache, max-age=0\r\nPragma: no-cache\r\n")),
        ("oversized header (20 KB)", tech.clone(), get(&tech, &format!("X-Pad: {pad}\r\n"))),
        ("fat GET (a body)", tech.clone(), format!("GET {tech} HTTP/1.1\r\nHost: {{H}}\r\nContent-Type: application/json\r\nContent-Length: 17\r\nConnection: close\r\n\r\n{{\"sector\":\"FIN\"}}")),
        ("smuggling (Content-Length + Transfer-Encoding)", tech.clone(), format!("GET {tech} HTTP/1.1\r\nHost: {{H}}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/instruments?sector=FIN HTTP/1.1\r\nHost: {{H}}\r\n\r\n")),
        ("POST to the cached route", tech.clone(), format!("POST {tech} HTTP/1.1\r\nHost: {{H}}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")),
    ]
}

fn same(a: &[u8], b: &[u8]) -> bool {
    match (
        serde_json::from_slice::<serde_json::Value>(a),
        serde_json::from_slice::<serde_json::Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

pub async fn run() -> Result<Row> {
    let fleet = Fleet::start(1).await?;
    let reference = fleet.spawn(false, &fleet.redis.url(), &[]).await?;
    let port =
        |base: &str| -> Result<u16> { Ok(base.rsplit(':').next().context("a port")?.parse()?) };
    let (cached, truth) = (port(&fleet.instances[0].base)?, port(&reference.base)?);
    let list: Vec<serde_json::Value> = fleet
        .client
        .get(format!("{}/api/instruments", reference.base))
        .send()
        .await?
        .json()
        .await?;
    let exchange = list
        .iter()
        .find(|i| i["sector"] == "TECH")
        .and_then(|i| i["exchange"].as_str())
        .unwrap_or("NYSE")
        .to_string();
    // The check can only fail if the variants an attacker could swap in
    // differ from the victims' answers.
    let mut bodies = Vec::new();
    for path in [
        "/api/instruments?sector=TECH",
        "/api/instruments?sector=FIN",
        "/api/instruments",
    ] {
        bodies.push(send(truth, &plain(path, truth), false).await?.body);
    }
    anyhow::ensure!(
        !same(&bodies[0], &bodies[1])
            && !same(&bodies[0], &bodies[2])
            && !same(&bodies[1], &bodies[2]),
        "the listing's filters do not change its body: a poisoned answer could not be told apart"
    );
    let host = format!("127.0.0.1:{cached}");
    let mut poisoned = Vec::new();
    let mut hits = 0;
    let mut attacker_statuses = std::collections::BTreeMap::<u16, usize>::new();
    let list_attacks = attacks(&exchange);
    for (name, victim, attack) in &list_attacks {
        fleet
            .client
            .post(format!("{}/admin/invalidate", fleet.instances[0].base))
            .header("authorization", fleet.bearer())
            .json(&serde_json::json!({ "tag": "instrument_list" }))
            .send()
            .await?
            .error_for_status()?;
        let attack = attack.replace("{H}", &host);
        let head = attack.starts_with("HEAD ");
        let answered = send(cached, attack.as_bytes(), head).await;
        *attacker_statuses
            .entry(answered.as_ref().map_or(0, |r| r.status))
            .or_default() += 1;
        let expected = send(truth, &plain(victim, truth), false).await?;
        let got = send(cached, &plain(victim, cached), false).await?;
        if got.header("x-cache") == Some("HIT") {
            hits += 1;
        }
        let leaked = got.header("set-cookie").is_some();
        if got.status != expected.status || !same(&got.body, &expected.body) || leaked {
            poisoned.push(format!(
                "{name}: victim got {} ({} bytes{}) where {} ({} bytes) was right",
                got.status,
                got.body.len(),
                if leaked { ", with a Set-Cookie" } else { "" },
                expected.status,
                expected.body.len()
            ));
        }
    }
    drop(reference);
    let mut row = Row::new("market-poisoning", Group::Input, "market serve");
    row.done = format!(
        "{} cache-poisoning attempts on the cached listing, each on an emptied cache and followed by a victim's plain request: {}",
        list_attacks.len(),
        list_attacks.iter().map(|a| a.0).collect::<Vec<_>>().join(", ")
    );
    row.requests = list_attacks.len() as u64;
    row.errors = format!(
        "attackers answered {}; victims served from the cache entry the attacker's request left: {hits}",
        attacker_statuses
            .iter()
            .map(|(s, n)| format!("{}×{n}", if *s == 0 { "no answer".to_string() } else { s.to_string() }))
            .collect::<Vec<_>>()
            .join(", ")
    );
    row.lost = format!(
        "{} poisoned responses (victim's status or body not the uncached instance's){}",
        poisoned.len(),
        if poisoned.is_empty() {
            String::new()
        } else {
            format!(": {}", poisoned.join("; "))
        }
    );
    row.target = "0 poisoned responses".into();
    row.met = poisoned.is_empty();
    Ok(row)
}
