//! `market load`: virtual users sending the service's traffic — Zipf
//! popularity over users and symbols, a read/write mix — for a duration,
//! with a progress bar; latencies into an hdrhistogram; a JSON report.

mod ops;
mod population;
mod zipf;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use ops::Op;
pub use population::{sign_in, Population};
pub use zipf::Zipf;

/// How to drive the service.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Base URL of `market serve`.
    pub url: String,
    /// Concurrent virtual users.
    pub virtual_users: usize,
    /// How long to measure.
    pub duration: Duration,
    /// Unmeasured traffic first, so the measured part sees steady state.
    pub warmup: Duration,
    /// Zipf exponent over users and symbols.
    pub zipf: f64,
    /// Fraction of requests that write.
    pub write_ratio: f64,
    /// Requests per second offered by all virtual users together (each
    /// paces itself); 0 = closed loop, every user sends as fast as answered.
    pub rate: f64,
    /// Random seed (the same seed sends the same sequence per virtual user).
    pub seed: u64,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// The service's operator token, for market-data writes; without it
    /// they are left out of the mix.
    pub admin_token: Option<String>,
}

impl LoadConfig {
    /// 32 virtual users for 20 s after 5 s of warm-up, Zipf 0.99, 5 % writes.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_string(),
            virtual_users: 32,
            duration: Duration::from_secs(20),
            warmup: Duration::from_secs(5),
            zipf: 0.99,
            write_ratio: 0.05,
            rate: 0.0,
            seed: 42,
            progress: true,
            admin_token: None,
        }
    }
}

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadReport {
    pub virtual_users: usize,
    pub zipf: f64,
    pub write_ratio: f64,
    /// Offered rate (0 = closed loop).
    #[serde(default)]
    pub offered_rate: f64,
    pub duration_s: f64,
    pub requests: u64,
    pub ok: u64,
    /// 4xx answers (the generator sends valid requests, so these are bugs or conflicts).
    pub client_errors: u64,
    /// Of those, 401 and 403: the load's sessions or token refused (a bug
    /// of the load or of the service's authorization).
    #[serde(default)]
    pub refused: u64,
    /// 5xx answers and transport errors.
    pub server_errors: u64,
    pub requests_per_sec: f64,
    pub latency_ms: Latency,
    /// The same figures per kind of request, in the order of the mix.
    #[serde(default)]
    pub ops: Vec<OpReport>,
}

/// The measured requests of one kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpReport {
    /// `GET /api/…` with the route's pattern.
    pub op: String,
    pub requests: u64,
    /// 4xx and 5xx answers and transport errors of this kind.
    pub errors: u64,
    pub latency_ms: Latency,
    /// How many of this kind are among the run's slowest 1 % (slower than
    /// the run's p99): what the tail is made of.
    pub above_p99: u64,
}

#[derive(Default)]
struct Tally {
    ok: u64,
    client_errors: u64,
    refused: u64,
    server_errors: u64,
}

fn new_histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// Latencies and errors of one virtual user, per kind of request.
struct Recorded {
    per_op: Vec<Histogram<u64>>,
    errors: Vec<u64>,
    tally: Tally,
}

impl Recorded {
    fn new() -> Self {
        Self {
            per_op: Op::ALL.iter().map(|_| new_histogram()).collect(),
            errors: vec![0; Op::ALL.len()],
            tally: Tally::default(),
        }
    }

    fn add(&mut self, other: Recorded) -> anyhow::Result<()> {
        for (mine, theirs) in self.per_op.iter_mut().zip(other.per_op) {
            mine.add(theirs)?;
        }
        for (mine, theirs) in self.errors.iter_mut().zip(other.errors) {
            *mine += theirs;
        }
        self.tally.ok += other.tally.ok;
        self.tally.client_errors += other.tally.client_errors;
        self.tally.refused += other.tally.refused;
        self.tally.server_errors += other.tally.server_errors;
        Ok(())
    }
}

fn latency(h: &Histogram<u64>) -> Latency {
    let ms = |v: u64| v as f64 / 1000.0;
    if h.is_empty() {
        return Latency {
            mean: 0.0,
            p50: 0.0,
            p95: 0.0,
            p99: 0.0,
            max: 0.0,
        };
    }
    Latency {
        mean: h.mean() / 1000.0,
        p50: ms(h.value_at_quantile(0.50)),
        p95: ms(h.value_at_quantile(0.95)),
        p99: ms(h.value_at_quantile(0.99)),
        max: ms(h.max()),
    }
}

/// What every virtual user shares.
struct Shared {
    client: reqwest::Client,
    base: Arc<str>,
    pop: Arc<Population>,
    config: Arc<LoadConfig>,
    stop: Arc<AtomicBool>,
    measuring: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
}

async fn virtual_user(shared: Shared, index: usize) -> Recorded {
    let Shared {
        client,
        base,
        pop,
        config,
        stop,
        measuring,
        sent,
    } = shared;
    let mut rng = StdRng::seed_from_u64(
        config
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(index as u64),
    );
    let mut recorded = Recorded::new();
    // Open loop: this user's share of the rate, at evenly spaced moments
    // (offset per user so they do not fire together).
    let pace = (config.rate > 0.0)
        .then(|| Duration::from_secs_f64(config.virtual_users as f64 / config.rate));
    let mut next = tokio::time::Instant::now()
        + pace.map_or(Duration::ZERO, |p| p.mul_f64(rng.random::<f64>()));
    while !stop.load(Ordering::Relaxed) {
        if let Some(pace) = pace {
            tokio::time::sleep_until(next).await;
            next += pace;
            // A user that fell far behind resumes its pace instead of bursting.
            let now = tokio::time::Instant::now();
            if next + Duration::from_secs(1) < now {
                next = now;
            }
        }
        let op = Op::pick(&mut rng, config.write_ratio, pop.is_operator());
        let started = Instant::now();
        let outcome = ops::send(&client, &base, &pop, &mut rng, op).await;
        let micros = started.elapsed().as_micros() as u64;
        if !measuring.load(Ordering::Relaxed) {
            continue;
        }
        sent.fetch_add(1, Ordering::Relaxed);
        let _ = recorded.per_op[op.index()].record(micros.clamp(1, 60_000_000));
        let tally = &mut recorded.tally;
        match outcome {
            Ok(200..=399) => tally.ok += 1,
            Ok(status @ 400..=499) => {
                tally.client_errors += 1;
                if status == 401 || status == 403 {
                    tally.refused += 1;
                }
            }
            _ => tally.server_errors += 1,
        }
        if !matches!(outcome, Ok(200..=399)) {
            recorded.errors[op.index()] += 1;
        }
    }
    recorded
}

/// Sign in, warm up, then measure; the report covers the measured part.
pub async fn run(config: &LoadConfig) -> anyhow::Result<LoadReport> {
    Driver::prepare(config).await?.run(config).await
}

/// A load ready to run against one service, as often as wanted: its
/// population read and its users signed in once.
pub struct Driver {
    client: reqwest::Client,
    pop: Arc<Population>,
}

impl Driver {
    /// Read the service's population and sign its users in.
    pub async fn prepare(config: &LoadConfig) -> anyhow::Result<Driver> {
        anyhow::ensure!(config.virtual_users > 0, "--users must be at least 1");
        anyhow::ensure!(
            (0.0..=1.0).contains(&config.write_ratio),
            "--write-ratio must be in [0, 1]"
        );
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(config.virtual_users)
            // Below the service's idle-connection limit (its header read
            // timeout, 10 s by default): a pooled connection is never
            // reused just as the service closes it.
            .pool_idle_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()?;
        let pop = Arc::new(Population::prepare(&client, config).await?);
        Ok(Driver { client, pop })
    }

    /// Run `config`'s warm-up and measured part (its URL must be the one
    /// the driver was prepared for).
    pub async fn run(&self, config: &LoadConfig) -> anyhow::Result<LoadReport> {
        run_with(&self.client, &self.pop, config).await
    }
}

async fn run_with(
    client: &reqwest::Client,
    pop: &Arc<Population>,
    config: &LoadConfig,
) -> anyhow::Result<LoadReport> {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(config.warmup.is_zero()));
    let sent = Arc::new(AtomicU64::new(0));
    let shared = Arc::new(config.clone());
    let base: Arc<str> = Arc::from(config.url.as_str());
    let tasks: Vec<_> = (0..config.virtual_users)
        .map(|i| {
            tokio::spawn(virtual_user(
                Shared {
                    client: client.clone(),
                    base: base.clone(),
                    pop: pop.clone(),
                    config: shared.clone(),
                    stop: stop.clone(),
                    measuring: measuring.clone(),
                    sent: sent.clone(),
                },
                i,
            ))
        })
        .collect();

    let bar = if config.progress {
        let bar = ProgressBar::new((config.warmup + config.duration).as_secs().max(1));
        bar.set_style(
            ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} s")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    let mut measured_from = started;
    let end = started + config.warmup + config.duration;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let now = Instant::now();
        if !measuring.load(Ordering::Relaxed) && now >= started + config.warmup {
            measuring.store(true, Ordering::Relaxed);
            measured_from = now;
        }
        bar.set_position(now.duration_since(started).as_secs());
        if measuring.load(Ordering::Relaxed) {
            let secs = now.duration_since(measured_from).as_secs_f64().max(0.001);
            bar.set_message(format!(
                "{:.0} req/s",
                sent.load(Ordering::Relaxed) as f64 / secs
            ));
        } else {
            bar.set_message("warm-up");
        }
        if now >= end {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let measured = measured_from.elapsed();
    bar.finish_and_clear();

    let mut recorded = Recorded::new();
    for task in tasks {
        recorded.add(task.await?)?;
    }
    let mut histogram = new_histogram();
    for h in &recorded.per_op {
        histogram.add(h)?;
    }
    let p99 = histogram.value_at_quantile(0.99);
    let ops = Op::ALL
        .iter()
        .zip(&recorded.per_op)
        .filter(|(_, h)| !h.is_empty())
        .map(|(op, h)| OpReport {
            op: op.name().to_string(),
            requests: h.len(),
            errors: recorded.errors[op.index()],
            latency_ms: latency(h),
            above_p99: h
                .iter_recorded()
                .filter(|v| v.value_iterated_to() > p99)
                .map(|v| v.count_at_value())
                .sum(),
        })
        .collect();
    let tally = recorded.tally;
    let requests = histogram.len();
    let secs = measured.as_secs_f64();
    Ok(LoadReport {
        virtual_users: config.virtual_users,
        zipf: config.zipf,
        write_ratio: config.write_ratio,
        offered_rate: config.rate,
        duration_s: secs,
        requests,
        ok: tally.ok,
        client_errors: tally.client_errors,
        refused: tally.refused,
        server_errors: tally.server_errors,
        requests_per_sec: requests as f64 / secs,
        latency_ms: latency(&histogram),
        ops,
    })
}
