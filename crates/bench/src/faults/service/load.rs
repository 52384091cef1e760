//! HTTP load on `market serve` instances: virtual users sending a Zipf mix
//! of the routes' reads, write-behind view counts and some writes, every
//! request recorded with its answer.
//!
//! Authorization is on, as in production: every user is signed in before
//! the load (the seeder's credentials, `user{id}` / `password{id}`) on one
//! instance, and that user's requests go to that instance — as a load
//! balancer with session affinity sends them; public reads go to the
//! virtual user's instance. Market-data writes carry the operator token.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;

use crate::report::{latency_histogram, Rng};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Detail,
    Price,
    Depth,
    Portfolio,
    Watchlist,
    Profile,
    List,
    Trending,
    Overview,
    View,
    Order,
    PutPrice,
    PutProfile,
}

impl Kind {
    pub fn route(self) -> &'static str {
        match self {
            Kind::Detail => "GET /api/instruments/{symbol}",
            Kind::Price => "GET /api/stocks/{symbol}/price",
            Kind::Depth => "GET /api/stocks/{symbol}/depth",
            Kind::Portfolio => "GET /api/portfolios/{user}",
            Kind::Watchlist => "GET /api/watchlists/{user}",
            Kind::Profile => "GET /api/users/{user}/profile",
            Kind::List => "GET /api/instruments?sector=",
            Kind::Trending => "GET /api/trending",
            Kind::Overview => "GET /api/market/overview",
            Kind::View => "POST /api/instruments/{symbol}/views",
            Kind::Order => "POST /api/orders",
            Kind::PutPrice => "PUT /api/stocks/{symbol}/price",
            Kind::PutProfile => "PUT /api/users/{user}/profile",
        }
    }
}

/// Weights of the mix: mostly reads, 15 % view counts, 4 % writes.
const MIX: &[(Kind, u64)] = &[
    (Kind::Detail, 22),
    (Kind::Price, 14),
    (Kind::Depth, 4),
    (Kind::Portfolio, 14),
    (Kind::Watchlist, 6),
    (Kind::Profile, 6),
    (Kind::List, 5),
    (Kind::Trending, 5),
    (Kind::Overview, 5),
    (Kind::View, 15),
    (Kind::Order, 2),
    (Kind::PutPrice, 1),
    (Kind::PutProfile, 1),
];

pub const LOAD: &str = "32 virtual users (2 ms apart) over 2 instances: Zipf(0.99) over 50 symbols and 1,000 users, each signed in (a user's requests to the instance of their session, the operator's with its token); 81 % reads over 9 routes, 15 % view counts (write-behind), 4 % orders and price/profile updates";

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 2xx.
    Ok,
    /// 503 with a JSON `{"error": "... unavailable ..."}`.
    Clear503,
    /// 409: a business answer (e.g. not enough cash), not a fault.
    Conflict,
    /// Anything else: status and body, or the transport error.
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct Sent {
    pub started: Duration,
    pub took: Duration,
    pub kind: Kind,
    /// Index of the symbol viewed (view counts only).
    pub symbol: usize,
    pub answer: Answer,
}

/// Zipf(θ) over `0..n` by inverse CDF.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: usize, theta: f64) -> Zipf {
        let mut cdf: Vec<f64> = (0..n)
            .scan(0.0, |sum, k| {
                *sum += 1.0 / ((k + 1) as f64).powf(theta);
                Some(*sum)
            })
            .collect();
        let total = *cdf.last().unwrap_or(&1.0);
        cdf.iter_mut().for_each(|c| *c /= total);
        Zipf(cdf)
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        self.0.partition_point(|&c| c < u).min(self.0.len() - 1)
    }
}

pub struct Population {
    pub symbols: Vec<String>,
    pub users: usize,
    /// The instances.
    pub bases: Vec<String>,
    /// `market_session=…` of user `i + 1`, signed in on `bases[i % n]`.
    pub cookies: Vec<String>,
    /// `Bearer …` of the operator.
    pub bearer: String,
}

impl Population {
    /// The instance user `user` (1-based) signed in on.
    pub fn home(&self, user: usize) -> &str {
        &self.bases[(user - 1) % self.bases.len()]
    }

    /// `request` sent as `user`.
    pub fn as_user(
        &self,
        request: reqwest::RequestBuilder,
        user: usize,
    ) -> reqwest::RequestBuilder {
        request.header(reqwest::header::COOKIE, &self.cookies[user - 1])
    }
}

/// Sign `user` in on `base`; the `Cookie` header of the session.
pub async fn sign_in(client: &reqwest::Client, base: &str, user: usize) -> Result<String> {
    let response = client
        .post(format!("{base}/login"))
        .json(&serde_json::json!({ "username": format!("user{user}"), "password": format!("password{user}") }))
        .send()
        .await?;
    let status = response.status();
    let cookie = response
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_string);
    match cookie {
        Some(cookie) if status.is_success() => Ok(cookie),
        _ => anyhow::bail!("signing user{user} in on {base}: {status}"),
    }
}

/// Symbols from the listing, the user count from the dashboard's figures,
/// and every user signed in on their instance.
pub async fn population(
    client: &reqwest::Client,
    bases: &[String],
    bearer: String,
) -> Result<Population> {
    use futures::stream::{self, StreamExt, TryStreamExt};
    let base = &bases[0];
    let list: Vec<serde_json::Value> = client
        .get(format!("{base}/api/instruments"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let symbols: Vec<String> = list
        .iter()
        .filter_map(|i| i["symbol"].as_str().map(str::to_string))
        .collect();
    let stats: serde_json::Value = client
        .get(format!("{base}/dashboard/stats"))
        .send()
        .await?
        .json()
        .await?;
    let users = stats["users"]
        .as_u64()
        .context("users in /dashboard/stats")? as usize;
    anyhow::ensure!(
        !symbols.is_empty() && users > 0,
        "the database is not seeded"
    );
    let cookies: Vec<String> = stream::iter(1..=users)
        .map(|user| sign_in(client, &bases[(user - 1) % bases.len()], user))
        .buffered(16)
        .try_collect()
        .await?;
    Ok(Population {
        symbols,
        users,
        bases: bases.to_vec(),
        cookies,
        bearer,
    })
}

async fn classify(response: reqwest::Result<reqwest::Response>) -> Answer {
    let response = match response {
        Ok(r) => r,
        Err(e) => return Answer::Failed(format!("transport: {e}")),
    };
    let status = response.status().as_u16();
    let body = match response.bytes().await {
        Ok(b) => b,
        Err(e) => return Answer::Failed(format!("{status}, body cut: {e}")),
    };
    match status {
        200..=299 => Answer::Ok,
        409 => Answer::Conflict,
        503 => {
            let error = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string));
            match error {
                Some(e) if e.contains("unavailable") || e.contains("slow") => Answer::Clear503,
                _ => Answer::Failed(format!("503 {}", String::from_utf8_lossy(&body))),
            }
        }
        _ => Answer::Failed(format!(
            "{status} {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )),
    }
}

async fn one(
    client: &reqwest::Client,
    base: &str,
    pop: &Population,
    zipf: (&Zipf, &Zipf),
    rng: &mut Rng,
    kind: Kind,
) -> (usize, Answer) {
    let s = zipf.0.sample(rng);
    let symbol = &pop.symbols[s];
    let user = zipf.1.sample(rng) + 1;
    let home = pop.home(user);
    let request = match kind {
        Kind::Detail => client.get(format!("{base}/api/instruments/{symbol}")),
        Kind::Price => client.get(format!("{base}/api/stocks/{symbol}/price")),
        Kind::Depth => client.get(format!("{base}/api/stocks/{symbol}/depth")),
        Kind::Portfolio => pop.as_user(client.get(format!("{home}/api/portfolios/{user}")), user),
        Kind::Watchlist => pop.as_user(client.get(format!("{home}/api/watchlists/{user}")), user),
        Kind::Profile => pop.as_user(client.get(format!("{home}/api/users/{user}/profile")), user),
        Kind::List => {
            let sector = ["TECH", "FIN", "HLTH", "ENRG", "INDU"][rng.below(5) as usize];
            client.get(format!("{base}/api/instruments?sector={sector}"))
        }
        Kind::Trending => client.get(format!("{base}/api/trending")),
        Kind::Overview => client.get(format!("{base}/api/market/overview")),
        Kind::View => client.post(format!("{base}/api/instruments/{symbol}/views")),
        Kind::Order => pop.as_user(
            client
                .post(format!("{home}/api/orders"))
                .json(&serde_json::json!({
                    "user_id": user, "symbol": symbol, "side": "buy", "quantity": 1 + rng.below(5),
                })),
            user,
        ),
        Kind::PutPrice => client
            .put(format!("{base}/api/stocks/{symbol}/price"))
            .header(reqwest::header::AUTHORIZATION, &pop.bearer)
            .json(&serde_json::json!({
                "price": (1_000 + rng.below(40_000)) as f64 / 100.0,
                "volume": 1 + rng.below(1_000),
            })),
        Kind::PutProfile => pop.as_user(
            client.put(format!("{home}/api/users/{user}/profile")).json(
                &serde_json::json!({ "display_name": format!("Trader {}", rng.below(1_000)) }),
            ),
            user,
        ),
    };
    (s, classify(request.send().await).await)
}

fn pick(rng: &mut Rng) -> Kind {
    let total: u64 = MIX.iter().map(|(_, w)| w).sum();
    let mut n = rng.below(total);
    for (kind, w) in MIX {
        if n < *w {
            return *kind;
        }
        n -= w;
    }
    MIX[0].0
}

/// Virtual users running until [`Load::stop`].
pub struct Load {
    pub t0: Instant,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Sent>>>,
}

impl Load {
    pub fn start(
        client: &reqwest::Client,
        bases: &[String],
        pop: Arc<Population>,
        users: usize,
    ) -> Load {
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let zipfs = Arc::new((
            Zipf::new(pop.symbols.len(), 0.99),
            Zipf::new(pop.users, 0.99),
        ));
        let tasks = (0..users)
            .map(|vu| {
                let (client, base) = (client.clone(), bases[vu % bases.len()].clone());
                let (pop, zipfs, stop) = (pop.clone(), zipfs.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut rng = Rng::new(vu as u64 + 7);
                    let mut sent = Vec::new();
                    while !stop.load(Ordering::Acquire) {
                        let kind = pick(&mut rng);
                        let started = Instant::now();
                        let (symbol, answer) =
                            one(&client, &base, &pop, (&zipfs.0, &zipfs.1), &mut rng, kind).await;
                        sent.push(Sent {
                            started: started - t0,
                            took: started.elapsed(),
                            kind,
                            symbol,
                            answer,
                        });
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    sent
                })
            })
            .collect();
        Load { t0, stop, tasks }
    }

    pub async fn stop(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::Release);
        let mut all = Vec::new();
        for task in self.tasks {
            all.extend(task.await.unwrap_or_default());
        }
        all.sort_by_key(|s| s.started);
        all
    }
}

/// Latency of the requests that started within `[from, to)`.
pub fn window(sent: &[Sent], from: Duration, to: Duration) -> Histogram<u64> {
    let mut h = latency_histogram();
    for s in sent.iter().filter(|s| s.started >= from && s.started < to) {
        let _ = h.record(s.took.as_nanos().max(1) as u64);
    }
    h
}

/// The slowest request of each route within `[from, to)`, slowest first.
pub fn slowest_by_route(sent: &[Sent], from: Duration, to: Duration) -> Vec<(Kind, Duration)> {
    let mut by: HashMap<Kind, Duration> = HashMap::new();
    for s in sent.iter().filter(|s| s.started >= from && s.started < to) {
        let e = by.entry(s.kind).or_default();
        *e = (*e).max(s.took);
    }
    let mut v: Vec<_> = by.into_iter().collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    v
}

/// Write-behind bookkeeping of the view counts: acknowledged (2xx) and in
/// doubt (any other answer: the increment may or may not have been applied)
/// per symbol, against the database's totals after the workers drained.
pub struct ViewCheck {
    pub acknowledged: u64,
    pub in_doubt: u64,
    /// Acknowledged increments missing from the database.
    pub lost: u64,
    /// Of those, how many the dead-letter stream does not hold either.
    pub gone: u64,
    pub applied_twice: u64,
}

pub fn check_views(
    sent: &[Sent],
    symbols: &[String],
    before: &HashMap<String, i64>,
    after: &HashMap<String, i64>,
    dead: &HashMap<String, i64>,
) -> ViewCheck {
    let mut acked = vec![0i64; symbols.len()];
    let mut doubt = vec![0i64; symbols.len()];
    for s in sent.iter().filter(|s| s.kind == Kind::View) {
        match s.answer {
            Answer::Ok => acked[s.symbol] += 1,
            _ => doubt[s.symbol] += 1,
        }
    }
    let mut check = ViewCheck {
        acknowledged: acked.iter().sum::<i64>() as u64,
        in_doubt: doubt.iter().sum::<i64>() as u64,
        lost: 0,
        gone: 0,
        applied_twice: 0,
    };
    let get = |m: &HashMap<String, i64>, s: &str| m.get(s).copied().unwrap_or(0);
    for (i, symbol) in symbols.iter().enumerate() {
        let delta = get(after, symbol) - get(before, symbol);
        let missing = (acked[i] - delta).max(0);
        check.lost += missing as u64;
        check.gone += (missing - get(dead, symbol)).max(0) as u64;
        check.applied_twice += (delta - acked[i] - doubt[i]).max(0) as u64;
    }
    check
}
