//! How stale a second instance can be, measured under the demo's load.
//!
//! A second instance joins the cached side's namespace (no feed of its
//! own); while the load keeps running against the first, a prober writes
//! through the first and reads through the second:
//!
//! - a user's profile (tag invalidation): the writer reads it back through
//!   the second instance at once — read-your-writes, it must be new — and an
//!   anonymous reader polls its public part there until it shows the write;
//! - a quote (versioned write-through, by the operator): an anonymous
//!   reader polls it on the second instance until it shows the write.
//!
//! Both readers had the old value in the second instance's L1 just before
//! the write. Staleness is the time from the write's answer to the first
//! read that shows it (0 when the very first read does), so it bounds how
//! long the backplane took to reach the second instance's L1, to within one
//! request.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::DemoConfig;
use crate::app::ServeConfig;
use crate::load::{sign_in, Driver, LoadConfig};

/// Staleness of one kind of write, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stale {
    /// Writes probed.
    pub rounds: usize,
    /// Rounds whose first read on the second instance was the old value.
    pub stale_rounds: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// What the probe measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Staleness {
    /// Profile updates read back by their writer through the second
    /// instance, and how many of those reads were old.
    pub writer_reads: usize,
    pub writer_stale: usize,
    /// Other readers of the profile updates.
    pub profile: Stale,
    /// Readers of the quotes.
    pub price: Stale,
    /// Seconds the probe ran.
    pub seconds: f64,
}

/// The longest a reader polls for a write before the round counts as lost
/// (it would be far beyond any bound worth reporting).
const GIVE_UP: Duration = Duration::from_secs(5);

/// Pause between rounds: a few writes a second, next to the load's own.
const BETWEEN_ROUNDS: Duration = Duration::from_millis(50);

fn summary(mut ms: Vec<f64>, stale_rounds: usize) -> Stale {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        ms.get(((ms.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0)
    };
    Stale {
        rounds: ms.len(),
        stale_rounds,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: ms.last().copied().unwrap_or(0.0),
    }
}

/// Poll `url` until `fresh` holds on its JSON body; how long after `since`
/// the first fresh answer's request started, and whether the first read was
/// already fresh.
async fn until_fresh(
    client: &reqwest::Client,
    url: &str,
    since: Instant,
    fresh: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<(f64, bool)> {
    let mut first = true;
    loop {
        let sent = Instant::now();
        let body: serde_json::Value = client.get(url).send().await?.json().await?;
        if fresh(&body) {
            let ms = if first {
                0.0
            } else {
                sent.duration_since(since).as_secs_f64() * 1000.0
            };
            return Ok((ms, first));
        }
        anyhow::ensure!(since.elapsed() < GIVE_UP, "{url} never showed the write");
        first = false;
    }
}

/// Probe for `duration`: writes through `writer_base`, reads through
/// `reader_base`, as users `users` (the seeder's credentials) and the
/// operator `token`, on `symbols`.
pub async fn probe(
    writer_base: &str,
    reader_base: &str,
    users: &[i64],
    symbols: &[String],
    token: &str,
    duration: Duration,
) -> anyhow::Result<Staleness> {
    let anonymous = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut signed_in = Vec::new();
    for &user in users {
        let cookie = sign_in(&anonymous, writer_base, user).await?;
        signed_in.push((user, cookie));
    }
    let bearer = format!("Bearer {token}");
    let started = Instant::now();
    let (mut writer_reads, mut writer_stale) = (0, 0);
    let (mut profile_ms, mut profile_stale) = (Vec::new(), 0);
    let (mut price_ms, mut price_stale) = (Vec::new(), 0);
    let mut round = 0usize;
    while started.elapsed() < duration {
        let (user, cookie) = &signed_in[round % signed_in.len()];
        let symbol = &symbols[round % symbols.len()];
        let profile_url = format!("{reader_base}/api/users/{user}/profile");
        let price_url = format!("{reader_base}/api/stocks/{symbol}/price");
        // The second instance holds the current values in its L1. A write
        // shows as a change: the load may write the same user or symbol
        // meanwhile, which is newer still.
        let old_profile: serde_json::Value =
            anonymous.get(&profile_url).send().await?.json().await?;
        let old_quote: serde_json::Value = anonymous.get(&price_url).send().await?.json().await?;
        let old_name = old_profile["display_name"].clone();
        let old_price = old_quote["price"].clone();

        let name = format!("Probe {round}");
        anonymous
            .put(format!("{writer_base}/api/users/{user}/profile"))
            .header(reqwest::header::COOKIE, cookie)
            .json(&serde_json::json!({ "display_name": name }))
            .send()
            .await?
            .error_for_status()?;
        let written = Instant::now();
        let own: serde_json::Value = anonymous
            .get(&profile_url)
            .header(reqwest::header::COOKIE, cookie)
            .send()
            .await?
            .json()
            .await?;
        writer_reads += 1;
        if own["display_name"] == old_name {
            writer_stale += 1;
        }
        let (ms, fresh) = until_fresh(&anonymous, &profile_url, written, |p| {
            p["display_name"] != old_name
        })
        .await?;
        profile_ms.push(ms);
        profile_stale += usize::from(!fresh);

        // A price the symbol never had: 1,000.00 and up, one cent per round.
        let price = (100_000 + round) as f64 / 100.0;
        anonymous
            .put(format!("{writer_base}/api/stocks/{symbol}/price"))
            .header(reqwest::header::AUTHORIZATION, &bearer)
            .json(&serde_json::json!({ "price": price, "volume": 1 }))
            .send()
            .await?
            .error_for_status()?;
        let written = Instant::now();
        let (ms, fresh) =
            until_fresh(&anonymous, &price_url, written, |q| q["price"] != old_price).await?;
        price_ms.push(ms);
        price_stale += usize::from(!fresh);

        round += 1;
        tokio::time::sleep(BETWEEN_ROUNDS).await;
    }
    Ok(Staleness {
        writer_reads,
        writer_stale,
        profile: summary(profile_ms, profile_stale),
        price: summary(price_ms, price_stale),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// How long to probe staleness: as long as the measured part, at most 10 s.
const PROBE_FOR: Duration = Duration::from_secs(10);

/// A second instance in `server`'s namespace, the same load against the
/// first, and [`probe`] between the two.
pub async fn under_load(
    config: &DemoConfig,
    serve: &ServeConfig,
    server: &crate::server::RunningServer,
    driver: &Driver,
    load: &LoadConfig,
) -> anyhow::Result<Staleness> {
    let mut second = serve.clone();
    second.feed = false;
    let reader = crate::server::start(&second).await?;
    let duration = config.duration.min(PROBE_FOR);
    eprintln!(
        "demo: cache on: a second instance joins; {} s of the same load while writes through the first are read through the second",
        duration.as_secs()
    );
    let mut background = load.clone();
    background.duration = duration;
    background.progress = false;
    // The probe's users and symbols: the least popular, so that the load
    // rarely writes them too.
    let users = reader.state.seed.map_or(0, |s| s.users);
    let probe_users: Vec<i64> = (users.saturating_sub(9).max(1)..=users).collect();
    let symbols = crate::db::queries::list_instruments(&reader.state.db, None, None).await?;
    let probe_symbols: Vec<String> = symbols
        .iter()
        .rev()
        .take(10)
        .map(|i| i.symbol.clone())
        .collect();
    let token = serve.admin_token.clone().unwrap_or_default();
    let (writer_url, reader_url) = (server.url(), reader.url());
    let (loaded, probed) = tokio::join!(
        driver.run(&background),
        probe(
            &writer_url,
            &reader_url,
            &probe_users,
            &probe_symbols,
            &token,
            duration,
        )
    );
    reader.stop().await?;
    loaded?;
    probed
}
