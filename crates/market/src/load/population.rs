//! Who `market load` acts as and on what: the service's symbols and users
//! (Zipf over both), a session for every user — signed in before the load,
//! with the seeder's credentials (`user{id}` / `password{id}`) — and the
//! operator token for market-data writes, if it was given one.

use std::time::Duration;

use anyhow::Context;
use futures::stream::{self, StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;

use super::{LoadConfig, Zipf};
use crate::model::InstrumentSummary;
use crate::routes::ops::Stats;

/// Sign-ins at once.
const SIGN_INS_AT_ONCE: usize = 32;

/// The symbols, the users and their sessions.
pub struct Population {
    /// Every listed symbol.
    pub symbols: Vec<String>,
    /// Users are `1..=users`.
    pub users: i64,
    symbol_zipf: Zipf,
    user_zipf: Zipf,
    /// `market_session=…` of user `i + 1`.
    cookies: Vec<String>,
    /// `Bearer …`, if given an operator token.
    operator: Option<String>,
}

impl Population {
    /// Read the service's symbols and users, and sign every user in.
    pub async fn prepare(client: &reqwest::Client, config: &LoadConfig) -> anyhow::Result<Self> {
        let stats: Stats = client
            .get(format!("{}/dashboard/stats", config.url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        anyhow::ensure!(
            stats.users > 0,
            "the service's database is not seeded (run `market seed`)"
        );
        let list: Vec<InstrumentSummary> = client
            .get(format!("{}/api/instruments", config.url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        anyhow::ensure!(!list.is_empty(), "the service lists no instruments");
        let symbols: Vec<String> = list.into_iter().map(|i| i.symbol).collect();
        let cookies = sign_in_all(client, &config.url, stats.users, config.progress).await?;
        Ok(Population {
            symbol_zipf: Zipf::new(symbols.len(), config.zipf),
            user_zipf: Zipf::new(stats.users as usize, config.zipf),
            symbols,
            users: stats.users,
            cookies,
            operator: config.admin_token.as_ref().map(|t| format!("Bearer {t}")),
        })
    }

    /// A symbol, Zipf-distributed.
    pub fn symbol(&self, rng: &mut StdRng) -> &str {
        &self.symbols[self.symbol_zipf.sample(rng)]
    }

    /// A user id, Zipf-distributed.
    pub fn user(&self, rng: &mut StdRng) -> i64 {
        self.user_zipf.sample(rng) as i64 + 1
    }

    /// Whether market-data writes can be sent.
    pub fn is_operator(&self) -> bool {
        self.operator.is_some()
    }

    /// `request` sent as `user`.
    pub fn as_user(&self, request: reqwest::RequestBuilder, user: i64) -> reqwest::RequestBuilder {
        match self.cookies.get((user - 1) as usize) {
            Some(cookie) => request.header(reqwest::header::COOKIE, cookie),
            None => request,
        }
    }

    /// `request` sent with the operator token.
    pub fn as_operator(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.operator {
            Some(bearer) => request.header(reqwest::header::AUTHORIZATION, bearer),
            None => request,
        }
    }
}

/// Sign users `1..=users` in; their `Cookie` headers, in order.
async fn sign_in_all(
    client: &reqwest::Client,
    base: &str,
    users: i64,
    progress: bool,
) -> anyhow::Result<Vec<String>> {
    let bar = if progress {
        let bar = ProgressBar::new(users as u64);
        bar.set_style(
            ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} users")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_message("signing in");
        bar
    } else {
        ProgressBar::hidden()
    };
    let cookies = stream::iter(1..=users)
        .map(|user| {
            let bar = bar.clone();
            async move {
                let cookie = sign_in(client, base, user).await;
                bar.inc(1);
                cookie
            }
        })
        .buffered(SIGN_INS_AT_ONCE)
        .try_collect()
        .await;
    bar.finish_and_clear();
    cookies
}

/// Sign `user` in (three tries: a busy service may refuse one); its
/// `Cookie` header.
pub async fn sign_in(client: &reqwest::Client, base: &str, user: i64) -> anyhow::Result<String> {
    let body = serde_json::json!({ "username": format!("user{user}"), "password": format!("password{user}") });
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
        let response = match client
            .post(format!("{base}/login"))
            .json(&body)
            .send()
            .await
        {
            Ok(response) => response,
            Err(err) => {
                last = err.to_string();
                continue;
            }
        };
        let status = response.status();
        let cookie = response
            .headers()
            .get(reqwest::header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::to_string);
        match cookie {
            Some(cookie) if status.is_success() => return Ok(cookie),
            _ => last = format!("{status} {}", response.text().await.unwrap_or_default()),
        }
    }
    Err(anyhow::anyhow!(last)).with_context(|| format!("signing in user{user}"))
}
